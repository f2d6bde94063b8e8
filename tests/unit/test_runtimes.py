import json
import os

import pytest

from kubeless_local.errors import BadRequest, NotFound, UserError
from kubeless_local.runtimes import Catalog


def test_resolves_an_available_runtime():
    runtime, notice = Catalog().resolve("python3.11")
    assert (runtime.name, runtime.dep_name, runtime.suffix, notice) == ("python3.11", "requirements.txt", ".py", None)


def test_legacy_versions_map_to_the_newest_with_a_notice():
    runtime, notice = Catalog().resolve("python3.7")
    assert runtime.name == "python3.11"
    assert notice == "python3.7 is a legacy Kubeless runtime; running it as python3.11"


def test_java_1_8_runs_as_java11_with_the_kubeless_file_names():
    runtime, notice = Catalog().resolve("java1.8", require_local=False)
    assert (runtime.name, runtime.dep_name, runtime.suffix) == ("java11", "pom.xml", ".java")
    assert notice == "java1.8 is a legacy Kubeless runtime; running it as java11"
    assert runtime.image == "kubeless-local/java:11" and runtime.reload == "restart"


def test_unknown_runtime_is_a_user_error():
    with pytest.raises(NotFound, match=r"^unknown runtime 'cobol1'; available: .*python3\.11") as unknown:
        Catalog().resolve("cobol1")
    assert (unknown.value.what, unknown.value.name) == ("runtime", "cobol1")  # the CLI adds `get-server-config`


def test_unknown_version_names_the_available_ones():
    with pytest.raises(UserError, match="python versions here: python3.11"):
        Catalog().resolve("python9.9")


def test_auto_version_falls_back_to_the_default_without_a_toolchain(tmp_path):
    (tmp_path / "catalog.yaml").write_text("""
runtimes:
  go:
    server: go
    versions:
      - {version: auto, default: "1.26", executable: no-such-go-here, probe: ["{exe}", "version"], expect: "go(1\\\\.[0-9]+)"}
""")
    [runtime] = Catalog(tmp_path / "catalog.yaml").versions("go")
    assert runtime.name == "go1.26" and not runtime.available()  # the docker image brings it
    assert Catalog(tmp_path / "catalog.yaml").resolve("go1.26", require_local=False)[0].name == "go1.26"
    with pytest.raises(UserError, match="needs `no-such-go-here` on PATH"):
        Catalog(tmp_path / "catalog.yaml").resolve("go1.26")


def test_a_runtime_whose_toolchain_is_missing_here_names_the_docker_backend_where_its_image_has_it():
    """nodejs18 on a machine with Node 20: the docker backend runs it, the line said only to install it."""
    catalog = Catalog()
    [node18] = [rt for rt in catalog.versions("nodejs") if rt.name == "nodejs18"]
    if node18.available():
        pytest.skip("this machine's node is 18: the runtime is available")
    with pytest.raises(UserError) as missing:
        catalog.resolve("nodejs18")
    assert str(missing.value) == (
        "runtime nodejs18 needs `node` on PATH (wrong version); install it, use nodejs20, or run it with "
        "--backend docker (its image %s has it)" % node18.image
    )


def write_catalog(tmp_path, text):
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, where",
    [
        (
            "runtimes:\n  go:\n    docker:\n      relaod: signal\n",
            "runtimes.go.docker.relaod: unknown key; known: build_args, check",
        ),
        ("runtimes:\n  go:\n    process:\n      build_args: {}\n", "runtimes.go.process.build_args: unknown key"),
        (
            "runtimes:\n  go:\n    versions:\n      - {version: '1', executable: go, imgae: x}\n",
            "runtimes.go.versions[0].imgae: unknown key",
        ),
        ("runtimes:\n  go:\n    depname: go.mod\n", "runtimes.go.depname: unknown key; known: depName"),
        ("runtime:\n  go: {}\n", "top level.runtime: unknown key; known: runtimes"),
        (
            "runtimes:\n  go:\n    process:\n      reload: sighup\n",
            "runtimes.go.process.reload: must be one of signal, restart",
        ),
        (
            "runtimes:\n  go:\n    process:\n      command: go run\n",
            "runtimes.go.process.command: must be a list of strings",
        ),
        (
            "runtimes:\n  go:\n    process:\n      debug: gdb\n",
            "runtimes.go.process.debug: must be one of debugpy, inspector, delve, got 'gdb'",
        ),
        (
            "runtimes:\n  go:\n    isolation: [per-call]\n",
            "runtimes.go.isolation: must be a list of warm, per-call, warm among them; got ['per-call']",
        ),
    ],
)
def test_catalog_errors_name_the_file_and_the_key(tmp_path, text, where):
    path = write_catalog(tmp_path, text)
    with pytest.raises(UserError) as info:
        Catalog(path)
    assert str(info.value).startswith("%s: %s" % (path, where))


def test_the_shipped_catalog_is_modelled_and_each_backend_reads_its_own_block():
    catalog = Catalog()
    go = catalog.entries["go"]
    assert (
        go.docker.setup and go.docker.compile and go.process.compile and go.docker.build_args["GO_MINOR"] == "{version}"
    )
    python, _ = catalog.resolve("python3.11", require_local=False)
    assert python.steps is python.process and python.process.command[0] == "{exe}"
    docker = python.for_backend("docker")
    assert docker.steps is docker.docker and docker.steps.command[0] == "python3"


def test_per_call_isolation_is_the_python_ruby_and_php_servers(tmp_path):
    # Kubeless' Node.js, Go and Java runtimes keep module state between calls: theirs here do not offer per-call
    catalog = Catalog()
    assert {runtime_id for runtime_id, entry in catalog.entries.items() if "per-call" in entry.isolation} == {
        "python",
        "ruby",
        "php",
    }
    assert catalog.resolve("nodejs20", require_local=False)[0].isolations == ("warm",)
    assert catalog.resolve("python3.11", require_local=False)[0].isolations == ("warm", "per-call")


def test_docker_reload_comes_from_the_docker_block(tmp_path):
    path = write_catalog(
        tmp_path,
        """
runtimes:
  python:
    versions: [{version: "3.11", executable: nothing-here, image: img}]
    process: {reload: signal}
    docker: {reload: restart}
""",
    )
    [runtime] = Catalog(path).versions("python")
    assert runtime.reload == "signal" and runtime.for_backend("docker").reload == "restart"


def fake_tool(path, output):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho '%s'\n" % output)
    path.chmod(0o755)
    return path


def test_interpreters_are_found_by_version_on_path_and_in_version_manager_folders(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir / "python3.11", "Python 3.11.9")
    fake_tool(bin_dir / "python3.12", "Python 3.12.4")
    fake_tool(tmp_path / "pyenv" / "3.13.0" / "bin" / "python3", "Python 3.13.0")
    fake_tool(tmp_path / "pyenv" / "3.9.1" / "bin" / "python3", "Python 3.9.1")  # legacy: not offered
    fake_tool(tmp_path / "pyenv" / "3.12.0" / "bin" / "python3", "Python 3.12.0")  # 3.12 found on PATH first
    monkeypatch.setenv("PATH", str(bin_dir))
    path = write_catalog(
        tmp_path,
        """
runtimes:
  python:
    versions:
      - {version: "3.11", executable: [python3.11], expect: "Python 3\\\\.11\\\\.", image: "img:3.11"}
      - version: auto
        executable: ["python3.1[2-9]", "%s/pyenv/*/bin/python3"]
        expect: "^Python (3\\\\.(?:1[2-9]|[2-9][0-9]))\\\\."
    legacy: ["3.9"]
"""
        % tmp_path,
    )
    catalog = Catalog(path)
    found = {rt.name: rt.executable for rt in catalog.versions("python")}
    assert found == {
        "python3.11": str(bin_dir / "python3.11"),
        "python3.12": str(bin_dir / "python3.12"),
        "python3.13": str(tmp_path / "pyenv" / "3.13.0" / "bin" / "python3"),
    }
    assert all(rt.available() for rt in catalog.versions("python"))
    runtime, _ = catalog.resolve("python3.13")
    assert runtime.executable_path() == str(tmp_path / "pyenv" / "3.13.0" / "bin" / "python3") and not runtime.image
    # a legacy version runs as the newest one both backends offer
    assert catalog.resolve("python3.9")[0].name == "python3.11"


def test_node_versions_from_nvm_folders(tmp_path, monkeypatch):
    fake_tool(tmp_path / "bin" / "node", "v20.11.0")
    fake_tool(tmp_path / "nvm" / "versions" / "node" / "v22.3.0" / "bin" / "node", "v22.3.0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    path = write_catalog(
        tmp_path,
        """
runtimes:
  nodejs:
    versions:
      - {version: "20", executable: [node], expect: "^v20\\\\.", image: "img:20"}
      - {version: auto, executable: [node, "%s/nvm/versions/node/v*/bin/node"], expect: "^v(2[1-9]|[3-9][0-9])\\\\."}
"""
        % tmp_path,
    )
    catalog = Catalog(path)
    assert [rt.name for rt in catalog.versions("nodejs")] == ["nodejs20", "nodejs22"]
    runtime, notice = catalog.resolve("nodejs22")
    assert notice is None and runtime.executable_path().endswith("v22.3.0/bin/node")


def test_only_the_servers_of_the_catalogs_runtimes_are_known_to_serve_metrics():
    """`ls` counts calls from /metrics only there: a custom image may route every path to the function."""
    catalog = Catalog()
    assert catalog.serves_metrics("python3.11") and catalog.serves_metrics("nodejs12")  # legacy: same server
    assert not catalog.serves_metrics("python3.11", image="example/own:1")  # the user's image: unknown server
    assert not catalog.serves_metrics("")  # only an image
    assert not catalog.serves_metrics("custom1") and not catalog.serves_metrics("nodejsWithLodash8")


LODASH = """[{"ID": "nodejsWithLodash", "depName": "package.json", "fileNameSuffix": ".js",
  "versions": [{"name": "node8", "version": "8", "images": [
    {"phase": "runtime", "image": "andresmgot/nodejs-with-lodash:8", "env": {"NODE_PATH": "/kubeless/node_modules"}}]}]}]"""


def test_a_runtime_declared_only_in_runtime_images_runs_in_its_image(tmp_path, monkeypatch):
    """The Kubeless docs' "Use a custom runtime": a new ID in kubeless-config's runtime-images."""
    (tmp_path / "runtime-images.json").write_text(LODASH)
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(tmp_path / "runtime-images.json"))
    runtime, notice = Catalog().resolve("nodejsWithLodash8", require_local=False)
    assert (runtime.name, runtime.suffix, runtime.dep_name) == ("nodejsWithLodash8", ".js", "package.json")
    assert notice is None
    assert (runtime.image, runtime.backend, runtime.reload) == ("andresmgot/nodejs-with-lodash:8", "docker", "restart")
    with pytest.raises(BadRequest, match=r"declared only in .*runtime-images.json.*not as a local process") as local:
        Catalog().resolve("nodejsWithLodash8")  # the process backend: no server of ours for it
    assert (local.value.what, local.value.name) == ("image-only runtime", "nodejsWithLodash8")
    with pytest.raises(NotFound, match="unknown runtime 'nodejsWithLodash9'"):
        Catalog().resolve("nodejsWithLodash9", require_local=False)  # no such version declared


def test_a_listed_version_is_resolved_by_its_own_probe_only(tmp_path, monkeypatch):
    """`run --runtime python3.11` probed every Python on the machine first (pyenv shims: ~0.5 s of the start);
    a version the catalog lists wins over `auto` anyway, so its own probe decides, and the answer is the same."""
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir / "python3.11", "Python 3.11.9")
    probed = tmp_path / "probed"
    (bin_dir / "python3.12").write_text("#!/bin/sh\necho 3.12 >> %s\necho 'Python 3.12.4'\n" % probed)
    (bin_dir / "python3.12").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    path = write_catalog(
        tmp_path,
        """
runtimes:
  python:
    versions:
      - {version: "3.11", executable: [python3.11], expect: "Python 3\\\\.11\\\\.", image: "img:3.11"}
      - {version: auto, executable: ["python3.1[2-9]"], expect: "^Python (3\\\\.(?:1[2-9]|[2-9][0-9]))\\\\."}
""",
    )
    runtime, notice = Catalog(path).resolve("python3.11")
    assert not probed.exists()  # the auto candidates were not run
    assert (runtime, notice) == (Catalog(path).versions("python")[0], None)  # what the whole search finds
    assert probed.exists() and Catalog(path).resolve("python3.12")[0].name == "python3.12"


def test_which_runtimes_have_a_debugger_is_the_catalogs_data():
    catalog = Catalog()
    assert {rid: catalog.entries[rid].process.debug for rid in catalog.ids()} == {
        "python": "debugpy",
        "go": "delve",
        "ruby": "",
        "php": "",
        "nodejs": "inspector",
        "java": "",
    }
    assert catalog.debugger("python3.11") == "debugpy"
    assert catalog.debugger("nodejs20") == "inspector"
    assert catalog.debugger("ruby3.1") == ""
    assert catalog.debugger("python3.11", image="my/image:1") == ""  # a custom image's server is not known
    assert catalog.debugger("cobol1") == ""


def test_a_toolchains_probes_run_once_per_file_not_once_per_start(tmp_path, monkeypatch):
    """Every `run` probed its interpreter twice (its version, its real path) before anything started: a
    binary's answers are kept in the user's cache by the file's identity, and asked again when the file
    changes; a script (a version manager's shim, which answers by its folder) is asked every time."""
    import shutil
    import subprocess
    import sys

    from kubeless_local import runtimes

    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    binary = tmp_path / "bin" / "python3.11"
    binary.parent.mkdir()
    shutil.copy(sys.executable, binary)  # an ELF file of its own, whose identity the test changes
    script = fake_tool(tmp_path / "bin" / "shim", "Python 3.11.9")
    runs = []
    real_run = subprocess.run
    monkeypatch.setattr(runtimes.subprocess, "run", lambda argv, **kw: runs.append(argv) or real_run(argv, **kw))

    def probe(exe):
        runtimes._probes.clear()  # as a new process: what the cache file holds, nothing in memory
        return runtimes._probed([str(exe), "--version"], str(exe))

    first = probe(binary)
    assert first is not None and first[0] == 0 and "Python 3." in first[1] + first[2]
    assert probe(binary) == first and len(runs) == 1
    os.utime(binary, ns=(binary.stat().st_atime_ns, binary.stat().st_mtime_ns + 10**9))  # an upgrade: asked again
    assert probe(binary) == first and len(runs) == 2
    assert probe(script)[1] == "Python 3.11.9\n" and probe(script)[1] == "Python 3.11.9\n" and len(runs) == 4


def test_a_catalog_is_read_from_the_users_cache_while_its_text_is_the_same(tmp_path, monkeypatch):
    """The catalog is read on every start; its YAML as read is kept in the user's cache (no PyYAML import then),
    keyed by the text's sha256: a changed catalog is read again, even at the same size and moment."""
    from kubeless_local import paths, runtimes

    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    path = write_catalog(tmp_path, "runtimes:\n  go:\n    server: go\n")
    (tmp_path / "other").mkdir()
    other = write_catalog(tmp_path / "other", "runtimes:\n  ruby:\n    server: ruby\n")  # another checkout's
    assert list(runtimes.load(path)) == ["go"] and list(runtimes.load(other)) == ["ruby"]
    (cache,) = [p.name for p in (tmp_path / "cache").iterdir() if json.loads(p.read_text()).get("path") == str(path)]
    kept = paths.read_cached(cache)
    assert kept["data"] == {"runtimes": {"go": {"server": "go"}}}
    kept["data"] = {"runtimes": {"kept": {"server": "go"}}}  # what the cache says is what a load returns
    paths.keep_cached(cache, kept)
    assert list(runtimes.load(path)) == ["kept"] and list(runtimes.load(other)) == ["ruby"]
    path.write_text("runtimes:\n  js:\n    server: go\n")  # another text of the same size
    assert list(runtimes.load(path)) == ["js"]
    path.write_text("runtimes:\n  7:\n    server: go\n")  # a number as a key: JSON would make it a string
    assert list(runtimes.load(path)) == ["7"]
    assert paths.read_cached(cache)["data"] == {"runtimes": {"js": {"server": "go"}}}


def test_the_images_of_a_runtime_are_known_without_probing_any_toolchain(monkeypatch):
    """What the docker backend runs (its relay's image too) needs no host toolchain: probing every candidate of an
    `auto` version (pyenv shims, ~0.2 s each) made a docker `run` ~0.2 s slower on every start."""
    from kubeless_local import runtimes

    def no_probe(*args):
        raise AssertionError("probed %s" % (args,))

    monkeypatch.setattr(runtimes, "_probed", no_probe)
    catalog = Catalog()
    assert [(rt.name, rt.image) for rt in catalog.images("python")] == [("python3.11", "kubeless-local/python:3.11")]
    assert [rt.name for rt in catalog.images("nodejs")] == ["nodejs18", "nodejs20"]

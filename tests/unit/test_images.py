"""Runtime image choice (env / runtime-images / catalog) and building, with a fake docker client."""

import json

import pytest
import yaml
from docker.errors import ImageNotFound

from kubeless_local.commands.output import worded
from kubeless_local.emulator import backends, images
from kubeless_local.emulator.images import host
from kubeless_local.errors import Failed, UserError
from kubeless_local.runtimes import Catalog

CATALOG = Catalog()
PYTHON = CATALOG.resolve("python3.11", require_local=False)[0]
NODE20 = CATALOG.resolve("nodejs20", require_local=False)[0]

RUNTIME_IMAGES = [
    {
        "ID": "python",
        "depName": "requirements.txt",
        "fileNameSuffix": ".py",
        "versions": [
            {
                "name": "python311",
                "version": "3.11",
                "images": [
                    {"phase": "installation", "image": "kubeless/python-init:3.11"},
                    {"phase": "runtime", "image": "kubeless/python:3.11"},
                ],
            }
        ],
    }
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("PYTHON3.11_RUNTIME", "PYTHON3_11_RUNTIME", "PYTHON3.8_RUNTIME", "KUBELESS_LOCAL_RUNTIME_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_catalog_image_by_default():
    choice = images.image_for(PYTHON)
    assert (choice.image, choice.source, choice.overridden) == ("kubeless-local/python:3.11", "catalog", False)
    assert images.image_for(NODE20).image == "kubeless-local/nodejs:20"


def test_env_override_as_the_controller_names_it(monkeypatch):
    assert images.env_name(PYTHON) == "PYTHON3.11_RUNTIME"
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "registry.local/python:dev")
    choice = images.image_for(PYTHON)
    assert choice.image == "registry.local/python:dev" and choice.source == "env PYTHON3.11_RUNTIME"


def test_runtime_images_json_file(monkeypatch, tmp_path):
    path = tmp_path / "runtime-images.json"
    path.write_text(json.dumps(RUNTIME_IMAGES))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    choice = images.image_for(PYTHON)
    assert (choice.image, choice.install_image, choice.source) == (
        "kubeless/python:3.11",
        "kubeless/python-init:3.11",
        str(path),
    )
    assert images.image_for(NODE20).image == "kubeless-local/nodejs:20"  # not listed: the catalog's


def test_kubeless_config_configmap_with_case_insensitive_keys(monkeypatch, tmp_path):
    entries = [
        {"id": "python", "versions": [{"VERSION": "3.11", "Images": [{"Phase": "runtime", "Image": "cm/python"}]}]}
    ]
    path = tmp_path / "kubeless-config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kubeless-config"},
                "data": {"runtime-images": json.dumps(entries)},
            }
        )
    )
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    assert images.image_for(PYTHON).image == "cm/python"


def test_default_runtime_images_location(tmp_path):
    path = tmp_path / "config" / "kubeless-local" / "runtime-images.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(RUNTIME_IMAGES))
    assert images.image_for(PYTHON).image == "kubeless/python:3.11"


def test_env_wins_over_the_file(monkeypatch, tmp_path):
    path = tmp_path / "ri.json"
    path.write_text(json.dumps(RUNTIME_IMAGES))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "from-env")
    assert images.image_for(PYTHON).image == "from-env"


def test_malformed_runtime_images(monkeypatch, tmp_path):
    path = tmp_path / "ri.json"
    path.write_text('{"not": "a list"}')
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    with pytest.raises(UserError, match="must be a JSON list"):
        images.image_for(PYTHON)
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="no such file"):
        images.image_for(PYTHON)


def test_build_context_has_the_runtime_and_a_ca_but_no_installed_modules(tmp_path, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KUBELESS_LOCAL_CA_BUNDLE", str(ca))
    context = images.build_context(NODE20, tmp_path / "ctx")
    assert (context / "Dockerfile").is_file() and (context / "kubeless.js").is_file()
    assert not (context / "node_modules").exists()
    assert (context / images.CA_NAME).read_text() == "-----BEGIN CERTIFICATE-----\n"


def test_every_runtime_has_a_dockerfile_from_the_base_arg_and_a_docker_block():
    for rt in CATALOG.all():
        if not rt.image:
            continue  # a version only the process backend runs (found on this machine)
        dockerfile = (rt.runtime_dir / "Dockerfile").read_text()
        assert "ARG BASE=debian:bookworm-slim" in dockerfile and "FROM ${BASE}" in dockerfile
        assert "USER 1000" in dockerfile and images.OWN_LABEL in dockerfile
        settings = rt.docker
        assert settings.command or settings.compile, rt.name
        assert settings.reload in ("signal", "restart")


def test_build_args(monkeypatch):
    monkeypatch.setattr(host, "registry", lambda name: {"npm_registry": "https://npm.example"}.get(name, ""))
    assert images.build_args(NODE20) == {
        "NODE_MAJOR": "20",
        "NPM_REGISTRY": "https://npm.example",
        "BASE": "debian:bookworm-slim",
    }


def test_an_image_that_needs_a_registry_the_host_lacks_says_how_to_set_one(monkeypatch):
    monkeypatch.setattr(host, "registry", lambda name: "")
    with pytest.raises(
        UserError, match=r"building kubeless-local/nodejs:20 needs a npm registry.*npm config set registry"
    ):
        images.build_args(NODE20)


def test_registries_come_from_the_hosts_configuration(monkeypatch):
    answers = {"go": "https://goproxy.example/,direct", "npm": "undefined", "python3": "https://pip.example/simple"}
    monkeypatch.setattr(host, "_ask", lambda argv: answers[argv[0]])
    for name in ("GOPROXY", "NPM_CONFIG_REGISTRY", "npm_config_registry", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    host.registry.cache_clear()
    try:
        assert host.registry("goproxy") == "https://goproxy.example"  # the first proxy of the list
        assert host.registry("npm_registry") == ""  # none configured: the tool's own default stays
        assert host.registry_env() == {
            "GOPROXY": "https://goproxy.example",
            "PIP_INDEX_URL": "https://pip.example/simple",
        }
        host.registry.cache_clear()
        monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://npm.example/")
        assert host.registry("npm_registry") == "https://npm.example"  # the env wins over the tool
    finally:
        host.registry.cache_clear()


class FakeAPI:
    def __init__(self, chunks):
        self.chunks, self.calls = chunks, []

    def build(self, **kwargs):
        self.calls.append(kwargs)
        return iter(self.chunks)


class FakeImages:
    def __init__(self, present):
        self.present = set(present)

    def get(self, tag):
        if tag not in self.present:
            raise ImageNotFound(tag)
        return tag


class FakeClient:
    def __init__(self, chunks, present=("debian:bookworm-slim",)):
        self.api, self.images = FakeAPI(chunks), FakeImages(present)


def test_build_uses_host_network_and_reports_progress():
    client = FakeClient([{"stream": "Step 1/3 : FROM debian\n"}, {"stream": "Successfully built x\n"}])
    client.images.present.add("kubeless-local/python:3.11")
    lines = []
    images.build_image(client, PYTHON, lines.append)
    call = client.api.calls[0]
    assert call["tag"] == "kubeless-local/python:3.11" and call["network_mode"] == "host" and call["pull"] is False
    assert lines == ["Step 1/3 : FROM debian", "Successfully built x"]


def test_build_images_reports_progress_through_the_callback():
    client = FakeClient([{"stream": "Step 1/3 : FROM debian\n"}])
    client.images.present.add("kubeless-local/python:3.11")
    events = []
    results = images.build_images(
        [PYTHON], client, lambda rt, state, line, seconds: events.append((rt.name, state, line))
    )
    assert [rt.name for rt, _ in results] == ["python3.11"]
    assert events == [
        ("python3.11", "building", ""),
        ("python3.11", "building", "Step 1/3 : FROM debian"),
        ("python3.11", "done", ""),
    ]
    failing = FakeClient([{"error": "boom"}])
    events.clear()
    with pytest.raises(UserError):
        images.build_images([PYTHON], failing, lambda rt, state, line, seconds: events.append(state))
    assert events[-1] == "failed"


def test_server_config_rows_join_runtimes_and_images_by_name():
    client = FakeClient([], present=("kubeless-local/nodejs:20",))
    client.images.get = lambda tag: (
        FakeImage(tag) if tag == "kubeless-local/nodejs:20" else (_ for _ in ()).throw(ImageNotFound(tag))
    )
    rows = {row["runtime"]: row for row in backends.server_config(CATALOG, client)}
    assert set(rows) == {rt.name for rt in CATALOG.all()}
    assert rows["nodejs20"]["docker"] and rows["nodejs20"]["image"] == "kubeless-local/nodejs:20"
    assert not rows["python3.11"]["docker"] and rows["python3.11"]["legacy"].startswith("python2.7, python3.4")
    assert rows["python3.11"]["process"] == PYTHON.available()
    assert all(not row["legacy"] for name, row in rows.items() if name.startswith("python") and name != "python3.11")


class FakeImage:
    short_id = "sha256:abababababab"
    attrs = {"Size": 1_000_000, "Created": "2026-01-01T00:00:00"}

    def __init__(self, tag):
        self.tag = tag


def test_build_failure_is_a_user_error_with_the_output():
    client = FakeClient(
        [
            {"stream": "Step 2/3 : RUN apt-get install nope\n"},
            {"error": "The command '/bin/sh -c apt-get install nope' returned a non-zero code: 100"},
        ]
    )
    with pytest.raises(Failed) as info:
        images.build_image(client, PYTHON)
    assert (info.value.what, info.value.name) == ("image build", "kubeless-local/python:3.11")
    message = str(worded(info.value))  # what `runtime build` prints: the CLI adds the flag
    assert message.startswith("building kubeless-local/python:3.11 failed: The command")
    assert "apt-get install nope" in message and "--backend process" in message
    assert message.endswith("\n(fix the Dockerfile / network, or use --backend process)")


def test_missing_base_image_says_how_to_create_it():
    with pytest.raises(UserError, match="debian:bookworm-slim is missing.*docker-setup.sh"):
        images.build_image(FakeClient([], present=()), PYTHON)


def test_source_hash_follows_the_runtime_files_and_marks_stale_images(tmp_path, monkeypatch):
    from kubeless_local.runtimes import Catalog

    monkeypatch.setattr(images.build, "RUNTIMES_DIR", tmp_path)
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "kubeless.py").write_text("v1")
    (tmp_path / "python" / "__pycache__").mkdir()
    catalog = Catalog()
    runtime, _ = catalog.resolve("python3.11", require_local=False)
    first = images.source_hash(runtime)
    (tmp_path / "python" / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    assert images.source_hash(runtime) == first

    class Image:
        attrs = {"Config": {"Labels": {images.SOURCE_LABEL: first}}}

    assert not images.is_stale(Image, runtime)
    (tmp_path / "python" / "kubeless.py").write_text("v2")
    assert images.is_stale(Image, runtime)
    Image.attrs = {"Config": {"Labels": {}}}  # not ours (an official image): never called stale
    assert not images.is_stale(Image, runtime)


def test_source_hash_asks_no_registry(monkeypatch):
    """Every docker `run` checks its image with it: npm's or pip's answer took ~0.3 s, and a registry says where
    the packages came from, not what the image holds. The build itself still asks (build_args)."""
    from kubeless_local.emulator.images import host
    from kubeless_local.runtimes import Catalog

    def asked(argv):
        raise AssertionError("asked %s" % argv)

    monkeypatch.setattr(host, "_ask", asked)
    monkeypatch.delenv("NPM_CONFIG_REGISTRY", raising=False)
    monkeypatch.delenv("npm_config_registry", raising=False)
    runtime, _ = Catalog().resolve("nodejs20", require_local=False)
    images.source_hash(runtime)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://registry.example.invalid/npm")
    host.registry.cache_clear()  # asked once a process
    try:
        assert images.build_args(runtime)["NPM_REGISTRY"] == "https://registry.example.invalid/npm"
    finally:
        host.registry.cache_clear()
    assert images.build_args(runtime, registries=False)["NPM_REGISTRY"] == "{npm_registry}"


def test_auto_backend_stays_on_process_for_a_version_without_an_image(monkeypatch, tmp_path):
    from kubeless_local import runtimes
    from kubeless_local import spec as specs

    path = tmp_path / "catalog.yaml"
    path.write_text("runtimes:\n  python:\n    versions:\n      - {version: '3.12', executable: python3.12}\n")
    monkeypatch.setattr(runtimes, "Catalog", lambda: Catalog(path))
    monkeypatch.setattr(images, "docker_client", lambda required=True: pytest.fail("no engine needed to decide"))
    fn = specs.FunctionSpec(name="f", runtime="python3.12", handler="h.f", origin="f.yaml")
    said = []
    assert backends.choose("auto", [fn], said.append) == "process"
    assert said == ["backend: process (python3.12 has no runtime image)"]


def test_runtime_ls_shows_the_image_chosen_for_a_legacy_version_and_why(monkeypatch):
    """A `python3.8` Function runs in the image chosen for 3.8, not in our substitute: `runtime ls` says so."""
    rows = {r["runtime"]: r for r in images.image_rows(CATALOG)}
    assert "python3.8" not in rows  # nothing chosen: python3.8 runs as python3.11, nothing to list
    monkeypatch.setenv("PYTHON3.8_RUNTIME", "kubeless/python:3.8")
    rows = {r["runtime"]: r for r in images.image_rows(CATALOG)}
    assert (rows["python3.8"]["image"], rows["python3.8"]["source"]) == ("kubeless/python:3.8", "env PYTHON3.8_RUNTIME")
    assert rows["python3.11"]["image"] == "kubeless-local/python:3.11"


def test_the_runtime_phase_env_and_the_installation_phase_of_the_entry_in_force(monkeypatch, tmp_path):
    entries = json.loads(json.dumps(RUNTIME_IMAGES))
    entries[0]["versions"][0]["images"][0].update(command="pip install -r $KUBELESS_DEPS_FILE", env={"A": "1"})
    entries[0]["versions"][0]["images"][1]["env"] = {"PYTHONPATH": "$(KUBELESS_INSTALL_VOLUME)"}
    path = tmp_path / "ri.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    choice = images.image_for(PYTHON)
    assert choice.env == {"PYTHONPATH": "$(KUBELESS_INSTALL_VOLUME)"}
    assert choice.install == images.Phase("kubeless/python-init:3.11", "pip install -r $KUBELESS_DEPS_FILE", {"A": "1"})


def test_the_env_override_can_be_spelled_with_an_underscore_for_shells(monkeypatch):
    """bash and zsh cannot set a name with a dot (`env PYTHON3.11_RUNTIME=… cmd` can): PYTHON3_11_RUNTIME
    works too; the controller's spelling wins where both are set."""
    monkeypatch.setenv("PYTHON3_11_RUNTIME", "from-shell")
    choice = images.image_for(PYTHON)
    assert (choice.image, choice.source) == ("from-shell", "env PYTHON3_11_RUNTIME")
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "dotted")
    assert images.image_for(PYTHON).image == "dotted"

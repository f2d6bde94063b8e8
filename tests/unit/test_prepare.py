import base64
import dataclasses
import io
import tarfile
import zipfile

import pytest
from waiting import wait_for

from kubeless_local import kubeless_objects as objects
from kubeless_local import spec as specs
from kubeless_local.emulator import layout
from kubeless_local.emulator import prepare as prep
from kubeless_local.errors import UserError
from kubeless_local.runtimes import BackendBlock, Runtime

CODE = b'def foo(event, context):\n    return "hello world"\n'


def runtime(**process):
    return Runtime(
        id="python",
        version="3.11",
        server="python",
        dep_name="requirements.txt",
        suffix=".py",
        executable="python3.11",
        probe=(),
        expect="",
        image="",
        process=BackendBlock(**{k: tuple(v) if isinstance(v, list) else v for k, v in process.items()}),
    )


def inline(tmp_path, function, ctype, checksum="", deps=""):
    return specs.FunctionSpec(
        name="hello",
        runtime="python3.11",
        handler="hello.foo",
        origin="f.yaml: Function hello",
        function=function,
        content_type=ctype,
        checksum=checksum,
        deps=deps,
    )


def test_text_goes_to_mod_name_plus_suffix_with_the_deps_file(tmp_path):  # vector 20
    fn = inline(tmp_path, CODE.decode(), "text", specs.checksum_of(CODE), deps="requests\n")
    assert layout.layout_code(fn, runtime(), tmp_path) == "requests\n"
    assert (tmp_path / "hello.py").read_bytes() == CODE
    assert (tmp_path / "requirements.txt").read_text() == "requests\n"


def test_base64_zip_is_decoded_verified_and_unzipped(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.py", CODE)
        archive.writestr("lib/util.py", "X = 1\n")
    data = buffer.getvalue()
    fn = inline(tmp_path, base64.b64encode(data).decode(), "base64+zip", specs.checksum_of(data))
    layout.layout_code(fn, runtime(), tmp_path)
    assert (tmp_path / "hello.py").read_bytes() == CODE
    assert (tmp_path / "lib" / "util.py").exists()


def test_compressed_tar_with_deps_inside(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in (("hello.py", CODE), ("requirements.txt", b"six\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    data = buffer.getvalue()
    fn = inline(tmp_path, base64.b64encode(data).decode(), "base64+compressedtar+deps", deps="ignored\n")
    assert layout.layout_code(fn, runtime(), tmp_path) == "six\n"  # +deps: the archive's file wins


def test_unplain_content_type_keeps_the_bare_module_name(tmp_path):
    fn = inline(tmp_path, base64.b64encode(CODE).decode(), "base64+custom")
    layout.layout_code(fn, runtime(), tmp_path)
    assert (tmp_path / "hello").read_bytes() == CODE


def test_checksum_mismatch_is_a_user_error(tmp_path):
    fn = inline(tmp_path, CODE.decode(), "text", "sha256:" + "0" * 64)
    with pytest.raises(UserError, match="does not match the code"):
        layout.layout_code(fn, runtime(), tmp_path)


def test_deps_install_once_per_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    counter = tmp_path / "installs"
    rt = runtime(install=["sh", "-c", "echo run >> %s; cp {deps_file} {deps}/installed" % counter])
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello.py").write_bytes(CODE)
    (source / "requirements.txt").write_text("six\n")
    fn = objects.function_from_files(
        "hello", source / "hello.py", "python3.11", "hello.foo", deps_file=source / "requirements.txt"
    )
    first = prep.prepare(fn, rt, tmp_path / "state")
    second = prep.prepare(fn, rt, tmp_path / "state")
    assert first.deps_dir == second.deps_dir and (first.deps_dir / "installed").read_text() == "six\n"
    assert counter.read_text().count("run") == 1
    (source / "requirements.txt").write_text("six==1.16.0\n")
    third = prep.prepare(fn, rt, tmp_path / "state")
    assert third.deps_dir != first.deps_dir and counter.read_text().count("run") == 2


def test_the_install_sees_the_functions_files_its_deps_file_names(tmp_path, monkeypatch):
    """As in the pod's /kubeless: a library of the function's folder beside the deps file, once per content
    of both; a save of the handler alone installs nothing, a save of the library installs again."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    counter = tmp_path / "installs"
    rt = runtime(install=["sh", "-c", "echo run >> %s; cat libs/mylib/lib.py > {deps}/installed" % counter])
    source = tmp_path / "src"
    (source / "libs" / "mylib").mkdir(parents=True)
    (source / "hello.py").write_bytes(CODE)
    (source / "libs" / "mylib" / "lib.py").write_text("v1\n")
    (source / "requirements.txt").write_text("./libs/mylib\n")
    fn = objects.function_from_files("hello", source, "python3.11", "hello.foo")
    first = prep.prepare(fn, rt, tmp_path / "state")
    assert (first.deps_dir / "installed").read_text() == "v1\n"
    (source / "hello.py").write_bytes(CODE + b"# saved\n")
    second = prep.prepare(fn, rt, tmp_path / "state", previous=first)
    assert (second.deps_dir, counter.read_text().count("run")) == (first.deps_dir, 1)
    (source / "libs" / "mylib" / "lib.py").write_text("v2\n")
    third = prep.prepare(fn, rt, tmp_path / "state", previous=second)
    assert (third.deps_dir / "installed").read_text() == "v2\n" and counter.read_text().count("run") == 2


def test_a_deps_file_naming_what_the_pods_install_would_not_see_fails_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "libs" / "mylib").mkdir(parents=True)
    (tmp_path / "hello.py").write_bytes(CODE)
    (tmp_path / "requirements.txt").write_text("./libs/mylib\n")
    fn = objects.function_from_files(
        "hello", tmp_path / "hello.py", "python3.11", "hello.foo", deps_file=tmp_path / "requirements.txt"
    )
    with pytest.raises(prep.StepFailed, match="dependency install") as info:
        prep.prepare(fn, runtime(install=["true"]), tmp_path / "state")
    assert info.value.output.startswith("requirements.txt names ./libs/mylib, which is not among the function's")
    assert "the function's source is the file hello.py alone" in info.value.output


def test_a_changed_install_command_installs_anew(tmp_path, monkeypatch):
    """Deps a former command installed incompletely (J.1: pip skipped what the host had) are not reused."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "hello.py").write_bytes(CODE)
    (tmp_path / "requirements.txt").write_text("six\n")
    fn = objects.function_from_files(
        "hello", tmp_path / "hello.py", "python3.11", "hello.foo", deps_file=tmp_path / "requirements.txt"
    )
    old = prep.prepare(fn, runtime(install=["sh", "-c", "echo old > {deps}/by"]), tmp_path / "state")
    new = prep.prepare(fn, runtime(install=["sh", "-c", "echo new > {deps}/by"]), tmp_path / "state")
    assert old.deps_hash == new.deps_hash  # the same deps file
    assert (old.deps_dir / "by").read_text() == "old\n" and (new.deps_dir / "by").read_text() == "new\n"


def test_failed_install_raises_with_output_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    rt = runtime(install=["sh", "-c", "echo 'No matching distribution for nope'; exit 1"])
    (tmp_path / "hello.py").write_bytes(CODE)
    (tmp_path / "requirements.txt").write_text("nope\n")
    fn = objects.function_from_files(
        "hello", tmp_path / "hello.py", "python3.11", "hello.foo", deps_file=tmp_path / "requirements.txt"
    )
    for _ in range(2):  # a failed install leaves no .complete marker: the next prepare tries again
        with pytest.raises(prep.StepFailed, match="dependency install") as info:
            prep.prepare(fn, rt, tmp_path / "state")
        assert "No matching distribution" in info.value.output


def test_contract_env_vars(tmp_path, monkeypatch):  # vector 20
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    rt = runtime(env={"PYTHONPATH": "{deps}/lib/python{version}/site-packages:{install}"})
    (tmp_path / "hello.py").write_bytes(CODE)
    fn = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo", env=[("K", "V")])
    prepared = prep.prepare(fn, rt, tmp_path / "state")
    env = prepared.env(8080)
    assert (env["MOD_NAME"], env["FUNC_HANDLER"], env["FUNC_PORT"], env["FUNC_MEMORY_LIMIT"]) == (
        "hello",
        "foo",
        "8080",
        "0",
    )
    assert (env["FUNC_TIMEOUT"], env["FUNC_RUNTIME"], env["K"]) == ("180", "python3.11", "V")
    assert env["KUBELESS_INSTALL_VOLUME"] == str(prepared.install_link)
    assert env["PYTHONPATH"] == "%s/lib/python3.11/site-packages:%s" % (prepared.deps_dir, prepared.install_link)


def test_activate_switches_the_link_atomically_and_prune_keeps_the_current(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "hello.py").write_bytes(CODE)
    fn = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo")
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    prep.activate(first)
    second = prep.prepare(fn, runtime(), tmp_path / "state")
    assert first.install_link.resolve() == first.code_dir.resolve()  # not switched before activate
    prep.activate(second)
    prep.prune_generations(second)
    assert first.install_link.resolve() == second.code_dir.resolve()
    assert not first.code_dir.exists()


def test_compile_runs_once_per_content(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    counter = tmp_path / "compiles"
    rt = runtime(compile=["sh", "-c", "echo run >> %s; cp {install}/hello.py {build}/server" % counter])
    (tmp_path / "hello.py").write_bytes(CODE)
    fn = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo")
    first = prep.prepare(fn, rt, tmp_path / "state")
    again = prep.prepare(fn, rt, tmp_path / "state")  # the same code: a restart, an undo
    assert (again.build_dir / "server").read_bytes() == CODE and first.build_dir != again.build_dir
    assert counter.read_text().count("run") == 1
    (tmp_path / "hello.py").write_bytes(CODE + b"# edited\n")
    edited = prep.prepare(fn, rt, tmp_path / "state")
    assert (edited.build_dir / "server").read_bytes().endswith(b"# edited\n")
    assert counter.read_text().count("run") == 2


def test_a_compile_sees_the_functions_env_so_another_env_compiles_anew(tmp_path, monkeypatch):
    # The compile step runs with the Function's env (Kubeless' compile init container has it too): a
    # build made with another env is not this one's (it was reused from the cache before).
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    rt = runtime(compile=["sh", "-c", "echo ${{MODE:-none}} > {build}/server"])
    (tmp_path / "hello.py").write_bytes(CODE)
    plain = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo")
    strict = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo", env=[("MODE", "x")])
    assert (prep.prepare(plain, rt, tmp_path / "state").build_dir / "server").read_text() == "none\n"
    assert (prep.prepare(strict, rt, tmp_path / "state").build_dir / "server").read_text() == "x\n"


def test_this_machines_runtime_variables_reach_neither_a_build_nor_a_server_the_functions_own_do(tmp_path, monkeypatch):
    # A pod's env is its image's and the function's: GOARCH left from cross-compiling built a binary this machine
    # could not run, NODE_OPTIONS from a Yarn PnP shell crashed the server (tests/conformance: each language).
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GOARCH", "arm64")
    monkeypatch.setenv("NODE_OPTIONS", "--require ./.pnp.cjs")
    monkeypatch.setenv("KEPT", "yes")  # any other variable of this machine's stays (PATH, proxies, registries)
    rt = runtime(compile=["sh", "-c", "echo ${{GOARCH:-none}} ${{NODE_OPTIONS:-none}} $KEPT > {build}/server"])
    (tmp_path / "hello.py").write_bytes(CODE)
    own = [("NODE_OPTIONS", "--max-old-space-size=64")]
    fn = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "hello.foo", env=own)
    prepared = prep.prepare(fn, rt, tmp_path / "state")
    assert (prepared.build_dir / "server").read_text() == "none --max-old-space-size=64 yes\n"
    env = prepared.env(8080)
    assert ("GOARCH" in env, env["NODE_OPTIONS"], env["KEPT"]) == (False, "--max-old-space-size=64", "yes")


def host_function(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello.py").write_bytes(CODE)
    return objects.function_from_files("hello", tmp_path / "src" / "hello.py", "python3.11", "hello.foo")


def test_map_paths_maps_every_generation_of_the_function_to_the_users_file(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    root = first.root
    # the process pump keeps the start-time Prepared: lines of later generations pass through it
    text = 'File "%s/gen-10/hello.py", line 2; %s/build-3/x.go; %s/kubeless/data.txt; %s/gen-2/hello.pyc' % (
        root,
        root,
        root,
        root,
    )
    assert first.map_paths(text) == 'File "%s", line 2; %s/x.go; %s/data.txt; %s/hello.pyc' % (
        fn.source,
        fn.source.parent,
        fn.source.parent,
        fn.source.parent,
    )
    assert (
        first.map_paths("nothing to map in /elsewhere/gen-3/hello.py") == "nothing to map in /elsewhere/gen-3/hello.py"
    )


def test_prune_keeps_the_serving_and_the_last_good_generation(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    gens = [prep.prepare(fn, runtime(), tmp_path / "state") for _ in range(4)]
    prep.activate(gens[3])
    prep.prune_generations(gens[3], gens[2])
    assert [g.code_dir.exists() for g in gens] == [False, False, True, True]
    assert gens[3].install_link.resolve() == gens[3].code_dir.resolve()


def test_a_replaced_generation_stays_until_its_calls_are_over(tmp_path, monkeypatch):
    """J.7: a call in flight across two saves still reads its generation's files; the timeout bounds it."""
    fn = host_function(tmp_path, monkeypatch)
    fn = objects.function_from_files("hello", fn.source, "python3.11", "hello.foo", timeout="5")
    clock = [1000.0]
    monkeypatch.setattr(prep.time, "time", lambda: clock[0])
    gens = [prep.prepare(fn, runtime(), tmp_path / "state")]
    for _ in range(2):  # two saves, one second apart
        gens.append(prep.prepare(fn, runtime(), tmp_path / "state", previous=gens[-1]))
        prep.prune_generations(gens[-1], gens[-2])
        clock[0] += 1
    assert [g.code_dir.exists() for g in gens] == [True, True, True]
    clock[0] = 1000.0 + 5 + prep.CALL_MARGIN + 0.5  # gen-1's calls are over, gen-2's may still run
    gens.append(prep.prepare(fn, runtime(), tmp_path / "state", previous=gens[-1]))
    prep.prune_generations(gens[-1], gens[-2])
    assert [g.code_dir.exists() for g in gens] == [False, True, True, True]
    assert not (gens[0].root / "retired" / "gen-1").exists()
    # A restarted server runs no call of an older generation: only the current one stays.
    gens.append(prep.prepare(fn, runtime(), tmp_path / "state", previous=gens[-1]))
    prep.prune_generations(gens[-1], gens[-2], calls_may_run=False)
    assert [g.code_dir.exists() for g in gens] == [False, False, False, False, True]
    assert not list((gens[0].root / "retired").iterdir())


def test_removed_generations_leave_at_once_and_are_deleted_in_the_background(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    gens = [prep.prepare(fn, runtime(), tmp_path / "state") for _ in range(3)]
    leftover = gens[0].root / "trash" / "gen-0.1.1"  # what a session killed while deleting left behind
    leftover.mkdir(parents=True)
    prep.prune_generations(gens[2], gens[1], calls_may_run=False)
    assert [g.code_dir.exists() for g in gens] == [False, False, True]  # the names are free at once
    assert wait_for(lambda: not any((gens[0].root / "trash").iterdir()))


def test_a_failed_prepare_leaves_no_generation_behind(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    rt = runtime(check=["sh", "-c", "echo 'SyntaxError'; exit 1"])
    with pytest.raises(prep.StepFailed) as info:
        prep.prepare(fn, rt, tmp_path / "state")
    assert info.value.step == prep.STEP_CHECK == "check"
    assert not list((tmp_path / "state" / "functions" / "hello").glob("gen-*"))


def test_a_failed_runtime_setup_is_its_own_step_and_is_retried(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    rt = runtime(setup=["sh", "-c", "echo 'Could not reach the package index'; exit 1"])
    for _ in range(2):
        with pytest.raises(prep.StepFailed) as info:
            prep.prepare(fn, rt, tmp_path / "state")
        assert info.value.step == "runtime setup" and "package index" in info.value.output


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"])
def test_a_local_archive_is_unpacked_not_copied_as_the_module(tmp_path, suffix):
    """`run x.zip` used to copy the archive bytes as hello.py (`source code string cannot contain null bytes`)."""
    archive_path = tmp_path / ("code" + suffix)
    if suffix == ".zip":
        with zipfile.ZipFile(archive_path, "w") as archive:
            archive.writestr("hello.py", CODE)
    else:
        mode = {".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}[suffix]
        with tarfile.open(archive_path, mode) as archive:
            info = tarfile.TarInfo("hello.py")
            info.size = len(CODE)
            archive.addfile(info, io.BytesIO(CODE))
    fn = objects.function_from_files("hello", archive_path, "python3.11", "hello.foo")
    target = tmp_path / "out"
    target.mkdir()
    layout.layout_code(fn, runtime(), target)
    assert (target / "hello.py").read_bytes() == CODE


def test_a_broken_local_archive_names_the_file(tmp_path):
    archive_path = tmp_path / "code.zip"
    archive_path.write_bytes(b"not a zip")
    fn = objects.function_from_files("hello", archive_path, "python3.11", "hello.foo")
    with pytest.raises(UserError, match="code.zip: not a valid zip archive"):
        layout.layout_code(fn, runtime(), tmp_path)


def test_secret_volumes_of_a_manifest_are_found_and_a_local_process_is_told_where(tmp_path):
    doc = {
        "apiVersion": "kubeless.io/v1beta1",
        "kind": "Function",
        "metadata": {"name": "hello"},
        "spec": {
            "runtime": "python3.11",
            "handler": "hello.foo",
            "function": CODE.decode(),
            "deployment": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"volumeMounts": [{"name": "api-key-vol", "mountPath": "/api-key"}]}],
                            "volumes": [{"name": "api-key-vol", "secret": {"secretName": "api-key"}}],
                        }
                    }
                }
            },
        },
    }
    fn = specs.parse_function(doc, tmp_path / "f.yaml")
    assert fn.secrets == [("api-key", "/api-key")]
    folder = tmp_path / "secrets" / "api-key"
    folder.mkdir(parents=True)
    lines = []
    prepared = prep.prepare(fn, runtime(), tmp_path / "state", lines.append)
    assert prepared.env(8080)["KUBELESS_LOCAL_SECRET_API_KEY"] == str(folder)
    assert lines[0] == (
        "secret api-key (mounted at /api-key in the pod): a local process reads it from %s, "
        "path in $KUBELESS_LOCAL_SECRET_API_KEY" % folder
    )


def folder_function(tmp_path, monkeypatch, files):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src, objects.function_from_files("hello", src, "python3.11", "hello.foo")


def test_a_new_generation_links_unchanged_files_of_the_previous_one_and_copies_the_rest(tmp_path, monkeypatch):
    src, fn = folder_function(tmp_path, monkeypatch, {"hello.py": CODE.decode(), "lib/a.py": "A = 1\n"})
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    (src / "hello.py").write_text(CODE.decode() + "# saved\n")
    second = prep.prepare(fn, runtime(), tmp_path / "state", previous=first)
    shared, edited = (second.code_dir / "lib" / "a.py").stat(), (second.code_dir / "hello.py").stat()
    assert shared.st_ino == (first.code_dir / "lib" / "a.py").stat().st_ino  # one file, two generations
    assert shared.st_ino != (src / "lib" / "a.py").stat().st_ino  # never the user's own file
    assert edited.st_ino != (first.code_dir / "hello.py").stat().st_ino
    assert (second.code_dir / "hello.py").read_text().endswith("# saved\n")
    assert (first.code_dir / "hello.py").read_bytes() == CODE


def test_writes_to_the_users_files_never_reach_a_generation(tmp_path, monkeypatch):
    src, fn = folder_function(tmp_path, monkeypatch, {"hello.py": CODE.decode(), "data.txt": "v0\n"})
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    second = prep.prepare(fn, runtime(), tmp_path / "state", previous=first)
    with open(src / "data.txt", "r+") as f:  # an editor that writes in place, same size
        f.write("v1\n")
    assert (first.code_dir / "data.txt").read_text() == (second.code_dir / "data.txt").read_text() == "v0\n"
    third = prep.prepare(fn, runtime(), tmp_path / "state", previous=second)
    assert (third.code_dir / "data.txt").read_text() == "v1\n"
    assert (second.code_dir / "data.txt").read_text() == "v0\n"


def test_a_file_changed_in_a_generation_or_in_mode_is_copied_again(tmp_path, monkeypatch):
    src, fn = folder_function(tmp_path, monkeypatch, {"hello.py": CODE.decode(), "cache.txt": "clean\n"})
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    (first.code_dir / "cache.txt").write_text("dirty\n")  # the function wrote into its own code folder
    (src / "hello.py").chmod(0o755)
    second = prep.prepare(fn, runtime(), tmp_path / "state", previous=first)
    assert (second.code_dir / "cache.txt").read_text() == "clean\n"  # as the user's folder has it
    assert (second.code_dir / "hello.py").stat().st_mode & 0o777 == 0o755


def test_a_generation_opened_to_the_containers_user_is_still_linked_from(tmp_path, monkeypatch):
    """The docker backend makes the code writable by all (/kubeless is the pod's emptyDir): a save still links
    the files that did not change, the new generation opened the same way."""
    _, fn = folder_function(tmp_path, monkeypatch, {"hello.py": CODE.decode(), "lib/a.py": "A = 1\n"})
    first = prep.prepare(fn, runtime(), tmp_path / "state")
    prep.open_to_all([first.root], [], [first.code_dir])
    assert (first.code_dir / "lib").stat().st_mode & 0o777 == 0o777
    assert (first.code_dir / "lib" / "a.py").stat().st_mode & 0o777 == 0o666
    second = prep.prepare(fn, runtime(), tmp_path / "state", previous=first)
    assert (second.code_dir / "lib" / "a.py").stat().st_ino == (first.code_dir / "lib" / "a.py").stat().st_ino


def test_a_deps_file_written_over_the_folders_own_leaves_the_previous_generation_alone(tmp_path, monkeypatch):
    src, _ = folder_function(tmp_path, monkeypatch, {"hello.py": CODE.decode(), "requirements.txt": "six\n"})
    (tmp_path / "reqs.txt").write_text("requests\n")
    fn = objects.function_from_files("hello", src, "python3.11", "hello.foo", deps_file=tmp_path / "reqs.txt")
    rt = runtime(install=["true"])
    first = prep.prepare(fn, rt, tmp_path / "state")
    (tmp_path / "reqs.txt").write_text("requests==2.31.0\n")
    second = prep.prepare(fn, rt, tmp_path / "state", previous=first)
    assert (first.code_dir / "requirements.txt").read_text() == "requests\n"
    assert (second.code_dir / "requirements.txt").read_text() == "requests==2.31.0\n"


# ---------------------------------------------------------------- a Generation's life


def test_a_generation_serves_once_switched_and_its_predecessor_retires_when_kept(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    first = prep.Generation(prep.prepare(fn, runtime(), tmp_path / "state"))
    first.switch()
    second = prep.Generation(prep.prepare(fn, runtime(), tmp_path / "state", previous=first.prepared), first.prepared)
    link = first.prepared.install_link
    assert link.resolve() == first.prepared.code_dir.resolve()  # prepared is not serving yet
    second.switch()
    assert link.resolve() == second.prepared.code_dir.resolve()
    second.keep(calls_may_run=False)  # a new server: no call of the first generation runs any more
    assert not first.prepared.code_dir.exists() and second.prepared.code_dir.exists()


def test_a_discarded_generation_gives_the_links_back_to_the_one_it_replaces_and_leaves(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    rt = runtime(compile=["sh", "-c", "cp {install}/hello.py {build}/server"])
    good = prep.Generation(prep.prepare(fn, rt, tmp_path / "state"))
    good.switch()
    (tmp_path / "src" / "hello.py").write_bytes(CODE + b"# does not load\n")
    bad = prep.Generation(prep.prepare(fn, rt, tmp_path / "state", previous=good.prepared), good.prepared)
    bad.switch()
    bad.discard()
    assert good.prepared.install_link.resolve() == good.prepared.code_dir.resolve()
    assert good.prepared.build_link.resolve() == good.prepared.build_dir.resolve()
    assert not bad.prepared.code_dir.exists() and not bad.prepared.build_dir.exists()
    assert good.prepared.code_dir.exists() and good.prepared.build_dir.exists()


def test_only_a_code_change_of_a_signal_runtime_reloads_in_place(tmp_path, monkeypatch):
    fn = host_function(tmp_path, monkeypatch)
    signal, restart = runtime(reload="signal"), runtime(reload="restart")
    first = prep.prepare(fn, signal, tmp_path / "state")

    def successor(spec, rt):
        return prep.Generation(prep.prepare(spec, rt, tmp_path / "state", previous=first), first)

    assert not prep.Generation(first).reloads_in_place  # the first generation: a server starts on it
    assert successor(fn, signal).reloads_in_place
    assert not successor(fn, restart).reloads_in_place
    changed_manifest = objects.function_from_files("hello", fn.source, "python3.11", "hello.foo", env=[("K", "V")])
    assert not successor(changed_manifest, signal).reloads_in_place


@pytest.mark.skipif(not hasattr(__import__("sys"), "stdlib_module_names"), reason="Python 3.9 cannot name them")
def test_a_handler_module_named_as_a_standard_module_is_refused_in_one_line(tmp_path, monkeypatch):
    # /kubeless comes before the standard library on PYTHONPATH (the controller sets it so): a `json.py` handler is
    # what the runtime's own `import json` found, and the server crashed in a loop with a traceback about json
    _, fn = folder_function(tmp_path, monkeypatch, {"json.py": CODE.decode()})
    fn = specs.FunctionSpec(**{**fn.__dict__, "handler": "json.foo"})
    with pytest.raises(UserError) as error:
        prep.prepare(fn, runtime(), tmp_path / "state")
    assert str(error.value) == (
        "handler json.foo: json.py hides Python's standard module `json` (the function's folder comes first on "
        "PYTHONPATH, in the pod too), which the runtime imports: rename the file and the handler"
    )


@pytest.mark.skipif(not hasattr(__import__("sys"), "stdlib_module_names"), reason="Python 3.9 cannot name them")
def test_a_helper_named_as_a_standard_module_is_said_once(tmp_path, monkeypatch):
    files = {"hello.py": CODE.decode(), "email.py": "", "random/__init__.py": "", "test.py": "", "helpers.py": ""}
    _, fn = folder_function(tmp_path, monkeypatch, files)
    said = []
    first = prep.prepare(fn, runtime(), tmp_path / "state", said.append)
    assert [line for line in said if "hides" in line] == [
        "email.py hides Python's standard module `email` (the function's folder comes first on PYTHONPATH, in the "
        "pod too); rename it if the function does not start",
        "random/ hides Python's standard module `random` (the function's folder comes first on PYTHONPATH, in the "
        "pod too); rename it if the function does not start",
    ]  # not test.py: nothing imports Python's own tests
    said.clear()
    prep.prepare(fn, runtime(), tmp_path / "state", said.append, previous=first)
    assert not [line for line in said if "hides" in line]  # said once, not on every save


@pytest.mark.parametrize("where", ["file", "inline"])
def test_a_module_in_a_folder_needs_a_function_of_folders(tmp_path, where):
    """handler src/handler.foo: /kubeless/src/handler.py exists only where the function has folders (a folder
    source, an archive); for one file, one line says so instead of a missing folder of the layout."""
    (tmp_path / "hello.py").write_bytes(CODE)
    if where == "file":
        fn = objects.function_from_files("hello", tmp_path / "hello.py", "python3.11", "src/hello.foo")
    else:
        fn = dataclasses.replace(inline(tmp_path, CODE.decode(), "text"), handler="src/hello.foo")
    (tmp_path / "gen").mkdir()
    with pytest.raises(UserError, match=r"spec.handler src/hello.foo names src/hello.py in a folder, but the function"):
        layout.layout_code(fn, runtime(), tmp_path / "gen")


@pytest.mark.parametrize(
    "server, suffix, handler, beside",
    [
        ("python", ".py", "import util\nfrom models import Order\nimport os\n", ["util.py", "models/"]),
        (
            "nodejs",
            ".js",
            "const u = require('./util');\nimport {x} from './lib/models.js';\n",
            ["util.js", "lib/models.js"],
        ),
        ("ruby", ".rb", "require_relative 'util'\nrequire './models'\nrequire 'json'\n", ["util.rb", "models.rb"]),
        (
            "php",
            ".php",
            "<?php\nrequire_once __DIR__ . '/util.php';\ninclude 'models.php';\n",
            ["util.php", "models.php"],
        ),
    ],
)
def test_a_one_file_function_importing_a_file_beside_it_is_told_it_needs_its_folder(
    tmp_path, server, suffix, handler, beside
):
    """The scaffold's function is its handler file alone: a module the user adds beside it is not in the pod's
    /kubeless (nor here), and the import fails. One line says why and what brings it."""
    (tmp_path / ("handler" + suffix)).write_text(handler)
    for name in beside:
        (tmp_path / name.rstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            (tmp_path / name / "__init__.py").parent.mkdir()
            (tmp_path / name / "__init__.py").write_text("")
        else:
            (tmp_path / name).write_text("")
    (tmp_path / ("unused" + suffix)).write_text("")
    rt = dataclasses.replace(runtime(), server=server, suffix=suffix)
    fn = objects.function_from_files("hello", tmp_path / ("handler" + suffix), "python3.11", "handler.foo")
    [line] = layout.left_behind(fn, rt)
    assert line == (
        "%s imports %s from beside it, but the function's source is the file handler%s alone: in the pod only that"
        " file is in /kubeless, so the import fails; make the folder the source (local.kubeless.io/source: .)"
        % (tmp_path / ("handler" + suffix), ", ".join(sorted(beside)), suffix)
    )
    folder = objects.function_from_files("hello", tmp_path, "python3.11", "handler.foo")
    assert layout.left_behind(folder, rt) == []  # the folder as the source: they are there

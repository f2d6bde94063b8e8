"""DockerBackend logic against a fake docker client: container options, resolve, cleanup, reload, logs."""

import dataclasses
import hashlib
import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from docker.errors import ImageNotFound, NotFound

from kubeless_local import errors
from kubeless_local import kubeless_objects as objects
from kubeless_local import spec as spec_module
from kubeless_local.commands.output import in_words, worded
from kubeless_local.emulator import docker as dk
from kubeless_local.emulator import images
from kubeless_local.emulator.base import Instance, State
from kubeless_local.emulator.images import host
from kubeless_local.emulator.logs import LogHub
from kubeless_local.errors import Unavailable, UserError
from kubeless_local.runtimes import Catalog

CATALOG = Catalog()


class FakeImage:
    def __init__(self, tag, labels=None):
        self.tags, self.labels = [tag], labels or {}
        self.id = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()  # one per image, as an engine's are
        self.short_id = "sha256:abababababab"
        self.attrs = {"Size": 123_000_000, "Created": "2026-01-01T00:00:00.000Z"}


class FakeContainer:
    def __init__(self, client, options):
        self.client, self.options = client, options
        self.id = "c0ffee" * 10
        self.name = options.get("name")
        self.labels = options.get("labels") or {}
        self.started = self.removed = False
        self.signals = []
        self.output = []  # (stdout, stderr) chunks the attach stream yields
        self.done = threading.Event()
        self.attrs = {"State": {"Pid": 4242}}

    def attach(self, **kwargs):
        assert kwargs["demux"] and kwargs["stream"]

        def stream():
            yield from self.output
            self.done.wait()  # the stream ends when the container is removed (or exits: done set)

        return stream()

    def start(self):
        self.started = True

    def reload(self):
        pass

    def kill(self, signal=None):
        self.signals.append(signal)

    def wait(self, timeout=None):
        return {"StatusCode": 3}

    def remove(self, force=False):
        self.removed = True
        self.done.set()
        self.client.containers.all.pop(self.name, None)


class FakeContainers:
    def __init__(self, client):
        self.client, self.all, self.created = client, {}, []

    def create(self, image, command=None, **options):
        options.update(image=image, command=command)
        container = FakeContainer(self.client, options)
        self.all[container.name] = container
        self.created.append(container)
        return container

    def get(self, name):
        if name not in self.all:
            raise NotFound("no such container")
        return self.all[name]

    def list(self, all=False, filters=None, sparse=False):
        key, value = filters["label"].split("=", 1)
        return [c for c in list(self.all.values()) if c.labels.get(key) == value]


class FakeImages:
    def __init__(self, present):
        self.present = present

    def get(self, tag):
        if tag not in self.present:
            raise ImageNotFound("no such image")
        return self.present[tag]


class FakeNetwork:
    def __init__(self, name):
        self.name = name


class FakeNetworks:
    def __init__(self, names):
        self.names, self.asked = names, 0

    def list(self, names=None):
        self.asked += 1
        return [FakeNetwork(n) for n in self.names if any(wanted in n for wanted in names or [""])]  # substrings


class FakeClient:
    def __init__(self, present=None, networks=("host", "none")):
        self.networks = FakeNetworks(list(networks))
        self.containers = FakeContainers(self)
        self.images = FakeImages(
            present
            if present is not None
            else {"kubeless-local/python:3.11": FakeImage("kubeless-local/python:3.11", {images.OWN_LABEL: "python"})}
        )


def python_function(tmp_path, **kwargs):
    source = tmp_path / "src" / "handler.py"
    source.parent.mkdir(exist_ok=True)
    source.write_text("def handler(event, context):\n    return 'hi'\n")
    return objects.function_from_files("hello", source, "python3.11", "handler.handler", **kwargs)


def prepared_for(backend, tmp_path, fn):
    runtime, _ = backend.resolve(fn, CATALOG)
    return backend.prepare(fn, runtime, tmp_path / "state")


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """A backend on the host's network (the lifecycle tests below; the other modes: test_docker_network.py)."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host, "registry", lambda name: "")  # no host tools asked (npm is slow to answer)
    for name in ("PYTHON3.11_RUNTIME", "PYTHON3.8_RUNTIME", "NODEJS20_RUNTIME", "KUBELESS_LOCAL_RUNTIME_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network="host")


def test_security_context_defaults_to_kubeless_uid_and_follows_the_deployment(tmp_path):
    fn = python_function(tmp_path)
    assert dk.security_context(fn) == (1000, 1000, [])
    fn.deployment["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 2000, "fsGroup": 3000}
    assert dk.security_context(fn) == (2000, 2000, ["3000"])
    fn.deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0, "runAsGroup": 0}
    assert dk.security_context(fn) == (0, 0, ["3000"])


@pytest.mark.parametrize(
    "cpu, nano_cpus",
    [("500m", 500_000_000), ("1", 1_000_000_000), ("1m", 10_000_000), ("512", (os.cpu_count() or 1) * 10**9)],
)
def test_a_cpu_limit_holds_the_container_as_the_pod(backend, tmp_path, cpu, nano_cpus):
    """The engine takes 0.01 CPU at the least and its CPU count at the most; Kubernetes takes other limits."""
    fn = python_function(tmp_path, cpu=cpu)
    options = backend.container_options(
        Instance(name="hello", runtime="python3.11", port=1), prepared_for(backend, tmp_path, fn)
    )
    assert options["nano_cpus"] == nano_cpus


def test_no_cpu_limit_no_cpu_option(backend, tmp_path):
    fn = python_function(tmp_path)
    options = backend.container_options(
        Instance(name="hello", runtime="python3.11", port=1), prepared_for(backend, tmp_path, fn)
    )
    assert "nano_cpus" not in options


def test_container_options_follow_the_pod_layout(backend, tmp_path):
    fn = python_function(tmp_path, memory="64Mi", env=[("MY_VAR", "1")])
    prepared = prepared_for(backend, tmp_path, fn)
    instance = Instance(name="hello", runtime="python3.11", port=18123)
    options = backend.container_options(instance, prepared)
    assert options["network_mode"] == "host"
    assert options["user"] == "1000:1000"
    assert options["mem_limit"] == 64 * 2**20
    env = options["environment"]
    assert env["FUNC_MEMORY_LIMIT"] == "64Mi" and env["FUNC_PORT"] == "18123" and env["MY_VAR"] == "1"
    assert env["KUBELESS_INSTALL_VOLUME"] == "/kubeless" and env["KUBELESS_LOCAL_BIND"] == "127.0.0.1"
    assert env["MOD_NAME"] == "handler" and env["FUNC_HANDLER"] == "handler" and env["FUNC_RUNTIME"] == "python3.11"
    assert env["PYTHONPATH"].startswith("/kubeless-local/deps/lib/python3.11/site-packages")
    volumes = options["volumes"]
    # read-write: /kubeless (a link to the current generation in it) is a pod's emptyDir, which the function may write
    assert volumes[str(prepared.root.resolve())] == {"bind": dk.FUNCTION_MOUNT, "mode": "rw"}
    assert volumes[str(prepared.deps_dir)] == {"bind": dk.DEPS_MOUNT, "mode": "ro"}
    assert [v["bind"] for v in volumes.values() if v["mode"] != "ro"] == [dk.FUNCTION_MOUNT]
    assert options["labels"][dk.LABEL_FUNCTION] == "hello"
    assert options["labels"][dk.LABEL_PROJECT] == str((tmp_path / "state").resolve())
    assert options["command"] == ["python3", "-u", "/runtime/kubeless.py"]


def test_missing_image_says_how_to_build_it(backend, tmp_path):
    backend.client.images.present.clear()
    with pytest.raises(errors.NotFound, match=r"the python3\.11 image \S+ is not built$") as missing:
        backend.resolve(python_function(tmp_path), CATALOG)
    assert (missing.value.what, missing.value.name) == ("runtime image", "python3.11")
    assert re.search(r"runtime build python3.11.*--backend process", str(worded(missing.value)))  # the CLI's words


def test_an_image_of_older_runtime_files_is_a_notice_the_cli_adds_the_rebuild_to(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(images, "is_stale", lambda image, runtime: True)
    runtime, notice = backend.resolve(python_function(tmp_path), CATALOG)
    image = images.image_for(runtime).image
    assert isinstance(notice, errors.Notice) and (notice.what, notice.name) == ("runtime image", "python3.11")
    assert notice == "image %s was built from other runtime files than this kubeless-local's" % image
    assert in_words(notice) == notice + "; rebuild it with `kubeless-local runtime build python3.11`"
    legacy = objects.function_from_files("old", tmp_path / "src" / "handler.py", "python3.7", "handler.handler")
    assert in_words(backend.resolve(legacy, CATALOG)[1]) == (
        "python3.7 is a legacy Kubeless runtime; running it as python3.11\n"
        "image %s was built from other runtime files than this kubeless-local's; rebuild it with "
        "`kubeless-local runtime build python3.11`" % image
    )


def test_a_runtime_without_an_image_says_what_runs_it(backend, tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text("runtimes:\n  python:\n    versions:\n      - {version: '3.12', executable: python3.12}\n")
    fn = objects.function_from_files("f", tmp_path / "f.py", "python3.12", "f.main")
    with pytest.raises(
        Unavailable, match=r": python3\.12 has no runtime image \(it runs where this machine has the toolchain\)$"
    ) as none:
        backend.resolve(fn, Catalog(path))
    assert (none.value.what, none.value.name) == ("runtime image", "python3.12")
    assert str(worded(none.value)).endswith(
        "(it runs where this machine has the toolchain); use --backend process, set PYTHON3.12_RUNTIME, or give a "
        "runtime image"
    )


def test_env_override_picks_another_image(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "kubeless/python:3.8")
    with pytest.raises(
        errors.NotFound, match="kubeless/python:3.8 is not present and cannot be pulled here"
    ) as missing:
        backend.resolve(python_function(tmp_path), CATALOG)
    assert (missing.value.what, missing.value.name) == ("image", "kubeless/python:3.8")
    assert str(missing.value).endswith("; `docker build`/`docker pull` it")  # the flag is the CLI's:
    assert str(worded(missing.value)).endswith("; `docker build`/`docker pull` it or use --backend process")
    backend.client.images.present["kubeless/python:3.8"] = FakeImage("kubeless/python:3.8")
    fn = python_function(tmp_path)
    prepared = prepared_for(backend, tmp_path, fn)
    assert (prepared.image, prepared.own) == ("kubeless/python:3.8", False)
    options = backend.container_options(Instance(name="hello", runtime="python3.11", port=1), prepared)
    [code] = [folder for folder, mount in options["volumes"].items() if mount["bind"] == "/kubeless"]
    assert options["volumes"][code]["mode"] == "rw"  # a copy of this generation: see the test below
    assert "command" not in options  # the image's own CMD


def test_kubeless_is_writable_in_another_image_through_a_copy_of_the_generation(backend, tmp_path):
    """/kubeless is an emptyDir in a pod, writable by the function: here a copy per container start, so a
    write reaches neither the user's files nor the generation (its files are hard-linked to the next)."""
    backend.client.images.present["me/fn:1"] = FakeImage("me/fn:1")
    source = python_function(tmp_path).source
    fn = objects.function_from_files("hello", source, "python3.11", "handler.handler", image="me/fn:1")
    prepared = prepared_for(backend, tmp_path, fn)
    instance = Instance(name="hello", runtime="python3.11", port=1)
    volumes = backend.container_options(instance, prepared)["volumes"]
    [code] = [Path(folder) for folder, mount in volumes.items() if mount["bind"] == "/kubeless"]
    assert volumes[str(code)]["mode"] == "rw" and code != prepared.code_dir.resolve()
    assert (code / "handler.py").read_text() == (prepared.code_dir / "handler.py").read_text()
    (code / "handler.py").write_text("changed by the function")
    assert "changed" not in (prepared.code_dir / "handler.py").read_text() + fn.source.read_text()
    again = backend.container_options(instance, prepared)["volumes"]  # the next start: a fresh copy
    [fresh] = [Path(folder) for folder, mount in again.items() if mount["bind"] == "/kubeless"]
    assert "changed" not in (fresh / "handler.py").read_text()


def legacy_python_function(tmp_path):
    fn = python_function(tmp_path)
    return dataclasses.replace(fn, runtime="python3.8")


def test_an_override_of_the_functions_own_runtime_version_is_honoured(backend, tmp_path, monkeypatch):
    """`runtime: python3.8` with PYTHON3.8_RUNTIME: that image, run as python3.8 (its paths), said why."""
    backend.client.images.present["kubeless/python:3.8"] = FakeImage("kubeless/python:3.8")
    monkeypatch.setenv("PYTHON3.8_RUNTIME", "kubeless/python:3.8")
    fn = legacy_python_function(tmp_path)
    runtime, notice = backend.resolve(fn, CATALOG)
    assert runtime.name == "python3.8" and runtime.server == "python"
    assert "kubeless/python:3.8" in notice and "env PYTHON3.8_RUNTIME" in notice
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    assert (prepared.image, prepared.own) == ("kubeless/python:3.8", False)
    env = backend.container_options(Instance(name="hello", runtime="python3.8", port=1), prepared)["environment"]
    assert (
        env["PYTHONPATH"].startswith(dk.DEPS_MOUNT + "/lib/python3.8/site-packages:")
        and "3.11" not in env["PYTHONPATH"]
    )
    assert env["FUNC_RUNTIME"] == "python3.8"
    instance = Instance(name="hello", runtime="python3.8", port=18127)
    assert backend.describe(instance) == {}  # nothing runs yet
    backend.start(instance, prepared)
    assert backend.describe(instance) == {"image": "kubeless/python:3.8", "image_source": "env PYTHON3.8_RUNTIME"}
    backend.stop(instance)


def test_without_an_override_a_legacy_version_runs_in_our_substitute(backend, tmp_path):
    runtime, notice = backend.resolve(legacy_python_function(tmp_path), CATALOG)
    assert runtime.name == "python3.11" and "legacy Kubeless runtime; running it as python3.11" in notice


def test_a_runtime_images_version_of_the_functions_own_runtime_brings_its_env(backend, tmp_path, monkeypatch):
    """The runtime phase's env of the entry in force (as the controller sets it on the container); a path
    under the install volume is looked up in both halves of it here: the deps mount, then the code."""
    entries = [
        {
            "ID": "python",
            "versions": [
                {
                    "version": "3.8",
                    "images": [
                        {
                            "phase": "runtime",
                            "image": "kubeless/python:3.8",
                            "env": {
                                "PYTHONPATH": "$(KUBELESS_INSTALL_VOLUME)/lib/python3.8/site-packages:$(KUBELESS_INSTALL_VOLUME)"
                            },
                        }
                    ],
                }
            ],
        }
    ]
    path = tmp_path / "runtime-images.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    backend.client.images.present["kubeless/python:3.8"] = FakeImage("kubeless/python:3.8")
    fn = legacy_python_function(tmp_path)
    runtime, notice = backend.resolve(fn, CATALOG)
    assert runtime.name == "python3.8" and str(path) in notice
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    env = backend.container_options(Instance(name="hello", runtime="python3.8", port=1), prepared)["environment"]
    assert env["PYTHONPATH"] == (
        dk.DEPS_MOUNT + "/lib/python3.8/site-packages:/kubeless/lib/python3.8/site-packages:/kubeless"
    )


def test_custom_image_with_unknown_runtime_mounts_the_file_without_extension(backend, tmp_path):
    backend.client.images.present["me/fn:1"] = FakeImage("me/fn:1")
    source = tmp_path / "fn.src"
    source.write_text("code")
    fn = objects.function_from_files("custom", source, "cobol1", "fn.main", image="me/fn:1")
    runtime, _ = backend.resolve(fn, CATALOG)
    assert runtime.suffix == "" and runtime.reload == "restart"
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    assert (prepared.code_dir / "fn").read_text() == "code"
    assert prepared.image == "me/fn:1" and not prepared.own


IMAGE_ONLY = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: webserver}
spec:
  deployment:
    spec:
      template:
        spec:
          containers: [{image: "bitnami/tomcat:9.0"}]
"""


def test_a_function_manifest_with_only_an_image_is_valid_and_runs_in_it(backend, tmp_path):
    """The seed's custom runtime: no handler, no runtime, no code; the image is the function."""
    manifest = tmp_path / "function.yaml"
    manifest.write_text(IMAGE_ONLY)
    [fn] = spec_module.load(manifest).functions
    assert (fn.handler, fn.runtime, fn.image) == ("", "", "bitnami/tomcat:9.0")
    backend.client.images.present["bitnami/tomcat:9.0"] = FakeImage("bitnami/tomcat:9.0")
    runtime, _ = backend.resolve(fn, CATALOG)
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    assert (prepared.image, prepared.own) == ("bitnami/tomcat:9.0", False)
    assert list(prepared.code_dir.iterdir()) == []  # no code: an empty /kubeless
    env = backend.container_options(Instance(name="webserver", runtime="", port=1), prepared)["environment"]
    assert env["FUNC_HANDLER"] == "" and env["MOD_NAME"] == "" and env["FUNC_RUNTIME"] == ""


def test_a_handler_is_still_required_with_code(tmp_path):
    manifest = tmp_path / "function.yaml"
    manifest.write_text(IMAGE_ONLY.replace("spec:\n  deployment", "spec:\n  function: x\n  deployment", 1))
    with pytest.raises(UserError, match="spec.handler is required"):
        spec_module.load(manifest).raise_first()


def test_leftovers_of_a_crashed_run_are_removed_once(backend, tmp_path):
    state = (tmp_path / "state").resolve()
    left = backend.client.containers.create("x", name="old", labels={dk.LABEL_PROJECT: str(state)})
    other = backend.client.containers.create("x", name="other", labels={dk.LABEL_PROJECT: "/elsewhere"})
    prepared_for(backend, tmp_path, python_function(tmp_path))
    assert left.removed and not other.removed
    again = backend.client.containers.create("x", name="new", labels={dk.LABEL_PROJECT: str(state)})
    prepared_for(backend, tmp_path, python_function(tmp_path))
    assert not again.removed  # swept once per project, not on every prepare


def test_start_streams_logs_and_control_lines_then_signal_reload_and_stop(backend, tmp_path):
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18124)
    name = backend.container_name(prepared)
    stale = backend.client.containers.create("x", name=name)  # same name from an earlier run
    original_create = backend.client.containers.create

    def create(image, command=None, **options):
        container = original_create(image, command, **options)
        container.output = [
            (b'@kubeless-local {"event": "ready", "generation": 0}\nserving on ', None),
            (b"18124\n", b"a warning\n"),
        ]
        return container

    backend.client.containers.create = create
    instance.set_state(State.STARTING)
    lines = backend.logs.subscribe("hello")
    backend.start(instance, prepared)
    assert stale.removed
    assert instance.wait_for(lambda i: i.state == State.READY, 5)
    assert instance.pid == 4242 and backend.alive(instance)
    container = instance.handle.container
    assert container.started
    texts = set()
    while not {"serving on 18124", "a warning"} <= texts:  # each line within 5 s, else queue.Empty fails the test
        texts.add(lines.get(timeout=5).text)
    assert backend.reload(instance, prepared) == "signal"
    assert container.signals == ["SIGHUP"]
    backend.stop(instance)
    assert container.removed and not backend.alive(instance)


def test_a_container_that_exits_is_reported_crashed(backend, tmp_path):
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18125)
    instance.set_state(State.STARTING)
    original_create = backend.client.containers.create

    def create(image, command=None, **options):
        container = original_create(image, command, **options)
        container.output = [(b"Traceback: boom\n", None)]
        container.done.set()  # the stream ends: the container exited
        return container

    backend.client.containers.create = create
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.state == State.CRASHED, 5)
    assert "exited with code 3" in instance.error and "boom" in instance.error
    backend.stop(instance)


def test_a_container_that_exits_after_a_failed_reload_is_restarted(backend, tmp_path):
    # It served the last good code in CompileError: its exit is a crash the supervisor restarts.
    exited = []  # what the supervisor is told, as the backend's on_exit
    backend = dk.DockerBackend(LogHub(), on_exit=exited.append, client=backend.client, catalog=CATALOG, network="host")
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18126)
    instance.set_state(State.STARTING)
    original_create = backend.client.containers.create

    def create(image, command=None, **options):
        container = original_create(image, command, **options)
        container.output = [
            (b'@kubeless-local {"event": "ready", "generation": 0}\n', None),
            (b'@kubeless-local {"event": "load-failed", "generation": 1, "error": "SyntaxError"}\n', None),
        ]
        container.done.set()  # then it exits
        return container

    backend.client.containers.create = create
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.state == State.CRASHED, 5), instance.state
    assert exited == [instance]
    backend.stop(instance)


def test_path_mapping_shows_the_users_file(backend, tmp_path):
    fn = python_function(tmp_path)
    prepared = prepared_for(backend, tmp_path, fn)
    text = 'File "/kubeless/handler.py", line 2 and %s/%s/handler.py' % (dk.FUNCTION_MOUNT, prepared.code_dir.name)
    assert prepared.map_paths(text) == 'File "%s", line 2 and %s' % (fn.source, fn.source)


def test_engine_discovery_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert images.engine_candidates() == ["tcp://127.0.0.1:2375"]
    monkeypatch.delenv("DOCKER_HOST")
    config = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    import hashlib
    import json

    meta = config / "contexts" / "meta" / hashlib.sha256(b"colima").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": "colima", "Endpoints": {"docker": {"Host": "unix:///c.sock"}}}))
    (config / "config.json").write_text(json.dumps({"currentContext": "colima"}))
    podman = tmp_path / "run" / "podman"
    podman.mkdir(parents=True)
    (podman / "podman.sock").write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert images.engine_candidates() == [
        "unix:///c.sock",
        "unix:///var/run/docker.sock",
        "unix://" + str(podman / "podman.sock"),
    ]


def test_no_engine_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(Unavailable, match=r"^no Docker engine answers \(tried unix:///nonexistent/docker.sock") as info:
        images.docker_client()
    assert info.value.what == "docker engine" and "\n" not in str(info.value)  # the CLI adds the fix (test_commands)
    assert images.docker_client(required=False) is None


def test_install_step_runs_in_the_image_with_the_ca_and_is_cached(backend, tmp_path, monkeypatch):
    ca = tmp_path / "ca.crt"
    ca.write_text("CERT")
    monkeypatch.setenv("KUBELESS_LOCAL_CA_BUNDLE", str(ca))
    deps = tmp_path / "src" / "requirements.txt"
    deps.parent.mkdir()
    deps.write_text("six\n")
    runs = []

    def run_step(step, image, argv, mounts, env, workdir, labels, on_line):
        runs.append((step, image, argv, mounts, env, workdir))
        Path(next(m for m, v in mounts.items() if v["bind"] == dk.DEPS_MOUNT), "marker").write_text("x")

    backend.run_step = run_step
    fn = python_function(tmp_path, deps_file=deps)
    first = prepared_for(backend, tmp_path, fn)
    second = prepared_for(backend, tmp_path, fn)
    assert len(runs) == 1 and first.deps_dir == second.deps_dir
    step, image, argv, mounts, env, workdir = runs[0]
    assert step == "dependency install" and image == "kubeless-local/python:3.11" and workdir == dk.DEPS_MOUNT
    assert argv[-2:] == ["-r", "/kubeless-local/deps/requirements.txt"] and "--prefix=/kubeless-local/deps" in argv
    assert mounts[str(first.deps_dir)] == {"bind": dk.DEPS_MOUNT, "mode": "rw"}
    assert all(env[key] == dk.CA_MOUNT for key in dk.CA_ENV)
    assert first.deps_dir.parent.parent.name == "docker-deps"  # separate from the process backend's cache
    assert (first.deps_dir / "requirements.txt").read_text() == "six\n"


def test_deps_installed_by_one_image_are_not_reused_by_another(backend, tmp_path, monkeypatch):
    """The deps cache is keyed by the install image too: what an upstream image's pip installed (another
    Python, another prefix layout) is not what ours finds."""
    deps = tmp_path / "src" / "requirements.txt"
    deps.parent.mkdir()
    deps.write_text("six\n")
    runs = []
    backend.run_step = lambda step, image, argv, mounts, env, workdir, labels, on_line: runs.append((step, image))
    fn = python_function(tmp_path, deps_file=deps)
    ours = prepared_for(backend, tmp_path, fn)
    backend.client.images.present["kubeless/python:3.11"] = FakeImage("kubeless/python:3.11")
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "kubeless/python:3.11")
    upstream = prepared_for(backend, tmp_path, fn)
    assert runs == [
        ("dependency install", "kubeless-local/python:3.11"),
        ("dependency install", "kubeless/python:3.11"),
    ]
    assert ours.deps_dir != upstream.deps_dir and ours.deps_hash == upstream.deps_hash
    monkeypatch.delenv("PYTHON3.11_RUNTIME")
    assert prepared_for(backend, tmp_path, fn).deps_dir == ours.deps_dir and len(runs) == 2  # each still cached


def node_function(tmp_path):
    source = tmp_path / "src" / "handler.js"
    source.parent.mkdir(exist_ok=True)
    source.write_text("module.exports = { hello: () => 'hi' };\n")
    deps = source.parent / "package.json"
    deps.write_text('{"dependencies": {"left-pad": "1.3.0"}}\n')
    return objects.function_from_files("hello", source, "nodejs20", "handler.hello", deps_file=deps)


def node_backend(backend):
    present = backend.client.images.present
    present["kubeless-local/nodejs:20"] = FakeImage("kubeless-local/nodejs:20", {images.OWN_LABEL: "nodejs"})
    present["kubeless/nodejs:20"] = FakeImage("kubeless/nodejs:20")
    present["kubeless/nodejs-init:20"] = FakeImage("kubeless/nodejs-init:20")
    runs = []
    backend.run_step = lambda step, image, argv, mounts, env, workdir, labels, on_line: runs.append(
        (step, image, argv, env, workdir)
    )
    return runs


def test_the_install_step_is_the_installation_phase_of_the_entry_in_force(backend, tmp_path, monkeypatch):
    """As the controller's install init container: the phase's image and command (`sh -c`), its env
    ($(KUBELESS_INSTALL_VOLUME) expanded), in the install volume."""
    runs = node_backend(backend)
    install = {
        "phase": "installation",
        "image": "kubeless/nodejs-init:20",
        "command": "/kubeless-npm-install.sh",
        "env": {"NPM_CONFIG_CACHE": "$(KUBELESS_INSTALL_VOLUME)/.npm"},
    }
    entries = [
        {
            "ID": "nodejs",
            "versions": [{"version": "20", "images": [install, {"phase": "runtime", "image": "kubeless/nodejs:20"}]}],
        }
    ]
    path = tmp_path / "runtime-images.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(path))
    fn = node_function(tmp_path)
    prepared = prepared_for(backend, tmp_path, fn)
    [(step, image, argv, env, workdir)] = runs
    assert (step, image, argv) == (
        "dependency install",
        "kubeless/nodejs-init:20",
        ["/bin/sh", "-c", install["command"]],
    )
    assert workdir == env["KUBELESS_INSTALL_VOLUME"] == dk.DEPS_MOUNT
    assert env["KUBELESS_DEPS_FILE"] == dk.DEPS_MOUNT + "/package.json"
    assert env["NPM_CONFIG_CACHE"] == dk.DEPS_MOUNT + "/.npm"
    assert prepared.image == "kubeless/nodejs:20"
    install["command"] = "npm install --prefix=$KUBELESS_INSTALL_VOLUME"
    path.write_text(json.dumps(entries))
    prepared_for(backend, tmp_path, fn)
    assert len(runs) == 2  # another command installs anew


def test_without_an_installation_phase_our_step_runs_where_it_can(backend, tmp_path, monkeypatch):
    """Ours where the entry has none: our npm-install.sh is in our images only, so it runs in ours."""
    runs = node_backend(backend)
    monkeypatch.setenv("NODEJS20_RUNTIME", "kubeless/nodejs:20")
    prepared = prepared_for(backend, tmp_path, node_function(tmp_path))
    [(step, image, argv, _env, _workdir)] = runs
    assert (
        step == "dependency install"
        and image == "kubeless-local/nodejs:20"
        and argv == ["/bin/sh", "/runtime/npm-install.sh"]
    )
    assert prepared.image == "kubeless/nodejs:20"


def test_path_mapping_covers_later_generations(backend, tmp_path):
    fn = python_function(tmp_path)
    prepared = prepared_for(backend, tmp_path, fn)  # gen-1; the pump keeps it across in-place reloads
    text = "%s/gen-12/handler.py:3 and %s/gen-12/handler.py" % (dk.FUNCTION_MOUNT, prepared.root)
    assert prepared.map_paths(text) == "%s:3 and %s" % (fn.source, fn.source)
    other = "/home/me/kubeless/other/handler.py"  # /kubeless inside another path is not the code folder
    assert prepared.map_paths(other) == other


def go_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host, "registry", lambda name: "")
    go, _ = CATALOG.resolve("go", require_local=False)
    client = FakeClient({go.image: FakeImage(go.image, {images.OWN_LABEL: "go"})})
    source = tmp_path / "src" / "handler.go"
    source.parent.mkdir()
    source.write_text("package kubeless\n")
    fn = objects.function_from_files("hello", source, go.name, "handler.Handler")
    return dk.DockerBackend(LogHub(), client=client, catalog=CATALOG, network="host"), fn


def test_every_step_container_is_labelled_with_the_project_and_named_like_the_process_steps(tmp_path, monkeypatch):
    backend, fn = go_backend(tmp_path, monkeypatch)
    runs = []
    backend.run_step = lambda step, image, argv, mounts, env, workdir, labels, on_line: runs.append(
        (step, labels, mounts, workdir)
    )
    runtime, _ = backend.resolve(fn, CATALOG)
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    assert [step for step, *_ in runs] == ["runtime setup", "compile"]
    project = str((tmp_path / "state").resolve())
    assert all(labels[dk.LABEL_PROJECT] == project and labels[dk.LABEL_STEP] == step for step, labels, *_ in runs)
    _, _, mounts, workdir = runs[1]
    assert mounts[str(prepared.root)] == {"bind": dk.FUNCTION_MOUNT, "mode": "rw"}
    assert mounts[str(prepared.runtime_lib)] == {"bind": dk.LIB_MOUNT, "mode": "rw"}
    assert workdir == "%s/%s" % (dk.FUNCTION_MOUNT, prepared.build_dir.name)
    assert prepared.runtime.reload == "signal"  # the catalog's go docker.reload


def test_reload_follows_the_catalogs_docker_reload(backend, tmp_path, monkeypatch):
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18126)
    backend.start(instance, prepared)
    first = instance.handle.container
    assert backend.reload(instance, prepared) == "signal" and first.signals == ["SIGHUP"]
    restart = dataclasses.replace(
        prepared.runtime, docker=dataclasses.replace(prepared.runtime.docker, reload="restart")
    )
    prepared.runtime = restart
    assert backend.reload(instance, prepared) == "restart"
    assert first.signals == ["SIGHUP"] and first.removed and instance.handle.container is not first
    backend.stop(instance)


def test_an_engine_error_on_stop_is_said_not_hidden(backend, tmp_path):
    from docker.errors import APIError

    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18127)
    backend.start(instance, prepared)
    container = instance.handle.container

    def remove(force=False):
        container.done.set()
        raise APIError("engine is shutting down")

    container.remove = remove
    backend.stop(instance)
    assert any(
        "could not remove container" in line.text and "engine is shutting down" in line.text
        for line in backend.logs.tail("hello")
    )


def test_a_secret_folder_is_mounted_read_only_where_the_pod_mounts_the_secret(backend, tmp_path):
    """A copy of it, its keys of mode 0644 as the kubelet writes them: the user's are often 0600, which the
    container's user (the pod's, 1000) cannot read. A saved key is in the copy once the save is prepared."""
    (tmp_path / "src" / "secrets" / "db").mkdir(parents=True)
    (tmp_path / "src" / "secrets" / "db" / "password").write_text("s3cret")
    (tmp_path / "src" / "secrets" / "db" / "password").chmod(0o600)
    fn = python_function(tmp_path, secrets=["db", "missing"], project=tmp_path / "src")
    assert tmp_path / "src" / "secrets" / "db" in fn.watched_paths()
    lines = []
    runtime, _ = backend.resolve(fn, CATALOG)
    prepared = backend.prepare(fn, runtime, tmp_path / "state", lines.append)
    options = backend.container_options(Instance(name="hello", runtime="python3.11", port=1), prepared)
    copy = prepared.root / "volumes" / "secret-db"
    assert options["volumes"][str(copy.resolve())] == {"bind": "/db", "mode": "ro"}
    assert (copy / "password").read_text() == "s3cret" and stat.S_IMODE((copy / "password").stat().st_mode) == 0o644
    (tmp_path / "src" / "secrets" / "db" / "password").write_text("changed")
    (tmp_path / "src" / "secrets" / "db" / "other").write_text("new key")
    backend.prepare(fn, runtime, tmp_path / "state", lines.append, previous=prepared)
    assert sorted(p.name for p in copy.iterdir()) == ["other", "password"]
    assert (copy / "password").read_text() == "changed"
    assert options["environment"]["KUBELESS_LOCAL_SECRET_DB"] == "/db"
    assert any("secret db" in line and "mounted read-only at /db" in line for line in lines)
    assert any("secret missing" in line and "create it" in line for line in lines)  # never silently dropped


# ---------------------------------------------------------------- network modes (docker/network.py)


@pytest.mark.parametrize(
    ("setting", "networks", "mode", "why"),
    [
        ("auto", ("bridge", "host", "none"), "bridge", "the engine has a bridge network"),
        ("auto", ("host", "none"), "relay", "the engine has no bridge network"),
        ("auto", ("host", "none", "my-bridge-net"), "relay", "the engine has no bridge network"),  # names match exactly
        ("relay", ("bridge", "host", "none"), "relay", "docker.network: relay in the settings"),
        ("bridge", ("host", "none"), "bridge", "docker.network: bridge in the settings"),
        ("host", ("bridge",), "host", "docker.network: host in the settings"),
    ],
)
def test_the_network_mode_is_chosen_once_per_engine(setting, networks, mode, why):
    client = FakeClient(networks=networks)
    logs = LogHub()
    backend = dk.DockerBackend(logs, client=client, catalog=CATALOG, network=setting)
    backend.check()
    assert backend.network_mode() == (mode, why) and backend.network == mode
    assert client.networks.asked == (1 if setting == "auto" else 0)  # once, however often it is asked
    said = [line.text for line in logs.tail("dev")]
    assert len(said) == 1 and said[0].startswith("docker network: %s (%s; " % (mode, why))


def started_options(tmp_path, mode, monkeypatch):
    """(function container options, relay container options or None) of a start in `mode` (fake engine)."""
    backend = dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network=mode)
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18123)
    relay = None
    if mode == "relay":
        from kubeless_local.emulator.docker import containers

        relay = containers.relay_config(prepared, "kubeless-local/python:3.11", tmp_path / "door")
    return backend.container_options(instance, prepared, relay_id="r" * 64), relay


def test_bridge_mode_publishes_8080_on_loopback_only(tmp_path, backend, monkeypatch):
    options, _ = started_options(tmp_path, "bridge", monkeypatch)
    assert options["network_mode"] == "bridge"
    # never another address of the machine; the port is the engine's choice, one per container (the function's
    # own port is its front door's, which a blue/green reload switches from one generation's container to the next)
    assert options["ports"] == {"8080/tcp": ("127.0.0.1", None)}
    assert options["environment"]["FUNC_PORT"] == "8080" and options["environment"]["KUBELESS_LOCAL_BIND"] == "0.0.0.0"


def test_relay_mode_joins_the_relay_containers_namespace(tmp_path, backend, monkeypatch):
    options, relay = started_options(tmp_path, "relay", monkeypatch)
    assert options["network_mode"] == "container:" + "r" * 64 and "ports" not in options
    assert options["environment"]["FUNC_PORT"] == "8080"
    host = relay["HostConfig"]
    assert host["NetworkMode"] == "none"  # loopback only: the namespace the function joins
    assert host["AutoRemove"] is True  # gone once its connector exits (dev's lifeline ended)
    assert relay["User"] == "%d:%d" % (os.getuid(), os.getgid())  # its socket's folder is the user's (0700)
    assert relay["Labels"][dk.LABEL_PROJECT] == options["labels"][dk.LABEL_PROJECT]  # the guardian removes it too
    assert relay["Labels"][dk.LABEL_FUNCTION] == "hello"
    connector = Path(dk.__file__).with_name("connector.py").resolve()
    assert host["Binds"] == [
        "%s:/kubeless-local/door:rw" % (tmp_path / "door").resolve(),
        "%s:/kubeless-local/connector.py:ro" % connector,
    ]
    assert relay["Cmd"] == [
        "python3",
        "-u",
        "/kubeless-local/connector.py",
        "/kubeless-local/door/connector.sock",
        "8080",
    ]
    assert relay["Entrypoint"] == []  # the image's own is not run: the connector is


def test_relay_mode_without_our_python_image_says_what_to_build(tmp_path, monkeypatch):
    client = FakeClient()
    client.images.present["kubeless-local/nodejs:20"] = FakeImage("kubeless-local/nodejs:20", {images.OWN_LABEL: "n"})
    del client.images.present["kubeless-local/python:3.11"]
    backend = dk.DockerBackend(LogHub(), client=client, catalog=CATALOG, network="relay")
    source = tmp_path / "handler.js"
    source.write_text("module.exports = {hello: () => 'hi'};\n")
    fn = objects.function_from_files("hello", source, "nodejs20", "handler.hello")
    with pytest.raises(
        errors.NotFound, match=r"relay mode .* kubeless-local/python:3\.11, which is not built"
    ) as missing:
        backend.resolve(fn, CATALOG)
    assert (missing.value.what, missing.value.name) == ("runtime image", "python3.11")
    assert "runtime build python3.11" in str(worded(missing.value))


def test_bridge_mode_a_port_the_engine_cannot_publish_is_a_lost_port_race(tmp_path, monkeypatch):
    """Another program on 127.0.0.1:P: the engine refuses to start the container; that is EXIT_CANNOT_LISTEN,
    so the supervisor moves the function to a free port (a fixed one: one line saying it is in use)."""
    from docker.errors import APIError

    from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN

    client = FakeClient(networks=("bridge", "host", "none"))
    backend = dk.DockerBackend(LogHub(), client=client, catalog=CATALOG)
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    refusal = (
        "driver failed programming external connectivity: Bind for 127.0.0.1:18123 failed: port is already allocated"
    )

    def refuse():
        raise APIError("500 Server Error", explanation=refusal)

    monkeypatch.setattr(FakeContainer, "start", lambda self: refuse())
    instance = Instance(name="hello", runtime="python3.11", port=18123)
    try:
        backend.start(instance, prepared)
        assert instance.state == State.CRASHED and instance.exit_code == EXIT_CANNOT_LISTEN
        assert refusal in instance.error
    finally:
        backend.stop(instance)  # its front door


def started_spare(client, tmp_path, debug_port=None):
    """A spare relay (relay mode) whose container (a fake) has started and whose socket folder exists."""
    folder = tmp_path / "door"
    folder.mkdir()
    container = FakeContainer(client, {"name": "kubeless-local-hello-0123abcd-relay-00ff00ff"})
    spare = dk.backend._Spare(debug_port)
    spare.relay = dk.backend._Relay(container, folder)
    spare.ready.set()
    return spare, container, folder


def test_a_start_takes_the_functions_spare_relay_once(tmp_path):
    backend = dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network="relay")
    spare, container, folder = started_spare(backend.client, tmp_path)
    backend._spares["hello"] = spare
    instance = Instance(name="hello", runtime="python3.11", port=8080)
    relay = backend._take_spare(instance)
    assert relay is spare.relay and relay.started.is_set() and not container.removed and folder.is_dir()
    assert backend._take_spare(instance) is None  # one save, one spare
    backend._remove_relay(relay, "hello")


def test_a_spare_relay_goes_when_its_function_stops(tmp_path):
    backend = dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network="relay")
    spare, container, folder = started_spare(backend.client, tmp_path)
    backend._spares["hello"] = spare
    backend.stop(Instance(name="hello", runtime="python3.11", port=8080))
    assert container.removed and not folder.exists() and backend._spares == {}
    assert spare.cancelled  # one still starting would be removed by its maker once started


def test_a_spare_relay_for_another_debug_port_is_removed_not_taken(tmp_path):
    backend = dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network="relay")
    spare, container, folder = started_spare(backend.client, tmp_path, debug_port=5678)
    backend._spares["hello"] = spare
    assert backend._take_spare(Instance(name="hello", runtime="python3.11", port=8080)) is None
    assert container.removed and not folder.exists()

"""The process backend's exit handling, with a real (tiny) process standing in for a runtime server."""

import sys
import threading
import types

from waiting import wait_for

from kubeless_local.emulator import memorywatch
from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN, Instance, State
from kubeless_local.emulator.debugging import Target
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.emulator.process import ProcessBackend
from kubeless_local.spec import memory_bytes

# What a runtime that loses the race for its port does (php did report it as a load failure first).
CANNOT_LISTEN = (
    'import sys; print(\'@kubeless-local {"event": "load-failed", "generation": 0, '
    '"error": "cannot listen: Address already in use"}\', flush=True); sys.exit(4)'
)


# A server whose code never loaded exits: restarting it would only fail again.
LOAD_FAILED_AT_START = (
    'import sys; print(\'@kubeless-local {"event": "load-failed", "generation": 0, '
    '"error": "SyntaxError"}\', flush=True); sys.exit(1)'
)
# A server that served, kept the last good code after a failed reload (CompileError), then died.
DIED_AFTER_A_FAILED_RELOAD = (
    'import sys; print(\'@kubeless-local {"event": "ready", "generation": 0}\'); '
    'print(\'@kubeless-local {"event": "load-failed", "generation": 1, "error": "SyntaxError"}\', flush=True); '
    "sys.exit(1)"
)


def process_backend(tmp_path, script, memory="0"):
    """(backend, prepared, exited): a backend whose server is `python -c script` (its Function's memory limit
    `memory`); exited lists the instances the supervisor would be told about (to restart them)."""
    exited = []
    backend = ProcessBackend(LogHub(), on_exit=exited.append)
    prepared = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            steps=types.SimpleNamespace(command=[sys.executable, "-c", script], template=(), held=())
        ),
        expand=lambda argv: list(argv),
        env=lambda port: {},
        install_link=tmp_path,
        root=tmp_path / "state" / "functions" / "hello",
        map_paths=lambda text: text,
        spec=types.SimpleNamespace(memory_limit=memory, memory_limit_bytes=memory_bytes(memory)),
    )
    return backend, prepared, exited


# A server that takes 64 MiB, says so and waits.
HOLDS_64_MIB = "import time; held = bytearray(64 << 20); held[::4096] = b'x' * (16 << 10); print('holding', flush=True); time.sleep(60)"


def test_a_server_past_its_memory_limit_is_stopped_as_out_of_memory_and_restarted(tmp_path):
    backend, prepared, exited = process_backend(tmp_path, HOLDS_64_MIB, memory="32Mi")
    instance = Instance(name="hello", runtime="python3.11", port=1)
    try:
        backend.start(instance, prepared)
        assert instance.wait_for(lambda i: i.state == State.CRASHED, 10), instance.state
        assert "exited with code -9 (out of memory: its processes used" in instance.error, instance.error
        assert "above its memory limit 32Mi)" in instance.error and exited == [instance]
    finally:
        backend.stop(instance)
        backend.close()


def test_under_a_debugger_the_memory_limit_is_not_held(tmp_path):
    """The debugger takes memory the pod's server does not have: a paused call must not be killed for it."""
    backend, prepared, _ = process_backend(tmp_path, HOLDS_64_MIB, memory="32Mi")
    prepared.placeholders = {"exe": sys.executable}  # the debugged server's interpreter
    instance = Instance(name="hello", runtime="python3.11", port=1, debug=Target("hello", "debugpy", 5678))
    try:
        backend.start(instance, prepared)
        assert wait_for(lambda: any("holding" in line.text for line in backend.logs.tail("hello")), 10)
        threading.Event().wait(3 * memorywatch.LOOK_EVERY)  # looks it would have had (it is not watched at all)
        assert backend.memory.watched == {} and backend.alive(instance)
        assert "its memory limit is not held under the debugger" in [line.text for line in backend.logs.tail("hello")]
    finally:
        backend.stop(instance)
        backend.close()


def test_a_server_that_exits_4_crashed_on_its_port_even_after_a_load_failure(tmp_path):
    backend, prepared, exited = process_backend(tmp_path, CANNOT_LISTEN)
    instance = Instance(name="hello", runtime="php8.2", port=1)
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.state == State.CRASHED, 10), instance.state
    assert instance.exit_code == EXIT_CANNOT_LISTEN and exited == [instance]


def test_a_server_whose_code_never_loaded_stays_in_compile_error(tmp_path):
    backend, prepared, exited = process_backend(tmp_path, LOAD_FAILED_AT_START)
    instance = Instance(name="hello", runtime="python3.11", port=1, state=State.STARTING)
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.exit_code == 1, 10), instance.state
    assert instance.state == State.COMPILE_ERROR and exited == []


def test_a_server_that_dies_after_a_failed_reload_is_restarted(tmp_path):
    # It served the last good code in CompileError; its death is a crash, or the function stays down.
    backend, prepared, exited = process_backend(tmp_path, DIED_AFTER_A_FAILED_RELOAD)
    instance = Instance(name="hello", runtime="go1.26", port=1, state=State.STARTING)
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.state == State.CRASHED, 10), instance.state
    assert exited == [instance]


def test_a_function_with_only_an_image_says_it_needs_the_docker_backend(tmp_path):
    """An image-only Function (no spec.runtime) cannot run as a local process: the engine says so in its
    own words, typed; the CLI adds the flag (it said "unknown runtime ''")."""
    import pytest

    from kubeless_local import spec as specs
    from kubeless_local.commands.output import in_words
    from kubeless_local.errors import BadRequest
    from kubeless_local.runtimes import Catalog

    manifest = tmp_path / "function.yaml"
    manifest.write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: webserver}\nspec:\n"
        "  deployment: {spec: {template: {spec: {containers: [{image: 'bitnami/tomcat:9.0'}]}}}}\n"
    )
    [fn] = specs.load(manifest).functions
    with pytest.raises(BadRequest) as refused:
        ProcessBackend(LogHub()).resolve(fn, Catalog())
    assert str(refused.value) == (
        "Function webserver has no runtime, only an image (bitnami/tomcat:9.0): it runs in that image, not as a"
        " local process"
    )
    assert in_words(refused.value) == str(refused.value) + "; use --backend docker"


def template_files(tmp_path):
    """(a library folder of the template's preloads as empty modules, a server script that says ready and then
    serves until stopped). Its stdin is /dev/null: an `input()` there ended it at once, racing its ready line."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("bottle", "httptools", "prometheus_client"):
        (lib / (name + ".py")).write_text("")
    script = tmp_path / "server.py"
    script.write_text(
        'import time\nprint(\'@kubeless-local {"event": "ready", "generation": 0}\', flush=True)\ntime.sleep(600)\n'
    )
    return lib, script


def test_servers_are_forked_from_the_template_unless_their_env_needs_a_fresh_interpreter(tmp_path):
    """The catalog's `template` forks the servers (one template for both); a function whose own env sets an
    interpreter variable starts as a fresh process, as before. The template's libraries are empty modules."""
    import subprocess

    from kubeless_local.emulator.forkserver import Forked
    from kubeless_local.emulator.guardian import PROJECT_ENV
    from kubeless_local.runtimes import RUNTIMES_DIR

    lib, script = template_files(tmp_path)
    backend, prepared, _ = process_backend(tmp_path, "")
    prepared.runtime.steps = types.SimpleNamespace(
        command=[sys.executable, "-S", "-u", str(script)],
        template=[sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), "{control_fd}", str(lib)],
    )
    prepared.expand = lambda argv, **values: [str(a).format_map(values) for a in argv]
    handles = {}
    for name, own in (("forked", {}), ("fresh", {"PYTHONWARNINGS": "error"})):
        prepared.env = lambda port, own=own: {**machine_env(), PROJECT_ENV: str(tmp_path / "state"), **own}
        instance = Instance(name=name, runtime="python3.11", port=1, state=State.STARTING)
        backend.start(instance, prepared)
        assert instance.wait_for(lambda i: i.state == State.READY, 30), (name, instance.state, instance.error)
        handles[name] = instance
    try:
        assert isinstance(handles["forked"].handle, Forked)
        assert isinstance(handles["fresh"].handle, subprocess.Popen)
    finally:
        for instance in handles.values():
            backend.stop(instance)
        backend.close()
    assert all(not backend.alive(instance) for instance in handles.values())


def test_the_template_run_started_ahead_is_the_one_its_server_forks_from(tmp_path, monkeypatch):
    """`run`'s head start (emulator/headstart.py): the backend claims the template started before it knew it
    needed one, and forks the server there, watched by the guardian like a template it started itself."""

    from kubeless_local.emulator import headstart
    from kubeless_local.emulator.forkserver import Forked
    from kubeless_local.emulator.guardian import PROJECT_ENV
    from kubeless_local.emulator.prestart import CONTROL_FD
    from kubeless_local.runtimes import RUNTIMES_DIR

    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    lib, script = template_files(tmp_path)
    template = [sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), "{control_fd}", str(lib)]
    project = str(tmp_path / "state")
    headstart._remember("python3.11", headstart.TEMPLATE, [CONTROL_FD if a == "{control_fd}" else a for a in template])
    headstart.head_start("python3.11", project)
    early, _ = headstart._unclaimed["python3.11"]

    class Guardian(list):
        def watch(self, pgid):
            self.append(pgid)

        def forget(self, pgid):
            self.remove(pgid)

    guardian = Guardian()
    backend = ProcessBackend(LogHub(), guardian=guardian)
    _, prepared, _ = process_backend(tmp_path, "")
    prepared.runtime.steps = types.SimpleNamespace(command=[sys.executable, "-S", "-u", str(script)], template=template)
    prepared.expand = lambda argv, **values: [str(a).format_map(values) for a in argv]
    prepared.env = lambda port: {**machine_env(), PROJECT_ENV: project}
    instance = Instance(name="hello", runtime="python3.11", port=1, state=State.STARTING)
    try:
        backend.start(instance, prepared)
        assert instance.wait_for(lambda i: i.state == State.READY, 30), (instance.state, instance.error)
        assert isinstance(instance.handle, Forked) and list(backend.templates.values()) == [early]
        with open("/proc/%d/stat" % instance.pid) as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) == early.proc.pid  # forked there
        assert guardian == [early.proc.pid, instance.pid]
    finally:
        backend.stop(instance)
        backend.close()
        headstart.close_unclaimed()

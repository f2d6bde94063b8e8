"""The supervisor's logic against a fake backend: start, reload keeping the last good code, restarts
with back-off, the port-race retry, stop."""

import contextlib
import dataclasses
import http.server
import json
import os
import threading
from typing import cast

import pytest
from conftest import FAKE_RUNTIME, FakeBackend, NoCatalog, function
from sockets import taken_port
from waiting import wait_for

from kubeless_local.emulator import debugging
from kubeless_local.emulator import supervisor as sup_module
from kubeless_local.emulator.base import State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.prepare import StepFailed
from kubeless_local.emulator.supervisor import Supervisor, port_free
from kubeless_local.runtimes import Catalog
from kubeless_local.spec import ISOLATION_ANNOTATION

ROW_KEYS = {
    "name",
    "runtime",
    "state",
    "url",
    "port",
    "pid",
    "backend",
    "calls",
    "errors",
    "reloads",
    "restarts",
    "error",
    "ready_ms",
    "serving",
    "metrics",
}


def serving_code(supervisor, name):
    """What the stable `kubeless` link (the runtime's working copy) holds now."""
    return (supervisor.state_dir / "functions" / name / "kubeless" / "handler.txt").read_text()


def row(supervisor, name):
    return {r["name"]: r for r in supervisor.status()}[name]


def test_start_serves_and_reports_a_row(supervisor, backend):
    instance = supervisor.start(function(code="v1"))
    assert instance.state == State.READY and instance.ready_ms is not None
    assert serving_code(supervisor, "hello") == "v1"
    r = row(supervisor, "hello")
    assert r.keys() >= ROW_KEYS
    assert (r["state"], r["runtime"], r["backend"], r["reloads"], r["restarts"]) == ("Ready", "fake1", "fake", 0, 0)
    assert r["url"] == "http://127.0.0.1:%d" % r["port"] and r["port"] > 0
    assert json.loads((supervisor.state_dir / "ports.json").read_text()) == {"hello": r["port"]}


def test_a_function_is_listed_as_installing_before_it_is_prepared(supervisor, backend):
    backend.gate.clear()
    starting = threading.Thread(target=supervisor.start, args=(function(),))
    starting.start()
    try:
        assert backend.preparing.wait(5)
        assert row(supervisor, "hello")["state"] == "Installing"
    finally:
        backend.gate.set()
        starting.join(5)
    assert row(supervisor, "hello")["state"] == "Ready"


def test_a_reload_that_fails_to_load_keeps_the_last_good_code(supervisor, backend):
    supervisor.start(function(code="v1"))
    backend.reloads["hello"] = ["load-failed", "ready"]
    instance = supervisor.reload(function(code="v2 broken"))
    assert instance.state == State.COMPILE_ERROR and "SyntaxError" in instance.error
    assert serving_code(supervisor, "hello") == "v1"  # new workers keep loading the good code
    assert supervisor.serving["hello"].spec.function == "v1"
    assert backend.alive(instance) and instance.reloads == 0
    assert "still serving the last good code" in "\n".join(line.text for line in supervisor.logs.tail("hello"))

    instance = supervisor.reload(function(code="v3"))
    assert instance.state == State.READY and instance.reloads == 1
    assert serving_code(supervisor, "hello") == "v3"
    root = supervisor.state_dir / "functions" / "hello"
    generations = sorted(root.glob("gen-*"))
    # The failed one is gone; the last good one (v1) stays beside the serving one for calls still using it.
    assert generations == [root / "gen-1", supervisor.serving["hello"].code_dir]


def test_a_save_that_changes_the_runtime_shows_the_one_that_runs(supervisor, backend):
    """A manifest switched from python3.11 to nodejs20 while `dev` ran: nodejs20 served, `ls` said python3.11."""
    supervisor.start(function(code="v1"))
    instance = supervisor.reload(dataclasses.replace(function(code="v2"), runtime="fake2"))
    assert instance.state == State.READY and serving_code(supervisor, "hello") == "v2"
    assert row(supervisor, "hello")["runtime"] == "fake2"


def test_a_save_whose_file_is_gone_when_it_is_read_keeps_the_last_good_code(supervisor, backend):
    # An editor that saves by renaming (vim, JetBrains' safe write) or a file deleted as the save is prepared: the
    # copy failed with FileNotFoundError, which ended the reload's thread with a traceback on the user's console.
    supervisor.start(function(code="v1"))
    backend.prepares["hello"] = [FileNotFoundError(2, "No such file or directory", "/project/handler.py")]
    instance = supervisor.reload(function(code="v2"))
    assert instance.state == State.CONFIG_ERROR and backend.alive(instance)  # as the manifest's check says it
    assert instance.error == "/project/handler.py: No such file or directory"
    assert serving_code(supervisor, "hello") == "v1" and instance.reloads == 0
    assert instance.error in [line.text for line in supervisor.logs.tail("hello")]
    instance = supervisor.reload(function(code="v3"))  # the file is back: the next event's reload
    assert (instance.state, serving_code(supervisor, "hello")) == (State.READY, "v3")


def test_a_first_start_whose_file_is_gone_when_it_is_read_is_a_config_error(supervisor, backend):
    backend.prepares["hello"] = [PermissionError(13, "Permission denied", "/project/handler.py")]
    instance = supervisor.start(function(code="v1"))
    assert (instance.state, instance.error) == (State.CONFIG_ERROR, "/project/handler.py: Permission denied")


def test_a_reload_that_waits_for_calls_in_flight_is_given_the_functions_timeout(supervisor, backend, monkeypatch):
    """Go reloads once the calls in flight are done: a call may run up to the function's timeout."""
    monkeypatch.setattr(sup_module, "RELOAD_TIMEOUT", 0.05)
    monkeypatch.setattr(sup_module.prep, "CALL_MARGIN", 0.1)
    supervisor.start(dataclasses.replace(function(code="v1"), timeout="1"))
    backend.reloads["hello"] = [0.15]  # past RELOAD_TIMEOUT, well within the call bound (1 s + the margin)
    instance = supervisor.reload(dataclasses.replace(function(code="v2"), timeout="1"))
    assert instance.state == State.READY and serving_code(supervisor, "hello") == "v2"


def states_of(supervisor, instance):
    """What `instance` goes through from here on: (state, serves, generation serving) at each change (a
    control line that changes none of them is told too: not repeated here)."""
    seen = []

    def told(changed):
        step = (changed.state, changed.serves, getattr(supervisor.serving.get(changed.name), "generation", None))
        if not seen or seen[-1] != step:
            seen.append(step)

    instance.on_state = told
    return seen


def test_a_save_shows_reloading_while_the_last_good_code_serves_then_ready_with_the_next_generation(
    supervisor, backend
):
    instance = supervisor.start(function(code="v1"))
    first = supervisor.serving["hello"].generation
    seen = states_of(supervisor, instance)
    backend.reloads["hello"] = [0.3]  # the new code serves 0.3 s after the signal
    reloading = threading.Thread(target=supervisor.reload, args=(function(code="v2"),))
    reloading.start()
    try:
        assert instance.wait_for(lambda i: i.state == State.RELOADING, 5)
        assert supervisor.wait_ready("hello", 0) is not None  # calls and events are delivered meanwhile
        assert (row(supervisor, "hello")["state"], row(supervisor, "hello")["serving"]) == ("Reloading", True)
    finally:
        reloading.join(5)
    assert seen == [(State.RELOADING, True, first), (State.READY, True, first + 1)]
    assert serving_code(supervisor, "hello") == "v2"


@pytest.mark.parametrize(
    "broken, state",
    [
        (lambda backend: backend.reloads["hello"].append("load-failed"), State.COMPILE_ERROR),
        (
            lambda backend: backend.prepares["hello"].append(StepFailed("compile", "handler.go:3: x")),
            State.COMPILE_ERROR,
        ),
        (lambda backend: backend.prepares["hello"].append(StepFailed("dependency install", "no")), State.INSTALL_ERROR),
    ],
)
def test_a_save_that_does_not_serve_goes_from_reloading_to_its_error_and_the_next_good_one_to_ready(
    supervisor, backend, broken, state
):
    instance = supervisor.start(function(code="v1"))
    first = supervisor.serving["hello"].generation
    seen = states_of(supervisor, instance)
    broken(backend)
    supervisor.reload(function(code="v2"))
    assert seen[0] == (State.RELOADING, True, first) and seen[-1][::2] == (state, first), seen
    assert State.READY not in [step[0] for step in seen]
    del seen[:]
    supervisor.reload(function(code="v3"))  # from the broken state: Reloading too while its last good code serves
    assert seen == [(State.RELOADING, True, first), (State.READY, True, supervisor.serving["hello"].generation)]
    assert supervisor.serving["hello"].generation > first


def test_a_function_that_does_not_serve_is_not_shown_reloading(supervisor, backend):
    backend.starts["hello"] = ["crash", "crash"]
    instance = supervisor.start(function(code="v1"))
    assert not instance.serves
    seen = []
    instance.on_state = lambda changed: seen.append(changed.state)
    supervisor.reload(function(code="v2"))
    assert State.RELOADING not in seen


def test_a_failed_compile_keeps_serving_the_last_good_code(supervisor, backend):
    instance = supervisor.start(function(code="v1"))
    backend.prepares["hello"] = [StepFailed("compile", "handler.go:3: undefined: x")]
    supervisor.reload(function(code="v2"))
    assert instance.state == State.COMPILE_ERROR and instance.error == "handler.go:3: undefined: x"
    assert backend.alive(instance) and serving_code(supervisor, "hello") == "v1"
    backend.prepares["hello"] = [StepFailed("dependency install", "No matching distribution")]
    supervisor.reload(function(code="v3"))
    assert instance.state == State.INSTALL_ERROR and serving_code(supervisor, "hello") == "v1"


@pytest.mark.parametrize(
    "output, fix",
    [
        (
            "/usr/bin/python3.11: No module named pip",
            "/usr/bin/python3.11 has no pip: install it (Debian, Ubuntu: `apt install python3-pip`; else"
            " `/usr/bin/python3.11 -m ensurepip`)",
        ),
        ("setup.sh: 6: exec: npm: not found", "npm is not on PATH: install it (Debian, Ubuntu: `apt install npm`)"),
        (
            "metric.go:364:33: undefined: strings.CutPrefix\nnote: module requires Go 1.20",
            "the Go on PATH is older than the runtime's server needs (Go 1.20 or newer): install a newer Go, or run"
            " the function on the docker backend (`--backend docker`)",
        ),
    ],
)
def test_a_setup_that_failed_for_a_missing_tool_says_which_to_install_not_the_registries(output, fix):
    """Debian's python3.11 comes without pip, its nodejs without npm, its Go is 1.19: the setup said to make the
    package registries reachable."""
    from kubeless_local.emulator.supervisor import setup_failed_message

    headline, rest = setup_failed_message("python3.11", output).split("\n", 1)
    assert headline == "the first-time setup of the python3.11 runtime failed: %s, then save a file to retry" % fix
    assert rest == output


def test_a_failed_runtime_setup_is_a_setup_error_that_says_what_to_do(supervisor, backend):
    backend.prepares["hello"] = [StepFailed("runtime setup", "ERROR: Could not find a version of bottle")]
    instance = supervisor.start(function())
    assert instance.state == State.SETUP_ERROR
    headline, rest = instance.error.split("\n", 1)
    assert "package registries" in headline and "retry" in headline
    assert "Could not find a version of bottle" in rest
    assert row(supervisor, "hello")["state"] == "SetupError"
    # Saving again (registries back) retries from the start.
    assert supervisor.reload(function()).state == State.READY


def test_backoff_doubles_up_to_a_limit():
    assert [sup_module.backoff(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]
    assert sup_module.backoff(50) == 10.0


def test_a_crashed_server_is_restarted_with_backoff(supervisor, backend, monkeypatch):
    monkeypatch.setattr(sup_module, "BACKOFF_FIRST", 0.01)
    instance = supervisor.start(function(code="v1"))
    for expected in (1, 2):
        backend.crash(instance)
        assert instance.wait_for(lambda i, n=expected: i.restarts == n and i.state == State.READY, 5), instance
    assert [code for _, _, code in backend.launched] == ["v1"] * 3  # restarted with the code that served
    assert "restarting in" in "\n".join(line.text for line in supervisor.logs.tail("hello"))


def test_a_crash_on_start_restarts_too(supervisor, backend, monkeypatch):
    monkeypatch.setattr(sup_module, "BACKOFF_FIRST", 0.01)
    backend.starts["hello"] = ["crash"]
    instance = supervisor.start(function())
    assert instance.wait_for(lambda i: i.state == State.READY, 5)
    assert instance.restarts == 1


def break_by_a_load_failure(supervisor, backend):
    backend.reloads["hello"] = ["load-failed"]
    supervisor.reload(function(code="v2 broken"))


def test_code_that_does_not_load_in_place_leaves_the_last_good_code_serving_events_too(supervisor, backend):
    instance = supervisor.start(function(code="v1"))
    break_by_a_load_failure(supervisor, backend)
    assert instance.state == State.COMPILE_ERROR and backend.alive(instance)
    assert instance.serves  # triggers and cron go on delivering to the running last good code


def test_a_server_whose_first_code_does_not_load_does_not_serve(supervisor, backend):
    backend.starts["hello"] = ["load-failed"]
    instance = supervisor.start(function(code="v1"))
    assert instance.state == State.COMPILE_ERROR and not instance.serves


def break_by_a_failed_compile(supervisor, backend):
    backend.prepares["hello"] = [StepFailed("compile", "handler.go:3: undefined: x")]
    supervisor.reload(function(code="v2 broken"))


def break_by_a_handler_typo(supervisor, backend):
    # a new spec needs a new server; it does not load, so the last good generation is started again
    backend.starts["hello"] = ["load-failed"]
    typo = function(code="v2")
    supervisor.reload(dataclasses.replace(typo, handler="handler.nope", document={**typo.document, "typo": True}))


def test_a_handler_typo_is_never_shown_ready_while_the_last_good_code_starts_again(supervisor, backend):
    instance = supervisor.start(function(code="v1"))
    shown, told = [], instance.on_state
    instance.on_state = lambda i: (shown.append(i.state), told(i))
    break_by_a_handler_typo(supervisor, backend)
    assert instance.state == State.COMPILE_ERROR and instance.error and backend.launched[-1][2] == "v1"
    assert State.COMPILE_ERROR in shown and State.READY not in shown, shown


def break_by_a_broken_manifest(supervisor, backend):
    supervisor.config_error("hello", "functions.yaml: Function hello: spec.runtime: required")


@pytest.mark.parametrize(
    "break_it",
    [break_by_a_load_failure, break_by_a_failed_compile, break_by_a_handler_typo, break_by_a_broken_manifest],
)
def test_a_server_restarted_while_the_saved_code_is_broken_keeps_its_error(supervisor, backend, monkeypatch, break_it):
    # The restart serves the last good code again; the saved code is still broken, and `ls` says so.
    monkeypatch.setattr(sup_module, "BACKOFF_FIRST", 0.01)
    instance = supervisor.start(function(code="v1"))
    break_it(supervisor, backend)
    broken = (instance.state, instance.error)
    assert broken[0] in (State.COMPILE_ERROR, State.CONFIG_ERROR) and broken[1]
    backend.crash(instance)  # a crash, or the restart after a runaway call
    assert instance.wait_for(lambda i: i.restarts == 1 and i.state not in (State.CRASHED, State.STARTING), 5)
    assert (instance.state, instance.error) == broken and backend.alive(instance)
    assert backend.launched[-1][2] == "v1" and serving_code(supervisor, "hello") == "v1"
    assert (row(supervisor, "hello")["state"], row(supervisor, "hello")["serving"]) == (broken[0].value, True)

    # a save that serves clears it: the next restart is Ready
    assert supervisor.reload(function(code="v3")).state == State.READY
    backend.crash(instance)
    assert instance.wait_for(lambda i: i.restarts == 2 and i.state not in (State.CRASHED, State.STARTING), 5)
    assert instance.state == State.READY and backend.launched[-1][2] == "v3"


def test_a_stopped_function_is_not_restarted(supervisor, backend, monkeypatch):
    monkeypatch.setattr(sup_module, "BACKOFF_FIRST", 0.05)
    instance = supervisor.start(function())
    before = set(threading.enumerate())
    backend.crash(instance)
    # the restart the crash scheduled (a thread named "Thread-N (restart)"): it runs after its back-off
    restarting = [t for t in set(threading.enumerate()) - before if t.name.endswith("(restart)")]
    supervisor.stop("hello")
    assert restarting, "no restart was scheduled"
    for thread in restarting:  # it looked, and found the function stopped
        thread.join(10)
        assert not thread.is_alive()
    assert instance.state != State.READY and len(backend.launched) == 1


def test_a_port_taken_meanwhile_moves_to_another_port(supervisor, backend):
    backend.starts["hello"] = ["port-taken"]
    instance = supervisor.start(function())
    first_port = backend.launched[0][1]
    assert instance.state == State.READY and instance.port != first_port
    assert [port for _, port, _ in backend.launched] == [first_port, instance.port]
    assert json.loads((supervisor.state_dir / "ports.json").read_text()) == {"hello": instance.port}
    assert "port %d was taken meanwhile" % first_port in "\n".join(line.text for line in supervisor.logs.tail("hello"))


def test_a_fixed_port_taken_meanwhile_is_not_moved(supervisor, backend):
    from kubeless_local.emulator.supervisor import ephemeral_port
    from kubeless_local.spec import PORT_ANNOTATION

    port = ephemeral_port()
    backend.starts["hello"] = ["port-taken"]
    instance = supervisor.start(function(**{PORT_ANNOTATION: str(port)}))
    assert instance.state == State.CRASHED and instance.port == port and len(backend.launched) == 1


def test_a_server_that_holds_its_port_but_never_gets_ready_is_not_moved(supervisor, backend, monkeypatch):
    """Its own port, held by itself (the docker backend's front door), is no port race: it stays where it is
    (it was moved three times, each start waiting the whole start-up time again)."""
    monkeypatch.setattr(sup_module, "STARTUP_TIMEOUT", 0.2)
    backend.starts["hello"] = ["stuck"]
    instance = supervisor.start(function())
    assert instance.state == State.CRASHED and "did not become ready" in instance.error
    assert len(backend.launched) == 1
    assert "taken meanwhile" not in "\n".join(line.text for line in supervisor.logs.tail("hello"))


def test_stop_and_stop_all(supervisor, backend):
    for name in ("a", "b", "c"):
        supervisor.start(function(name))
    a = supervisor.instances["a"]
    supervisor.stop("a")
    assert a.state == State.STOPPED and not backend.alive(a)
    assert [r["name"] for r in supervisor.status()] == ["b", "c"]
    supervisor.stop_all()
    assert supervisor.status() == [] and sorted(backend.stopped) == ["a", "b", "c"]


def test_a_function_that_cannot_run_shows_no_url(supervisor, backend):
    supervisor.fail(function("bad"), "functions.yaml: unknown runtime 'cobol85'")
    r = row(supervisor, "bad")
    assert (r["state"], r["port"], r["url"]) == ("ConfigError", 0, None)
    assert "cobol85" in r["error"]


def test_a_function_whose_prepare_is_refused_shows_no_url(supervisor, backend):
    from kubeless_local.errors import UserError

    backend.prepares["hello"] = [UserError("spec.function is not valid base64")]
    with pytest.raises(UserError):
        supervisor.start(function())
    supervisor.fail(function(), "spec.function is not valid base64")
    r = row(supervisor, "hello")
    assert (r["state"], r["port"], r["url"]) == ("ConfigError", 0, None)


def test_a_server_that_cannot_listen_moves_to_another_port(supervisor, backend):
    backend.starts["hello"] = ["cannot-listen"]
    instance = supervisor.start(function())
    first_port = backend.launched[0][1]
    assert instance.state == State.READY and instance.port != first_port
    assert "port %d was taken meanwhile" % first_port in "\n".join(line.text for line in supervisor.logs.tail("hello"))


def test_a_fixed_port_that_cannot_be_bound_is_a_config_error(supervisor, backend):
    from kubeless_local.emulator.supervisor import ephemeral_port
    from kubeless_local.spec import PORT_ANNOTATION

    port = ephemeral_port()
    backend.starts["hello"] = ["cannot-listen"]
    instance = supervisor.start(function(**{PORT_ANNOTATION: str(port)}))
    assert instance.state == State.CONFIG_ERROR and len(backend.launched) == 1
    assert "port %d" % port in instance.error and "in use" in instance.error


def test_a_fixed_port_in_use_names_whose_it_is(supervisor, backend):
    """Another function of the session (most often two manifests given the same port), or another program."""
    from kubeless_local.errors import UserError
    from kubeless_local.spec import PORT_ANNOTATION

    first = supervisor.start(function("first"))
    with pytest.raises(UserError, match="port %d .* is in use by function first;" % first.port):
        supervisor.start(function("second", **{PORT_ANNOTATION: str(first.port)}))
    with (
        taken_port() as port,
        pytest.raises(UserError, match=r"port %d .* is in use by `.*` \(pid %d\);" % (port, os.getpid())),
    ):
        supervisor.start(function("third", **{PORT_ANNOTATION: str(port)}))


def test_the_kubeless_port_flag_is_the_local_port_when_free(tmp_path):
    """`kubeless function deploy --port N` writes service.targetPort N: used locally when N is free."""
    import dataclasses

    from kubeless_local.emulator.supervisor import PortBook, ephemeral_port

    def asking(port):
        return dataclasses.replace(function(), service={"ports": [{"port": port, "targetPort": port}]})

    wanted = ephemeral_port()
    assert PortBook(tmp_path).assign(asking(wanted), set()) == wanted
    with taken_port() as taken:
        assert PortBook(tmp_path).assign(asking(taken), set()) != taken  # in use: another port, no error


def test_wait_ready_answers_once_the_function_serves(supervisor, backend):
    """The one question every trigger asks before it sends (delivery.send_when_ready)."""
    assert supervisor.wait_ready("hello", 0) is None  # not started: no answer, and no wait with timeout 0
    instance = supervisor.start(function())
    assert supervisor.wait_ready("hello", 0) == (instance, supervisor.specs["hello"])
    instance.set_state(State.CRASHED, "exited")
    assert supervisor.wait_ready("hello", 0.05) is None
    threading.Timer(0.05, instance.set_state, (State.READY,)).start()
    assert supervisor.wait_ready("hello", 10) == (instance, supervisor.specs["hello"])  # woken by the change


def test_wait_ready_counts_a_broken_save_whose_last_good_code_serves(supervisor, backend):
    instance = supervisor.start(function())
    backend.prepares["hello"] = [StepFailed("compile", "handler.go:3: undefined: x")]
    supervisor.reload(function(code="v2"))
    assert instance.state == State.COMPILE_ERROR and supervisor.wait_ready("hello", 0)[0] is instance


def test_wait_ready_waits_for_a_function_not_registered_yet(supervisor, backend):
    threading.Timer(0.05, supervisor.start, (function(),)).start()
    ready = supervisor.wait_ready("hello", 10)
    assert ready is not None and ready[0].state == State.READY


# ---------------------------------------------------------------- the front door of a fronted backend


class Fronted(FakeBackend):
    """A backend whose servers listen on a private port behind the supervisor's front door (as the process
    backend's do); it notes the port each server was given."""

    fronted = True

    def start(self, instance, prepared):
        self.server_ports = [*getattr(self, "server_ports", []), instance.server_port]
        super().start(instance, prepared)


def supervisor_of(tmp_path, backend, catalog):
    """A Supervisor of `backend` (a FakeBackend kind) in tmp_path, asking `catalog` (a stand-in) what it asks."""
    return Supervisor(
        tmp_path / ".kubeless-local", backend, LogHub(), catalog=cast(Catalog, catalog), ephemeral_ports=True
    )


@pytest.fixture
def fronted(tmp_path):
    sup = supervisor_of(tmp_path, Fronted, NoCatalog())
    yield sup
    sup.stop_all()


def test_a_fronted_function_keeps_its_port_while_its_server_moves_to_private_ones(fronted):
    instance = fronted.start(function())
    door = fronted.doors["hello"]
    assert instance.state == State.READY and instance.front_door
    assert door.port == instance.port and instance.server_port not in (0, instance.port)
    assert fronted.status()[0]["url"] == "http://127.0.0.1:%d" % instance.port
    fronted.backend.crash(instance)  # restarted on a new private port, behind the same door
    assert wait_for(lambda: len(fronted.backend.server_ports) == 2 and instance.state == State.READY, 10)
    assert fronted.doors["hello"] is door and instance.port == door.port
    fronted.stop("hello")
    assert "hello" not in fronted.doors
    assert port_free(door.port)  # the door closed with the function


def test_a_private_port_taken_meanwhile_is_retried_behind_the_same_door(fronted):
    fronted.backend.starts["hello"] = ["cannot-listen"]
    instance = fronted.start(function())
    assert instance.state == State.READY
    assert len(fronted.backend.server_ports) == 2 and instance.port == fronted.doors["hello"].port


def test_the_generation_and_source_digest_that_serve(fronted):
    fronted.start(function(code="v1"))
    generation, digest = fronted.served("hello")
    assert generation is not None and len(digest) == 64
    fronted.reload(function(code="v2"))
    assert fronted.served("hello")[0] == generation + 1 and fronted.served("hello")[1] != digest
    assert fronted.served("nobody") == (None, None)


def test_state_changes_go_on_the_recorders_event_bus(tmp_path):
    from kubeless_local.emulator.bus import EventBus
    from kubeless_local.emulator.recorder import Recorder

    recorder = Recorder(tmp_path, bus=EventBus(), log_grace=0)
    no_catalog = cast(Catalog, NoCatalog())
    sup = Supervisor(
        tmp_path / "state", FakeBackend, LogHub(), catalog=no_catalog, ephemeral_ports=True, recorder=recorder
    )
    try:
        sup.start(function())
        sup.stop("hello")
    finally:
        recorder.close()
    events, _ = recorder.bus.after(0)
    states = [event.data["state"] for event in events if event.kind == "function-state"]
    assert states[:2] == ["Starting", "Ready"] and states[-1] == "Stopped"


@pytest.mark.parametrize("debugger, in_place", [("inspector", True), ("debugpy", False)])
def test_a_debugged_function_keeps_its_port_and_reloads_as_its_debugger_allows(tmp_path, debugger, in_place):
    """The inspector stays connected across an in-place reload; debugpy, in a worker, needs a new server on
    the same port. Either way the port is the function's, and `ls` shows it Debugging while it serves."""
    targets = {"hello": debugging.Target("hello", debugger, 7000)}
    no_catalog = cast(Catalog, NoCatalog())
    supervisor = Supervisor(
        tmp_path / ".kl", FakeBackend, LogHub(), catalog=no_catalog, ephemeral_ports=True, debug=targets
    )
    backend = cast(FakeBackend, supervisor.backend)
    try:
        instance = supervisor.start(function(code="v1"))
        assert instance.debug == targets["hello"] and instance.state == State.READY
        r = row(supervisor, "hello")
        assert r["state"] == "Debugging"
        assert r["debug"] == {
            "debugger": debugger,
            "port": 7000,
            "local_root": "",  # inline code: no file of the user's
            "remote_root": str(supervisor.state_dir / "functions" / "hello" / "kubeless"),
        }
        supervisor.reload(function(code="v2"))
        assert serving_code(supervisor, "hello") == "v2" and instance.state == State.READY
        assert (len(backend.launched), backend.stopped) == ((1, []) if in_place else (2, ["hello"]))
        assert supervisor.instances["hello"].debug.port == 7000
        supervisor.start(function(code="v3"))  # started again (its manifest came back): the same port
        assert supervisor.instances["hello"].debug.port == 7000
    finally:
        supervisor.stop_all()
        backend.close()


def test_a_function_never_takes_a_debuggers_port(tmp_path):
    """`--debug-port 8080`: the functions' ports start there too; the debugger's is not offered to them."""
    debugged = debugging.Target("other", "debugpy", sup_module.ephemeral_port())
    no_catalog = cast(Catalog, NoCatalog())
    supervisor = Supervisor(tmp_path / ".kl", FakeBackend, LogHub(), catalog=no_catalog, debug={"other": debugged})
    asking = dataclasses.replace(function(), service={"ports": [{"port": debugged.port, "targetPort": debugged.port}]})
    try:
        assert supervisor.start(asking).port != debugged.port
    finally:
        supervisor.stop_all()
        cast(FakeBackend, supervisor.backend).close()


def test_a_function_without_a_debugger_shows_no_debug_row(supervisor, backend):
    supervisor.start(function())
    assert row(supervisor, "hello")["debug"] is None and row(supervisor, "hello")["state"] == "Ready"


class MetricsCatalog:
    def serves_metrics(self, runtime, image=""):
        return True  # every fake server "has" /metrics: the test's servers answer it


@contextlib.contextmanager
def metrics_servers(ports, barrier):
    """A /metrics on each port that answers only once `barrier` has every scrape waiting at it: scraped one after
    the other, the first times out at the barrier and the others never arrive together."""
    seen = []

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            body = b'function_calls_total{method="GET"} 3.0\nfunction_failures_total{method="GET"} 1.0\n'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", port), Metrics) for port in ports]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield seen
    finally:
        barrier.abort()
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def counted(tmp_path):
    sup = supervisor_of(tmp_path, FakeBackend, MetricsCatalog())
    yield sup
    sup.stop_all()


def test_ls_scrapes_the_functions_metrics_at_once_not_one_after_the_other(counted):
    """`ls` with many functions waits for the slowest /metrics, not for their sum."""
    ports = [counted.start(function(name)).port for name in ("a", "b", "c")]
    with metrics_servers(ports, threading.Barrier(3, timeout=10)) as seen:
        rows = counted.status()
    assert sorted(seen) == ["/metrics"] * 3
    assert [(r["name"], r["calls"], r["errors"]) for r in rows] == [("a", 3, 1), ("b", 3, 1), ("c", 3, 1)]


def test_one_functions_row_without_counts_scrapes_nothing(counted):
    """What `call`, `logs` and `history NAME` ask: one row, no /metrics of any function (a session of a hundred
    functions scraped all of them for every `call`)."""
    ports = [counted.start(function(name)).port for name in ("a", "b")]
    with metrics_servers(ports, threading.Barrier(1, timeout=10)) as seen:
        rows = counted.status("b", counted=False)
        assert [(r["name"], r["state"], r["calls"], r["errors"]) for r in rows] == [("b", "Ready", None, None)]
        assert counted.status("nope", counted=False) == []
        assert seen == []
        assert [(r["name"], r["calls"]) for r in counted.status("a")] == [("a", 3)]


@pytest.mark.parametrize("applied", [("warm", "per-call"), ("warm",)])
def test_an_isolation_the_runtime_does_not_apply_is_said_at_start(supervisor, monkeypatch, applied):
    # `--isolation per-call` on Node.js, Go or Java: their servers keep module state between calls (as Kubeless'
    # do), so the user who asked for a fresh module per call is told, once, not left to believe it
    runtime = dataclasses.replace(FAKE_RUNTIME, isolations=applied)
    monkeypatch.setattr(FakeBackend, "resolve", lambda self, spec, catalog: (runtime, None))
    spec = function(**{ISOLATION_ANNOTATION: "per-call"})
    assert supervisor.start(spec).state == State.READY
    supervisor.reload(dataclasses.replace(spec, function="v2"))
    said = [line.text for line in supervisor.logs.tail("hello") if "isolation" in line.text]
    if "per-call" in applied:
        assert said == []
    else:
        assert said == [
            "isolation per-call is not applied: the fake1 server keeps module state between calls, as Kubeless' does"
        ]
    supervisor.stop("hello")
    supervisor.start(function())  # warm: every server applies it
    assert [line.text for line in supervisor.logs.tail("hello") if "isolation" in line.text] == said

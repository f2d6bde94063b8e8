"""Keeps functions running: prepare → start → wait ready; reload on change, keeping the last good code."""

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional

from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN, BackendFactory, Instance, Reach, State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.portholder import held_by
from kubeless_local.emulator.proxy import FrontDoor
from kubeless_local.emulator.recorder import Recorder, source_digest
from kubeless_local.emulator.taps import Taps
from kubeless_local.errors import UserError
from kubeless_local.runtimes import Catalog, Runtime
from kubeless_local.spec import PORT_ANNOTATION, FunctionSpec

if TYPE_CHECKING:
    from kubeless_local.emulator import debugging

STARTUP_TIMEOUT = 60.0
RELOAD_TIMEOUT = 30.0
FIRST_AUTO_PORT = 8080
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0  # seconds before restarting a crashed server: doubles per restart
SCRAPES_AT_ONCE = 16  # /metrics scraped at the same time by status()
SCRAPER_AGENT = "kubeless-local-status"  # its access-log lines are not shown to the user


def port_free(port):
    """Nothing listens on 127.0.0.1:port. SO_REUSEADDR as the runtime servers use it, so connections
    of an earlier run still in TIME_WAIT do not make the port look taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def in_use_by(port: int, taken: Mapping[int, str] = MappingProxyType({})) -> str:
    """Whose `port` is, for an error: ' by function NAME' (this session's), ' by `COMMAND` (pid N)', or ''."""
    return " by %s" % taken[port] if port in taken else held_by(port)


class PortBook:
    """Stable local ports per function name, remembered in .kubeless-local/ports.json."""

    def __init__(self, state_dir: Path, ephemeral=False):
        self.ephemeral = ephemeral  # tests: kernel-chosen ports, so parallel runs never collide
        self.path = state_dir / "ports.json"
        self.lock = threading.Lock()
        try:
            self.ports = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.ports = {}

    def assign(self, spec, taken):
        with self.lock:
            fixed = spec.annotations.get(PORT_ANNOTATION)
            if fixed:
                port = int(fixed)
                if port in taken or not port_free(port):
                    raise UserError(
                        "%s: port %d (annotation %s) is in use%s; stop what uses it or choose another port"
                        % (spec.origin, port, PORT_ANNOTATION, in_use_by(port, taken))
                    )
                return port
            port = self.ports.get(spec.name)
            wanted = spec.wanted_port
            if self.ephemeral:
                port = ephemeral_port()
            elif wanted and wanted not in taken and port_free(wanted):
                port = wanted
            elif not port or port in taken or not port_free(port):
                port = FIRST_AUTO_PORT
                while port in taken or port in self.ports.values() or not port_free(port):
                    port += 1
                    if port > 65000:
                        raise UserError("no free local port found above %d" % FIRST_AUTO_PORT)
            self.ports[spec.name] = port
            self.path.write_text(json.dumps(self.ports, indent=1, sort_keys=True))
            return port


def backoff(restarts):
    """Seconds to wait before the n-th restart (1, 2, …), as Kubernetes backs off a crashing container."""
    return min(BACKOFF_FIRST * 2 ** (restarts - 1), BACKOFF_MAX)


# A setup that failed because a tool the runtime installs with is missing (not the registries): what to install
# (`\1`: what the pattern found).
MISSING_TOOLS = (
    (
        re.compile(r"^(\S+): No module named pip$", re.M),
        r"\1 has no pip: install it (Debian, Ubuntu: `apt install python3-pip`; else `\1 -m ensurepip`)",
    ),
    (
        re.compile(r"\bnpm: (?:command )?not found"),
        "npm is not on PATH: install it (Debian, Ubuntu: `apt install npm`)",
    ),
    (  # Debian 12's golang-go is Go 1.19
        re.compile(r"^note: module requires Go (\S+)$", re.M),
        r"the Go on PATH is older than the runtime's server needs (Go \1 or newer): install a newer Go, or run the"
        " function on the docker backend (`--backend docker`)",
    ),
)


def setup_failed_message(runtime, output):
    for pattern, fix in MISSING_TOOLS:
        found = pattern.search(output)
        if found:
            return "the first-time setup of the %s runtime failed: %s, then save a file to retry\n%s" % (
                runtime,
                found.expand(fix),
                output,
            )
    return (
        "the first-time setup of the %s runtime failed: its first use installs the runtime's own libraries "
        "from the package registries (pip's index, the npm registry, the Go module proxy); make them reachable "
        "(or point PIP_INDEX_URL, npm_config_registry or GOPROXY at a mirror), then save a file to retry\n%s"
        % (runtime, output)
    )


STEP_STATES = {"runtime setup": State.SETUP_ERROR, "dependency install": State.INSTALL_ERROR}  # else CompileError


def ephemeral_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_metrics(url, timeout=1.0):
    """(calls, failures) summed over the function's /metrics, or (None, None) when unreachable."""
    import urllib.request  # with http.client, email and ssl (~15 ms): `ls`'s counts, not a function's start

    request = urllib.request.Request(url + "/metrics", headers={"User-Agent": SCRAPER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None, None
    totals = {"function_calls_total": 0.0, "function_failures_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            try:
                totals[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return int(totals["function_calls_total"]), int(totals["function_failures_total"])


def _scraped_all(urls: list) -> list:
    """scrape_metrics of each of `urls`, in that order, at most SCRAPES_AT_ONCE at the same time."""
    if len(urls) <= 1:
        return [scrape_metrics(url) for url in urls]
    import concurrent.futures  # (and logging with it): not on the way to the first function's start

    with concurrent.futures.ThreadPoolExecutor(min(len(urls), SCRAPES_AT_ONCE), "kl-scrape") as pool:
        return list(pool.map(scrape_metrics, urls))


def spec_fields(spec):
    """What `kubeless function ls|describe` shows of the Function itself."""
    if spec is None:
        return {}
    deps = spec.deps
    if spec.deps_file is not None:
        try:
            deps = spec.deps_file.read_text()
        except OSError:
            pass
    return {
        "namespace": spec.namespace,
        "handler": spec.handler,
        "labels": spec.labels,
        # as written (the Kubeless CLI shows the manifest's): a value read from a secret is not printed
        "env": {e["name"]: str(e.get("value", "")) for e in spec.container.get("env") or [] if isinstance(e, dict)},
        "memory": spec.memory_limit,
        "deps": deps,
    }


class Supervisor:
    """The functions of one session: their instances, the generation each serves, their ports."""

    def __init__(
        self,
        state_dir: Path,
        backend: BackendFactory,
        logs: LogHub,
        catalog: Optional[Catalog] = None,
        ephemeral_ports: bool = False,
        word: Callable[[UserError | str], str] = str,
        recorder: Optional[Recorder] = None,
        debug: Optional[dict[str, "debugging.Target"]] = None,
    ) -> None:
        """`backend` builds the backend (a Backend class, or `backends.factory(name)`); it is given `logs`
        and this supervisor's restart as its `on_exit`. `word` is how an error is shown in a function's log
        and `ls`, and a notice (errors.Notice) in its log: the CLI adds the command that helps (see errors.py).
        A backend whose servers are `fronted` gets a front door (emulator/proxy.py) per function on its port,
        which hands each call to `recorder` (None: calls are relayed, not recorded); another is given
        `recorder` for its own doors (the docker backend's). `debug`: the functions whose
        servers run under a debugger, by name (emulator/debugging.py); each keeps its port for the session."""
        self.word = word
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs = logs
        self.catalog = catalog or Catalog()
        self.ports = PortBook(self.state_dir, ephemeral_ports)
        self.instances: dict[str, Instance] = {}
        self.serving: dict[str, prep.Prepared] = {}  # the generation that serves now
        self.specs: dict[str, FunctionSpec] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()
        self.recorder = recorder
        self.doors: dict[str, FrontDoor] = {}  # function → its front door, kept across restarts and reloads
        self.digests: dict[tuple[str, int], str] = {}  # (function, generation) → sha256 of its source
        self.taps = Taps()  # what the triggers send the functions passes here (emulator/taps.py)
        self.debug = dict(debug or {})
        self.launched = threading.Event()  # set once a function's server was started, or failed to (session.py waits)
        self.backend = backend(logs, on_exit=self._exited, recorder=recorder)

    def _exited(self, instance: Instance) -> None:
        """A server died on its own: restart it with back-off, as Kubernetes restarts a pod's container."""
        if instance.state != State.CRASHED or self.instances.get(instance.name) is not instance:
            return
        instance.restarts += 1
        delay = backoff(instance.restarts)
        self.say(instance.name, "%s; restarting in %.1f s" % (instance.error.splitlines()[0], delay))

        def restart():
            time.sleep(delay)
            with self._lock(instance.name):
                prepared = self.serving.get(instance.name)
                if self.instances.get(instance.name) is instance and instance.state == State.CRASHED and prepared:
                    taken = self._taken(instance.name)
                    self._launch_on_a_free_port(instance, prepared, prepared.spec, taken)

        threading.Thread(target=restart, daemon=True).start()

    def _state_changed(self, instance: Instance) -> None:
        """A function's state changed: on the session's event bus (the recorder's), if there is one."""
        bus = self.recorder.bus if self.recorder is not None else None
        if bus is not None:
            bus.publish(
                "function-state",
                {
                    "function": instance.name,
                    "state": instance.shown_state.value,
                    "error": instance.error,
                    "url": instance.url,
                    "generation": getattr(self.serving.get(instance.name), "generation", None),  # serving
                },
            )

    def _taken(self, name: str) -> dict[int, str]:
        """Ports function `name` may not take, each with whose it is: the other functions' and every debugger's."""
        taken = {t.port: "the debugger of function %s" % n for n, t in self.debug.items()}
        taken.update((i.port, "function %s" % n) for n, i in self.instances.items() if n != name)
        return taken

    def say(self, name: str, text: str) -> None:
        self.logs.emit(name, text, "system")

    def _lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self.locks.setdefault(name, threading.Lock())

    def resolve(self, spec: FunctionSpec) -> Runtime:
        runtime, notice = self.backend.resolve(spec, self.catalog)
        if notice:
            self.say(spec.name, self.word(notice))
        return runtime

    def start(self, spec: FunctionSpec) -> Instance:
        """Start one function and wait until it serves (or fails); UserError for configuration errors."""
        with self._lock(spec.name):
            runtime = self.resolve(spec)
            if spec.isolation not in runtime.isolations:
                self.say(
                    spec.name,
                    "isolation %s is not applied: the %s server keeps module state between calls, as Kubeless' does"
                    % (spec.isolation, runtime.name),
                )
            taken = self._taken(spec.name)
            self._close_door(spec.name)  # of an instance this one replaces; its port is offered again
            port = self.ports.assign(spec, taken)
            instance = Instance(
                name=spec.name,
                runtime=runtime.name,
                port=port,
                on_state=self._state_changed,
                debug=self.debug.get(spec.name),
            )
            with self.lock:
                self.instances[spec.name], self.specs[spec.name] = instance, spec
            generation = self._prepare(instance, spec, runtime)
            if generation is None:
                return instance
            generation.switch()
            self.serving[spec.name] = generation.prepared
            self._launch_on_a_free_port(instance, generation.prepared, spec, taken)
            return instance

    def _prepare(
        self, instance: Instance, spec: FunctionSpec, runtime: Runtime, replaces: Optional[prep.Prepared] = None
    ) -> Optional[prep.Generation]:
        """A new generation of `spec`, to replace `replaces` (the one serving). None when a step failed or a file
        could not be read: said, and shown in `ls`; the last good generation keeps serving. UserError for a spec the
        pipeline refuses."""
        try:
            prepared = self.backend.prepare(
                spec, runtime, self.state_dir, lambda line: self.say(spec.name, line), previous=replaces
            )
        except prep.StepFailed as exc:
            self._step_failed(instance, spec, exc, serving=replaces is not None and self.backend.alive(instance))
            return None
        except OSError as exc:  # a file gone as it is read (an editor that saves by renaming, a delete), a full disk
            error = "%s: %s" % (exc.filename or spec.origin, exc.strerror or exc)
            self._mark_broken(instance, State.CONFIG_ERROR, error)
            self.say(spec.name, error)
            return None
        return prep.Generation(prepared, replaces)

    def _launch_on_a_free_port(
        self, instance: Instance, prepared: prep.Prepared, spec: FunctionSpec, taken: Mapping[int, str]
    ) -> None:
        """Launch; a server that lost the race for its port (it exits EXIT_CANNOT_LISTEN, or the port is
        taken once it died) moves to another port, unless the port is fixed: then a ConfigError."""
        for _ in range(3):
            self._launch(instance, prepared)
            door_open = self._door_open(instance)
            if instance.state == State.CRASHED and door_open and instance.exit_code == EXIT_CANNOT_LISTEN:
                continue  # its private port was taken meanwhile: the next launch picks another
            lost_port = instance.state == State.CRASHED and (
                instance.exit_code == EXIT_CANNOT_LISTEN
                or (not door_open and not port_free(instance.port) and not self.backend.holds_port(instance))
            )
            if not lost_port:
                return
            if PORT_ANNOTATION in spec.annotations:
                if instance.exit_code == EXIT_CANNOT_LISTEN:
                    instance.set_state(
                        State.CONFIG_ERROR,
                        "%s: port %d (annotation %s) is in use%s; stop what uses it or choose another port"
                        % (spec.origin, instance.port, PORT_ANNOTATION, in_use_by(instance.port)),
                    )
                return
            # Another program took the port between our check and the server's bind: move on.
            self.say(spec.name, "port %d was taken meanwhile; trying another" % instance.port)
            instance.port = self.ports.assign(spec, {**taken, instance.port: "another program"})

    def _step_failed(self, instance: Instance, spec: FunctionSpec, exc: prep.StepFailed, serving: bool) -> None:
        """An install/compile/check step failed: show its output; a serving function keeps its last good code."""
        prepared = self.serving.get(spec.name)
        output = prepared.map_paths(exc.output) if prepared is not None else exc.output
        state = STEP_STATES.get(exc.step, State.COMPILE_ERROR)
        if state == State.SETUP_ERROR:
            output = setup_failed_message(instance.runtime, output)
        self._mark_broken(instance, state, output)
        self.say(
            spec.name, "%s failed%s:\n%s" % (exc.step, ", still serving the last good code" if serving else "", output)
        )

    def _door_open(self, instance: Instance) -> bool:
        door = self.doors.get(instance.name)
        return door is not None and door.instance is instance and door.port == instance.port

    def _open_door(self, instance: Instance) -> bool:
        """The front door of a fronted backend's function on its port, and a new private port for its server.
        False when the port is taken (the instance is then Crashed as a server that cannot listen)."""
        if not self._door_open(instance):
            self._close_door(instance.name)
            try:
                self.doors[instance.name] = FrontDoor(instance, instance.port, self.recorder)
            except OSError as exc:
                instance.exit_code = EXIT_CANNOT_LISTEN
                instance.set_state(State.CRASHED, "cannot listen on port %d: %s" % (instance.port, exc.strerror))
                return False
            instance.front_door = True
        instance.server_port = ephemeral_port()
        return True

    def _close_door(self, name: str) -> None:
        door = self.doors.pop(name, None)
        if door is not None:
            door.close()

    def served(self, name: str) -> tuple[Optional[int], Optional[str]]:
        """(generation, sha256 of its source) of the code that serves function `name` now (the recorder's)."""
        prepared = self.serving.get(name)
        if prepared is None:
            return None, None
        key = (name, prepared.generation)
        if key not in self.digests:
            self.digests[key] = source_digest(prepared.code_dir)
        return prepared.generation, self.digests[key]

    def _launch(self, instance: Instance, prepared: prep.Prepared, report: bool = True) -> None:
        """Start a server on `prepared` and wait for its first word; one that does not serve is said in the log
        (`report`; a hand-over's new version is said by _serve_last_good instead, once)."""
        if instance.state == State.STOPPED:
            return  # stopped while it was being prepared
        instance.set_state(State.STARTING)
        instance.last_control, instance.exit_code = (None, -1), None
        if self.backend.fronted and not self._open_door(instance):
            return
        started = time.monotonic()
        self.backend.start(instance, prepared)
        self.launched.set()  # the admin API's imports run while the server boots, not while its first calls pass
        ok = instance.wait_for(lambda i: i.state != State.STARTING, STARTUP_TIMEOUT)
        if not ok:
            instance.set_state(State.CRASHED, "did not become ready within %ds" % STARTUP_TIMEOUT)
        if instance.last_control[0] == "ready":  # serving: Ready, or the last good code of a broken save
            instance.ready_ms = (time.monotonic() - started) * 1000
        elif report and instance.state != State.STOPPED:  # a crash's tail is in the log already: its headline only
            error = (
                instance.error.splitlines()[0] if instance.state == State.CRASHED and instance.error else instance.error
            )
            self.say(instance.name, "%s: %s" % (instance.state.value, error))

    def reload(self, spec: FunctionSpec) -> Instance:
        """New code or spec for a running function: prepare a generation, hand it to the backend, then keep
        it (it serves) or discard it (the last good generation keeps serving; `ls` says why)."""
        if spec.name not in self.serving:
            return self.start(spec)  # it never got as far as serving (bad runtime, port, first compile)
        with self._lock(spec.name), self._reloading(self.instances[spec.name]) as instance:
            runtime = self.resolve(spec)
            self.specs[spec.name] = spec
            started = time.monotonic()
            try:
                generation = self._prepare(instance, spec, runtime, replaces=self.serving[spec.name])
            except UserError as exc:
                self._mark_broken(instance, State.COMPILE_ERROR, self.word(exc))
                self.say(spec.name, self.word(exc))
                return instance
            if generation is None:
                return instance
            instance.broken = None  # what the new version does decides from here on
            # Only the code changed and the runtime reloads in place, or the backend swaps servers (blue/green):
            # the running server serves until its successor does, no dropped requests. A debugger that lives in
            # a worker (debugpy) needs a new server to listen on the same port.
            in_place = (
                self.backend.alive(instance)
                and (generation.reloads_in_place or self.backend.swaps)
                and (instance.debug is None or instance.debug.reloads_in_place)
            )
            if self._hand_over(instance, generation, in_place):
                instance.runtime = runtime.name  # a save may change it (python3.11 to nodejs20): `ls` shows it
                instance.reloads += 1
                self.serving[spec.name] = generation.prepared
                generation.keep(calls_may_run=in_place)
                self.say(spec.name, "reloaded in %.0f ms" % ((time.monotonic() - started) * 1000))
            return instance

    @contextlib.contextmanager
    def _reloading(self, instance: Instance) -> Iterator[Instance]:
        """A serving function shows Reloading while its save is prepared and handed over (it serves on: the
        last good code answers), then what came of it: Ready once the new generation is the serving one, or
        the broken save's state (which replaced Reloading already). A broken save's last good code that still
        runs serves too."""
        if instance.serves or (instance.broken is not None and self.backend.alive(instance)):
            instance.set_state(State.RELOADING)
        try:
            yield instance
        finally:
            if instance.state == State.RELOADING:
                instance.set_state(*(instance.broken or (State.READY, "")))

    def _hand_over(self, instance: Instance, generation: prep.Generation, in_place: bool) -> bool:
        """Switch to `generation` and have the backend serve it: in the running server, or a new one. True
        once it serves; a generation that does not load or start is discarded."""
        generation.switch()
        if in_place:
            return self._reload_in_place(instance, generation)
        self.backend.stop(instance)
        self._launch(instance, generation.prepared, report=False)
        if instance.state != State.READY:
            self._serve_last_good(instance, generation)
            return False
        return True

    def _reload_in_place(self, instance: Instance, generation: prep.Generation) -> bool:
        """The running server loads `generation` (a signal); True once it serves it. Code that does not load
        is discarded, and the server keeps serving the last good code."""
        expected = instance.last_control[1] + 1
        # A server may finish the calls in flight first (Go re-executes once they are done);
        # the function's timeout bounds them.
        patience = max(RELOAD_TIMEOUT, prep.call_bound(generation.prepared.spec))
        self.backend.reload(instance, generation.prepared)
        done = instance.wait_for(
            lambda i: i.last_control[1] >= expected or i.state in (State.CRASHED, State.STOPPED), patience
        )
        if done and instance.last_control == ("load-failed", expected):
            self._mark_broken(instance, State.COMPILE_ERROR, instance.error)
            generation.discard()  # new workers keep loading the last good code
            self.say(instance.name, "load failed, still serving the last good code:\n" + instance.error)
            return False
        if not done:
            instance.set_state(State.CRASHED, "reload did not finish within %ds" % patience)
        return instance.serves

    def _serve_last_good(self, instance: Instance, failed: prep.Generation) -> None:
        """A new generation that needs a new server did not start (a handler that does not exist, a crash
        while loading): it is discarded and the last good generation serves again, as after a syntax error;
        `ls` says why."""
        error = instance.error
        self.backend.stop(instance)
        failed.discard()
        # marked before the start, so the last good server's ready line shows the broken save, never Ready
        self._mark_broken(instance, State.COMPILE_ERROR, error)
        self._launch(instance, self.serving[instance.name])  # not kept: the last good one still serves
        if instance.serves:
            self.say(instance.name, "the new version did not start, still serving the last good code:\n" + error)
        else:  # the last good one's own failure was said by its launch
            self.say(instance.name, "the new version did not start:\n" + error)

    def _mark_broken(self, instance: Instance, state: State, error: str) -> None:
        """The saved version does not serve (`state`, `error`). A function with a last good generation keeps
        serving it and shows this state until a save serves: across restarts of its server too (a crash, a
        runaway call), which serve the last good code again."""
        if instance.name in self.serving:
            instance.broken = (state, error)
        instance.set_state(state, error)

    def fail(self, spec: FunctionSpec, message: str) -> None:
        """Record a function that cannot run (bad runtime, port in use) so `ls` shows why."""
        with self.lock:
            instance = self.instances.get(spec.name)
            if instance is None:
                instance = self.instances[spec.name] = Instance(
                    name=spec.name, runtime=spec.runtime, port=0, on_state=self._state_changed
                )
                self.specs[spec.name] = spec
        if not self.backend.alive(instance):
            self._close_door(spec.name)
            instance.port = 0  # nothing serves: no URL to show
            instance.set_state(State.CONFIG_ERROR, message)

    def config_error(self, name: str, message: str) -> None:
        """An object whose manifest does not load: `ls` shows it as ConfigError with the reason. A function
        that serves keeps serving (its last good manifest stays in force)."""
        with self.lock:
            instance = self.instances.get(name)
            if instance is None:
                instance = self.instances[name] = Instance(name=name, runtime="", port=0, on_state=self._state_changed)
        self._mark_broken(instance, State.CONFIG_ERROR, message)

    def stop(self, name: str) -> None:
        instance = self.instances.get(name)
        if instance is not None:  # wakes a start waiting for readiness with the lock held (Ctrl-C: at once)
            instance.set_state(State.STOPPED)
        with self._lock(name):
            instance = self.instances.pop(name, None)
            self.serving.pop(name, None)
            self.specs.pop(name, None)
            if instance is not None:
                instance.set_state(State.STOPPED)
                self.backend.stop(instance)
            self._close_door(name)

    def stop_all(self) -> None:
        threads = [threading.Thread(target=self.stop, args=(name,)) for name in list(self.instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.backend.close()

    def server_target(self, instance: Instance) -> Optional[Reach]:
        """Where the gateway reaches the function's server past its front door (Backend.server_target)."""
        return self.backend.server_target(instance)

    def wait_ready(self, name: str, timeout: float) -> Optional[tuple[Instance, FunctionSpec]]:
        """(instance, spec) of function `name` once it serves (Ready, or its last good code while a save is
        broken), waiting at most `timeout` seconds (0: one look); None when it does not serve by then. What
        every trigger asks before it sends (emulator/triggers/delivery.py, `send_when_ready`)."""
        deadline, poll = time.monotonic() + timeout, 0.1  # poll: while it is not registered yet
        while True:
            instance, spec = self.instances.get(name), self.specs.get(name)
            if instance is not None and spec is not None and instance.serves and instance.port:  # a port: a URL
                return instance, spec
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if instance is None or spec is None or instance.serves:
                time.sleep(min(remaining, poll))  # not registered yet (or serving, its URL not set yet)
            else:
                instance.wait_for(lambda i: i.serves, min(remaining, 5 * poll))  # then look again: it may be replaced

    def _serves_metrics(self, instance: Instance) -> bool:
        """Its server answers /metrics (a custom image's may route every path to the function: not scraped)."""
        spec = self.specs.get(instance.name)
        return spec is not None and self.catalog.serves_metrics(instance.runtime, spec.image)

    def _debug_row(self, instance: Instance, spec: Optional[FunctionSpec]) -> Optional[dict[str, Any]]:
        """Where a debugged function's debugger listens, and the folders an editor maps between: the user's
        files and the stable install link the server loads them from."""
        if instance.debug is None or spec is None:
            return None
        from kubeless_local.emulator import debugging  # with `--debug` only

        prepared = self.serving.get(instance.name)
        return {
            "debugger": instance.debug.debugger,
            "port": instance.debug.port,
            "local_root": debugging.local_root(spec),
            "remote_root": self.backend.served_root(prepared) if prepared is not None else "",
        }

    def status(self, name: Optional[str] = None, counted: bool = True) -> list[dict[str, Any]]:
        """A row per function (`name`: that one's only, none if unknown). `counted`: with the calls and errors
        read from each serving function's /metrics, scraped all at once (a hundred functions cost the slowest
        scrape, not their sum); without, nothing is scraped (what `call` and `logs` ask)."""
        with self.lock:  # functions register while `ls` asks (start-up)
            instances = sorted(item for item in self.instances.items() if name in (None, item[0]))
        metrics = {each: self._serves_metrics(instance) for each, instance in instances}
        scraped = [instance.server_url for each, instance in instances if counted and metrics[each] and instance.serves]
        counts = dict(zip(scraped, _scraped_all(scraped)))
        rows = []
        for each, instance in instances:
            spec = self.specs.get(each)
            calls, failures = counts.get(instance.server_url, (None, None))
            rows.append(
                {
                    "name": each,
                    "runtime": instance.runtime,
                    "state": instance.shown_state.value,
                    "url": instance.url,
                    "port": instance.port,
                    "debug": self._debug_row(instance, spec),
                    "pid": instance.pid,
                    "backend": self.backend.name,
                    "calls": calls,  # None: not known (not serving, no /metrics to count them from, not counted)
                    "errors": failures,
                    "metrics": metrics[each],  # its server answers /metrics (see _serves_metrics)
                    "reloads": instance.reloads,
                    "restarts": instance.restarts,
                    "error": instance.error,
                    "ready_ms": instance.ready_ms,
                    "recorded": instance.front_door and self.recorder is not None,
                    # the function's own server answers on the port (in CompileError: the last good code)
                    "serving": instance.state in (State.READY, State.RELOADING)
                    or (each in self.serving and instance.port != 0 and self.backend.alive(instance)),
                    **spec_fields(spec),
                    **self.backend.describe(instance),
                }
            )
        return rows

"""The backend interface: the same contract for local processes and containers.

A backend is built with its collaborators and nothing is set on it afterwards (kind's providers are the
model): the log hub its servers' output goes to, `on_exit` (the supervisor's restart, told when a server
dies on its own) and the guardian (told the process groups and containers it starts, so they die with
`dev`; None: nothing watches them, as in tests) and the recorder that a backend's own front doors hand
each call to (the docker backend's, frontdoor.py; None: not recorded). The supervisor builds its backend
through a BackendFactory, so that it can pass its own `on_exit` and its recorder.
"""

import abc
import enum
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol, Union

if TYPE_CHECKING:
    from kubeless_local.emulator.debugging import Target
    from kubeless_local.emulator.frontdoor import FrontDoor
    from kubeless_local.emulator.guardian import Guardian
    from kubeless_local.emulator.logs import LogHub
    from kubeless_local.emulator.prepare import Prepared
    from kubeless_local.emulator.recorder import Recorder
    from kubeless_local.runtimes import Catalog, Runtime
    from kubeless_local.spec import FunctionSpec

EXIT_CANNOT_LISTEN = 4  # every runtime server exits with it when it cannot bind FUNC_PORT (runtimes/README.md)


class State(str, enum.Enum):
    INSTALLING = "Installing"  # laying out the code, installing deps, compiling (before it first starts)
    STARTING = "Starting"
    READY = "Ready"
    # a save is being prepared and handed over while the last good code serves (Supervisor.reload): serving
    RELOADING = "Reloading"
    COMPILE_ERROR = "CompileError"  # code that does not load/compile; the last good code keeps serving
    INSTALL_ERROR = "InstallError"
    SETUP_ERROR = "SetupError"  # the runtime's own first-time setup failed (registries unreachable)
    CRASHED = "Crashed"
    CONFIG_ERROR = "ConfigError"  # the manifest or runtime is wrong; nothing runs
    STOPPED = "Stopped"
    # what `ls` shows for a Ready function whose server runs under a debugger (Instance.shown_state); the
    # engine itself keeps it Ready: it serves
    DEBUGGING = "Debugging"


@dataclass
class Instance:
    """One running function: what `ls` shows and what events are sent to."""

    name: str
    runtime: str
    port: int
    state: State = State.INSTALLING
    error: str = ""
    reloads: int = 0
    restarts: int = 0
    pid: Optional[int] = None
    ready_ms: Optional[float] = None  # launch -> ready
    exit_code: Optional[int] = None  # of the server's last exit (EXIT_CANNOT_LISTEN: it lost its port)
    handle: object = None  # backend-private
    changed: threading.Condition = field(default_factory=threading.Condition)
    # A front door listens on `port`, records each call and reads the source mark (`front_door`): the process
    # backend's (emulator/proxy.py), whose server listens on `server_port` (private: loopback, unlisted; 0: the
    # server listens on `port`), or the docker backend's (frontdoor.py, given a recorder).
    server_port: int = 0
    front_door: bool = False
    # told (state, error) after each change of state, outside the lock (the session's event bus); set by
    # whoever creates the instance
    on_state: Optional[Callable[["Instance"], None]] = None
    debug: Optional["Target"] = None  # its server runs under a debugger on this port (emulator/debugging.py)

    @property
    def url(self) -> Optional[str]:
        return "http://127.0.0.1:%d" % self.port if self.port else None

    @property
    def listen_port(self) -> int:
        """The port the runtime server binds."""
        return self.server_port or self.port

    @property
    def server_url(self) -> Optional[str]:
        """The runtime server itself (its /metrics, /healthz), past the front door."""
        return "http://127.0.0.1:%d" % self.listen_port if self.listen_port else None

    last_control: tuple[Optional[str], int] = (None, -1)  # (event, runtime generation) of the last control line
    # (state, error) of a saved version that does not serve (it does not load/compile/install, or its
    # manifest is wrong) while the last good code does: what `ls` shows whenever that server is ready,
    # restarts included, until a save serves. Set and cleared by the supervisor.
    broken: Optional[tuple[State, str]] = None
    # Run when the server's next control line says its code was replaced in place (ready), dropped when it says
    # the new code failed to load (the old code serves on): the backend's clean-up of the code replaced.
    after_reload: list[Callable[[], None]] = field(default_factory=list)

    @property
    def serves(self) -> bool:
        """It answers calls: Ready, Reloading (the last good code serves until the save does), or showing a
        broken save while its last good code serves (as a cluster's old pod keeps serving while the new one
        fails). Events and cron runs are sent to it then too."""
        return self.state in (State.READY, State.RELOADING) or (
            self.broken is not None and self.state == self.broken[0] and self.runs_code
        )

    @property
    def runs_code(self) -> bool:
        """Its server has code loaded: it said ready, or a later generation failed to load in place (the
        server keeps the code it had; only a server's first generation, 0, failing leaves it none)."""
        event, generation = self.last_control
        return event == "ready" or (event == "load-failed" and generation > 0)

    @property
    def shown_state(self) -> State:
        """The state `ls` shows: Debugging for a Ready function under a debugger."""
        return State.DEBUGGING if self.debug is not None and self.state == State.READY else self.state

    def on_control(self, event: Optional[str], generation: int, error: str = "") -> None:
        """A control line of the server (`ready` or `load-failed` of its code generation `generation`)."""
        with self.changed:
            self.last_control = (event, generation)
            if event == "ready" and self.state != State.RELOADING:  # a reload says Ready once it is over
                self.state, self.error = self.broken or (State.READY, "")
            elif event == "load-failed":
                self.state, self.error = State.COMPILE_ERROR, error
            replaced, self.after_reload = (self.after_reload if event == "ready" else []), []
            self.changed.notify_all()
        for clean_up in replaced:
            clean_up()
        if self.on_state is not None:
            self.on_state(self)

    def set_state(self, state: State, error: str = "") -> None:
        with self.changed:
            self.state, self.error = state, error
            self.changed.notify_all()
        if self.on_state is not None:
            self.on_state(self)

    def wait_for(self, predicate: Callable[["Instance"], bool], timeout: Optional[float]) -> bool:
        """Block until predicate(instance) is true; returns it (False on timeout)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)


OnExit = Callable[[Instance], None]  # told when a server died on its own (it is Crashed then)


def ignore_exit(instance: Instance) -> None:
    """The `on_exit` of a backend that no supervisor restarts from (a test, a one-off run)."""


class Reach(NamedTuple):
    """Where a relay of `dev` other than the function's front door (the gateway) reaches the function's server
    past that door: `target`, a TCP address or a connector's unix socket path (frontdoor.Target); `generation`,
    the code serving there when the backend knows it (else the recorder asks); `door`, the front door that
    drains `target` when the backend replaces that server (blue/green): told of each call in flight there
    (FrontDoor.visit), so the old server goes only once they are answered too."""

    target: Union[str, tuple[str, int], None]  # None: not reachable at this moment (its server is restarting)
    generation: Optional[int] = None
    door: Optional["FrontDoor"] = None


class Backend(abc.ABC):
    """Starts, reloads and stops runtime servers for prepared functions."""

    name = "abstract"
    # Its servers listen on a private port and the supervisor puts a front door (emulator/proxy.py) on the
    # function's port, which records every call. The docker backend has its own door (frontdoor.py, a byte
    # relay into the container's namespace), which records each call to `recorder` itself.
    fronted = False

    def __init__(
        self,
        logs: "LogHub",
        *,
        on_exit: OnExit = ignore_exit,
        guardian: Optional["Guardian"] = None,
        recorder: Optional["Recorder"] = None,
    ) -> None:
        self.logs = logs  # the servers' output, and what the backend has to say about them
        self.on_exit = on_exit  # called when a server dies on its own (the supervisor restarts it)
        self.guardian = guardian  # told what the backend starts, so it dies with `dev` (None: nobody)
        self.recorder = recorder  # where its own front doors record calls (None: nowhere)

    @abc.abstractmethod
    def start(self, instance: Instance, prepared: "Prepared") -> None:
        """Launch the runtime server for `prepared`; returns when it is launched. A server that cannot
        be launched leaves the instance Crashed."""

    @abc.abstractmethod
    def reload(self, instance: Instance, prepared: "Prepared") -> str:
        """Make the running server serve the newly prepared code: "signal" (in place), "restart", or "swap"
        (blue/green, see `swaps`). The instance hears the outcome as a control line of its next generation."""

    @property
    def swaps(self) -> bool:
        """It replaces a running server blue/green (the old one serves until the new one is ready, a new one
        that does not become ready is load-failed): the supervisor hands it every new generation of a running
        function through reload(), not only those that reload in place."""
        return False

    @abc.abstractmethod
    def stop(self, instance: Instance) -> None:
        """Stop the server and everything it started."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends keep nothing between servers
        """Let go of what the backend keeps between servers (the process backend's templates)."""

    def server_target(self, instance: Instance) -> Optional[Reach]:
        """Where the gateway reaches the function's server past its front door (one relay in `dev`, not two); None:
        only through its URL. A fronted backend's server listens on its private port."""
        return Reach(("127.0.0.1", instance.server_port)) if instance.server_port else None

    def check_debug(self, target: "Target") -> None:
        """Raises a UserError when a debugged function (`dev --debug`, emulator/debugging.py) cannot run under
        its debugger on this backend as it is set up; every backend can, unless it says otherwise."""
        return None

    def served_root(self, prepared: "Prepared") -> str:
        """The folder the server loads the function's code from, as its debugger names the files (what an
        editor maps the user's folder to): the stable install link."""
        return str(prepared.install_link)

    def resolve(self, spec: "FunctionSpec", catalog: "Catalog") -> tuple["Runtime", Optional[str]]:
        """(Runtime, notice) for a Function; by default from the toolchains on this machine, which cannot run
        a Function that is only an image (the docker backend can)."""
        if not spec.runtime and spec.image:
            from kubeless_local.errors import BadRequest

            raise BadRequest(
                "Function %s has no runtime, only an image (%s): it runs in that image, not as a local process"
                % (spec.name, spec.image),
                "image-only function",
                spec.name,
            )
        return catalog.resolve(spec.runtime)

    def prepare(
        self,
        spec: "FunctionSpec",
        runtime: "Runtime",
        state_dir: Path,
        on_line: Callable[[str], None] = lambda line: None,
        previous: Optional["Prepared"] = None,
    ) -> "Prepared":
        """Lay out, install and compile a new generation (see prepare.prepare), on the host by default."""
        from kubeless_local.emulator import prepare

        return prepare.prepare(spec, runtime, state_dir, on_line, previous)

    @abc.abstractmethod
    def alive(self, instance: Instance) -> bool:
        """True while the instance's server process/container runs."""

    def holds_port(self, instance: Instance) -> bool:
        """The instance's port is held by what this backend runs for it (its server still running, never
        ready; the docker backend's front door), so a port that is not free is no race lost to another program."""
        return self.alive(instance)

    def describe(self, instance: Instance) -> dict[str, Any]:
        """What this backend adds to the instance's `ls` row (the docker backend: its image, and why)."""
        return {}

    def server_exited(self, instance: Instance, code: object, what: str = "the runtime", hint: str = "") -> None:
        """The server (process or container) ended on its own with `code` (an int, or why it is unknown). A
        server whose code never loaded stays in CompileError (its waiters wake; a restart would fail the same
        way); anything else, a server that kept the last good code after a failed reload included, is Crashed
        with the last log lines, and `on_exit` is told (restart with back-off; EXIT_CANNOT_LISTEN: a port race)."""
        instance.exit_code = code if isinstance(code, int) else None
        never_loaded = instance.last_control == ("load-failed", 0)  # the first load of this server failed
        if instance.state == State.COMPILE_ERROR and never_loaded and code != EXIT_CANNOT_LISTEN:
            instance.set_state(State.COMPILE_ERROR, instance.error)
            return
        # the server's own lines, not ours ("restarting in…"): a crash loop must not carry them along
        said = [line.text for line in self.logs.tail(instance.name) if line.stream != "system"]
        tail = "\n".join(said[-5:])
        instance.set_state(State.CRASHED, "%s exited with code %s%s\n%s" % (what, code, hint, tail))
        self.on_exit(instance)

    def check(self) -> None:  # noqa: B027 - optional hook: most backends can always run
        """Raise UserError when this backend cannot run here (e.g. Docker not running)."""


class BackendFactory(Protocol):
    """How a backend is built: a Backend class is one (`backends.factory(name)` gives one by name). The
    supervisor calls it with its log hub, its restart as `on_exit` and its recorder; the session binds the
    guardian."""

    def __call__(
        self,
        logs: "LogHub",
        *,
        on_exit: OnExit = ignore_exit,
        guardian: Optional["Guardian"] = None,
        recorder: Optional["Recorder"] = None,
    ) -> Backend: ...


CONTROL_PREFIX = "@kubeless-local "


def handle_output(
    instance: Instance, logs: "LogHub", line: str, stream: str, map_paths: Callable[[str], str] = lambda text: text
) -> None:
    """One line of runtime output: a control line updates the instance, anything else is a log. A control line may
    follow output the function left without a newline (printed as it loaded): that output is a line of its own."""
    at = line.find(CONTROL_PREFIX)
    if at >= 0:
        import json

        try:
            message = json.loads(line[at + len(CONTROL_PREFIX) :])
        except ValueError:
            message = None
        if isinstance(message, dict):
            if at:
                _log(instance, logs, line[:at], stream, map_paths)
            instance.on_control(
                message.get("event"), int(message.get("generation") or 0), map_paths(message.get("error") or "")
            )
            return
    _log(instance, logs, line, stream, map_paths)


def _log(instance: Instance, logs: "LogHub", line: str, stream: str, map_paths: Callable[[str], str]) -> None:
    if "kubeless-local-status" in line:
        return  # the engine's own /metrics scrape (ls, dev's table): noise in the user's log
    logs.emit(instance.name, map_paths(line), stream)

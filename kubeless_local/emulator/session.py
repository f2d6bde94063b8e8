"""What `dev` and `run` run for one project folder: backend, supervisor, file watcher and admin API.

Start-up order matters: the project's lock first (one `dev` per folder, none inside or above a running
project), then leftovers of a dead session are stopped, the guardian started (servers die with
`dev`), and then the functions are started while the admin API is published beside them (so `ls` shows
functions while they install). What only some projects use is loaded when one does: the HTTPTrigger
gateway (asyncio) with the first HTTPTrigger, the Kafka bridge with a broker.
"""

import dataclasses
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from kubeless_local import config
from kubeless_local import spec as specs
from kubeless_local.emulator import backends, headstart, registry, relaystart
from kubeless_local.emulator.base import BackendFactory
from kubeless_local.emulator.bus import EventBus
from kubeless_local.emulator.guardian import Guardian, sweep_leftovers
from kubeless_local.emulator.lock import ProjectLock, refuse_nested
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.project import Project
from kubeless_local.emulator.recorder import Recorder
from kubeless_local.emulator.supervisor import Supervisor, port_free
from kubeless_local.emulator.triggers import delivery, interface
from kubeless_local.emulator.triggers.cron import Cron
from kubeless_local.emulator.triggers.cron import run_row as cron_row
from kubeless_local.emulator.triggers.topics import TopicStore
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME
from kubeless_local.runtimes import Catalog

if TYPE_CHECKING:
    from kubeless_local.emulator import debugging
    from kubeless_local.emulator.admin import AdminServer
    from kubeless_local.emulator.gateway import Gateway
    from kubeless_local.emulator.triggers.kafka_bridge import KafkaBridge

ADMIN_PATIENCE = 0.1  # seconds the admin API waits for the first server to start before it opens anyway


def state_folder_refused(private: Path, exc: OSError) -> str:
    """The line for a project folder where the session cannot keep its state (.kubeless-local/)."""
    try:
        theirs = private.stat().st_uid != os.getuid()
    except OSError:
        theirs = False  # not there: the project folder refused it
    if theirs:
        return "%s belongs to another user; remove it (or make it yours) and start again" % private
    return (
        "cannot make %s (%s): kubeless-local keeps its state beside the manifests; run it in a copy of the project"
        " that you can write to" % (private, exc.strerror or exc)
    )


class DevSession:
    """Create, then `start()`; `logs` exists from the beginning so start-up output can be shown.

    `backend` (a BackendFactory, e.g. a Backend class) replaces the backend `backend_name` names (tests pass
    a fake); `guardian` makes the session's Guardian (unit tests pass one without a process); `ignore`
    holds gitignore-style patterns (`dev --ignore`); `ephemeral_ports`: kernel-chosen ports, not the
    remembered ones (a test session beside the user's `dev`, or several at once). `debug`: names of functions
    whose servers run under their runtime's debugger, on ports from `debug_port` on (None: each debugger's
    own default; see emulator/debugging.py); refused before anything starts when one cannot be.
    """

    def __init__(
        self,
        root: Path,
        backend_name: Optional[str] = None,
        manifests: Optional[specs.Manifests] = None,
        say: Callable[[str], None] = print,
        *,
        ignore: tuple[str, ...] = (),
        backend: Optional[BackendFactory] = None,
        logs: Optional[LogHub] = None,
        kafka_brokers: Optional[str] = None,
        state_dir: Optional[Path] = None,
        allow_empty: bool = False,
        deployed_only: bool = False,
        guardian: Callable[[Path], Guardian] = Guardian,
        word: Callable[[UserError | str], str] = str,
        ephemeral_ports: bool = False,
        gateway_port: Optional[int] = None,
        gateway_https_port: Optional[int] = None,
        debug: tuple[str, ...] = (),
        debug_port: Optional[int] = None,
    ) -> None:
        self.debug, self.debug_port = debug, debug_port
        self.ephemeral_ports = ephemeral_ports  # kernel-chosen ports (tests: parallel sessions never collide)
        self.word = word  # how an error or notice shows in a function's log (the CLI: with the command that helps)
        self.allow_empty = allow_empty  # `up`: a folder without functions yet is fine
        self.deployed_only = deployed_only  # the session `function deploy` started: only what the verbs wrote
        self.root = Path(root).resolve()
        self.ignore = ignore  # gitignore-style patterns (`dev --ignore`)
        # `run NAME` keeps its own state (lock, ports, admin API) in .kubeless-local/run-NAME/: several
        # `run`s and a `dev` share a folder, as several functions deployed from one folder do.
        self.state_dir = Path(state_dir) if state_dir else self.root / STATE_DIRNAME
        self.registration: Optional[Path] = None
        self.backend_name, self.manifests, self.say = backend_name, manifests, say
        self.backend = backend
        self.new_guardian = guardian  # the process that stops what `dev` started when it dies (kill -9 too)
        self.logs = logs or LogHub()
        self.lock = ProjectLock(self.state_dir)
        self.kafka_brokers = kafka_brokers  # `dev --kafka-brokers`/KAFKA_BROKERS, before .kubeless-local.yaml's
        self.kafka: Optional[KafkaBridge] = None
        self.settings = config.Settings(self.root / config.FILE)  # the defaults until start() reads the file
        # the parts start() builds; None until then (stop() is safe after a failed start)
        self.supervisor: Optional[Supervisor] = None
        self.project: Optional[Project] = None
        self.admin: Optional[AdminServer] = None
        self.guardian: Optional[Guardian] = None
        self.cron: Optional[Cron] = None
        self.events: Optional[delivery.Dispatcher] = None  # the embedded topics' Dispatcher
        self.bus = EventBus()  # what happens in the session, for a client that follows it (emulator/bus.py)
        self.recorder: Optional[Recorder] = None  # every call the functions' front doors see (emulator/recorder.py)
        # the HTTPTrigger gateway's ports (None: gateway.DEFAULT_PORT, DEFAULT_HTTPS_PORT)
        self.gateway_ports = (gateway_port, gateway_https_port)
        self.gateway: Optional[Gateway] = None  # made with the first HTTPTrigger (_update_gateway)
        self.started = False  # the first load is done (a reload's problems are said, not raised)

    def start(self) -> None:
        """Start every function and watch the folder. UserError for what the user must fix first."""
        kind = "dev" if self.state_dir == self.root / STATE_DIRNAME else self.state_dir.name
        with registry.claiming():  # of two sessions nesting with each other started at once, one runs
            refuse_nested(self.root)
            private = self.root / STATE_DIRNAME
            try:
                private.mkdir(mode=0o700, exist_ok=True)
                private.chmod(0o700)  # topics.db, logs, generations: the user's only, as admin.json is
            except OSError as exc:
                raise UserError(state_folder_refused(private, exc)) from None
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()  # before anything else touches the folder
            # found from any folder (once its admin API answers), and by a session starting above it
            self.registration = registry.register(self.state_dir / "admin.json", self.root, kind)
        ignore = self.root / STATE_DIRNAME / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# kubeless-local's working state (generations, ports, admin API); not source\n*\n")
        sweep_leftovers(self.state_dir, self.say)
        self.settings = config.load(self.root)
        for notice in self.settings.notices:
            self.logs.emit("dev", notice, "system")
        self.guardian = self.new_guardian(self.state_dir)
        # a docker `run`'s relay, read at its first step: sent now that the guardian removes it if `run` dies
        relaystart.send(str(self.state_dir.resolve()), self.guardian.watch_containers)
        backend = self.backend or backends.factory(self._backend_name(), self.settings)
        self.recorder = Recorder(
            self.state_dir,
            keep=self.settings.recorder.keep,
            max_bytes=self.settings.recorder.max_bytes,
            logs=self.logs,
            bus=self.bus,
            served=self._served,
            say=lambda text: self.logs.emit("dev", text, "system"),
            open_now=False,  # `_open_admin` opens it: its file writes come after the first server's start
        )
        self._follow_logs()
        targets = self._debug_targets()
        self.supervisor = Supervisor(
            self.state_dir,
            functools.partial(backend, guardian=self.guardian),
            self.logs,
            ephemeral_ports=self.ephemeral_ports,
            word=self.word,
            recorder=self.recorder,
            debug=targets,
        )
        for target in targets.values():
            self.supervisor.backend.check_debug(target)
        self._start_events()
        # cron: CronJobTriggers fire in real time once the functions are started (emulator/triggers/cron.py)
        self.cron = Cron(
            self._manifests,
            self.supervisor,
            self.logs,
            on_run=lambda run: self.bus.publish("cron-run", cron_row(run)),
        )
        # kafka, a real broker: `dev` is its KafkaTrigger controller (triggers/kafka_bridge.py); no broker: exit 2
        brokers, attempts = config.kafka_brokers(self.settings, self.kafka_brokers)
        fixed_without_triggers = self.manifests is not None and not self.manifests.kafka_triggers  # `run`
        if brokers and not fixed_without_triggers:
            from kubeless_local.emulator.triggers import kafka_bridge  # and asyncio, aiokafka: with a broker only

            self.kafka = kafka_bridge.KafkaBridge(
                brokers,
                self._manifests,
                self.supervisor,
                self.logs,
                self.root,
                attempts=attempts,
                retry_backoff=self.settings.kafka.retry_backoff,
                shared=kafka_bridge.shares_the_controllers_group(self.settings),
            )
            self.kafka.connect()
        self.project = Project(
            self.root, self.supervisor, self.manifests, self.ignore, self.allow_empty, self.deployed_only
        )
        self.project.on_manifests.append(self._update_events)
        self.project.on_manifests.append(self._update_gateway)
        # The admin API and the recorder's database open while the functions start: once the first server has
        # started (or failed to), or ADMIN_PATIENCE into the start (an install), whichever comes first. Their making
        # (http.server's import, ~15 ms; a database's files) is then not on the way to the first server's start, and
        # the API answers long before an install ends.
        opening: list[BaseException] = []
        admin = threading.Thread(target=self._open_admin, args=(opening,), name="admin-open", daemon=True)
        admin.start()
        try:
            self.project.start()
        finally:
            self.supervisor.launched.set()  # none was started (a ConfigError, Ctrl-C): open it now
            admin.join()
        if opening:
            raise opening[0]
        self.started = True
        headstart.close_unclaimed()  # what `run` started ahead and no backend claimed (emulator/headstart.py)
        self.project.watch()
        self.cron.start()
        if self.kafka is not None:
            self.kafka.start()

    def _open_admin(self, failed: list[BaseException]) -> None:
        """The admin API over the session's parts, listening (admin.json written); what fails goes in `failed`."""
        assert self.supervisor is not None, "start() makes the supervisor first"
        self.supervisor.launched.wait(ADMIN_PATIENCE)
        assert self.recorder is not None, "start() makes the recorder first"
        self.recorder.open_database()
        try:
            from kubeless_local.emulator.admin import AdminServer

            admin = AdminServer(self.supervisor, self.state_dir, self.root)
            admin.recorder, admin.bus, admin.cron, admin.kafka = self.recorder, self.bus, self.cron, self.kafka
            # the session's topics, picked here once: a real broker's (NATS still embedded), or the embedded ones
            embedded = interface.EmbeddedTopics(self.events)
            admin.topics = interface.BrokerTopics(self.kafka, embedded) if self.kafka is not None else embedded
            admin.start()
            self.admin = admin
        except BaseException as exc:  # noqa: BLE001 - raised on the session's thread, after the functions' start
            failed.append(exc)

    def _debug_targets(self) -> dict[str, "debugging.Target"]:
        """The debugged functions and their ports, checked against the project's Functions."""
        if not self.debug:
            return {}
        from kubeless_local.emulator import debugging

        catalog = Catalog()
        loaded = self.manifests if self.manifests is not None else specs.Loader(self.root, self.ignore).collect()
        return debugging.plan(
            self.debug,
            loaded.functions,
            lambda spec: catalog.debugger(spec.runtime, spec.image),
            self.debug_port,
            port_free,
        )

    def _served(self, name: str) -> tuple[Optional[int], Optional[str]]:
        """(generation, source sha256) serving function `name`: what the recorder notes on each record."""
        return self.supervisor.served(name) if self.supervisor is not None else (None, None)

    def _follow_logs(self) -> None:
        """Every log line goes on the bus too (one thread, fed by the hub's subscription)."""
        lines = self.logs.subscribe()

        def forward() -> None:
            while True:
                line = lines.get()
                if line is None:
                    return
                row = {"function": line.function, "text": line.text, "stream": line.stream, "time": line.time}
                self.bus.publish("log", row)

        self._log_lines = lines
        threading.Thread(target=forward, name="bus-logs", daemon=True).start()

    def _manifests(self) -> specs.Manifests:
        """The manifests in force: the project's, reloaded on every valid save."""
        return self.project.manifests if self.project is not None else specs.Manifests()

    def _start_events(self):
        """Embedded topics: KafkaTrigger/NATSTrigger delivery (KafkaTriggers: unless a real broker runs them)."""
        kafka = self.settings.kafka
        store = TopicStore(self.state_dir)
        self.events = delivery.Dispatcher(
            store,
            self.supervisor,
            self.logs,
            max_attempts=kafka.max_attempts,
            retry_backoff=kafka.retry_backoff,
            max_in_flight=kafka.max_in_flight,
            retention_hours=kafka.retention_hours,
            word=self.word,
            on_event=self.bus.publish,
        )

    def _update_events(self, manifests):
        """New manifests for the embedded topics; with a real broker its bridge delivers the KafkaTriggers."""
        if self.kafka is not None:
            manifests = dataclasses.replace(manifests, kafka_triggers=[])
        assert self.events is not None, "start() starts the embedded topics before the project"
        self.events.update(manifests)

    def _update_gateway(self, manifests: specs.Manifests) -> None:
        """HTTPTriggers: the gateway (emulator/gateway.py, and asyncio with it) is made with the first manifests
        that have one; it listens once it has routes. A session without any never loads it."""
        if self.gateway is None:
            if not manifests.http_triggers:
                return
            from kubeless_local.emulator.gateway import Gateway

            port, https_port = self.gateway_ports
            if self.ephemeral_ports:  # parallel test sessions: never the default ports
                port, https_port = port or 0, https_port or 0
            # made by a reload (self.started): a taken port is said, not raised
            self.gateway = Gateway(
                self.supervisor, self.logs, self.root, self.ignore, port, https_port=https_port, loaded=self.started
            )
        self.gateway.update(manifests)

    def _backend_name(self) -> str:
        name = self.backend_name or self.settings.backend
        if name == "auto":
            loaded = self.manifests if self.manifests is not None else specs.Loader(self.root, self.ignore).collect()
            functions = loaded.functions
            name = backends.choose("auto", functions, self.say)
        return name

    def status(self) -> list[dict[str, Any]]:
        """The functions' rows (see Supervisor.status)."""
        assert self.supervisor is not None, "start() first"
        return self.supervisor.status()

    def stop(self) -> None:
        """Stop the functions, the admin API and the guardian, then drop the lock; safe after a failed start."""
        try:
            if self.events is not None:
                self.events.stop()  # first: subscribers commit their positions while functions still answer
            if self.cron is not None:
                self.cron.stop()
            if self.gateway is not None:
                self.gateway.stop()
            if self.kafka is not None:
                self.kafka.stop()  # before the functions: a message being delivered stays uncommitted
            if self.project is not None:
                self.project.stop()
            elif self.supervisor is not None:
                self.supervisor.stop_all()
            registry.unregister(self.registration)
            if self.admin is not None:
                self.admin.stop()
            if self.recorder is not None:
                self.recorder.close()  # the calls the functions answered last are stored
                self.logs.unsubscribe(self._log_lines)
                self._log_lines.put(None)
            if self.guardian is not None:
                self.guardian.close()
            if self.events is not None:
                self.events.store.close()
        finally:
            self.lock.release()

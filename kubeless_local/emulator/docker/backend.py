"""The docker backend: one long-lived container per function (contract §4), prepared by the shared
pipeline (prepare.prepare) with steps in one-shot containers (steps.DockerSteps), in a network namespace
of its own reached at 127.0.0.1:<port> (network.py: bridge, relay, or the opt-in host mode).

Outside host mode a function's front door (frontdoor.py) holds its port as long as the function lives, and
a reload that needs a new container is blue/green: each generation's container has a name of its own, the
new one starts beside the old one, and only once it is ready through its own target (its relay's
connector, or the port the engine published for it alone) does the door point at it; the old one goes once
its open calls are done (FrontDoor.drain). A new container that does not become ready is removed, the old
one keeps serving, and the function shows CompileError with the new one's last lines. A container that
exits on its own is restarted by the supervisor through `start`, which points the door at it once it runs.
In relay mode a function that swaps on every save (an image that cannot reload in place) has a spare relay
started ahead once it runs and after each swap, so that a save starts the function's container only (a
relay's start is the larger part of a swap); it goes when the function stops.
Every container carries the project's label, so none outlives `dev` (guardian, sweep); a relay's connector
also exits when `dev`'s lifeline to it ends (connector.py), a spare's included."""

import dataclasses
import json
import os
import select
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from kubeless_local import errors
from kubeless_local.emulator import images, memorywatch, relaystart, strays
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN, Backend, Instance, OnExit, Reach, State, ignore_exit
from kubeless_local.emulator.docker import debugger, network, pump
from kubeless_local.emulator.docker.containers import (
    CONNECTOR_SOCKET,
    FUNCTION_MOUNT,
    INSTALL,
    LABEL_PROJECT,
    RW,
    connector_socket,
    container_name,
    container_options,
    custom_runtime,
    folders_made_by_others,
    project_label,
    relay_config,
    relay_name,
    relay_prefix,
    security_context,
    spare_relay_name,
    writable_folder,
)
from kubeless_local.emulator.docker.steps import DockerPrepared, DockerSteps, run_in_container
from kubeless_local.emulator.frontdoor import FrontDoor, PortTaken, open_to
from kubeless_local.emulator.guardian import Guardian, being_removed, process_stat
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.recorder import Recorder
from kubeless_local.errors import UserError
from kubeless_local.runtimes import RUNTIME_RE, Catalog, Runtime
from kubeless_local.spec import POD_PORT, FunctionSpec

RELAY_START = 20.0  # seconds for the relay container's connector to listen
TRIAL_TIMEOUT = 60.0  # seconds a reload's new container has to become ready (as a first start has)
TRIAL_LOOK = 0.1  # seconds between looks at a stop (Ctrl-C) while a new container starts
READY_LOOK = 0.05  # seconds between /healthz looks at most while a container without control lines starts
RELAY_IMAGE_RUNTIME = "python"  # the relay's connector.py runs in our image of this runtime (newest version)
NO_SPARE = (State.STARTING, State.CRASHED, State.STOPPED)  # a function in these gets no spare relay (yet)
SOCKET_PATH_MAX = 100  # a unix socket path longer than this (sun_path: 108) is reached through /proc/self/fd


class _Relay:
    """Relay mode: the relay container whose namespace the function's container joins, and the private
    folder of its connector's socket (reached through an open folder descriptor: the path may be long)."""

    def __init__(self, container: Any, folder: Path) -> None:
        self.container, self.folder = container, folder
        self.folder_fd = os.open(folder, os.O_PATH)
        socket_path = folder / CONNECTOR_SOCKET
        short = len(str(socket_path)) < SOCKET_PATH_MAX
        self.connector = socket_path if short else Path("/proc/self/fd/%d" % self.folder_fd) / CONNECTOR_SOCKET
        self.lifeline: Optional[socket.socket] = None
        self.started = threading.Event()
        self.start_error: Optional[Exception] = None

    def start(self) -> None:
        """Start its container in a thread of its own (the function's container is created meanwhile);
        `started` is set when that is done, `start_error` says why it failed."""
        from docker.errors import APIError

        def run() -> None:
            try:
                self.container.start()
            except (APIError, OSError) as exc:
                self.start_error = exc
            finally:
                self.started.set()

        threading.Thread(target=run, daemon=True).start()

    def hold(self) -> None:
        """Hold the connector's lifeline: it exits when this process does, however (connector.py). Once."""
        if self.lifeline is not None:
            return
        lifeline = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lifeline.connect(str(self.connector) + ".life")
        self.lifeline = lifeline

    def gone(self) -> bool:
        """Its connector ended the lifeline (it exited, and its container with it)."""
        if self.lifeline is None:
            return False
        return bool(select.select([self.lifeline], [], [], 0)[0])  # it never sends: readable means closed

    def close(self) -> None:
        if self.lifeline is not None:
            self.lifeline.close()
        os.close(self.folder_fd)
        shutil.rmtree(self.folder, ignore_errors=True)


class _Spare:
    """A relay being started ahead for a function's next swap (relay mode). `ready` is set once it is started
    and its lifeline held, or once that failed (`relay` None). Whoever sets `cancelled` (under the backend's
    lock) no longer wants it: the relay is removed by whoever holds it then."""

    def __init__(self, debug_port: Optional[int]) -> None:
        self.debug_port = debug_port
        self.relay: Optional[_Relay] = None
        self.ready = threading.Event()
        self.cancelled = False


class _Handle:
    """One runtime container. Its output's control lines go to `owner` (pump.py): the function's instance,
    or, while a reload tries it, an Instance of its own (its readiness decides the switch). Once switched in,
    its own server's control generations count on from `base` (the instance's count before it)."""

    def __init__(
        self, container: Any, prepared: DockerPrepared, generation: int, relay: Optional[_Relay], owner: Instance
    ) -> None:
        self.container = container  # a docker Container
        self.prepared = prepared
        self.generation = generation  # synthesized control generations for images without control lines
        self.relay = relay
        self.owner = owner
        self.base = 0
        self.target: Any = str(relay.connector) if relay is not None else None  # where the front door reaches it
        self.debug_target: Any = None  # where the debug door reaches its debugger (relay and bridge mode, dev --debug)
        self.copy: Optional[Path] = None  # its writable copy of the code at /kubeless (another image's)
        self.init_pid: Optional[int] = None  # its init process as this machine sees it (0: not seen here)
        self.exited = threading.Event()
        self.stopping = False

    @property
    def name(self) -> str:
        return self.owner.name

    def on_control(self, event: Optional[str], generation: int, error: str = "") -> None:
        self.owner.on_control(event, generation + self.base, error)


def in_image(prepared: prep.Prepared) -> DockerPrepared:
    """What this backend prepared (DockerBackend.prepare makes DockerPrepared only)."""
    assert isinstance(prepared, DockerPrepared), "the docker backend runs what it prepared itself"
    return prepared


def container_handle(instance: Instance) -> Optional["_Handle"]:
    """The instance's running container (its backend-private handle), if one was started."""
    return instance.handle if isinstance(instance.handle, _Handle) else None


def own_version(spec: FunctionSpec, runtime: Runtime, notice: Optional[str]) -> tuple[Runtime, Optional[str]]:
    """(runtime, notice): a Function whose runtime the catalog maps to a substitute (`python3.8` → our
    python3.11) runs as its own version where the user chose an image for that version (env
    PYTHON3.8_RUNTIME, a runtime-images version "3.8"), as the controller would: that image, that
    version's paths ({version} in the catalog env), the entry's env."""
    match = RUNTIME_RE.match(spec.runtime or "")
    version = match.group(2) if match else ""
    if not version or version == runtime.version:
        return runtime, notice
    choice = images.override_for(runtime.id, version)
    if choice is None:
        return runtime, notice
    own = dataclasses.replace(runtime, version=version)  # .image stays ours: the install step may need it
    return own, "%s runs in %s (%s), not in %s" % (own.name, choice.image, choice.source, runtime.name)


class DockerBackend(Backend):
    name = "docker"

    def __init__(
        self,
        logs: LogHub,
        *,
        on_exit: OnExit = ignore_exit,
        guardian: Optional[Guardian] = None,
        recorder: Optional[Recorder] = None,
        client: Any = None,
        catalog: Optional[Catalog] = None,
        network: str = "auto",
    ) -> None:
        """`client`: a docker client (None: the engine's, connected on first use); `catalog`: where
        runtimes are resolved (None: the one resolve() is given); `network`: the settings' docker.network
        (network.py; auto: chosen by the engine, once)."""
        super().__init__(logs, on_exit=on_exit, guardian=guardian, recorder=recorder)
        self._client = client
        self.catalog = catalog
        self.network_setting = network
        self._network: Optional[tuple[str, str]] = None  # (mode, why), chosen on first use
        self._doors: dict[str, FrontDoor] = {}  # relay mode: function name -> its front door
        self._debug_doors: dict[str, FrontDoor] = {}  # function name -> its debugger's door (dev --debug)
        self.swept: set[str] = set()
        self.lock = threading.Lock()
        self._by_name: dict[str, _Handle] = {}  # function name -> _Handle of its running container
        self._spares: dict[str, _Spare] = {}  # relay mode: function name -> a relay started ahead for its next swap
        if guardian is not None:
            guardian.watch_containers()  # the project's containers (steps too) are removed when `dev` ends

    # ------------------------------------------------------------ engine and runtimes

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    def check(self) -> None:
        """UserError with the fix when no engine answers; says which network mode runs the functions."""
        self.client  # noqa: B018 - raises UserError with the fix when no engine answers
        self.logs.emit("dev", network.described(*self.network_mode()), "system")

    def network_mode(self) -> tuple[str, str]:
        """(mode, why): how the functions' containers are reached (network.py), chosen once per engine."""
        with self.lock:
            if self._network is None:
                self._network = network.choose(self.network_setting, self.client)
            return self._network

    @property
    def network(self) -> str:
        return self.network_mode()[0]

    def relay_image(self) -> str:
        """Our Python image, where the relay's connector runs (relay mode); NotFound when it is not built."""
        catalog = self.catalog or Catalog()
        newest = catalog.images(RELAY_IMAGE_RUNTIME)[-1]
        found = images.image_present(self.client, newest.image)
        if found is None or not (found.labels or {}).get(images.OWN_LABEL):
            raise errors.NotFound(
                "relay mode (the engine has no bridge network) runs its relay in the %s image %s, which is not "
                "built; or set docker.network in .kubeless-local.yaml" % (newest.name, newest.image),
                "runtime image",
                newest.name,
            )
        return newest.image

    def resolve(self, spec: FunctionSpec, catalog: Catalog) -> tuple[Runtime, Optional[str]]:
        """(runtime, notice): the catalog's runtime (no local toolchain needed) with its `docker:` block,
        or a custom one for an image of a runtime the catalog does not know. UserError when the image is
        missing."""
        self.catalog = catalog or self.catalog or Catalog()
        notice = None
        try:
            runtime, notice = self.catalog.resolve(spec.runtime, require_local=False)
            runtime, notice = own_version(spec, runtime.for_backend("docker"), notice)
        except UserError:
            if not spec.image:
                raise
            runtime = custom_runtime(spec)
        choice = images.image_for(runtime)
        if choice.overridden and not spec.image and not notice:
            notice = "%s runs in %s (%s)" % (runtime.name, choice.image, choice.source)
        image = spec.image or choice.image
        if not image:
            raise errors.Unavailable(
                "%s: %s has no runtime image (it runs where this machine has the toolchain)"
                % (spec.origin, runtime.name),
                "runtime image",
                runtime.name,
            )
        present = images.image_present(self.client, image)
        if present is not None and not spec.image and not choice.overridden and images.is_stale(present, runtime):
            stale = "image %s was built from other runtime files than this kubeless-local's" % image
            notice = errors.Notice("%s\n%s" % (notice, stale) if notice else stale, "runtime image", runtime.name)
        if present is None:
            if spec.image or choice.overridden:
                raise errors.NotFound(
                    "%s: image %s is not present and cannot be pulled here; `docker build`/`docker pull` it"
                    % (spec.origin, image),
                    "image",
                    image,
                )
            raise errors.NotFound(
                "%s: the %s image %s is not built" % (spec.origin, runtime.name, image), "runtime image", runtime.name
            )
        if self.network == "relay":
            self.relay_image()
        return runtime, notice

    # ------------------------------------------------------------ leftovers

    def sweep(self, state_dir: Path) -> None:
        """Remove containers a crashed run of this project left behind (once per project)."""
        from docker.errors import APIError, NotFound

        key = project_label(state_dir)
        with self.lock:
            if key in self.swept:
                return
            early = relaystart.sent(key)  # the relay sent as `run` started, for this start: not a leftover
            label = {"label": "%s=%s" % (LABEL_PROJECT, key)}
            for container in self.client.containers.list(all=True, sparse=True, filters=label):  # no inspect race
                if early is not None and container.id == early.id:
                    continue
                try:
                    container.remove(force=True)
                except NotFound:
                    pass  # removed meanwhile
                except APIError as exc:
                    if being_removed(exc):  # by the guardian of the session that left it
                        continue
                    raise UserError(
                        "cannot remove the leftover container %s of an earlier run: %s; remove it with "
                        "`docker rm -f %s`" % (container.short_id, exc.explanation or exc, container.short_id)
                    ) from None
            for folder in (Path(state_dir) / relaystart.DOORS).glob("*"):  # socket folders of a killed run's relays
                if early is None or str(folder) != early.folder:
                    shutil.rmtree(folder, ignore_errors=True)
            for copies in Path(state_dir).glob("functions/*/" + RW):  # its containers' copies of /kubeless
                prep.remove_folders(copies.parent, list(copies.iterdir()))
            self.swept.add(key)

    # ------------------------------------------------------------ prepare: the shared pipeline, steps in the image

    def prepare(
        self,
        spec: FunctionSpec,
        runtime: Runtime,
        state_dir: Path,
        on_line: Callable[[str], None] = lambda line: None,
        previous: Optional[prep.Prepared] = None,
    ) -> prep.Prepared:
        self.sweep(state_dir)
        return prep.prepare(
            spec,
            runtime.for_backend("docker"),
            state_dir,
            on_line,
            previous,
            steps=DockerSteps(self, spec, runtime, state_dir),
        )

    def run_step(
        self,
        step: str,
        image: str,
        argv: list[str],
        mounts: dict,
        env: dict,
        workdir: str,
        labels: dict,
        on_line: Callable[[str], None],
    ) -> None:
        """Run one step container (see steps.run_in_container); tests replace this."""
        run_in_container(self.client, step, image, argv, mounts, env, workdir, labels, on_line)

    def running_handle(self, name: str) -> Optional[_Handle]:
        with self.lock:
            handle = self._by_name.get(name)
        return handle if handle is not None and not handle.exited.is_set() else None

    def exec_in(self, handle: _Handle, argv: list[str], workdir: str) -> tuple[int, bytes]:
        """(exit code, output) of argv run in a running container."""
        from docker.errors import APIError

        try:
            return handle.container.exec_run(argv, workdir=workdir, environment={"HOME": "/tmp"})
        except APIError as exc:
            return 1, ("cannot run %s in the container: %s" % (argv[0], exc.explanation or exc)).encode()

    # ------------------------------------------------------------ the runtime container

    def container_options(self, instance: Instance, prepared: DockerPrepared, relay_id: str = "") -> dict:
        """Everything containers.create gets (see containers.container_options)."""
        return container_options(instance.port, prepared, self.network, relay_id)

    def container_name(self, prepared: DockerPrepared) -> str:
        return container_name(prepared)

    def served_root(self, prepared: prep.Prepared) -> str:
        return INSTALL  # the pod's /kubeless, as the server in the container names the files

    @property
    def swaps(self) -> bool:
        """Blue/green reloads: a front door holds the port (every mode but host, where the server binds it)."""
        return self.network != "host"

    def _remove_named(self, name: str) -> Optional[str]:
        """Remove a leftover container of a crashed run by name; the engine's error, if it refused."""
        from docker.errors import APIError, NotFound

        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            return "cannot remove the old container %s: %s" % (name, exc.explanation or exc)
        return None

    def _door(self, instance: Instance, doors: Optional[dict[str, FrontDoor]] = None) -> Optional[FrontDoor]:
        """Relay and bridge mode: the function's front door on 127.0.0.1:<its port>, kept across restarts (None, and the
        instance Crashed with EXIT_CANNOT_LISTEN, when another program has the port: it cannot answer for us).
        With `doors` the debug doors: its debugger's door on 127.0.0.1:<its debug port>, the same way."""
        debugged = doors is not None
        doors = self._doors if doors is None else doors
        port = instance.debug.port if debugged and instance.debug is not None else instance.port
        door = doors.get(instance.name)
        if door is not None and door.port == port:
            return door
        if door is not None:
            door.close()
        try:
            name = instance.name + (" (debugger)" if debugged else "")
            door = doors[instance.name] = FrontDoor(port, name, None if debugged else self.recorder)  # no HTTP there
        except PortTaken as exc:
            doors.pop(instance.name, None)
            instance.exit_code = EXIT_CANNOT_LISTEN
            instance.set_state(State.CRASHED, "%s" % exc.strerror)
            return None
        return door

    def server_target(self, instance: Instance) -> Optional[Reach]:
        """Relay and bridge mode: where the function's door sends new connections, the code serving there, and
        the door (it drains that target before the container goes). Host mode has no door: the server on the
        function's port (nothing records its calls but the gateway)."""
        if self.network == "host":
            return Reach(("127.0.0.1", instance.port)) if instance.port else None
        door = self._doors.get(instance.name)
        # a door that points nowhere (its container restarting) is no reason to go through the URL: its target is
        # None until it points again, and the gateway waits for that
        return Reach(door.target, door.generation, door) if door is not None else None

    def _start_relay(self, instance: Instance, prepared: DockerPrepared) -> Optional[_Relay]:
        """Relay mode: the relay container (the namespace the function's container joins): the spare started
        ahead for it, else the one relaystart.py sent as `run` started, else one created and starting
        (_Relay.start: the function's container is created meanwhile); its connector may not listen yet
        (_await_connector). None, and the instance Crashed with the reason, when it cannot be created."""
        from docker.errors import APIError

        spare = self._take_spare(instance)
        if spare is not None:
            return spare
        early = self._early_relay(instance, prepared)
        if early is not None:
            return early
        refused = self._remove_named(relay_name(prepared))  # a leftover of a crashed run
        if refused:
            instance.set_state(State.CRASHED, refused)
            return None
        try:
            relay = self._create_relay(prepared, debug_port_of(instance))
        except (APIError, UserError) as exc:
            instance.set_state(State.CRASHED, "cannot start the relay container: %s" % _explained(exc))
            return None
        relay.start()
        url, state_dir = images.engine_url(self.client), project_label(prepared.root.parent.parent)
        if url is not None and relaystart.kept_for(state_dir):  # the next `run` of this function sends it early
            relaystart.write_hint(state_dir, url, *self._relay_wanted(instance, prepared))
        return relay

    def _relay_wanted(self, instance: Instance, prepared: DockerPrepared) -> tuple[str, str]:
        """(name without its random part, config with relaystart.FOLDER for its socket folder) of a relay
        `instance` starts in, as relaystart.py keeps them."""
        config = relay_config(prepared, self.relay_image(), relaystart.FOLDER, debug_port_of(instance))
        return relay_prefix(prepared), json.dumps(config, sort_keys=True)

    def _early_relay(self, instance: Instance, prepared: DockerPrepared) -> Optional[_Relay]:
        """The relay relaystart.py sent for this function as `run` started, started, if it is the one this start
        would create; otherwise None (and it is removed)."""
        early = relaystart.take(project_label(prepared.root.parent.parent))
        if early is None:
            return None
        wanted = (images.engine_url(self.client), *self._relay_wanted(instance, prepared))
        if early.error or (early.url, early.prefix, early.config) != wanted:
            early.remove()
            return None
        relay = _Relay(
            self.client.containers.prepare_model({"Id": early.id, "Name": "/" + early.name}), Path(early.folder)
        )
        relay.started.set()
        return relay

    def _create_relay(self, prepared: DockerPrepared, debug_port: Optional[int], name: Optional[str] = None) -> _Relay:
        """A relay container, created (not started), with a fresh socket folder; APIError or UserError when not."""
        from docker.errors import APIError

        doors = prepared.root.parent.parent / relaystart.DOORS
        doors.mkdir(mode=0o700, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prepared.spec.name[:20] + ".", dir=doors))  # 0700, fresh per start
        try:
            config = relay_config(prepared, self.relay_image(), folder, debug_port)
            name = name or relay_name(prepared)
            created = self.client.api.create_container_from_config(config, name)
            return _Relay(self.client.containers.prepare_model({"Id": created["Id"], "Name": "/" + name}), folder)
        except (APIError, UserError):
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # ------------------------------------------------------------ the spare relay (relay mode)

    def _spare_ahead(self, instance: Instance, prepared: DockerPrepared) -> None:
        """Start a spare relay for the function's next swap in the background, where its saves swap (relay mode,
        an image that cannot reload in place) and it has none: once the function no longer starts."""
        if self.network != "relay" or (prepared.own and prepared.runtime.docker.reload == "signal"):
            return
        spare = _Spare(debug_port_of(instance))
        with self.lock:
            if instance.name in self._spares:
                return
            self._spares[instance.name] = spare
        threading.Thread(target=self._make_spare, args=(instance, prepared, spare), daemon=True).start()

    def _make_spare(self, instance: Instance, prepared: DockerPrepared, spare: _Spare) -> None:
        """Create and start the spare's relay, wait for its connector, hold its lifeline; then hand it to the
        spare, or remove it when the spare was cancelled meanwhile (the function stopped)."""
        from docker.errors import APIError

        instance.wait_for(lambda i: i.state != State.STARTING, TRIAL_TIMEOUT)  # its own start goes first
        relay = None
        try:
            if not spare.cancelled and instance.state not in NO_SPARE:
                relay = self._create_relay(prepared, spare.debug_port, spare_relay_name(prepared))
                relay.container.start()
                _connector_listens(relay, lambda: spare.cancelled)  # its lifeline held (cancelled: removed below)
        except (APIError, UserError, OSError) as exc:  # the next swap starts a relay of its own, as without one
            if not spare.cancelled:  # else it was removed under it (dev stopping): nothing to say
                self.logs.emit(instance.name, "could not start a spare relay container: %s" % _explained(exc), "system")
            if relay is not None:
                self._remove_relay(relay, instance.name)
            relay = None
        with self.lock:
            keep = not spare.cancelled and instance.state != State.STOPPED  # it may have stopped meanwhile
            if keep:
                spare.relay = relay
        if relay is not None and not keep:
            self._remove_relay(relay, instance.name)
        spare.ready.set()

    def _take_spare(self, owner: Instance) -> Optional[_Relay]:
        """The function's spare relay, started and held (None: it has none, or not one for this debug port)."""
        with self.lock:
            spare = self._spares.pop(owner.name, None)
        if spare is None:
            return None
        if spare.debug_port == debug_port_of(owner) and spare.ready.wait(RELAY_START):
            relay = spare.relay
            if relay is not None and not relay.gone():
                relay.started.set()
                return relay
        self._cancel_spare(spare, owner.name)
        return None

    def _cancel_spare(self, spare: _Spare, name: str) -> None:
        with self.lock:
            spare.cancelled = True
            relay, spare.relay = spare.relay, None
        if relay is not None:
            self._remove_relay(relay, name)

    def _drop_spare(self, instance: Instance) -> None:
        """Remove the function's spare relay (it stops), or have it removed once it has started."""
        with self.lock:
            spare = self._spares.pop(instance.name, None)
        if spare is not None:
            self._cancel_spare(spare, instance.name)

    def _await_connector(self, instance: Instance, relay: _Relay) -> bool:
        """The relay's connector listens and `dev` holds its lifeline; False (the relay removed, the instance
        Crashed with the reason, or Stopped meanwhile) when not."""
        try:
            listens = _connector_listens(relay, lambda: instance.state == State.STOPPED)  # stopped meanwhile (Ctrl-C)
        except TimeoutError:
            why = "the relay container did not start within %ds%s" % (RELAY_START, _container_logs(relay.container))
            self._remove_relay(relay, instance.name)
            instance.set_state(State.CRASHED, why)
            return False
        except OSError as exc:  # its lifeline cannot be held
            self._remove_relay(relay, instance.name)
            instance.set_state(State.CRASHED, "cannot reach the relay container's connector: %s" % exc)
            return False
        if not listens:
            self._remove_relay(relay, instance.name)
        return listens

    def _remove_relay(self, relay: _Relay, name: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            relay.container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            self.logs.emit(
                name,
                "could not remove the relay container %s: %s; remove it with `docker rm -f %s`"
                % (relay.container.name, exc.explanation or exc, relay.container.name),
                "system",
            )
        relay.close()

    def start(self, instance: Instance, prepared: prep.Prepared, generation: int = 0) -> None:
        prepared = in_image(prepared)
        self._stop_containers(instance)  # a crashed one's, before its restart
        door = debug_door = None
        if self.swaps:
            door = self._door(instance)
            if door is None:
                return
            instance.front_door = door.recorder is not None  # senders mark their requests: it reads the mark
            if instance.debug is not None:
                debug_door = self._door(instance, self._debug_doors)
                if debug_door is None:
                    return
        handle = self._launch(instance, prepared, generation)
        if handle is None:
            return
        with self.lock:
            self._by_name[prepared.spec.name] = handle
        if door is not None:
            door.point(handle.target, prepared.generation)  # only now: whatever answers through it is this container
        if debug_door is not None:
            debug_door.point(handle.debug_target)
        self._spare_ahead(instance, prepared)

    def _launch(self, owner: Instance, prepared: DockerPrepared, generation: int) -> Optional[_Handle]:
        """Create and start a runtime container (and its relay in relay mode) whose output and readiness
        go to `owner`; None, and `owner` Crashed with the reason, when it cannot start."""
        from docker.errors import APIError

        mode = self.network
        additions = None
        if owner.debug is not None:  # the debugger's files, made once per image (docker/debugger.py)
            try:
                say = lambda line: self.logs.emit(owner.name, line, "system")  # noqa: E731
                additions = debugger.container_additions(self, owner.debug, prepared, say)
            except UserError as exc:
                owner.set_state(State.CRASHED, str(exc))
                return None
        refused = self._remove_named(container_name(prepared))  # a leftover of a crashed run
        if refused:
            owner.set_state(State.CRASHED, refused)
            return None
        if mode != "relay":
            relaystart.drop()  # a relay sent as `run` started (a guess from its last run): not wanted now
        relay = self._start_relay(owner, prepared) if mode == "relay" else None
        if mode == "relay" and relay is None:
            return None
        options = self.container_options(owner, prepared, relay.container.id if relay else "")
        if additions is not None:
            options = debugger.merged(options, additions)
        try:
            container = self.client.containers.create(**options)
        except APIError as exc:
            if relay is not None:
                self._remove_relay(relay, owner.name)
            owner.set_state(State.CRASHED, "cannot create the container: %s" % (exc.explanation or exc))
            return None
        handle = _Handle(container, prepared, generation, relay, owner)
        handle.copy = writable_folder(options)
        if relay is not None and owner.debug is not None:  # the connector's socket for the debugger's port
            handle.debug_target = str(relay.connector.parent / connector_socket(owner.debug.port))
        owner.handle, owner.pid = handle, None
        if relay is not None and not (relay.started.wait(RELAY_START) and relay.start_error is None):
            why = _explained(relay.start_error or TimeoutError("not started within %ds" % RELAY_START))
            handle.relay = None
            self._remove_relay(relay, owner.name)
            self._remove_container(handle, owner.name)
            owner.set_state(State.CRASHED, "cannot start the relay container: %s" % why)
            return None
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            container.start()
        except APIError as exc:
            handle.exited.set()
            if port_taken(exc):  # host mode: the engine could not publish the port (another program has it)
                owner.exit_code = EXIT_CANNOT_LISTEN
            self._remove_container(handle, owner.name)
            owner.set_state(State.CRASHED, "cannot start the container: %s" % (exc.explanation or exc))
            return None
        if relay is not None and not self._await_connector(owner, relay):  # it started meanwhile, as the server did
            handle.relay = None  # removed already
            self._remove_container(handle, owner.name)
            return None
        try:
            container.reload()
            owner.pid = container.attrs["State"]["Pid"] or None  # the container's init, as the host sees it
            if mode == "bridge":  # the ports the engine chose for this container alone
                published = container.attrs["NetworkSettings"]["Ports"]
                handle.target = ("127.0.0.1", int(published["%d/tcp" % POD_PORT][0]["HostPort"]))
                if owner.debug is not None:  # its debugger's, published the same way (docker/debugger.py)
                    debug_port = published["%d/tcp" % owner.debug.port][0]["HostPort"]
                    handle.debug_target = ("127.0.0.1", int(debug_port))
        except (APIError, KeyError, IndexError, TypeError, ValueError) as exc:
            if mode == "bridge":
                self._remove_container(handle, owner.name)
                owner.set_state(State.CRASHED, "cannot find the container's published port: %s" % _explained(exc))
                return None
        threading.Thread(target=pump.pump, args=(self, handle, stream), daemon=True).start()
        if not prepared.own:
            look = {"interval": READY_LOOK}  # a swap waits on it: a look after the server is up is its cost
            threading.Thread(target=pump.poll_health, args=(self, handle), kwargs=look, daemon=True).start()
        return handle

    def probe(self, handle: _Handle, path: str = "/healthz") -> tuple[Optional[int], str]:
        """(status, why) of GET `path` on the container's own server (its target; the function's URL in host
        mode): only that container can answer. (None, why) when nothing answered."""
        import http.client

        owner = handle.owner
        try:
            if handle.target is None:
                conn = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=1)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", timeout=1)
                conn.sock = open_to(handle.target, 1.0)
            try:
                conn.request("GET", path, headers={"User-Agent": "kubeless-local-status"})
                return conn.getresponse().status, ""
            finally:
                conn.close()
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError) and exc.errno is None:
                return None, str(exc)  # the connector's or the door's own words: nothing listens in the container
            return None, "no answer on /healthz (%s)" % (exc.strerror or exc or type(exc).__name__)
        except http.client.HTTPException as exc:
            return None, "no answer on /healthz (%s)" % (exc or type(exc).__name__)

    def describe(self, instance: Instance) -> dict:
        """The image the function's container runs, and why (`ls -o wide`)."""
        handle = container_handle(instance)
        if handle is None:
            return {}
        return {"image": handle.prepared.image, "image_source": handle.prepared.image_source}

    def holds_port(self, instance: Instance) -> bool:
        door = self._doors.get(instance.name)
        return (door is not None and door.port == instance.port) or self.alive(instance)

    def alive(self, instance: Instance) -> bool:
        handle = container_handle(instance)
        return handle is not None and not handle.exited.is_set()

    def reload(self, instance: Instance, prepared: prep.Prepared) -> str:
        """In place (SIGHUP) when only the code changed, the catalog's `docker.reload` is signal and the image
        is ours ("signal"); else blue/green ("swap", see the module's docstring), or in host mode a new
        container after the old one ("restart"). The instance is told the outcome as a control line of the
        next generation: ready, or load-failed with why (the old container serves on)."""
        from docker.errors import APIError, NotFound

        prepared, handle = in_image(prepared), container_handle(instance)
        alive = handle is not None and self.alive(instance)
        if alive and prepared.own and prepared.runtime.docker.reload == "signal":
            assert handle is not None, "alive"
            if prep.Generation(prepared, handle.prepared).reloads_in_place:
                handle.prepared = prepared
                self._clean_up_after_reload(instance, handle)
                try:
                    handle.container.kill(signal="SIGHUP")
                    return "signal"
                except (NotFound, APIError) as exc:
                    self.logs.emit(
                        instance.name,
                        "could not signal the container (%s); starting a new one" % _explained(exc),
                        "system",
                    )
        generation = instance.last_control[1] + 1
        if alive and self.swaps:
            assert handle is not None, "alive"
            self._swap(instance, handle, prepared, generation)
            return "swap"
        self._stop_containers(instance)  # host mode: one port, the server's own
        self.start(instance, prepared, generation=generation if not prepared.own else 0)
        return "restart"

    def _clean_up_after_reload(self, instance: Instance, handle: _Handle) -> None:
        """Once the new code serves, kill what the code it replaces started in a session of its own (strays.py):
        seen from this machine's /proc, under the container's init (its server is the init's child), where the
        engine runs here and this user may signal the container's processes (root, or its user)."""
        if handle.init_pid is None:  # the container's init as the engine sees it (_launch): is it this machine's?
            pid = instance.pid or 0
            handle.init_pid = pid if pid and strays.container_init(pid, handle.container.id) else 0
        servers = (memorywatch.children(handle.init_pid) or []) if handle.init_pid else []
        stat = process_stat(servers[0]) if servers else None
        if stat is not None:
            instance.after_reload.append(strays.replaced(handle.init_pid, stat[0]))

    def _swap(self, instance: Instance, old: _Handle, prepared: DockerPrepared, generation: int) -> None:
        """Blue/green: a new container beside `old`; the door points at it once it is ready, and `old` goes
        once its calls are done. A new one that does not become ready goes; `old` serves on."""
        trial = Instance(
            name=instance.name, runtime=instance.runtime, port=instance.port, state=State.STARTING, debug=instance.debug
        )
        new = self._launch(trial, prepared, generation)  # it took the spare relay, if there was one
        self._spare_ahead(instance, prepared)  # the next one starts while this server loads: ready for the next save
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while new is not None and trial.state == State.STARTING and instance.state != State.STOPPED:
            if time.monotonic() > deadline:
                why = self.probe(new)[1] or "/healthz did not answer 200"
                trial.set_state(State.CRASHED, "not ready within %ds: %s" % (TRIAL_TIMEOUT, why))
                break
            trial.wait_for(lambda t: t.state != State.STARTING, TRIAL_LOOK)
        door = self._doors.get(instance.name)
        ready = new is not None and trial.last_control[0] == "ready" and trial.state != State.CRASHED
        if not ready or door is None or instance.state == State.STOPPED:
            if new is not None:
                self._remove_container(new, instance.name)
            if instance.state != State.STOPPED:
                old.base += 1  # the instance's count moves on without the old server's: its next reload's line
                instance.on_control("load-failed", generation, trial.error or "the new container did not start")
                self._spare_ahead(instance, prepared)
            return
        assert new is not None, "ready"
        door.point(new.target, prepared.generation)
        debug_door = self._debug_doors.get(instance.name)
        if debug_door is not None:  # the editor attaches to the new container's debugger from here on
            debug_door.point(new.debug_target)
        new.base = generation - trial.last_control[1]  # its own server counts from 0 (control lines)
        new.owner, instance.handle, instance.pid = instance, new, trial.pid
        old.stopping = True  # its exit is no crash any more
        with self.lock:
            self._by_name[instance.name] = new
        bound = prep.call_bound(old.prepared.spec)
        threading.Thread(target=self._retire, args=(door, old, bound), daemon=True).start()
        instance.on_control("ready", generation)
        self._spare_ahead(instance, prepared)

    def _retire(self, door: FrontDoor, old: _Handle, bound: float) -> None:
        """Remove a replaced container once the door's connections to it are done (its timeout at most)."""
        if old.target is not None:
            door.drain(old.target, bound)
        self._remove_container(old, old.owner.name)

    def stop(self, instance: Instance) -> None:
        self._drop_spare(instance)
        self._stop_containers(instance)
        for doors in (self._doors, self._debug_doors):
            door = doors.pop(instance.name, None)
            if door is not None:
                door.close()

    def _stop_containers(self, instance: Instance) -> None:
        """Remove the function's container, then its relay (the front door stops pointing at it first)."""
        handle, instance.handle = container_handle(instance), None
        if handle is None:
            return
        with self.lock:
            if self._by_name.get(instance.name) is handle:
                del self._by_name[instance.name]
        for door, target in (
            (self._doors.get(instance.name), handle.target),
            (self._debug_doors.get(instance.name), handle.debug_target),
        ):
            if door is not None and target is not None and door.target == target:
                door.point(None)
        self._remove_container(handle, instance.name)

    def _remove_container(self, handle: _Handle, name: str) -> None:
        """Remove one runtime container and its relay; its exit is no crash."""
        from docker.errors import APIError, NotFound

        handle.stopping = True
        self._remove_what_it_made(handle, name)
        try:
            handle.container.remove(force=True)
        except NotFound:
            pass  # already gone
        except APIError as exc:
            self.logs.emit(
                name,
                "could not remove container %s: %s; remove it with `docker rm -f %s`"
                % (handle.container.name, exc.explanation or exc, handle.container.name),
                "system",
            )
        if handle.relay is not None:
            self._remove_relay(handle.relay, name)
        if handle.copy is not None:
            try:
                prep.remove_folders(handle.prepared.root, [handle.copy])
            except OSError:
                pass  # the state folder went first (a removed session): nothing is left to remove
        handle.exited.set()

    def _remove_what_it_made(self, handle: _Handle, name: str) -> None:
        """The folders the function made in /kubeless (a pod's emptyDir, gone with its pod) belong to the container's
        user: removed by that user, in the container, before it goes, or the host user could not remove them, nor
        the project folder (a user other than the container's, root aside). Its own files' changes stay until the
        next save lays the code out anew. Our images share the generations: the last of the function's containers to
        go does it (one that replaced it may be writing there)."""
        if security_context(handle.prepared.spec)[0] == os.getuid():
            return
        with self.lock:
            serving = self._by_name.get(name)
        if handle.copy is not None:  # another image's copy of the code: its own
            inside, seen_at = handle.copy, INSTALL
        elif handle.prepared.own and serving in (None, handle):
            inside, seen_at = handle.prepared.root, FUNCTION_MOUNT
        else:  # an image that is the function (no /kubeless of ours), or another container serves on
            return
        made = folders_made_by_others(inside, os.getuid())
        if not made:
            return
        paths = ["%s/%s" % (seen_at, path.relative_to(inside).as_posix()) for path in made]
        code, output = self.exec_in(handle, ["rm", "-rf", "--", *paths], "/")
        if code != 0:
            self.logs.emit(
                name,
                "the folders the function made in /kubeless are its container user's, and it could not remove them "
                "(%s): remove %s as root" % (output.decode(errors="replace").strip(), ", ".join(map(str, made))),
                "system",
            )


def _connector_listens(relay: _Relay, given_up: Callable[[], bool]) -> bool:
    """Hold the relay connector's lifeline as soon as it takes one, then wait until it listens (it renames its
    socket into the folder only once its lifeline is held: `dev` cannot die between the two and leave it): True;
    False once `given_up()`; TimeoutError after RELAY_START seconds; OSError when its lifeline cannot be held."""
    deadline = time.monotonic() + RELAY_START
    while True:
        if relay.lifeline is None:
            try:
                relay.hold()
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # not bound yet, or not listening yet
        if relay.lifeline is not None and (relay.folder / CONNECTOR_SOCKET).exists():
            return True
        if given_up():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("its connector did not listen within %ds" % RELAY_START)
        time.sleep(0.01)


def debug_port_of(instance: Instance) -> Optional[int]:
    """The port of the function's debugger (dev --debug), which its relay reaches too."""
    return instance.debug.port if instance.debug is not None else None


def _explained(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _container_logs(container: Any) -> str:
    """A failed container's last lines, for its error ("" when there are none)."""
    from docker.errors import APIError

    try:
        text = container.logs(tail=5).decode("utf-8", "replace").strip()
    except APIError:
        return ""
    return ":\n" + text if text else ""


def port_taken(exc: Exception) -> bool:
    """The engine could not publish a port because another program has it."""
    text = _explained(exc).lower()
    return "address already in use" in text or "port is already allocated" in text

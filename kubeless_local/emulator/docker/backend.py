"""The docker backend: one long-lived container per function (contract §4), prepared by the shared
pipeline (prepare.prepare) with steps in one-shot containers (steps.DockerSteps)."""

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from kubeless_local import errors
from kubeless_local.emulator import images
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.base import Backend, Instance, OnExit, State, ignore_exit
from kubeless_local.emulator.docker import pump
from kubeless_local.emulator.docker.containers import (
    LABEL_PROJECT,
    container_name,
    container_options,
    custom_runtime,
    project_label,
)
from kubeless_local.emulator.docker.steps import DockerPrepared, DockerSteps, run_in_container
from kubeless_local.emulator.guardian import Guardian
from kubeless_local.emulator.logs import LogHub
from kubeless_local.errors import UserError
from kubeless_local.runtimes import RUNTIME_RE, Catalog, Runtime
from kubeless_local.spec import FunctionSpec


class _Handle:
    def __init__(self, container: Any, prepared: DockerPrepared, generation: int) -> None:
        self.container = container  # a docker Container
        self.prepared = prepared
        self.generation = generation  # synthesized control generations for images without control lines
        self.exited = threading.Event()
        self.stopping = False


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
        client: Any = None,
        catalog: Optional[Catalog] = None,
    ) -> None:
        """`client`: a docker client (None: the engine's, connected on first use); `catalog`: where
        runtimes are resolved (None: the one resolve() is given)."""
        super().__init__(logs, on_exit=on_exit, guardian=guardian)
        self._client = client
        self.catalog = catalog
        self.swept: set[str] = set()
        self.lock = threading.Lock()
        self._by_name: dict[str, _Handle] = {}  # function name -> _Handle of its running container
        if guardian is not None:
            guardian.watch_containers()  # the project's containers (steps too) are removed when `dev` ends

    # ------------------------------------------------------------ engine and runtimes

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    def check(self) -> None:
        self.client  # noqa: B018 - raises UserError with the fix when no engine answers

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
        return runtime, notice

    # ------------------------------------------------------------ leftovers

    def sweep(self, state_dir: Path) -> None:
        """Remove containers a crashed run of this project left behind (once per project)."""
        from docker.errors import APIError, NotFound

        key = project_label(state_dir)
        with self.lock:
            if key in self.swept:
                return
            label = {"label": "%s=%s" % (LABEL_PROJECT, key)}
            for container in self.client.containers.list(all=True, sparse=True, filters=label):  # no inspect race
                try:
                    container.remove(force=True)
                except NotFound:
                    pass  # removed meanwhile
                except APIError as exc:
                    raise UserError(
                        "cannot remove the leftover container %s of an earlier run: %s; remove it with "
                        "`docker rm -f %s`" % (container.short_id, exc.explanation or exc, container.short_id)
                    ) from None
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

    def container_options(self, instance: Instance, prepared: DockerPrepared) -> dict:
        """Everything containers.create gets (see containers.container_options)."""
        return container_options(instance.port, prepared)

    def container_name(self, prepared: DockerPrepared) -> str:
        return container_name(prepared)

    def start(self, instance: Instance, prepared: prep.Prepared, generation: int = 0) -> None:
        from docker.errors import APIError, NotFound

        prepared = in_image(prepared)
        options = self.container_options(instance, prepared)
        try:
            self.client.containers.get(options["name"]).remove(force=True)  # a leftover of a crashed run
        except NotFound:
            pass
        except APIError as exc:
            instance.set_state(
                State.CRASHED, "cannot remove the old container %s: %s" % (options["name"], exc.explanation or exc)
            )
            return
        try:
            container = self.client.containers.create(**options)
        except APIError as exc:
            instance.set_state(State.CRASHED, "cannot create the container: %s" % (exc.explanation or exc))
            return
        handle = _Handle(container, prepared, generation)
        instance.handle, instance.pid = handle, None
        with self.lock:
            self._by_name[prepared.spec.name] = handle
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            container.start()
        except APIError as exc:
            handle.exited.set()
            instance.set_state(State.CRASHED, "cannot start the container: %s" % (exc.explanation or exc))
            return
        try:
            container.reload()
            instance.pid = container.attrs["State"]["Pid"] or None  # the container's init, as the host sees it
        except (APIError, KeyError):
            pass  # the pid is informational (ls); the container runs
        threading.Thread(target=pump.pump, args=(self, instance, handle, stream), daemon=True).start()
        if not prepared.own:
            threading.Thread(target=pump.poll_health, args=(instance, handle), daemon=True).start()

    def describe(self, instance: Instance) -> dict:
        """The image the function's container runs, and why (`ls -o wide`)."""
        handle = container_handle(instance)
        if handle is None:
            return {}
        return {"image": handle.prepared.image, "image_source": handle.prepared.image_source}

    def alive(self, instance: Instance) -> bool:
        handle = container_handle(instance)
        return handle is not None and not handle.exited.is_set()

    def reload(self, instance: Instance, prepared: prep.Prepared) -> str:
        """In place (SIGHUP) when the catalog's `docker.reload` is signal and the image is ours; else a new
        container."""
        from docker.errors import APIError, NotFound

        prepared, handle = in_image(prepared), container_handle(instance)
        if prepared.own and prepared.runtime.docker.reload == "signal" and handle is not None and self.alive(instance):
            handle.prepared = prepared
            try:
                handle.container.kill(signal="SIGHUP")
                return "signal"
            except (NotFound, APIError) as exc:
                self.logs.emit(
                    instance.name,
                    "could not signal the container (%s); starting a new one"
                    % (getattr(exc, "explanation", None) or exc),
                    "system",
                )
        generation = instance.last_control[1] + 1
        self.stop(instance)
        self.start(instance, prepared, generation=generation if not prepared.own else 0)
        return "restart"

    def stop(self, instance: Instance) -> None:
        from docker.errors import APIError, NotFound

        handle, instance.handle = container_handle(instance), None
        if handle is None:
            return
        handle.stopping = True
        with self.lock:
            if self._by_name.get(instance.name) is handle:
                del self._by_name[instance.name]
        try:
            handle.container.remove(force=True)
        except NotFound:
            pass  # already gone
        except APIError as exc:
            self.logs.emit(
                instance.name,
                "could not remove container %s: %s; remove it with `docker rm -f %s`"
                % (handle.container.name, exc.explanation or exc, handle.container.name),
                "system",
            )
        handle.exited.set()

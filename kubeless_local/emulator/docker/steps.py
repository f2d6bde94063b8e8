"""The prepare pipeline's steps in one-shot containers of the runtime image (as the Kubeless
controller's init containers run them); the tools see the container's mounts (containers.VIEW)."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from kubeless_local import podenv
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.docker.containers import (
    CA_ENV,
    CA_MOUNT,
    FUNCTION_MOUNT,
    LABEL_FUNCTION,
    LABEL_PROJECT,
    LABEL_STEP,
    VIEW,
    ca_mount,
    project_label,
    volume_copy,
)
from kubeless_local.emulator.images import (
    OWN_LABEL,
    ImageChoice,
    host_ca_bundle,
    image_for,
    image_present,
    registry_env,
)

PASS_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "GOPROXY",
    "GOSUMDB",
    "GONOSUMDB",
    "GOPRIVATE",
    "GOFLAGS_EXTRA",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "NPM_CONFIG_REGISTRY",
)


@dataclass
class DockerPrepared(prep.Prepared):
    """A Prepared that runs in an image; `own`: one of our runtime images (/kubeless follows the
    link, control lines, signal reload)."""

    image: str = ""
    own: bool = True
    install_image: str = ""
    image_source: str = ""  # why this image: "catalog", "env PYTHON3.8_RUNTIME", a runtime-images file, "spec"
    image_env: dict = field(default_factory=dict)  # the runtime phase's env of the runtime-images entry in force


class DockerSteps:
    """The step runner of the docker backend (see prepare.HostSteps for the interface)."""

    view = VIEW
    cache_prefix = "docker-"  # kept apart from the process backend's caches
    exe = ""
    runtime_dir = "/runtime"

    def __init__(self, backend, spec, runtime, state_dir):
        self.backend, self.spec = backend, spec
        # the Function's own image, else the catalog's or a runtime-images entry's (a runtime declared there alone)
        choice = ImageChoice(spec.image, "custom") if spec.image and not runtime.server else image_for(runtime)
        self.image = spec.image or choice.image
        self.image_env = {} if spec.image else dict(choice.env)
        self.image_source = "the Function's image" if spec.image else choice.source
        found = image_present(backend.client, self.image)  # resolve() already refused a missing image
        self.image_id = found.id if found is not None else self.image
        self.own = found is not None and bool((found.labels or {}).get(OWN_LABEL))
        self.install_phase = None if spec.image else choice.install
        self.install_image = self._install_image(runtime)
        installer = found if self.install_image == self.image else image_present(backend.client, self.install_image)
        self.install_image_id = installer.id if installer is not None else self.install_image
        self.project = project_label(state_dir)
        self.where = " in %s" % self.image

    def _install_image(self, runtime):
        """Where the install step runs, as the controller picks it: the installation phase of the
        runtime-images entry in force; without one, ours: our install command in the Function's image
        when that image can run it, else (it needs our runtime's files, /runtime/…, which only our images
        carry) in our image of the runtime."""
        if self.install_phase is not None:
            return self.install_phase.image
        ours = runtime.image if runtime.server else ""
        needs_ours = any(str(a).startswith(self.runtime_dir + "/") for a in runtime.docker.install)
        if self.own or not needs_ours or not ours:
            return self.image
        present = image_present(self.backend.client, ours)
        return ours if present is not None and (present.labels or {}).get(OWN_LABEL) else self.image

    def identity(self):
        return self.image_id

    def install_identity(self):
        """The image the install step runs in (deps one image installed are not another's), and the
        entry's installation command and env."""
        phase = self.install_phase
        if phase is None or not phase.command:
            return self.install_image_id
        return repr((self.install_image_id, phase.command, sorted(phase.env.items())))

    def install_step(self, argv):
        """The entry's installation command (`sh -c`, in the install volume, with its env), where it has
        one; else the catalog's."""
        phase = self.install_phase
        if phase is None or not phase.command:
            return argv, {}
        return ["/bin/sh", "-c", phase.command], dict(phase.env)

    def new_prepared(self, **fields):
        return DockerPrepared(
            image=self.image,
            own=self.own,
            install_image=self.install_image,
            image_env=self.image_env,
            image_source=self.image_source,
            **fields,
        )

    def finish(self, prepared):
        """A container reads the generation as the pod's user, not the host user who wrote it: its build, deps and
        runtime library made readable by all, its code (/kubeless) writable too (prep.open_to_all), and a copy of
        each Secret or ConfigMap volume to mount, as the kubelet writes one (containers.volume_copy)."""
        prep.open_to_all(
            [prepared.root, prepared.deps_dir, prepared.runtime_lib], [prepared.build_dir], [prepared.code_dir]
        )
        for volume in podenv.volumes(prepared.spec):
            volume_copy(prepared.root, volume)

    def setup_env(self):
        return self._with_host({"HOME": "/tmp"})

    def env(self, prepared):
        """Base env of a step: the user's env, then HOME and pip's quiet flags, the host's proxies,
        registries and CA bundle (prepare.step_env adds the catalog env and the step's variables)."""
        env = dict(prepared.user_env)
        env.update({"HOME": "/tmp", "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        return self._with_host(env)

    def _with_host(self, env):
        return with_host(env)

    def run(self, step, argv, cwd, env, on_line, binds=None):
        """One-shot container: `binds` {view field: (host folder, writable)} become its mounts; `cwd`
        (a host folder inside one of them) its working directory."""
        mounts, workdir = {}, "/"
        for name, (folder, writable) in (binds or {}).items():
            target = getattr(self.view, name)
            mounts[str(folder)] = {"bind": target, "mode": "rw" if writable else "ro"}
            if Path(cwd) == Path(folder) or Path(folder) in Path(cwd).parents:
                workdir = target + str(Path(cwd))[len(str(folder)) :]
        image = self.install_image if step == prep.STEP_INSTALL else self.image  # Kubeless' installation phase
        labels = {LABEL_FUNCTION: self.spec.name, LABEL_STEP: step, LABEL_PROJECT: self.project}
        self.backend.run_step(step, image, argv, mounts, env, workdir, labels, on_line)

    def check(self, prepared, argv, cwd):
        """The catalog's check (php -l, node --check) in the function's running container (fast: no new
        container); skipped when none runs yet, or one of another image (a save that changed the runtime): the
        server's load-failed covers those."""
        handle = self.backend.running_handle(self.spec.name)
        if not self.own or handle is None or not handle.prepared.own or handle.prepared.image != self.image:
            return
        code, output = self.backend.exec_in(handle, argv, FUNCTION_MOUNT)
        if code != 0:
            raise prep.StepFailed(prep.STEP_CHECK, (output or b"").decode("utf-8", "replace").strip())


def with_host(env):
    """A step's `env` plus the host's proxies, registries and CA bundle (where `env` has none of its own)."""
    for key in PASS_ENV:
        if os.environ.get(key) and key not in env:
            env[key] = os.environ[key]
    for key, value in registry_env().items():
        env.setdefault(key, value)
    if host_ca_bundle():
        env.update(dict.fromkeys(CA_ENV, CA_MOUNT))
    return env


def run_in_container(client, step, image, argv, mounts, env, workdir, labels, on_line):
    """Run a one-shot step container as the host user (files stay the user's); StepFailed on failure."""
    from docker.errors import APIError, NotFound

    try:
        container = client.containers.create(
            image,
            argv,
            user="%d:%d" % (os.getuid(), os.getgid()),
            working_dir=workdir,
            environment=env,
            volumes=ca_mount(dict(mounts)),
            # the host's network: install steps reach the package registries (and the host's proxies) as
            # the host does; a step serves nothing, so nothing of it is reachable (network.py: functions)
            network_mode="host",
            init=True,
            detach=True,
            labels=labels,
        )
    except APIError as exc:
        raise prep.StepFailed(
            step, "cannot create the %s container from %s: %s" % (step, image, exc.explanation or exc)
        ) from None
    lines = []
    try:
        container.start()
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode("utf-8", "replace").splitlines():
                lines.append(line)
                on_line(line)
        code = container.wait().get("StatusCode", 1)
    except APIError as exc:
        raise prep.StepFailed(step, "the %s container failed: %s" % (step, exc.explanation or exc)) from None
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass  # already gone (removed with the engine's auto-remove or by a sweep)
        except APIError as exc:
            on_line("could not remove the %s container %s: %s" % (step, container.id[:12], exc.explanation or exc))
    if code != 0:
        raise prep.StepFailed(step, "\n".join(lines).strip() or "%s exited with code %d" % (argv[0], code))

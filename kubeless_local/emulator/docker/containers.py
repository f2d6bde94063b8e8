"""How a function's container is laid out, as a pod's container would be (contract §4).

Layout inside a container of our own images (label io.kubeless-local.runtime):
  /kubeless-local/function   <state>/functions/<name>: gen-N/, build-N/ and the `kubeless` and `build`
                             links that the engine switches on every reload
  /kubeless                  a link in the image to /kubeless-local/function/kubeless (the current code),
                             writable by the container's user as a pod's emptyDir is
  /kubeless-local/deps       the dependency folder (installed once per sha256 of the deps file by an
                             install step that runs in the runtime image), read-only
  /kubeless-local/ca.crt     the host's CA bundle, read-only (exported as SSL_CERT_FILE & co)
Other images (an override from PYTHON3.11_RUNTIME / runtime-images, or a custom --runtime-image) get
a writable copy of the prepared code folder mounted at /kubeless itself (a pod's emptyDir is writable);
they reload by a new container (blue/green, backend.py) and are ready when /healthz answers on FUNC_PORT.

Each function's container has a network namespace of its own and listens on 8080 as in a pod, reached at
127.0.0.1:<its local port> only (network.py: the bridge, relay and opt-in host modes). Every container
(runtime, relay and one-shot step) carries LABEL_PROJECT = the resolved state folder, so the containers of
a supervisor that died (`kill -9` of dev) are removed by label (guardian.remove_containers, sweep).
"""

import os
import shutil
import time
from pathlib import Path

from kubeless_local import podenv
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.images import host_ca_bundle
from kubeless_local.runtimes import RUNTIME_RE, BackendBlock, Runtime
from kubeless_local.spec import POD_PORT, sha256_hex

FUNCTION_MOUNT = "/kubeless-local/function"
DEPS_MOUNT = "/kubeless-local/deps"
LIB_MOUNT = "/kubeless-local/runtime-lib"
CA_MOUNT = "/kubeless-local/ca.crt"
INSTALL = "/kubeless"
RW = "rw"  # <state>/functions/<name>/rw/: the writable copies of /kubeless (writable_copy)
VIEW = prep.View(function=FUNCTION_MOUNT, install=INSTALL, deps=DEPS_MOUNT, runtime_lib=LIB_MOUNT)
LABEL_FUNCTION = "kubeless-local.function"
LABEL_PROJECT = "kubeless-local.project"
LABEL_STEP = "kubeless-local.step"
LABEL_RUNTIME = "kubeless-local.runtime"
LABEL_ROLE = "kubeless-local.role"  # "relay" on a relay container (relay mode)
DOOR_MOUNT = "/kubeless-local/door"  # relay mode: the private folder of the connector's unix socket
CONNECTOR_MOUNT = "/kubeless-local/connector.py"
CONNECTOR = Path(__file__).with_name("connector.py")
CONNECTOR_SOCKET = "connector.sock"  # the server's port (8080); another port's: connector_socket(port)
DEFAULT_USER = 1000  # Kubeless' default securityContext {runAsUser: 1000, fsGroup: 1000}
CA_ENV = ("SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")


def security_context(spec):
    """(user, group, extra groups) the runtime container runs as: the Deployment's securityContext
    (container-level wins over pod-level), else Kubeless' default 1000 with fsGroup 1000."""
    ctx = spec.security_context
    if not ctx:
        return DEFAULT_USER, DEFAULT_USER, []
    user = ctx.get("runAsUser", DEFAULT_USER)
    group = ctx.get("runAsGroup", user)
    fs_group = ctx.get("fsGroup")  # fsGroup and supplementalGroups: pod-level fields only
    extra = [str(g) for g in (ctx.get("supplementalGroups") or [])]
    if fs_group is not None and str(fs_group) != str(group):
        extra.append(str(fs_group))
    return int(user), int(group), extra


def custom_runtime(spec):
    """A runtime for an image the catalog does not know: the code file keeps no extension (§4)."""
    match = RUNTIME_RE.match(spec.runtime or "")
    # no runtime at all (the image is the function): none is shown, as the seed's `ls` shows it
    runtime_id, version = match.groups() if match else ("custom" if spec.runtime else "", "")
    return Runtime(
        id=runtime_id,
        version=version,
        server="",
        dep_name="",
        suffix="",
        executable="",
        probe=(),
        expect="",
        image=spec.image,
        docker=BackendBlock(reload="restart"),
        backend="docker",
    )


def project_label(state_dir):
    return str(Path(state_dir).resolve())


def ca_mount(mounts):
    """`mounts` plus the host's CA bundle, read-only at CA_MOUNT."""
    ca = host_ca_bundle()
    if ca:
        mounts[str(Path(ca).resolve())] = {"bind": CA_MOUNT, "mode": "ro"}
    return mounts


def container_name(prepared):
    """Per project, function and generation: a reload's new container runs beside the one it replaces."""
    project = sha256_hex(project_label(prepared.root.parent.parent).encode())[:8]
    return "kubeless-local-%s-%s-g%d" % (prepared.spec.name, project, prepared.generation)


VOLUME_REF = "$(KUBELESS_INSTALL_VOLUME)"


def phase_env(env):
    """A runtime-images phase env as this container needs it. Kubernetes expands
    $(KUBELESS_INSTALL_VOLUME) to /kubeless, where a pod has the code and the deps in one folder; here
    they are two mounts, so a path under the volume is looked up in both: the deps mount, then /kubeless."""
    result = {}
    for key, value in env.items():
        parts = []
        for part in str(value).split(":"):
            if part.startswith(VOLUME_REF + "/"):
                rest = part[len(VOLUME_REF) :]
                parts += [DEPS_MOUNT + rest, INSTALL + rest]
            else:
                parts.append(part.replace(VOLUME_REF, INSTALL))
        result[key] = ":".join(parts)
    return result


def container_env(port, prepared, mode="host"):
    """The contract's env; in a namespace of its own (bridge, relay) the server listens on 8080 on every
    address there, as in a pod; on the host's network on the local port, on 127.0.0.1 only."""
    isolated = mode != "host"
    env = prep.function_env(prepared, POD_PORT if isolated else port, INSTALL, in_container=True)
    if isolated:
        env["KUBELESS_LOCAL_BIND"] = "0.0.0.0"  # its own namespace: reached only as network.py says
    env.update(prepared.runtime_env())
    env.update(phase_env(getattr(prepared, "image_env", {})))  # the entry in force wins, as on a cluster
    if host_ca_bundle():
        env.setdefault("SSL_CERT_FILE", CA_MOUNT)
        env.setdefault("NODE_EXTRA_CA_CERTS", CA_MOUNT)
    return env


VOLUMES = "volumes"  # <function root>/volumes/<kind>-<name>/: the copies of its Secret and ConfigMap volumes
VOLUME_FILE_MODE = 0o644  # a Secret's or ConfigMap's volume's defaultMode


def volume_folder(root: Path, volume) -> Path:
    """The folder mounted for a Secret or ConfigMap volume (`volume_copy` fills it)."""
    return root / VOLUMES / ("%s-%s" % (volume.source.kind.lower(), volume.name))


def volume_copy(root: Path, volume) -> None:
    """Fill `volume_folder`: a copy of the project's folder of the volume, its files of mode 0644 as the kubelet
    writes them (the user's own are often 0600, which the pod's user cannot read), brought up to date in place (a
    changed key is replaced whole, a removed one goes) at every prepare (the folder is watched), so that a running
    container sees a save as a pod sees an updated Secret. Its folder, in the state (0700), keeps it private."""
    target = volume_folder(root, volume)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    keys = {p.name: p for p in volume.folder.iterdir() if p.is_file()} if volume.folder.is_dir() else {}
    for stale in set(os.listdir(target)) - set(keys):
        (target / stale).unlink(missing_ok=True)
    for name, path in keys.items():
        data = path.read_bytes()
        dest = target / name
        if not dest.exists() or dest.read_bytes() != data:
            fresh = target / (".%s.new" % name)
            fresh.write_bytes(data)
            fresh.chmod(VOLUME_FILE_MODE)
            os.replace(fresh, dest)


def writable_copy(prepared):
    """A fresh copy of the generation's code for one container of another image: /kubeless is an
    emptyDir in a pod, which the function may write to. A copy, never the generation itself (its files are
    hard-linked to the next generation's) nor the user's files; writable by the container's user whoever
    it is. It goes with its container (backend.py: during a blue/green reload two run, each on its own copy);
    a killed run's copies go with its containers (the backend's sweep)."""
    folder = prepared.root / RW
    folder.mkdir(exist_ok=True)
    target = folder / ("%s.%s" % (prepared.code_dir.name, sha256_hex(repr((time.time_ns(), os.getpid())).encode())[:8]))
    shutil.copytree(prepared.code_dir, target, symlinks=True)
    for path in [target, *target.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else path.stat().st_mode | 0o666)
    return target


def writable_folder(options):
    """The writable copy a container's options mount at /kubeless (None: ours, which mount the generations)."""
    found = [Path(f) for f, mount in options.get("volumes", {}).items() if mount == {"bind": INSTALL, "mode": "rw"}]
    return found[0] if found else None


def folders_made_by_others(folder: Path, uid: int) -> list[Path]:
    """The top-most folders under `folder` that user `uid` does not own: what a container's user made in /kubeless,
    whose files `uid` cannot remove (nor, then, a project folder holding them) unless it is root."""
    found = []
    for parent, names, _ in os.walk(folder):
        for name in list(names):
            path = os.path.join(parent, name)
            try:
                if os.lstat(path).st_uid != uid:
                    found.append(Path(path))
                    names.remove(name)
            except OSError:  # removed meanwhile
                names.remove(name)
    return found


def network_options(mode, port, relay_id=""):
    """The runtime container's network (network.py): the bridge with its 8080 published on 127.0.0.1 at a port
    the engine chooses (the function's own port is its front door's: two generations' containers run at once
    during a reload); the relay container's namespace; or the host's."""
    if mode == "bridge":
        return {"network_mode": "bridge", "ports": {"%d/tcp" % POD_PORT: ("127.0.0.1", None)}}
    if mode == "relay":
        return {"network_mode": "container:%s" % relay_id}
    return {"network_mode": "host"}


def relay_name(prepared):
    return container_name(prepared) + "-relay"


def spare_relay_name(prepared):
    """A relay started ahead for the function's next swap (backend.py): which generation joins it is not known
    yet, so its name is the function's and a random part."""
    token = sha256_hex(repr((time.time_ns(), os.getpid())).encode())[:8]
    return relay_prefix(prepared) + token


def relay_prefix(prepared):
    """The name of a relay no generation is known for yet (a spare, `run`'s early one: relaystart.py) without its
    random part."""
    return container_name(prepared).rsplit("-g", 1)[0] + "-relay-"


def connector_socket(port):
    """The connector's socket (in the relay's folder) that hands connections to `port` in the namespace."""
    return CONNECTOR_SOCKET if port == POD_PORT else "connector-%d.sock" % port


def relay_config(prepared, image, folder, debug_port=None):
    """The relay container (relay mode) as the Engine API creates it (the body of POST /containers/create: the
    same for the backend and for relaystart.py, which sends it before the docker SDK is imported): the network
    namespace the function's container joins (network "none": loopback only), running connector.py from our
    Python image as the host user (the socket's folder `folder` is the user's, 0700). `debug_port`: a debugged
    function's debugger's port, reached too."""
    ports = [POD_PORT] + ([debug_port] if debug_port else [])
    pairs = [a for port in ports for a in ("%s/%s" % (DOOR_MOUNT, connector_socket(port)), str(port))]
    return {
        "Image": image,
        "Cmd": ["python3", "-u", CONNECTOR_MOUNT, *pairs],
        "Entrypoint": [],
        "User": "%d:%d" % (os.getuid(), os.getgid()),
        "WorkingDir": "/",
        "Labels": {
            LABEL_FUNCTION: prepared.spec.name,
            LABEL_PROJECT: project_label(prepared.root.parent.parent),
            LABEL_ROLE: "relay",
        },
        "HostConfig": {
            "AutoRemove": True,  # its connector exits when dev does (the lifeline): nothing is left
            "Init": True,
            "NetworkMode": "none",
            "Binds": [
                "%s:%s:rw" % (Path(folder).resolve(), DOOR_MOUNT),
                "%s:%s:ro" % (CONNECTOR.resolve(), CONNECTOR_MOUNT),
            ],
        },
    }


def container_options(port, prepared, mode="host", relay_id=""):
    """Everything containers.create gets for the function's runtime container (`mode`: network.py's)."""
    spec = prepared.spec
    user, group, extra_groups = security_context(spec)
    mounts = {str(prepared.deps_dir): {"bind": DEPS_MOUNT, "mode": "ro"}}
    if prepared.own:
        # read-write: /kubeless, a link in the image to its current generation, is an emptyDir in the pod
        mounts[str(prepared.root.resolve())] = {"bind": FUNCTION_MOUNT, "mode": "rw"}
    else:
        mounts[str(writable_copy(prepared).resolve())] = {"bind": INSTALL, "mode": "rw"}
    for volume in podenv.volumes(spec):  # a copy of <project>/secrets/<name>/ or configmaps/<name>/ (steps.finish)
        if volume.folder.is_dir():
            mounts[str(volume_folder(prepared.root, volume).resolve())] = {"bind": volume.mount, "mode": "ro"}
    options = {
        "image": prepared.image,
        "name": container_name(prepared),
        "detach": True,
        "init": True,
        "environment": container_env(port, prepared, mode),
        **network_options(mode, port, relay_id),
        "user": "%d:%d" % (user, group),
        "volumes": ca_mount(mounts),
        "labels": {
            LABEL_FUNCTION: spec.name,
            LABEL_PROJECT: project_label(prepared.root.parent.parent),
            LABEL_RUNTIME: prepared.runtime.name,
        },
        "working_dir": INSTALL if prepared.own else None,
    }
    if extra_groups:
        options["group_add"] = extra_groups
    if prepared.own and prepared.runtime.docker.command:
        options["command"] = prepared.expand(prepared.runtime.docker.command)
    limit = spec.memory_limit_bytes
    if limit:
        options["mem_limit"] = limit
        options["memswap_limit"] = limit
    if spec.cpu_limit_cores:  # the engine takes 0.01 to its CPU count; Kubernetes takes a limit above a node's
        options["nano_cpus"] = int(min(max(spec.cpu_limit_cores, 0.01), os.cpu_count() or 1) * 1e9)
    return {k: v for k, v in options.items() if v is not None}

"""Kubeless on a cluster the way local development runs it: the `runtime-images` of `kubeless-config`
derived from the runtime catalog (runtimes/catalog.yaml), so the cluster runs the same images as `dev`;
and `kubeless-local cluster up|down|status`, a local kind cluster with Kubeless, through the user's
`kind` and `kubectl` (and `docker` for the images)."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

import yaml

from kubeless_local import runtimes
from kubeless_local.errors import UserError
from kubeless_local.paths import RUNTIMES_DIR

MANIFESTS = Path(__file__).resolve().parent / "manifests"
KUBELESS_MANIFEST = MANIFESTS / "kubeless-v1.0.8.yaml"  # controller, RBAC, kubeless-config (CRDs: crds.yaml)
# Where the Kubeless controller mounts the function's volume in every container (KUBELESS_INSTALL_VOLUME):
# the catalog's {install} and {deps} of the docker backend.
INSTALL_VOLUME = "/kubeless"
# A compiled runtime (a `compile` step in the catalog: go) on a cluster: the `compilation` phase runs the
# docker backend's setup and compile steps with these writable folders of its container (the image's
# caches are read-only for its user), then leaves the binary in the function's volume, where the runtime
# container runs it (`cluster_command`): the image's CMD names the docker backend's build folder.
CLUSTER_RUNTIME_LIB = "/tmp/kubeless-local-lib"
CLUSTER_BUILD = "/tmp/kubeless-local-build"
HANDLER_MARK = "@KUBELESS_FUNC_NAME@"  # the compile step's {handler}: the controller's env, expanded by sh
COMPILE_STEP = (
    "mkdir -p {lib} {out} && {setup} && {{ {build} > {log} 2>&1 || {{ cat {log}; head -c 4000 {log}"
    " > /dev/termination-log; exit 1; }}; }} && cp {built} {run}"
)


def runtime_images(catalog_path=None) -> list:
    """Kubeless `runtime-images` (pkg/langruntime: ID, depName, fileNameSuffix, versions[].images[])
    for every catalog version that has an image: the `runtime` phase runs the image as built for the
    docker backend (its CMD is the catalog's docker command), the `installation` phase runs the catalog's
    docker install step in the same image (the controller wraps it in `sh -c`, in the install volume)."""
    entries = runtimes.load(catalog_path or RUNTIMES_DIR / "catalog.yaml")
    result = []
    for entry in entries.values():
        versions = []
        for v in entry.versions:
            version = v.default if v.version == "auto" else v.version
            if not v.image or not version:
                continue  # process backend only: no image to run on a cluster
            values = {
                "version": version,
                "install": INSTALL_VOLUME,
                "deps": INSTALL_VOLUME,
                "deps_file": "%s/%s" % (INSTALL_VOLUME, entry.dep_name),
                "runtime_dir": "/runtime",
                "runtime_lib": CLUSTER_RUNTIME_LIB,
            }
            image = v.image.format_map(values)
            env = {k: str(value).format_map(values) for k, value in entry.docker.env.items()}
            phases = []
            if entry.docker.install and entry.dep_name:
                phases.append(_phase("installation", image, env, _install_command(entry, values)))
            if entry.docker.compile:
                phases.append(_phase("compilation", image, env, _compile_command(entry, values)))
            phases.append(_phase("runtime", image, env))
            # "images": the controller parses this with ghodss/yaml, i.e. by the Go field name (Images), not by
            # the `yaml:"runtimeImage"` tag its struct also carries
            name = "%s%s" % (entry.id, version.replace(".", ""))
            versions.append({"name": name, "version": version, "images": phases})
        if versions:
            result.append(
                {"ID": entry.id, "depName": entry.dep_name, "fileNameSuffix": entry.suffix, "versions": versions}
            )
    return result


def _install_command(entry, values: dict) -> str:
    """The `installation` phase: the catalog's docker install step, after its setup step where the install
    uses the runtime's libraries (Java: the Maven repository holding the Kubeless parent POM)."""
    install = shlex.join(arg.format_map(values) for arg in entry.docker.install)
    if not entry.docker.setup or not any("{runtime_lib}" in arg for arg in entry.docker.install):
        return install
    setup = shlex.join(a.format_map(values) for a in entry.docker.setup)
    return "mkdir -p %s && %s && %s" % (CLUSTER_RUNTIME_LIB, setup, install)


def _compile_command(entry, values: dict) -> str:
    """The `compilation` phase (run by the controller with `sh -c` in the install volume): the catalog's
    docker setup and compile steps; the compiler's words go to the init container's termination message
    (what `push --wait` and `kubectl describe` show) and the binary into the install volume."""
    folders = {"runtime_lib": CLUSTER_RUNTIME_LIB, "build": CLUSTER_BUILD, "module": "function"}
    step = {**values, **folders, "handler": HANDLER_MARK}
    setup = shlex.join(a.format_map(step) for a in entry.docker.setup) if entry.docker.setup else "true"
    build = shlex.join(a.format_map(step) for a in entry.docker.compile).replace(HANDLER_MARK, '"$KUBELESS_FUNC_NAME"')
    if "{build}" in entry.docker.command[0]:  # the command is the built binary (go): that file
        built, run = shlex.quote(entry.docker.command[0].format_map(step)), shlex.quote(cluster_command(entry)[0])
    else:  # a server that runs what the compile built (java: classes): the whole build folder
        built, run = "-R %s/." % CLUSTER_BUILD, INSTALL_VOLUME + "/"
    return COMPILE_STEP.format(lib=CLUSTER_RUNTIME_LIB, out=CLUSTER_BUILD, setup=setup, build=build, built=built,
                               log=CLUSTER_BUILD + ".log", run=run)  # fmt: skip


def cluster_command(entry) -> list:
    """The runtime container's command on a cluster for a compiled runtime (what it built, and its deps, in
    the install volume); [] for the others, whose image's CMD runs the server."""
    if not entry.docker.compile:
        return []
    return [a.format(build=INSTALL_VOLUME, deps=INSTALL_VOLUME) for a in entry.docker.command]


def _phase(phase, image, env, command=""):
    out = {"phase": phase, "image": image}
    if command:
        out["command"] = command
    if env:
        out["env"] = dict(env)  # a copy: no YAML anchors in the rendered config
    return out


def kubeless_objects(path=KUBELESS_MANIFEST) -> list:
    """The objects of the shipped Kubeless manifest, in order."""
    return [obj for obj in yaml.safe_load_all(Path(path).read_text()) if obj]


# ---------------------------------------------------------------- `kubeless-local cluster` with kind
# Kubernetes 1.21 is the newest on which the Kubeless v1.0.8 controller runs as it is: from 1.22 on it
# exits at start (it reads its CRD through apiextensions.k8s.io/v1beta1).
DEFAULT_NAME = "kubeless"
DEFAULT_IMAGE = "kindest/node:v1.21.14"
LAST_SUPPORTED_MINOR = 21
INSTALL_HINTS = {
    "kind": "kind is not installed: see https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/",
}
CONTROLLER = ("kubeless", "kubeless-controller-manager")  # namespace, Deployment
KUBELESS_CONFIG = "kubeless-config"  # the controller's ConfigMap (runtime-images), in its namespace


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise UserError(INSTALL_HINTS[name])
    return path


def _run(argv: list, doing: str, input: Optional[str] = None) -> str:
    """A kind/kubectl/docker call; its failure is one line: what was being done and the tool's last words."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError("%s: %s" % (doing, exc)) from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["exit code %d" % done.returncode]
        command = " ".join([Path(argv[0]).name, *argv[1:3]])
        raise UserError("%s: `%s` failed: %s" % (doing, command, last[0]))
    return done.stdout


def clusters() -> list:
    return _run([_tool("kind"), "get", "clusters"], "list the kind clusters").split()


def node_minor(image: str) -> Optional[int]:
    """kindest/node:v1.21.14 → 21 (None when the tag says no version)."""
    match = re.search(r":v1\.(\d+)", image)
    return int(match.group(1)) if match else None


def up(name: str = DEFAULT_NAME, image: str = DEFAULT_IMAGE, say: Callable[[str], None] = print) -> None:
    """Create the kind cluster (unless it exists), install Kubeless (CRDs as v1, controller, RBAC,
    kubeless-config), load the runtime images built locally and point runtime-images at them."""
    kind, kubectl = _tool("kind"), _tool("kubectl")
    minor = node_minor(image)
    if minor is not None and minor > LAST_SUPPORTED_MINOR:
        say(
            "warning: Kubernetes 1.%d: the Kubeless v1.0.8 controller exits at start from 1.22 on (it reads its CRD"
            " through apiextensions.k8s.io/v1beta1); push works, functions are not deployed" % minor
        )
    if name in clusters():
        say("kind cluster %s exists" % name)
    else:
        say("creating kind cluster %s (%s)" % (name, image))
        _run([kind, "create", "cluster", "--name", name, "--image", image, "--wait", "120s"], "create the kind cluster")
    context = ["--context", "kind-%s" % name]
    _run([kubectl, *context, "apply", "-f", str(MANIFESTS / "crds.yaml")], "install the Kubeless CRDs")
    _run(
        [kubectl, *context, "wait", "--for", "condition=established", "--timeout", "60s", "crd/functions.kubeless.io"],
        "wait for the Kubeless CRDs",
    )
    _run([kubectl, *context, "apply", "-f", str(KUBELESS_MANIFEST)], "install Kubeless")
    images = runtime_images()
    loaded = load_images(name, sorted({i["image"] for r in images for v in r["versions"] for i in v["images"]}), say)
    patch = {"data": {"runtime-images": yaml.safe_dump(images, sort_keys=False)}}
    _run(
        [
            kubectl,
            *context,
            "-n",
            CONTROLLER[0],
            "patch",
            "configmap",
            KUBELESS_CONFIG,
            "--type",
            "merge",
            "-p",
            json.dumps(patch),
        ],
        "point kubeless-config's runtime-images at the local images",
    )
    # The controller reads kubeless-config once, at start: restart it to take the new runtime-images.
    _run(
        [kubectl, *context, "-n", CONTROLLER[0], "rollout", "restart", "deployment", CONTROLLER[1]],
        "restart the controller",
    )
    say(
        "Kubeless installed in kind-%s (%d runtime images loaded); push with `kubeless-local push --context kind-%s`"
        % (name, loaded, name)
    )


def load_images(name: str, images: list, say: Callable[[str], None]) -> int:
    """`kind load docker-image` of each image present in the local Docker engine; the others are named."""
    docker = shutil.which("docker")
    loaded = 0
    for image in images:
        present = (
            docker
            and subprocess.run([docker, "image", "inspect", image], capture_output=True, timeout=60).returncode == 0
        )
        if not present:
            say("%s is not built here: `kubeless-local runtime build` builds it; skipped" % image)
            continue
        _run([_tool("kind"), "load", "docker-image", image, "--name", name], "load %s into kind" % image)
        loaded += 1
    return loaded


def down(name: str = DEFAULT_NAME, say: Callable[[str], None] = print) -> None:
    if name not in clusters():
        say("no kind cluster %s" % name)
        return
    _run([_tool("kind"), "delete", "cluster", "--name", name], "delete the kind cluster")
    say("kind cluster %s deleted" % name)


def status(name: str = DEFAULT_NAME) -> dict:
    """Whether the cluster exists, Kubeless' CRDs are installed and the controller is available."""
    result = {"cluster": name, "exists": name in clusters(), "kubeless": False, "controller_ready": False}
    if not result["exists"]:
        return result
    context = ["--context", "kind-%s" % name]
    kubectl = _tool("kubectl")
    crd = subprocess.run(
        [kubectl, *context, "get", "crd", "functions.kubeless.io", "-o", "name"], capture_output=True, timeout=60
    )
    result["kubeless"] = crd.returncode == 0
    if result["kubeless"]:
        ready = subprocess.run(
            [
                kubectl,
                *context,
                "-n",
                CONTROLLER[0],
                "get",
                "deployment",
                CONTROLLER[1],
                "-o",
                "jsonpath={.status.availableReplicas}",
            ],
            capture_output=True,
            timeout=60,
            text=True,
        )
        result["controller_ready"] = ready.returncode == 0 and ready.stdout.strip() not in ("", "0")
    return result

"""What a debugged function's container runs with (`dev --debug` on the docker backend; emulator/debugging.py
says which debugger and port).

Guarantee: the runtime's debugger listens on 127.0.0.1:<debug port> inside the container's network namespace,
as it does on the host on the process backend (the same port number: the runtimes' servers do not differ
between backends), and is reached at 127.0.0.1:<debug port> on the host only:
  relay  the relay's connector hands connections to that port in the namespace (connector.py, a socket of
         its own), and a second front door of the function on the host's 127.0.0.1:<debug port> forwards to
         it (backend.py); a blue/green reload switches it to the new container with the function's door;
  host   the debugger binds the host's 127.0.0.1:<debug port> itself;
  bridge the debugger binds every address of the container's own namespace (KUBELESS_LOCAL_DEBUG_HOST=0.0.0.0,
         which every runtime's server reads: a published port reaches the container's bridge address, not its
         loopback), the port is published on the host's 127.0.0.1 only at a port the engine chooses, as the
         function's is, and the debug door forwards there (switched with the function's door).
What the image lacks is brought in read-only, made once per image in a one-shot container of that image
(complete or absent: prepare.cached_step):
  debugpy   installed by the image's pip (its Python, its ABI) at the version runtimes/python/requirements.txt
            pins, from the index this machine's pip is configured with; on PYTHONPATH after the function's
            deps;
  delve     dlv built by the image's Go with cgo off (a static binary: it runs whatever the image's libc), from
            the Go module proxy this machine is configured with; the server finds it by KUBELESS_LOCAL_DLV.
            The Go server builds the function with debug info itself, next to its build, on every start
            (runtimes/go/server/main.go, "debugging"): so a debugged Go container runs as the user of the
            host's files (not the securityContext's), with the function's folder writable, the runtime's
            module cache (runtime_lib) read-only where the compile step had it, and a Go build cache of its
            own per image (the standard library built for debugging once);
  inspector nothing: Node.js's own.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from kubeless_local.emulator import debugging, delve
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.docker.containers import (
    FUNCTION_MOUNT,
    LABEL_FUNCTION,
    LABEL_PROJECT,
    LABEL_STEP,
    LIB_MOUNT,
    project_label,
)
from kubeless_local.emulator.docker.steps import with_host
from kubeless_local.emulator.images import image_present
from kubeless_local.errors import UserError
from kubeless_local.paths import RUNTIMES_DIR, cache_dir

TOOL_MOUNT = "/kubeless-local/debugger"  # the debugger's files made for the image (read-only)
STEP = "debugger setup"
REQUIREMENTS = RUNTIMES_DIR / "python" / "requirements.txt"  # where debugpy's version is pinned, once
GO_CACHE_MOUNT = "/kubeless-local/go-build"  # a debugged Go container's build cache (writable, per image)


BRIDGE_HOST = "0.0.0.0"  # every address of the container's own namespace: its port is published on 127.0.0.1 only


def debugpy_version() -> str:
    match = re.search(r"^debugpy==(\S+)", REQUIREMENTS.read_text(), re.M)
    assert match, "runtimes/python/requirements.txt pins debugpy"
    return match.group(1)


PIP_QUIET = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}


@dataclass(frozen=True)
class Tool:
    name: str  # its cache folder's name: what and which version
    argv: list[str]  # what makes it, in a one-shot container of the function's image, into TOOL_MOUNT
    step_env: dict[str, str]
    env: dict[str, str]  # how the server finds it
    go_cache: bool = False  # the step warms the image's Go build cache for debugging (GO_CACHE_MOUNT)


def tools(debugger: str) -> Optional[Tool]:
    if debugger == "debugpy":
        version = debugpy_version()
        argv = ["python3", "-m", "pip", "install", "--quiet", "--target", TOOL_MOUNT, "debugpy==%s" % version]
        return Tool("debugpy-%s" % version, argv, PIP_QUIET, {"PYTHONPATH": TOOL_MOUNT})
    if debugger == "delve":
        # a throwaway Go workspace in the step container; the binary straight into the mounted folder; then the
        # standard library the server uses, built for debugging into the cache the containers will use, as
        # delve.py does on the host: a debugged server's first build compiles only the function and the server
        step_env = {"GOBIN": TOOL_MOUNT, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOPATH": "/tmp/go"}
        step_env["GOCACHE"] = GO_CACHE_MOUNT
        package = "%s/cmd/dlv@%s" % (delve.DELVE_MODULE, delve.DELVE_VERSION)
        script = 'go install "$1" && shift && go build "$@"'
        argv = ["/bin/sh", "-c", script, "sh", package, delve.DEBUG_FLAGS, *delve.WARM_PACKAGES]
        return Tool("delve-%s" % delve.DELVE_VERSION, argv, step_env, {delve.DLV_ENV: TOOL_MOUNT + "/dlv"}, True)
    return None  # the V8 inspector: Node.js's own


def tool(backend: Any, target: debugging.Target, prepared: Any, on_line: Callable[[str], None]) -> dict:
    """{env, mounts} the debugged function's container gets for its debugger's files (none for the inspector);
    made first if need be. UserError (one line) when they cannot be."""
    made = tools(target.debugger)
    if made is None:
        return {"env": {}, "mounts": {}, "identity": ""}
    name, argv, env = made.name, made.argv, made.env
    found = image_present(backend.client, prepared.image)
    identity = (found.id if found is not None else prepared.image).replace("sha256:", "")[:16]
    folder = cache_dir() / "docker-debugger" / name / identity

    def build(into: Path) -> None:
        on_line("setting up %s for debugging in %s (once)" % (name, prepared.image))
        labels = {
            LABEL_FUNCTION: prepared.spec.name,
            LABEL_STEP: STEP,
            LABEL_PROJECT: project_label(prepared.root.parent.parent),
        }
        step_env = with_host({"HOME": "/tmp", **made.step_env})
        mounts = {str(into): {"bind": TOOL_MOUNT, "mode": "rw"}}
        if made.go_cache:
            mounts[str(go_cache(identity))] = {"bind": GO_CACHE_MOUNT, "mode": "rw"}
        try:
            backend.run_step(STEP, prepared.image, argv, mounts, step_env, "/tmp", labels, on_line)
        except prep.StepFailed as exc:
            raise UserError(
                "cannot set up %s for debugging in %s: %s; check that the image reaches its package registry "
                "as this machine does" % (name, prepared.image, delve.last_line(exc.output))
            ) from None

    prep.cached_step(folder, build)
    return {"env": env, "mounts": {str(folder.resolve()): {"bind": TOOL_MOUNT, "mode": "ro"}}, "identity": identity}


def container_additions(backend: Any, target: debugging.Target, prepared: Any, on_line: Callable[[str], None]) -> dict:
    """What a debugged function's container options get on top of its own: the debug port and timeout
    (Target.server_env), the debugger's files, PYTHONPATH extended rather than replaced. UserError when the
    image is not one of ours (a runtime-images or NAME_RUNTIME image): its server knows no debug port."""
    if not prepared.own:
        raise UserError(
            "Function %s runs in %s (%s), whose server has no debugger: debug it in our image (unset that choice) "
            "or on the process backend" % (target.name, prepared.image, prepared.image_source)
        )
    made = tool(backend, target, prepared, on_line)
    additions = {"env": {**target.server_env(), **made["env"]}, "mounts": made["mounts"]}
    if backend.network == "bridge":  # reached through a published port: see the docstring
        additions["env"][debugging.DEBUG_HOST_ENV] = BRIDGE_HOST
        additions["ports"] = {"%d/tcp" % target.port: ("127.0.0.1", None)}
    if target.debugger == "delve":
        additions = go_debug_build(additions, prepared, made["identity"])
    return additions


def go_cache(identity: str) -> Path:
    """The Go build cache of debugged containers of one image (and of the step that warms it)."""
    cache = cache_dir() / "docker-debugger" / "go-build" / identity
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def go_debug_build(additions: dict, prepared: Any, identity: str) -> dict:
    """What the Go server needs to build the function with debug info in its container (see the docstring)."""
    cache = go_cache(identity)
    mounts = {
        **additions["mounts"],
        str(prepared.root.resolve()): {"bind": FUNCTION_MOUNT, "mode": "rw"},
        str(Path(prepared.runtime_lib).resolve()): {"bind": LIB_MOUNT, "mode": "ro"},
        str(cache.resolve()): {"bind": GO_CACHE_MOUNT, "mode": "rw"},
    }
    env = {**additions["env"], "GOCACHE": GO_CACHE_MOUNT, "HOME": "/tmp"}
    return {**additions, "env": env, "mounts": mounts, "user": "%d:%d" % (os.getuid(), os.getgid())}


def merged(options: dict, additions: dict) -> dict:
    """Container `options` with `additions` (container_additions): a PYTHONPATH is appended to the image's, a
    published debug port added to the function's."""
    env = dict(options.get("environment") or {})
    for key, value in additions["env"].items():
        env[key] = "%s:%s" % (env[key], value) if key == "PYTHONPATH" and env.get(key) else value
    merged = {**options, "environment": env, "volumes": {**options.get("volumes", {}), **additions["mounts"]}}
    if "ports" in additions:
        merged["ports"] = {**options.get("ports", {}), **additions["ports"]}
    if "user" in additions:
        merged["user"] = additions["user"]
    return merged

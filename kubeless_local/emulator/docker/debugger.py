"""What a debugged function's container runs with (`dev --debug` on the docker backend; emulator/debugging.py
says which debugger and port).

Guarantee: the runtime's debugger listens on 127.0.0.1:<debug port> inside the container's network namespace,
as it does on the host on the process backend (the same port number: the runtimes' servers do not differ
between backends), and is reached at 127.0.0.1:<debug port> on the host only:
  relay  the relay's connector hands connections to that port in the namespace (connector.py, a socket of
         its own), and a second front door of the function on the host's 127.0.0.1:<debug port> forwards to
         it (backend.py); a blue/green reload switches it to the new container with the function's door;
  host   the debugger binds the host's 127.0.0.1:<debug port> itself;
  bridge refused (`refuse`): a published port reaches the container's bridge address, not the loopback
         the debuggers listen on.
What the image lacks is brought in read-only, made once per image in a one-shot container of that image
(complete or absent: prepare.cached_step):
  debugpy   installed by the image's pip (its Python, its ABI) at the version runtimes/python/requirements.txt
            pins, from the index this machine's pip is configured with; on PYTHONPATH after the function's
            deps;
  inspector nothing: Node.js's own.
Delve is refused (NOT_IN_CONTAINERS, one line): the Go server builds its debug binary itself, next to its
build, which a container mounts read-only (runtimes/go/server/main.go, "debugging").
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from kubeless_local.emulator import debugging, delve
from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.docker.containers import LABEL_FUNCTION, LABEL_PROJECT, LABEL_STEP, project_label
from kubeless_local.emulator.docker.steps import with_host
from kubeless_local.emulator.images import image_present
from kubeless_local.errors import BadRequest, UserError
from kubeless_local.paths import RUNTIMES_DIR, cache_dir

TOOL_MOUNT = "/kubeless-local/debugger"  # the debugger's files made for the image (read-only)
STEP = "debugger setup"
REQUIREMENTS = RUNTIMES_DIR / "python" / "requirements.txt"  # where debugpy's version is pinned, once
# debuggers a container cannot run yet -> why
NOT_IN_CONTAINERS = {
    "delve": "the Go server builds its debug binary next to its build, which the container mounts read-only"
}


def refuse(mode: str, target: debugging.Target) -> None:
    """A BadRequest line when `target` cannot be debugged in a container in network `mode`."""
    if target.debugger in NOT_IN_CONTAINERS:
        why = "Function %s cannot run under %s in a container yet: %s" % (
            target.name,
            target.debugger.capitalize(),
            NOT_IN_CONTAINERS[target.debugger],
        )
        raise BadRequest(why, "debug backend", target.name)
    if mode == "bridge":
        why = (
            "debugging on the docker backend needs docker.network relay or host: in bridge mode the debug port "
            "would reach the container's bridge address, not the loopback its debugger listens on"
        )
        raise BadRequest(why, "debug network", target.name)


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


def tools(debugger: str) -> Optional[Tool]:
    if debugger == "debugpy":
        version = debugpy_version()
        argv = ["python3", "-m", "pip", "install", "--quiet", "--target", TOOL_MOUNT, "debugpy==%s" % version]
        return Tool("debugpy-%s" % version, argv, PIP_QUIET, {"PYTHONPATH": TOOL_MOUNT})
    return None  # the V8 inspector: Node.js's own


def tool(backend: Any, target: debugging.Target, prepared: Any, on_line: Callable[[str], None]) -> dict:
    """{env, mounts} the debugged function's container gets for its debugger's files (none for the inspector);
    made first if need be. UserError (one line) when they cannot be."""
    made = tools(target.debugger)
    if made is None:
        return {"env": {}, "mounts": {}}
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
        try:
            backend.run_step(STEP, prepared.image, argv, mounts, step_env, "/tmp", labels, on_line)
        except prep.StepFailed as exc:
            raise UserError(
                "cannot set up %s for debugging in %s: %s; check that the image reaches its package registry "
                "as this machine does" % (name, prepared.image, delve.last_line(exc.output))
            ) from None

    prep.cached_step(folder, build)
    return {"env": env, "mounts": {str(folder.resolve()): {"bind": TOOL_MOUNT, "mode": "ro"}}}


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
    return {"env": {**target.server_env(), **made["env"]}, "mounts": made["mounts"]}


def merged(options: dict, additions: dict) -> dict:
    """Container `options` with `additions` (container_additions): a PYTHONPATH is appended to the image's."""
    env = dict(options.get("environment") or {})
    for key, value in additions["env"].items():
        env[key] = "%s:%s" % (env[key], value) if key == "PYTHONPATH" and env.get(key) else value
    return {**options, "environment": env, "volumes": {**options.get("volumes", {}), **additions["mounts"]}}

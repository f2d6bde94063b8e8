"""Debuggers for functions under `dev`: which functions run under one, on which port, and what an editor
needs to attach.

Guarantees: a debugged function's runtime server starts with `KUBELESS_LOCAL_DEBUG_PORT=<port>` (its
debugger listens on 127.0.0.1:<port> only: in a container, that of its own namespace, or every address of
that namespace in bridge mode, reached through the function's debug door, docker/debugger.py) and a
FUNC_TIMEOUT no call reaches, so a call paused at a breakpoint is not stopped as a runaway one; the port is
fixed for the session (saves, reloads and restarts keep it). Which runtimes have a debugger is the
catalog's `debug:` (runtimes/catalog.yaml); how each debugger behaves, and the editor entries, are the
tables below. A function that cannot be debugged is refused before anything starts, never started without
its debugger.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from kubeless_local.emulator import delve
from kubeless_local.emulator.portholder import held_by
from kubeless_local.errors import BadRequest, Conflict, NotFound
from kubeless_local.spec import POD_PORT

DEBUG_PORT_ENV = "KUBELESS_LOCAL_DEBUG_PORT"
# The address the debugger binds when not 127.0.0.1: 0.0.0.0 in a bridge-mode container (docker/debugger.py)
DEBUG_HOST_ENV = "KUBELESS_LOCAL_DEBUG_HOST"
# Seconds: a timeout no paused call reaches (23 days), and below the largest timer Node.js takes
# (2^31 - 1 ms; a longer one fires at once).
UNREACHED_TIMEOUT = "2000000"


@dataclass(frozen=True)
class Debugger:
    protocol: str  # what an editor speaks to it
    default_port: int  # the port it is known by, when no first port is given
    # how a save reaches a debugged server: "signal" (the runtime reloads in place; the debugger stays
    # connected) or "restart" (a new server on the same port; the editor attaches again)
    reload: str


DEBUGGERS = {
    # debugpy in the worker that serves the calls: a new worker must listen on the same port, so a
    # save restarts the server
    "debugpy": Debugger("Debug Adapter Protocol", 5678, "restart"),
    # the V8 inspector of the Node.js process; the function's worker threads appear as its targets
    "inspector": Debugger("Chrome DevTools Protocol", 9229, "signal"),
    "delve": Debugger("Debug Adapter Protocol", 2345, "restart"),
}
# What runtimes without a debugger may use one day: said when one is asked for.
CANDIDATES = {"ruby": "rdbg", "php": "Xdebug", "java": "JDWP"}


@dataclass(frozen=True)
class Target:
    """One debugged function: its debugger (a key of DEBUGGERS) and port."""

    name: str
    debugger: str
    port: int

    def env(self, go: str = "go", on_line: Callable[[str], None] = lambda line: None) -> dict[str, str]:
        """What the runtime server is started with on top of the contract's env. Delve's: the dlv built for
        the function's Go (`go`), once per Delve and Go version, its progress told to on_line (UserError
        when it cannot be built)."""
        env = self.server_env()
        if self.debugger == "delve":
            env[delve.DLV_ENV] = str(delve.dlv(go, on_line))
        return env

    def server_env(self) -> dict[str, str]:
        """The debug port, the loopback to bind it on (whatever this machine's env says: a bridge-mode container
        alone binds wider, docker/debugger.py) and a timeout no paused call reaches: what every debugged server
        is started with."""
        return {DEBUG_PORT_ENV: str(self.port), DEBUG_HOST_ENV: "127.0.0.1", "FUNC_TIMEOUT": UNREACHED_TIMEOUT}

    @property
    def reloads_in_place(self) -> bool:
        return DEBUGGERS[self.debugger].reload == "signal"


def plan(names, functions, debugger_of, first_port: Optional[int], free) -> dict[str, Target]:
    """{name: Target} for the function names asked for, in their order. `functions`: the FunctionSpecs of
    the project; `debugger_of(spec)`: the catalog's debugger of its runtime ("" when it has none);
    `free(port)`: nothing listens there. Ports: `first_port`, then the next ones; without one, each debugger's
    default port and the next ones; never POD_PORT (refused as `first_port`, skipped when counting). Raises
    NotFound (no such function), BadRequest (its runtime has no debugger, or `first_port` is POD_PORT) or
    Conflict (a port in use)."""
    by_name = {fn.name: fn for fn in functions}
    if first_port == POD_PORT and names:  # the server's own port where the debugger shares its namespace (docker's
        raise BadRequest(  # relay and bridge modes), whatever the host has free
            "debug port %d (for %s) is where a function's server listens in its container (FUNC_PORT): "
            "give another first port with --debug-port" % (POD_PORT, names[0]),
            "debug port",
            names[0],
        )
    targets: dict[str, Target] = {}
    used: set[int] = set()
    for name in names:
        spec = by_name.get(name)
        if spec is None:
            raise NotFound(
                "no Function %r to debug; the project has: %s" % (name, ", ".join(sorted(by_name)) or "none"),
                "debugged function",
                name,
            )
        debugger = debugger_of(spec)
        if not debugger:
            raise BadRequest(not_supported(spec), "debugger", name)
        port = first_port if first_port is not None else DEBUGGERS[debugger].default_port
        while port in used or port == POD_PORT:
            port += 1
        if first_port is not None:
            first_port = port + 1
        if not free(port):
            raise Conflict(
                "debug port %d (for %s) is in use on 127.0.0.1%s: stop what uses it" % (port, name, held_by(port)),
                "debug port",
                name,
            )
        used.add(port)
        targets[name] = Target(name, debugger, port)
    return targets


def not_supported(spec) -> str:
    runtime = spec.runtime or "custom image %s" % spec.image
    language = (spec.runtime or "").rstrip("0123456789.")
    candidate = CANDIDATES.get(language)
    return "Function %s (%s) cannot run under a debugger: debugging %s is not supported yet%s; supported: %s" % (
        spec.name,
        runtime,
        language or "a custom image",
        " (%s is a candidate)" % candidate if candidate else "",
        "python (debugpy), nodejs (V8 inspector), go (Delve)",
    )


# ---------------------------------------------------------------- editors


def vscode(debugger: str, name: str, port: int, local_root: str, remote_root: str) -> dict[str, Any]:
    """VS Code's launch.json `attach` entry: breakpoints set in the user's files bind in the code the
    server runs (the generation folder behind the stable install link, or /kubeless in a container)."""
    title = "kubeless-local: %s" % name
    if debugger == "debugpy":
        return {
            "name": title,
            "type": "debugpy",
            "request": "attach",
            "connect": {"host": "127.0.0.1", "port": port},
            "pathMappings": [{"localRoot": local_root, "remoteRoot": remote_root}],
            "justMyCode": True,
        }
    if debugger == "inspector":
        return {
            "name": title,
            "type": "node",
            "request": "attach",
            "address": "127.0.0.1",
            "port": port,
            "localRoot": local_root,
            "remoteRoot": remote_root,
            "restart": True,  # attach again after a restart of the server
            "skipFiles": ["<node_internals>/**"],
        }
    return {
        "name": title,
        "type": "go",
        "request": "attach",
        "mode": "remote",
        "host": "127.0.0.1",
        "port": port,
        "substitutePath": [{"from": local_root, "to": remote_root}],
    }


EDITORS = {"vscode": vscode}


def editor_config(editor: str, row: dict[str, Any]) -> dict[str, Any]:
    """The editor's attach entry for a debugged function's `ls` row (its `debug` field)."""
    debug = row["debug"]
    return EDITORS[editor](debug["debugger"], row["name"], debug["port"], debug["local_root"], debug["remote_root"])


def local_root(spec) -> str:
    """The folder of the user's files of a Function (its source), or "" for inline code."""
    source = spec.source
    if source is None:
        return ""
    return str(source if Path(source).is_dir() else Path(source).parent)

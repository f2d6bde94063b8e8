"""`run`'s head start: its runtime's server side starts first thing, while the engine imports its modules
and prepares the code, instead of after them.

`head_start` (the `run` command, before the engine's imports) starts what a function of that runtime
last started (remembered in the user's cache: prestart.py's hints): the Python template (emulator/forkserver.py),
which imports the server's libraries, or, where the catalog has `held:`, the server itself in a held
start (Node and the function's first worker thread boot while the engine works; runtimes/nodejs/held.js). A
plain `run` line has it spawned sooner still, by the console script (prestart.start): head_start takes that one.
Either is spawned by prestart.py.
It is a guess, never trusted: the process backend claims it only when it is the very process it would
start now (same argv; the same env, or for a held server the same variables read when its interpreter
starts, READ_AT_BOOT); any other is closed, and the guess corrected. A held server is then released: it is
sent its env and working folder on its stdin (one JSON line) and runs as if started with them.

Until it is claimed nothing but a pipe or socket to `run` ties it to `run`: it ends when `run` does,
however `run` ends (kill -9 too). What is not claimed once the functions started is closed.
Keep this module light: `run` imports it before the engine.
"""

import json
import threading
from pathlib import Path
from typing import IO, Optional, Union, cast

from kubeless_local.emulator import prestart
from kubeless_local.emulator.forkserver import Template
from kubeless_local.emulator.guardian import PROJECT_ENV
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.emulator.prestart import HELD, TEMPLATE, Spawned

# Variables a held server's interpreter reads when it starts (too early for its release to set them): they
# must be the same in the env it was started with and in the env it is released with. NODE_PATH is read
# again on release (held.js).
READ_AT_BOOT = ("NODE_", "UV_", "LD_", "MALLOC_", "OPENSSL_", "SSL_CERT_")
APPLIED_LATE = {"NODE_PATH"}

Started = Union[Template, Spawned]  # a held server is a Spawned
_asked: dict[str, Optional[list[str]]] = {}  # runtime → the argv head_start guessed for it (None: no guess)
_unclaimed: dict[str, tuple[Started, dict]] = {}  # runtime → (what head_start started, its env), until claimed
_lock = threading.Lock()


def run_folders(source: Optional[Path], handler: str, name: Optional[str]) -> tuple[str, Path, Path]:
    """prestart.run_folders, with Paths."""
    name, root, state = prestart.run_folders(None if source is None else str(source), handler, name)
    return name, Path(root), Path(state)


def head_start(runtime: str, project: str) -> None:
    """Start what a function of `runtime` last started, for the session whose resolved state folder is
    `project` (guardian.PROJECT_ENV), unless its files are gone or PATH changed since. Once per runtime: the
    console script may have started it already (commands/entry.py)."""
    kind, argv = prestart.read_hint(runtime) or (None, None)
    with _lock:
        if runtime in _asked:
            return
        _asked[runtime] = argv
    early = prestart.take(runtime)
    env = {**machine_env(), PROJECT_ENV: project}
    if early is not None and (early[0], early[1]) != (argv, env):  # the hint or the env changed meanwhile
        _close_soon(_adopted(early))
        early = None
    if argv is None or not prestart.files_present(argv):
        return
    started: Optional[Started] = None
    if kind == HELD:
        try:  # its own session, as every server (stopping it kills its group); the pipes read once claimed
            started = early[2] if early is not None else prestart.spawn_held(argv, env)
        except OSError:
            return
    else:
        template = Template(argv, env)
        with template.lock:
            if template._start(early[2:] if early is not None else None):
                started = template
    if started is not None:
        with _lock:
            _unclaimed[runtime] = (started, env)


def _take(runtime: str, argv: list[str], kind: str) -> tuple[Optional[Started], dict]:
    """(what head_start started for `runtime`, the env it started with), or (None, {}); a guess other than
    `argv` corrected."""
    with _lock:
        guessed = _asked.pop(runtime, False)
        started, boot = _unclaimed.pop(runtime, (None, {}))
    if guessed is not False and guessed != argv:
        _remember(runtime, kind, argv)
    return started, boot


def claim_template(runtime: str, argv: list[str], env: dict[str, str], guardian=None) -> Optional[Template]:
    """The head-started template of `runtime` when it is the one the backend would start now (`argv`, `env`),
    watched by `guardian` from now on; else None (a wrong one is closed)."""
    started, boot = _take(runtime, argv, TEMPLATE)
    if started is None:
        return None
    if not isinstance(started, Template) or started.argv != argv or boot != env:
        _close_soon(started)
        return None
    if started.broken or started.proc is None:
        return None
    started.guardian = guardian
    if guardian is not None:
        guardian.watch(started.proc.pid)
    return started


def claim_held(runtime: str, argv: list[str], env: dict[str, str], cwd: str) -> Optional[Spawned]:
    """The head-started server of `runtime` when it is the one the backend would start now (`argv`, and `env`
    the same in what its interpreter read when it started), released with `env` in folder `cwd`; else None
    (a wrong one is closed)."""
    started, boot = _take(runtime, argv, HELD)
    if started is None:
        return None
    if isinstance(started, Template) or started.args != argv or not _boots_alike(boot, env):
        _close_soon(started)
        return None
    if started.poll() is not None:
        return None
    try:
        stdin = cast(IO[bytes], started.stdin)
        stdin.write(json.dumps({"env": env, "cwd": cwd}).encode() + b"\n")
        stdin.close()  # a fresh server's stdin is /dev/null: it reads the end of it too
    except OSError:  # it is gone (killed meanwhile): start a fresh one
        _close_soon(started)
        return None
    return started


def _boots_alike(boot: dict[str, str], env: dict[str, str]) -> bool:
    """A server started with env `boot` and released with `env` runs as one started with `env`: the same
    variables read at its start, and the same project (the guardian reads it in its /proc environ)."""
    names = {n for n in boot.keys() | env.keys() if n.startswith(READ_AT_BOOT) and n not in APPLIED_LATE}
    return all(boot.get(n) == env.get(n) for n in names | {PROJECT_ENV})


def close_unclaimed() -> None:
    """Close what was head-started and not claimed (another backend runs the function, or it did not get as
    far as starting)."""
    with _lock:
        started = [each for each, _ in _unclaimed.values()] + [_adopted(early) for early in prestart.taken_all()]
        _unclaimed.clear()
        _asked.clear()
    for each in started:
        _close_soon(each)


def _adopted(early: tuple) -> Started:
    """What prestart.start spawned, (argv, env, process, socket descriptor or None), as head_start starts it: a
    Template for a template, the process itself for a held server."""
    argv, env, proc, fd = early
    if fd is None:
        return proc
    template = Template(argv, env)
    with template.lock:
        template._start((proc, fd))
    return template


def _close_soon(started: Started) -> None:
    """Close without waiting: a template sees its socket end once its imports are done, a held server the end
    of its stdin, and each exits."""
    if isinstance(started, Template):
        threading.Thread(target=started.close, daemon=True).start()
        return
    try:
        cast(IO[bytes], started.stdin).close()
    except OSError:
        pass
    threading.Thread(target=_reap, args=(started,), daemon=True).start()


def _reap(proc: Spawned) -> None:
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _remember(runtime: str, kind: str, argv: list[str]) -> None:
    """What `runtime` started, for the next `run`'s guess (a cache that cannot be written: no head start then)."""
    prestart.write_hint(runtime, kind, argv)

"""`run`'s head start: its runtime's server side starts first thing, while the engine imports its modules
and prepares the code, instead of after them.

`head_start` (the `run` command, before the engine's imports) starts what a function of that runtime
last started (remembered in the user's cache, HINTS): the Python template (emulator/forkserver.py),
which imports the server's libraries, or, where the catalog has `held:`, the server itself in a held
start (Node and the function's first worker thread boot while the engine works; runtimes/nodejs/held.js).
It is a guess, never trusted: the process backend claims it only when it is the very process it would
start now (same argv; the same env, or for a held server the same variables read when its interpreter
starts, READ_AT_BOOT); any other is closed, and the guess corrected. A held server is then released: it is
sent its env and working folder on its stdin (one JSON line) and runs as if started with them.

Until it is claimed nothing but a pipe or socket to `run` ties it to `run`: it ends when `run` does,
however `run` ends (kill -9 too). What is not claimed once the functions started is closed.
Keep this module light: `run` imports it before the engine.
"""

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import IO, Optional, Union, cast

from kubeless_local.emulator.forkserver import Template
from kubeless_local.emulator.guardian import PROJECT_ENV
from kubeless_local.paths import RUNTIMES_DIR, STATE_DIRNAME, keep_cached, read_cached

HINTS = "head-starts.json"  # in the user's cache: "runtime runtimes-folder" → {kind, argv, PATH} it last started
TEMPLATE, HELD = "template", "held"  # the kinds of a head start
# Variables a held server's interpreter reads when it starts (too early for its release to set them): they
# must be the same in the env it was started with and in the env it is released with. NODE_PATH is read
# again on release (held.js).
READ_AT_BOOT = ("NODE_", "UV_", "LD_", "MALLOC_", "OPENSSL_", "SSL_CERT_")
APPLIED_LATE = {"NODE_PATH"}

Started = Union[Template, subprocess.Popen]
_asked: dict[str, Optional[list[str]]] = {}  # runtime → the argv head_start guessed for it (None: no guess)
_unclaimed: dict[str, tuple[Started, dict]] = {}  # runtime → (what head_start started, its env), until claimed
_lock = threading.Lock()


def _hint_key(runtime: str) -> str:
    """Per runtime and installation of kubeless-local: two (a release and a checkout) guess apart."""
    return "%s %s" % (runtime, RUNTIMES_DIR)


def run_folders(source: Optional[Path], handler: str, name: Optional[str]) -> tuple[str, Path, Path]:
    """`run`'s (function name, project folder, state folder) for its code at `source` (None: a URL, run from the
    current folder): the name is --name, else the handler's module. Each `run` has a state folder of its own:
    several `run`s (and a `dev`) from one folder each keep their lock, ports and admin API."""
    root = Path.cwd() if source is None else source.parent if source.is_file() else source
    name = name or re.sub(r"[^a-z0-9-]+", "-", handler.split(".")[0].lower()).strip("-") or "function"
    return name, root, root / STATE_DIRNAME / ("run-" + name)


def head_start(runtime: str, project: str) -> None:
    """Start what a function of `runtime` last started, for the session whose resolved state folder is
    `project` (guardian.PROJECT_ENV), unless its files are gone or PATH changed since. Once per runtime: the
    console script may have started it already (commands/entry.py)."""
    hint = read_cached(HINTS).get(_hint_key(runtime))
    hint = hint if isinstance(hint, dict) and hint.get("path") == os.environ.get("PATH") else {}
    argv = hint.get("argv")
    with _lock:
        if runtime in _asked:
            return
        _asked[runtime] = argv
    if not isinstance(argv, list) or not all(os.path.exists(a) for a in argv if os.path.isabs(a)):
        return
    env = {**os.environ, PROJECT_ENV: project}
    started: Optional[Started] = None
    if hint.get("kind") == HELD:
        try:  # its own session, as every server (stopping it kills its group); the pipes read once claimed
            started = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError:
            return
    else:
        template = Template(argv, env)
        with template.lock:
            if template._start():
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


def claim_held(runtime: str, argv: list[str], env: dict[str, str], cwd: str) -> Optional[subprocess.Popen]:
    """The head-started server of `runtime` when it is the one the backend would start now (`argv`, and `env`
    the same in what its interpreter read when it started), released with `env` in folder `cwd`; else None
    (a wrong one is closed)."""
    started, boot = _take(runtime, argv, HELD)
    if started is None:
        return None
    if not isinstance(started, subprocess.Popen) or started.args != argv or not _boots_alike(boot, env):
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
        started = [each for each, _ in _unclaimed.values()]
        _unclaimed.clear()
        _asked.clear()
    for each in started:
        _close_soon(each)


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


def _reap(proc: subprocess.Popen) -> None:
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _remember(runtime: str, kind: str, argv: list[str]) -> None:
    """What `runtime` started, for the next `run`'s guess (a cache that cannot be written: no head start then)."""
    hints = read_cached(HINTS)
    hints[_hint_key(runtime)] = {"kind": kind, "argv": argv, "path": os.environ.get("PATH")}
    keep_cached(HINTS, hints)

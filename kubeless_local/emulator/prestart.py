"""The first step of a plain `run` (commands/entry.py): what its runtime last started, the template process
(emulator/forkserver.py) or a held server (Node: runtimes/nodejs/held.js), is spawned from the hint that start
left, before anything heavier than `os` is imported.

The runtime's own start (the template's ~100 ms: asyncio, bottle; Node's boot) is the longer of `run`'s two ways to
its first answer, so every millisecond before it counts: json, re, subprocess, pathlib and typing took ~20 ms of a
fresh interpreter before emulator/headstart.py could start it. This module imports os, time, _socket, _thread and
zlib, and of ours places and guardian (os alone): ~1 ms. It keeps the hints (a small text file each, NUL-separated)
and spawns every template and held server, whoever asks (`spawn_template`, `spawn_held`: os.posix_spawn, not
subprocess). headstart.py takes what `start` spawned (`take`) and does the rest of the head start: the guess
checked, claiming, closing.
"""

from __future__ import annotations  # annotations unevaluated: typing is not imported

import _socket  # the C half of `socket`, whose Python half imports enum and selectors (~8 ms of a fresh interpreter)
import _thread  # threading's C half
import os
import time
import zlib

from kubeless_local.emulator.guardian import PROJECT_ENV
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.places import STATE_DIRNAME, cache_root

HINTS = "head-starts"  # a folder in the user's cache: a file per runtime and installation (hint_path)
TEMPLATE, HELD = "template", "held"  # the kinds of a head start
ROOM = "KUBELESS_LOCAL_TEMPLATE_ROOM"  # env padding: room for a fork's own env in its /proc/<pid>/environ
ROOM_BYTES = 32 << 10
CONTROL_FD = "{control_fd}"  # in the template's argv: the descriptor of its end of the socket
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")  # what a function's name is made of
POLL_SECONDS = 0.005  # Spawned.wait with a timeout looks this often

# runtime → (argv, env, Spawned, our socket's descriptor for a template, None for a held server): spawned by `start`,
# until taken
_spawned: dict = {}


class Spawned:
    """A process started by os.posix_spawn: the part of subprocess.Popen its owner uses (args, pid, poll, wait,
    returncode, the stdio pipes of a held server), thread-safe as Popen is: one thread may wait while others poll."""

    def __init__(self, pid: int, args: list[str], stdin=None, stdout=None, stderr=None) -> None:
        self.pid, self.args = pid, args
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._reaping = _thread.allocate_lock()  # held by whoever calls waitpid

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped by someone else: gone, its code unknown
            self.returncode = -1
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        if self.returncode is None and self._reaping.acquire(False):  # another thread waits: it still runs
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._reaping.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; subprocess.TimeoutExpired when it still runs after `timeout` seconds."""
        if timeout is None:
            with self._reaping:
                while self.returncode is None:
                    self._reap(0)
                return self.returncode
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                import subprocess  # loaded long before anything waits with a timeout

                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(POLL_SECONDS)
        return code


def function_name(handler: str, name: str | None = None) -> str:
    """`run`'s function name: --name, else the handler's module in lower case, each run of characters other than
    a-z, 0-9 and - made one -, without a - at either end ("function" when nothing is left)."""
    if name:
        return name
    words = "".join(c if c in NAME_CHARS else " " for c in handler.split(".")[0].lower()).split()
    return "-".join(words).strip("-") or "function"


def run_folders(source: str | None, handler: str, name: str | None) -> tuple[str, str, str]:
    """`run`'s (function name, project folder, state folder) for its code at the resolved path `source` (None: a URL,
    run from the current folder). Each `run` has a state folder of its own: several `run`s (and a `dev`) from one
    folder each keep their lock, ports and admin API."""
    root = os.getcwd() if source is None else os.path.dirname(source) if os.path.isfile(source) else source
    name = function_name(handler, name)
    return name, root, os.path.join(root, STATE_DIRNAME, "run-" + name)


def hint_path(runtime: str) -> str:
    """Where the hint of `runtime` is kept for this installation of kubeless-local (a release and a checkout guess
    apart); the file says again which runtime and installation it is for."""
    key = zlib.crc32(os.fsencode("%s\0%s" % (runtime, installation())))
    return os.path.join(cache_root(), HINTS, "%08x" % key)


def installation() -> str:
    """This installation of kubeless-local (its package's parent folder): hints are kept per installation."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_hint(runtime: str) -> tuple[str, list[str]] | None:
    """(kind, argv) of what `runtime` last started, unless PATH changed since; None without one."""
    fields = read_fields(hint_path(runtime))
    if fields is None or len(fields) < 5 or fields[:3] != [runtime, installation(), os.environ.get("PATH", "")]:
        return None
    return fields[3], fields[4:]


def write_hint(runtime: str, kind: str, argv: list[str]) -> None:
    """Keep what `runtime` started, for the next `run`'s guess, atomically (unwritable: no head start then)."""
    write_fields(hint_path(runtime), [runtime, installation(), os.environ.get("PATH", ""), kind, *argv])


def read_fields(path: str, private: bool = False) -> list[str] | None:
    """The fields of the hint file at `path` (NUL-separated); None without one, or, `private`, for one that is not
    the user's own or that others can write."""
    try:
        with open(path, "rb") as hint:
            if private:
                st = os.fstat(hint.fileno())
                if st.st_uid != os.getuid() or st.st_mode & 0o022:
                    return None
            return os.fsdecode(hint.read()).split("\0")
    except (OSError, ValueError):
        return None


def write_fields(path: str, fields: list[str], mode: int = 0o666) -> bool:
    """Write a hint's `fields` at `path`, NUL-separated and atomically, created with `mode` (less the umask); False
    when a field holds a NUL (no process can be given such an argument) or the file cannot be written."""
    if any("\0" in field for field in fields):
        return False
    tmp = "%s.%d" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as hint:
            hint.write(os.fsencode("\0".join(fields)))
        os.replace(tmp, path)
    except (OSError, ValueError):  # ValueError: a name the file system cannot take (a surrogate)
        return False
    return True


def start(runtime: str, project: str) -> None:
    """Spawn what `runtime` last started (a template or a held server), for the session whose resolved state folder
    is `project`, unless one is spawned already or its files are gone."""
    hint = read_hint(runtime)
    if hint is None:
        return
    kind, argv = hint
    if runtime in _spawned or not files_present(argv):
        return
    env = machine_env()
    env[PROJECT_ENV] = project
    if kind == TEMPLATE:
        _spawned[runtime] = (argv, env, *spawn_template(argv, env))
    elif kind == HELD:
        _spawned[runtime] = (argv, env, spawn_held(argv, env), None)


def files_present(argv: list[str]) -> bool:
    """Whether the files a hint's `argv` names by absolute path are still there (an interpreter upgraded away, a
    runtime library removed: no guess is started then)."""
    return all(os.path.exists(arg) for arg in argv if os.path.isabs(arg))


def take(runtime: str) -> tuple | None:
    """(argv, env, Spawned, socket descriptor or None) of what `start` spawned for `runtime`, now the caller's;
    or None."""
    return _spawned.pop(runtime, None)


def taken_all() -> list:
    """Everything `start` spawned and no one took, as `take` gives it, now the caller's (to close)."""
    left = list(_spawned.values())
    _spawned.clear()
    return left


def spawn_template(argv: list[str], env: dict[str, str]) -> tuple[Spawned, int]:
    """Start the template `argv` (CONTROL_FD: its end of a new socket) with `env` (PYTHONPATH left out, ROOM added)
    in a session of its own, its stdio /dev/null and no other descriptor of ours: (the process, the descriptor of our
    end of the socket). OSError when it cannot be started."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)  # one message, one request
    try:
        fd = theirs.fileno()
        args = [str(fd) if arg == CONTROL_FD else arg for arg in argv]
        child_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        child_env[ROOM] = "x" * ROOM_BYTES
        stdio = [(os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0) for n in (0, 1, 2)]
        pid = _spawn(args, child_env, [ours.fileno(), fd], stdio, passed=fd)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return Spawned(pid, argv), ours.detach()


def spawn_held(argv: list[str], env: dict[str, str]) -> Spawned:
    """Start the held server `argv` with `env` in a session of its own, its stdin, stdout and stderr pipes to this
    process (unbuffered files of the Spawned, as subprocess.PIPE gives them). OSError when it cannot be started."""
    pipes = [os.pipe() for _ in range(3)]  # (read end, write end) each
    theirs, ours = [pipes[0][0], pipes[1][1], pipes[2][1]], [pipes[0][1], pipes[1][0], pipes[2][0]]
    try:
        pid = _spawn(argv, env, theirs + ours, [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(theirs)])
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    files = [os.fdopen(fd, mode, buffering=0) for fd, mode in zip(ours, ("wb", "rb", "rb"))]
    return Spawned(pid, argv, *files)


def _spawn(argv: list[str], env: dict[str, str], ours: list[int], stdio: list[tuple], passed: int | None = None) -> int:
    """posix_spawn `argv` with `env` in a session of its own: `stdio` makes its 0, 1 and 2, `passed` (one of ours)
    is inherited, no other descriptor of this process is. OSError when it cannot be."""
    if min(ours) < 3:  # this process runs with a standard stream closed: `stdio` would clobber ours
        raise OSError("a standard stream of this process is closed")
    if passed is not None:
        os.set_inheritable(passed, True)
    closed = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_descriptors() if fd != passed]
    try:
        return os.posix_spawnp(argv[0], argv, env, file_actions=stdio + closed, setsid=True)
    except NotImplementedError as exc:  # a system without POSIX_SPAWN_SETSID: the caller starts it another way
        raise OSError(str(exc)) from None


def _inheritable_descriptors() -> list[int]:
    """This process's descriptors 3 and up that a child would inherit (not close-on-exec): those it was itself given
    (a make jobserver's, a caller's pipe), which subprocess's close_fds would close too."""
    try:
        names = os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    except OSError:
        return []
    found = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:
            pass  # the listing's own descriptor, closed since
    return found

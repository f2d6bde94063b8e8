"""A Python that imported the runtime server's libraries once and forks each function's server from there.

A server started as `python -S -u kubeless.py` spends ~85 ms of CPU importing asyncio and bottle before it
serves (and prometheus_client at its first /metrics); a hundred functions under one `dev` paid that a hundred times. The
process backend (kubeless_local/emulator/forkserver.py) starts this template once per interpreter and
runtime library and asks it for each server instead: the fork has every library imported (shared with
the template's pages) and runs the same kubeless.py, compiled once.

    python -S -u template.py CONTROL_FD RUNTIME_LIB [SERVER]

On CONTROL_FD (a SOCK_SEQPACKET unix socket) each request is one JSON message {argv, env, cwd} with two
descriptors (the server's stdout and stderr); the answer is {"pid": N}, or {"refused": reason} when a
fresh interpreter would differ (then the engine starts one). When a server exits: {"exit": pid,
"code": c}, c as subprocess.Popen's returncode. The template exits when CONTROL_FD closes (`dev` ended). SERVER,
the script its requests will name (kubeless.py), is compiled before the first request, not after it.

What the server sees is what a fresh `python -S -u kubeless.py` sees: its env (os.environ and the C
environ), working folder, sys.path and sys.argv, its own session and process group, a new `__main__`.
The fork writes its argv and env over the template's in memory, as setproctitle does, so
/proc/<pid>/cmdline and /proc/<pid>/environ tell what it runs (the guardian checks its project marker
there); the template starts with room for them (KUBELESS_LOCAL_TEMPLATE_ROOM). Refused: an env whose
interpreter-level variables (PYTHON*, LD_*, MALLOC_*) differ from the template's, an argv with other
flags, and a path entry that would shadow a module the template imported (a function's deps holding
its own bottle): those need a fresh interpreter.
"""

import array
import asyncio  # noqa: F401 - imported here once, for every server forked from here
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import ctypes
import functools
import gc
import importlib.machinery
import io  # noqa: F401
import json
import mmap  # noqa: F401
import os
import pickle  # noqa: F401
import select
import signal
import socket
import struct  # noqa: F401
import sys
import time
import traceback
import types
import urllib.parse  # noqa: F401

CONTROL_FD, RUNTIME_LIB = int(sys.argv[1]), sys.argv[2]
SERVER = sys.argv[3] if len(sys.argv) > 3 else ""
FLAGS = ["-S", "-u"]  # what the catalog's command passes before the server's file: -S -u here too
INTERPRETER_VARS = ("PYTHON", "LD_", "MALLOC_")  # read when an interpreter starts, not later
KEPT_VARS = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}  # applied by the fork itself

BASE_PATH = list(sys.path[1:])  # the interpreter's own (stdlib) entries, after the script's folder
sys.path.insert(1, RUNTIME_LIB)
import bottle  # noqa: E402,F401
import httptools  # noqa: E402,F401

OWN_ENV = dict(os.environ)


def imported_packages():
    """The top-level packages imported here: a function path that holds one of them is refused (`refusal`)."""
    return {name.split(".", 1)[0] for name in sys.modules}


PRELOADED = imported_packages()
gc.freeze()  # what is imported stays out of every fork's collections (shared pages stay shared)
LATER = "prometheus_client"  # imported after the first server is forked: a server loads it at its first /metrics
LATER_IDLE = 0.05  # seconds the template waits, idle, after its first fork before it imports LATER (see serve)


def preload_later():
    """Import LATER for the servers forked from now on (the first one was not kept waiting ~15 ms for it)."""
    global PRELOADED
    try:
        __import__(LATER)
    except ImportError:
        return  # the server says so when it needs it
    PRELOADED = imported_packages()
    gc.freeze()


def stat_fields():
    """(arg_start, arg_end, env_start, env_end) of this process (proc(5), fields 48–51)."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return tuple(int(f) for f in fields[45:49])


try:
    ARG_START, ARG_END, ENV_START, ENV_END = stat_fields()
except (OSError, ValueError):
    ARG_START = ARG_END = ENV_START = ENV_END = 0


def packed(strings):
    return b"".join(s.encode("utf-8", "surrogateescape") + b"\0" for s in strings)


def refusal(argv, env):
    """Why a fresh interpreter would run `argv` with `env` differently from a fork of this one, or None."""
    if (
        len(argv) != len(FLAGS) + 2
        or argv[1:-1] != FLAGS
        or os.path.realpath(argv[0]) != os.path.realpath(sys.executable)
    ):
        return "another interpreter or other flags"
    for name in OWN_ENV.keys() | env.keys():
        if name.startswith(INTERPRETER_VARS) and name not in KEPT_VARS and OWN_ENV.get(name) != env.get(name):
            return "%s differs" % name
    for entry in [os.path.dirname(argv[-1]), *env.get("PYTHONPATH", "").split(os.pathsep)]:
        if not entry or entry == RUNTIME_LIB:
            continue
        try:
            names = {n.split(".", 1)[0] for n in os.listdir(entry)}
        except OSError:
            continue
        shadowed = names & PRELOADED - {"__pycache__", "__main__"}
        if shadowed and entry != os.path.dirname(argv[-1]):
            return "%s has its own %s" % (entry, sorted(shadowed)[0])
    if len(packed(argv)) > ARG_END - ARG_START or len(packed(f"{k}={v}" for k, v in env.items())) > ENV_END - ENV_START:
        return "its argv or env is larger than the template's room"
    return None


def retitle(argv, env):
    """Our argv and env in the memory /proc/<pid>/cmdline and environ read (the rest zeroed)."""
    for start, end, data in ((ARG_START, ARG_END, packed(argv)), (ENV_START, ENV_END, packed(env))):
        ctypes.memset(start, 0, end - start)
        ctypes.memmove(start, data, len(data))


@functools.cache
def compiled(path):
    """The code of `path` as an import gets it: from its cached bytecode while that is current (compiling
    kubeless.py takes ~15 ms), compiled and cached beside it otherwise (where that folder is writable and
    PYTHONDONTWRITEBYTECODE is unset)."""
    return importlib.machinery.SourceFileLoader("__main__", path).get_code("__main__")


def become(request, out_fd, err_fd, inherited):
    """In the fork: turn into `python -S -u argv[-1]` run with the request's env and folder; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:  # the template's own: its control socket and wake-up pipe
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((null, 0), (out_fd, 1), (err_fd, 2)):
            os.dup2(fd, target)
            os.close(fd)
        argv, env = request["argv"], request["env"]
        script = argv[-1]
        os.environ.clear()  # unsetenv/putenv: the C environ too
        os.environ.update(env)
        time.tzset()  # the time zone of this env (TZ), as a fresh interpreter reads it at start: not the template's
        retitle(argv, [f"{k}={v}" for k, v in env.items()])
        os.chdir(request["cwd"])
        sys.argv = [script]
        sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.path.dirname(script), *extra, *BASE_PATH]
        sys.path_importer_cache.clear()
        main = types.ModuleType("__main__")
        main.__file__, main.__builtins__ = script, builtins
        sys.modules["__main__"] = main
        program = compiled(script)
        gc.unfreeze()
        try:
            exec(program, main.__dict__)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback, exit 1
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def reap(control):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def serve(control, wakeup, own_fds):
    """Answer requests until `dev` closes the socket. LATER is imported after the first fork, once the template has
    been idle LATER_IDLE or at the next request: not beside the first server's start, which its ~15 ms of CPU slowed
    (`run`'s first answer), and before a second server (`dev`'s functions) is forked."""
    fds_size = socket.CMSG_SPACE(2 * array.array("i").itemsize)
    later_due = False
    while True:
        ready, _, _ = select.select([control, wakeup], [], [], LATER_IDLE if later_due else None)
        if later_due and (not ready or control in ready):
            later_due = False
            preload_later()
        if not ready:
            continue
        if wakeup in ready:
            os.read(wakeup, 512)
            reap(control)
        if control not in ready:
            continue
        data, ancillary, _, _ = control.recvmsg(1 << 20, fds_size)
        if not data:
            return  # `dev` ended
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        request = json.loads(data)
        reason = refusal(request["argv"], request["env"]) if len(fds) == 2 else "no stdout and stderr given"
        if reason is not None:
            answer = {"refused": reason}
        else:
            compiled(request["argv"][-1])  # in the template: compiled once for every fork
            pid = os.fork()
            if pid == 0:
                become(request, fds[0], fds[1], own_fds)
            answer = {"pid": pid}
        for fd in fds:
            os.close(fd)
        control.send(json.dumps(answer).encode())
        later_due = later_due or ("pid" in answer and LATER not in sys.modules)


def main():
    control = socket.socket(fileno=CONTROL_FD)
    os.chdir("/")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up byte is what counts
    if SERVER:
        try:
            compiled(SERVER)  # the first server starts without waiting for it (it is 1,500 lines)
        except (OSError, SyntaxError):
            pass  # the request that names it says so, as before
    serve(control, read_end, (CONTROL_FD, read_end, write_end))


if __name__ == "__main__":
    main()

"""Runtime servers forked from a template process that imported their libraries once (the catalog's
`template`: runtimes/python/template.py), instead of a fresh interpreter each.

A `Template` is one such process, started on first use; `spawn` hands it a server's argv, env and folder
with the two pipes for its output, and returns a `Forked` handle that reads like a subprocess.Popen
(pid, poll, wait, returncode, stdout, stderr). The server is its own session and process group, as a
Popen'd one is, so stopping it and the guardian's kill -9 guarantee work on it unchanged. `spawn`
returns None where a fork would not be what a fresh interpreter is (the template refuses: other
flags or interpreter variables, deps that bring their own copy of a preloaded library), or when the
template is gone: the caller then starts the server as before.

The template exits when `dev`'s end of its socket closes; the guardian watches its group too. Should
it die first, the servers it forked are killed and reported exited (SIGKILL), so the supervisor
restarts them, through a new template.

Every template process is spawned by emulator/prestart.py, which `run` uses before the engine knows it needs one
(emulator/headstart.py): a Template takes such a process (`_start(spawned)`) or has one spawned.
"""

import array
import json
import os
import signal
import socket
import subprocess
import threading
from typing import IO, Optional

from kubeless_local.emulator.prestart import Spawned, spawn_template

START_TIMEOUT = 30.0  # the template imports the runtime's libraries before it answers


class Forked:
    """A server forked by a template: the part of subprocess.Popen the process backend uses."""

    def __init__(self, pid: int, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid, self.stdout, self.stderr = pid, stdout, stderr
        self.returncode: Optional[int] = None
        self._exited = threading.Event()

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired("forked server %d" % self.pid, timeout or 0)
        assert self.returncode is not None
        return self.returncode


class Template:
    """One template process (`argv`, started with `env` on first use); thread-safe."""

    def __init__(self, argv: list[str], env: dict[str, str], guardian=None) -> None:
        self.argv, self.env, self.guardian = argv, env, guardian
        self.lock = threading.Lock()  # one request at a time: its answer is the next non-exit message
        self.proc: Optional[Spawned] = None
        self.sock: Optional[socket.socket] = None
        self.answers: list[dict] = []
        self.answered = threading.Condition()
        self.children: dict[int, Forked] = {}
        self.early: dict[int, int] = {}  # exits reported before their spawn returned
        self.broken = False

    def _start(self, spawned: Optional[tuple[Spawned, int]] = None) -> bool:
        """Start the template process, or take `spawned`: (the process, our socket's descriptor) that prestart.py
        spawned of this argv and env. False when it cannot be started (servers then start as fresh processes: a
        system without SEQPACKET unix sockets, say)."""
        try:
            self.proc, fd = spawned or spawn_template(self.argv, self.env)
        except OSError:
            self.broken = True
            return False
        ours = socket.socket(fileno=fd)
        if self.guardian is not None:
            self.guardian.watch(self.proc.pid)
        self.sock = ours
        threading.Thread(target=self._read, args=(ours,), daemon=True).start()
        return True

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            try:
                message = json.loads(data) if data else None
            except ValueError:
                message = None  # not the template speaking: treated as gone
            if message is None:
                break
            if "exit" in message:
                with self.answered:
                    child = self.children.pop(message["exit"], None)
                    if child is None:
                        self.early[message["exit"]] = message["code"]
                if child is not None:
                    child.exited(message["code"])
            else:
                with self.answered:
                    self.answers.append(message)
                    self.answered.notify_all()
        self._lost()

    def _lost(self) -> None:
        """The template is gone: the servers it forked cannot be reaped by us; they are killed, reported."""
        with self.answered:
            self.broken = True
            orphans, self.children = list(self.children.values()), {}
            self.answered.notify_all()
        for child in orphans:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
            child.exited(-signal.SIGKILL)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> Optional[Forked]:
        """A server forked from the template, or None (start it as a fresh process then)."""
        with self.lock:
            if self.broken or (self.proc is None and not self._start()):
                return None
            assert self.sock is not None
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            try:
                request = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
                fds = array.array("i", (out_write, err_write)).tobytes()
                self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            except OSError:
                for fd in (out_read, out_write, err_read, err_write):
                    os.close(fd)
                self.broken = True
                return None
            finally:
                if not self.broken:
                    os.close(out_write)
                    os.close(err_write)
            answer = self._answer()
            if answer is None and not self.broken:  # stuck: a late answer would be taken for the next request's
                self.broken = True
                if self.proc is not None:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its reader then kills what it forked
            if answer is None or "pid" not in answer:
                os.close(out_read)
                os.close(err_read)
                return None
            streams = [os.fdopen(fd, "rb", buffering=0) for fd in (out_read, err_read)]  # the pumps close them
            child = Forked(answer["pid"], *streams)
            with self.answered:
                code = self.early.pop(child.pid, None)
                if code is None:
                    self.children[child.pid] = child
            if code is not None:
                child.exited(code)
            return child

    def _answer(self) -> Optional[dict]:
        with self.answered:
            self.answered.wait_for(lambda: self.answers or self.broken, START_TIMEOUT)
            return self.answers.pop(0) if self.answers else None

    def close(self) -> None:
        with self.lock:
            self.broken = True  # no more spawns; a later start makes a new Template
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)  # the template reads EOF and exits; our reader wakes
                except OSError:
                    pass
                self.sock.close()
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                if self.guardian is not None:
                    self.guardian.forget(self.proc.pid)

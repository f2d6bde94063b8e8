"""Runs each function's runtime server as a local process (the embedded default backend)."""

import os
import signal
import subprocess
import threading

from kubeless_local.emulator.base import CONTROL_PREFIX, Backend, State, handle_output
from kubeless_local.emulator.guardian import PROJECT_ENV
from kubeless_local.emulator.logs import LineSplitter


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, logs):
        self.logs = logs

    def start(self, instance, prepared):
        argv = prepared.expand(prepared.runtime.steps.command)
        env = prepared.env(instance.port)
        env[PROJECT_ENV] = str(prepared.root.parent.parent.resolve())  # found by the guardian and the next `dev`
        try:
            proc = subprocess.Popen(
                argv,
                cwd=prepared.install_link,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )  # its own process group: Ctrl-C goes to `dev`, stop() kills the group
        except OSError as exc:
            instance.set_state(State.CRASHED, "cannot start %s: %s" % (argv[0], exc))
            return
        instance.pid, instance.handle = proc.pid, proc
        if self.guardian is not None:
            self.guardian.watch(proc.pid)  # the server's process group dies with `dev`, even on kill -9
        pumps = [
            threading.Thread(target=self._pump, args=(instance, proc.stdout, "stdout", prepared), daemon=True),
            threading.Thread(target=self._pump, args=(instance, proc.stderr, "stderr", prepared), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._watch, args=(instance, proc, pumps), daemon=True).start()

    def _pump(self, instance, stream, name, prepared):
        """Runtime output to the log, read in large chunks: a busy function logs a line per request."""
        splitter = LineSplitter(control=CONTROL_PREFIX.encode())  # an overlong line is cut, never held whole
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            for line in splitter.feed(chunk):
                handle_output(instance, self.logs, line, name, prepared.map_paths)
        for line in splitter.flush():
            handle_output(instance, self.logs, line, name, prepared.map_paths)
        stream.close()

    def _watch(self, instance, proc, pumps):
        code = proc.wait()
        for pump in pumps:
            pump.join(timeout=2)
        if instance.handle is proc and instance.state != State.STOPPED:
            self.server_exited(instance, code)

    def alive(self, instance):
        return instance.handle is not None and instance.handle.poll() is None

    def reload(self, instance, prepared):
        if prepared.runtime.reload == "signal" and instance.handle is not None and instance.handle.poll() is None:
            os.kill(instance.pid, signal.SIGHUP)
            return "signal"
        self.stop(instance)
        self.start(instance, prepared)
        return "restart"

    def stop(self, instance, grace=3.0):
        proc, instance.handle = instance.handle, None
        if proc is None:
            return
        try:
            self._kill(proc, grace)
        finally:
            if self.guardian is not None:
                self.guardian.forget(proc.pid)

    @staticmethod
    def _kill(proc, grace):
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # the server and every worker it forked
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers left in the group after the server exited
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

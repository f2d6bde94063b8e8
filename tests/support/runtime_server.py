"""A runtime server (runtimes/<lang>/) run directly, without the engine, for runtime-level tests:
the env the engine would set, its output collected, control lines waited for."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests
from sockets import free_port

REPO = Path(__file__).resolve().parents[2]


class RuntimeServer:
    def __init__(self, argv, folder, file_name, source, runtime, timeout="180", env=None):
        self.folder = Path(folder)
        self.file = self.folder / file_name
        self.file.write_text(source)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines = []
        self.cond = threading.Condition()
        full_env = {
            **os.environ,
            "MOD_NAME": "handler",
            "FUNC_HANDLER": "handler",
            "FUNC_TIMEOUT": timeout,
            "FUNC_PORT": str(self.port),
            "FUNC_RUNTIME": runtime,
            "FUNC_MEMORY_LIMIT": "128Mi",
            "KUBELESS_INSTALL_VOLUME": str(self.folder),
            "KUBELESS_LOCAL_BIND": "127.0.0.1",
            "KUBELESS_LOCAL_CONTROL": "1",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            argv, cwd=self.folder, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        assert self.proc.stdout is not None  # stdout=PIPE
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def control(self, index=0, timeout=30):
        """The control event number `index` (0 = the first one printed); a bound generous enough for a loaded
        machine (a Go reload re-executes the server; 10 s once ran out under a load of 10 on 2 cores)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                events = [
                    json.loads(line.split(" ", 1)[1]) for line in self.lines if line.startswith("@kubeless-local ")
                ]
                if len(events) > index:
                    return events[index]
                left = deadline - time.monotonic()
                assert left > 0, "no control line; output:\n" + "\n".join(self.lines)
                self.cond.wait(left)

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def reload(self, source, index):
        self.file.write_text(source)
        self.proc.send_signal(signal.SIGHUP)
        return self.control(index)

    def get(self, path="/", **kw):
        return requests.get(self.url + path, timeout=10, **kw)

    def workers(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def descendants(self):
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
        children: dict[int, list[int]] = {}
        for line in out.splitlines():
            pid, ppid = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

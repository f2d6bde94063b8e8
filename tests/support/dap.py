"""A small Debug Adapter Protocol client over a socket, for the debugger tests (debugpy, Delve's `dap`).

What an editor does when it attaches, and no more: initialize, attach, breakpoints on a file, wait for a
stop, read a frame's variables, continue. One reader thread files every message: responses by the
request they answer, events in arrival order; reverse requests (`runInTerminal`, `startDebugging`) are
refused, as a client that does not offer them. Every wait is bounded and says what it waited for.

    with DapClient.connect(port) as dap:
        dap.initialize()
        attach = dap.send("attach", {"pathMappings": [...]})  # debugpy answers it after configurationDone
        dap.wait_event("initialized")
        dap.set_breakpoints("/home/u/fn/handler.py", [7])
        dap.request("configurationDone")
        dap.response(attach)
        stopped = dap.wait_event("stopped")            # a call hits line 7
        dap.top_locals(stopped["threadId"])["total"]   # '42' (DAP values are strings)
        dap.request("continue", {"threadId": stopped["threadId"]})
"""

import json
import socket
import threading
import time
from typing import Any, Callable, Optional

from waiting import wait_for


class DapError(AssertionError):
    """The adapter refused a request (`success: false`), or an awaited message did not come."""


class DapClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.lock = threading.Condition()
        self.responses: dict[int, dict] = {}
        self.events: list[dict] = []  # every event so far, in order
        self.taken = 0  # events before this index were returned by wait_event already
        self.closed = False
        self.reader = threading.Thread(target=self._read, name="dap-reader", daemon=True)
        self.reader.start()

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> "DapClient":
        """Connect once the adapter accepts (it may still be starting), within `timeout` seconds."""
        sock: Optional[socket.socket] = None

        def attempt() -> bool:
            nonlocal sock
            if sock is not None:  # wait_for asks once more at the end: keep the first connection
                return True
            try:
                sock = socket.create_connection((host, port), timeout=2)
            except OSError:
                return False
            return True

        if not wait_for(attempt, timeout, interval=0.1):
            raise DapError("nothing accepts DAP connections on %s:%d within %ss" % (host, port, timeout))
        assert sock is not None
        sock.settimeout(None)
        return cls(sock)

    def __enter__(self) -> "DapClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ wire

    def _write(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _read(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            while True:
                length = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length is None:
                    continue
                self._file(json.loads(stream.read(length)))
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()

    def _file(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "request":  # a reverse request: not offered by this client
            self._write(
                {
                    "seq": self._next_seq(),
                    "type": "response",
                    "request_seq": message.get("seq"),
                    "command": message.get("command"),
                    "success": False,
                    "message": "not supported by this client",
                }
            )
            return
        with self.lock:
            if kind == "response":
                self.responses[message["request_seq"]] = message
            elif kind == "event":
                self.events.append(message)
            self.lock.notify_all()

    def _next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    # ------------------------------------------------------------ requests and events

    def send(self, command: str, arguments: Optional[dict] = None) -> int:
        """Send a request without waiting; its seq, for `response`."""
        seq = self._next_seq()
        self._write({"seq": seq, "type": "request", "command": command, "arguments": arguments or {}})
        return seq

    def response(self, seq: int, timeout: float = 30.0) -> Any:
        """The body of the response to request `seq`; DapError when it failed or did not come."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while seq not in self.responses:
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    raise DapError(
                        "no response to request %d within %ss (connection closed: %s)" % (seq, timeout, self.closed)
                    )
                self.lock.wait(remaining)
            message = self.responses.pop(seq)
        if not message.get("success"):
            raise DapError("%s failed: %s" % (message.get("command"), message.get("message") or message.get("body")))
        return message.get("body") or {}

    def request(self, command: str, arguments: Optional[dict] = None, timeout: float = 30.0) -> Any:
        return self.response(self.send(command, arguments), timeout)

    def wait_event(self, name: str, timeout: float = 30.0, where: Optional[Callable[[dict], bool]] = None) -> dict:
        """The body of the next event `name` (after those returned before) for which `where(body)` holds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for index in range(self.taken, len(self.events)):
                    event = self.events[index]
                    body = event.get("body") or {}
                    if event.get("event") == name and (where is None or where(body)):
                        self.taken = index + 1
                        return body
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    seen = [e.get("event") for e in self.events[self.taken :]]
                    raise DapError("no %r event within %ss; events since: %s" % (name, timeout, seen))
                self.lock.wait(remaining)

    def seen(self, name: str) -> list[dict]:
        """The bodies of every event `name` so far (whether waited for or not)."""
        with self.lock:
            return [e.get("body") or {} for e in self.events if e.get("event") == name]

    # ------------------------------------------------------------ what an editor does

    def initialize(self, adapter_id: str = "kubeless-local-tests") -> Any:
        return self.request(
            "initialize",
            {
                "clientID": "kubeless-local-tests",
                "adapterID": adapter_id,
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
                "supportsVariableType": True,
            },
        )

    def set_breakpoints(self, path: str, lines: list[int]) -> list[dict]:
        """Breakpoints on `lines` of the file `path` (replacing that file's others); the adapter's
        breakpoints (`verified`, `line`)."""
        body = self.request(
            "setBreakpoints",
            {"source": {"path": path}, "breakpoints": [{"line": line} for line in lines], "lines": lines},
        )
        return body.get("breakpoints", [])

    def stack(self, thread_id: int) -> list[dict]:
        return self.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 20})["stackFrames"]

    def variables(self, reference: int) -> dict[str, str]:
        """{name: value} of one variables reference (values as the adapter renders them: strings)."""
        found = self.request("variables", {"variablesReference": reference}).get("variables", [])
        return {v["name"]: v["value"] for v in found}

    def top_locals(self, thread_id: int) -> dict[str, str]:
        """The variables of the first scope (the locals) of the top frame of a stopped thread."""
        frame = self.stack(thread_id)[0]
        scopes = self.request("scopes", {"frameId": frame["id"]})["scopes"]
        return self.variables(scopes[0]["variablesReference"])

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.reader.join(timeout=5)

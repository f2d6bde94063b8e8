"""A small Chrome DevTools Protocol client for the V8 inspector of a Node.js process (`node --inspect`,
`inspector.open`), for the debugger tests.

The Node.js runtime runs the function in worker threads: the client enables the NodeWorker domain and
talks to each worker through it, as an editor does. Breakpoints given to `set_breakpoints` go to every
worker attached now and to each one that attaches later (a spare, the worker of a reload), which waits
for them before it runs (`waitForDebuggerOnStart`). One reader thread files every message; every wait
is bounded and says what it waited for.

    with CdpClient.connect(9229) as cdp:
        cdp.set_breakpoints(url_regex, [3])       # 1-based lines of the file
        paused = cdp.wait_paused()                # a call stops there: (worker session, params)
        cdp.evaluate(paused, "total")             # 42
        cdp.resume(paused)
"""

import itertools
import json
import threading
import time
from typing import Any, Optional

import requests
import websocket
from waiting import wait_for


class CdpError(AssertionError):
    """The inspector answered an error, or an awaited message did not come."""


class Paused:
    """A Debugger.paused event of one worker: its session and the top call frame."""

    def __init__(self, session: str, params: dict) -> None:
        self.session, self.params = session, params

    @property
    def frame(self) -> dict:
        return self.params["callFrames"][0]


class CdpClient:
    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.lock = threading.Condition()
        self.send_lock = threading.Lock()
        self.responses: dict[tuple[str, int], dict] = {}  # (session, id) → message; "" is the process itself
        self.events: list[tuple[str, dict]] = []  # (session, message)
        self.taken = 0
        self.sessions: dict[str, list[str]] = {}  # worker session → its breakpoint ids
        self.breakpoints: list[tuple[str, int]] = []  # (url regex, 0-based line) for every worker
        self.detached: set[str] = set()  # workers gone (retired, superseded): nothing answers for them
        self.attached: set[str] = set()  # every worker that attached
        self.prepared: set[str] = set()  # the attached workers whose breakpoints are set (see _prepare)
        self.closed = False
        threading.Thread(target=self._read, name="cdp-reader", daemon=True).start()
        self.call("NodeWorker.enable", {"waitForDebuggerOnStart": True})

    @classmethod
    def connect(cls, port: int, timeout: float = 30.0) -> "CdpClient":
        """Connect to the process's inspector once it answers (it may still be starting)."""
        targets: list[dict] = []

        def listed() -> bool:
            if targets:
                return True
            try:
                targets.extend(requests.get("http://127.0.0.1:%d/json/list" % port, timeout=2).json())
            except (requests.RequestException, ValueError):
                return False
            return bool(targets)

        if not wait_for(listed, timeout, interval=0.1):
            raise CdpError("no inspector answers on 127.0.0.1:%d within %ss" % (port, timeout))
        return cls(websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=timeout))

    def __enter__(self) -> "CdpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ wire

    def _read(self) -> None:
        try:
            while True:
                self._file("", json.loads(self.ws.recv()))
        except (websocket.WebSocketException, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()

    def _file(self, session: str, message: dict) -> None:
        if message.get("method") == "NodeWorker.receivedMessageFromWorker":
            params = message["params"]
            self._file(params["sessionId"], json.loads(params["message"]))
            return
        if message.get("method") == "Debugger.paused" and not message["params"].get("hitBreakpoints"):
            # a new worker breaks on its first line once it runs (waitForDebuggerOnStart): go on, as an
            # editor does without stopOnEntry
            threading.Thread(target=self._go_on, args=(session,), daemon=True).start()
            return
        if message.get("method") == "NodeWorker.attachedToWorker":
            worker = message["params"]["sessionId"]
            with self.lock:
                self.attached.add(worker)
            threading.Thread(target=self._prepare, args=(worker,), daemon=True).start()
        with self.lock:
            if message.get("method") == "NodeWorker.detachedFromWorker":
                worker = message["params"]["sessionId"]
                self.detached.add(worker)
                self.sessions.pop(worker, None)
            if "id" in message:
                self.responses[(session, message["id"])] = message
            else:
                self.events.append((session, message))
            self.lock.notify_all()

    def _prepare(self, worker: str) -> None:
        """A worker attached (waiting for us when it is new): its debugger on, the breakpoints set, then run."""
        try:
            self.call("Debugger.enable", session=worker)
            with self.lock:
                if worker in self.detached:
                    return
                self.sessions[worker] = []
                wanted = list(self.breakpoints)
            for regex, line in wanted:
                self._set(worker, regex, line)
        except CdpError:
            pass  # the worker went away meanwhile (retired, superseded), or set_breakpoints set it already
        finally:
            with self.lock:
                self.prepared.add(worker)
                self.lock.notify_all()
            try:
                self.call("Runtime.runIfWaitingForDebugger", session=worker)
            except CdpError:
                pass

    def _go_on(self, worker: str) -> None:
        try:
            self.call("Debugger.resume", session=worker)
        except CdpError:
            pass  # the worker went away meanwhile

    def _set(self, worker: str, regex: str, line: int) -> None:
        found = self.call("Debugger.setBreakpointByUrl", {"urlRegex": regex, "lineNumber": line}, session=worker)
        with self.lock:
            if worker not in self.detached:
                self.sessions.setdefault(worker, []).append(found["breakpointId"])

    def call(self, method: str, params: Optional[dict] = None, session: str = "", timeout: float = 30.0) -> Any:
        """Send a command to the process (session "") or one worker's session; its result."""
        ident = next(self.ids)
        message = json.dumps({"id": ident, "method": method, "params": params or {}})
        if session:
            outer = {"sessionId": session, "message": message}
            message = json.dumps({"id": next(self.ids), "method": "NodeWorker.sendMessageToWorker", "params": outer})
        with self.send_lock:
            try:
                self.ws.send(message)
            except (OSError, websocket.WebSocketException) as exc:  # the test closed it, or Node went away
                raise CdpError("%s not sent: the inspector connection is closed (%s)" % (method, exc)) from None
        deadline = time.monotonic() + timeout
        with self.lock:
            while (session, ident) not in self.responses:
                remaining = deadline - time.monotonic()
                if session in self.detached:
                    raise CdpError("worker %s went away before answering %s" % (session, method))
                if self.closed or remaining <= 0:
                    raise CdpError("no answer to %s within %ss" % (method, timeout))
                self.lock.wait(remaining)
            answer = self.responses.pop((session, ident))
        if "error" in answer:
            raise CdpError("%s failed: %s" % (method, answer["error"]))
        return answer.get("result", {})

    # ------------------------------------------------------------ what an editor does

    def set_breakpoints(self, url_regex: str, lines: list[int]) -> None:
        """Breakpoints on the 1-based `lines` of the scripts whose URL matches, in every worker now and later
        (replacing those set before)."""
        with self.lock:
            self.breakpoints = [(url_regex, line - 1) for line in lines]
            sessions = {worker: list(ids) for worker, ids in self.sessions.items()}
        for worker, ids in sessions.items():
            try:
                for ident in ids:
                    self.call("Debugger.removeBreakpoint", {"breakpointId": ident}, session=worker)
                with self.lock:
                    if worker in self.sessions:
                        self.sessions[worker] = []
                for regex, line in self.breakpoints:
                    self._set(worker, regex, line)
            except CdpError:
                continue  # that worker is gone
        # A worker that attached but is still being prepared (right after connect: the running workers attach
        # then) sets them itself; a call sent before it is done would run past them: wait for it.
        with self.lock:
            if not self.lock.wait_for(lambda: self.attached <= self.prepared | self.detached or self.closed, 30):
                raise CdpError("workers %s were not prepared within 30 s" % (self.attached - self.prepared))

    def wait_paused(self, timeout: float = 60.0) -> Paused:
        """The next Debugger.paused of any worker at a breakpoint."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for index in range(self.taken, len(self.events)):
                    session, event = self.events[index]
                    if event.get("method") == "Debugger.paused":
                        self.taken = index + 1
                        return Paused(session, event["params"])
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    raise CdpError("no worker paused within %ss" % timeout)
                self.lock.wait(remaining)

    def evaluate(self, paused: Paused, expression: str) -> Any:
        """The value of `expression` in the paused top frame (Debugger.evaluateOnCallFrame)."""
        found = self.call(
            "Debugger.evaluateOnCallFrame",
            {"callFrameId": paused.frame["callFrameId"], "expression": expression, "returnByValue": True},
            session=paused.session,
        )
        return found["result"].get("value")

    def locals(self, paused: Paused) -> dict[str, Any]:
        """{name: value} of the top frame's local scope (Runtime.getProperties), for plain values."""
        scope = next(s for s in paused.frame["scopeChain"] if s["type"] == "local")
        found = self.call("Runtime.getProperties", {"objectId": scope["object"]["objectId"]}, session=paused.session)
        return {p["name"]: p.get("value", {}).get("value") for p in found["result"]}

    def resume(self, paused: Paused) -> None:
        self.call("Debugger.resume", session=paused.session)

    def close(self) -> None:
        """Detach as an editor does: each worker's debugger off (its breakpoints go), then the connection."""
        with self.lock:
            workers = list(self.sessions)
        for worker in workers:
            try:
                self.call("Debugger.disable", session=worker, timeout=5)
            except CdpError:
                continue  # that worker is gone
        self.ws.close()

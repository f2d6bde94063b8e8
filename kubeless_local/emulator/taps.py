"""Taps on what a session's triggers send its functions, for whoever drives the session in-process (the
pytest plugin): what each function was sent, and failures answered in its place.

Every trigger's sender (embedded topics: triggers/delivery.py; a real broker: triggers/kafka_bridge.py;
cron: triggers/cron.py) passes its request through `Taps.exchange`. With no observer and no fault set (a
`dev`), that is one call and two empty lookups: nothing changes. A fault set with `fail(function, status,
times)` answers the function's next `times` requests with `status` without sending them: the function
never sees them, and the trigger treats the answer as the function's (it retries, then dead-letters).
Each observer is told of every exchange, an injected one too (`Exchange.injected`), on the sender's
thread: it must be quick.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable, Optional

INJECTED_BODY = "failure injected in the function's place (kubeless_local.emulator.taps)"


@dataclass(frozen=True)
class Exchange:
    """One request a trigger sent a function (or that a fault answered in its place) and the answer."""

    function: str
    source: str  # the envelope's source: kafka, nats, cron, cli
    method: str
    url: str
    headers: dict
    body: bytes
    status: int  # 0: no answer (the server closed the connection)
    answer: str
    injected: bool = False
    time: float = field(default_factory=time.time)


@dataclass
class Fault:
    status: int
    body: str
    times: int


class Taps:
    """One session's observers and faults (see the module docstring)."""

    def __init__(self) -> None:
        self.observers: list[Callable[[Exchange], None]] = []
        self.faults: dict[str, Fault] = {}
        self.lock = threading.Lock()

    def fail(self, function: str, status: int, times: int = 1, body: str = INJECTED_BODY) -> None:
        """Answer `function`'s next `times` requests with `status` and `body` instead of sending them."""
        with self.lock:
            self.faults[function] = Fault(status, body, times)

    @contextlib.contextmanager
    def watching(self, observer: Callable[[Exchange], None]) -> Iterator[None]:
        """`observer` is told of every exchange while the block runs."""
        self.observers.append(observer)
        try:
            yield
        finally:
            self.observers.remove(observer)

    def clear(self) -> None:
        """No fault any more (observers stay)."""
        with self.lock:
            self.faults.clear()

    def _take_fault(self, function: str) -> Optional[Fault]:
        with self.lock:
            fault = self.faults.get(function)
            if fault is None:
                return None
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[function]
            return fault

    def exchange(
        self,
        function: str,
        source: str,
        method: str,
        url: str,
        headers: dict,
        body: bytes,
        send: Callable[[], tuple[int, str]],
    ) -> tuple[int, str]:
        """(status, answer) of `send()`, or of the fault set for `function`; observers are told. An exception
        of `send` (nothing took the request) passes through, and no fault is used up by it."""
        fault = self._take_fault(function) if self.faults else None
        status, answer = (fault.status, fault.body) if fault is not None else send()
        if self.observers:
            exchange = Exchange(function, source, method, url, dict(headers), body, status, answer, fault is not None)
            for observer in list(self.observers):
                observer(exchange)
        return status, answer

"""The session's event bus: what happens in `dev` (function states, invocations, log lines, topic appends and
commits, dead letters, cron runs), one stream with a monotonic id, for a client that resumes (the dashboard's
server-sent events, `Last-Event-ID`).

Guarantee: publishing never blocks and never grows memory without bound. The bus keeps the last `capacity`
events in a ring; a reader that asks for events after an id older than the ring holds is told to reset (it
missed some), never given a gap silently. Ids start at 1 and only grow for the life of the session.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

CAPACITY = 10_000


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # function-state, invocation-start|end, log, topic-append|commit, dead-letter, cron-run
    data: dict[str, Any]
    time: float

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "data": self.data, "time": self.time}


class EventBus:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.ring: collections.deque[Event] = collections.deque(maxlen=capacity)
        self.last = 0
        self.changed = threading.Condition(threading.Lock())  # a plain lock: publishing is on the call path

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Add an event; returns its id. O(1): the oldest falls out of the ring when it is full."""
        with self.changed:
            self.last += 1
            self.ring.append(Event(self.last, kind, data, time.time()))
            self.changed.notify_all()
            return self.last

    def after(self, last_id: int, limit: int = 1000) -> tuple[list[Event], bool]:
        """(the events after `last_id`, at most `limit`; reset): reset is True when events after `last_id` have
        already left the ring; the events are then the oldest the ring holds."""
        with self.changed:
            oldest = self.ring[0].id if self.ring else self.last + 1
            reset = last_id + 1 < oldest and last_id < self.last
            start = max(last_id + 1, oldest) - oldest
            events = [self.ring[index] for index in range(start, min(start + limit, len(self.ring)))]
        return events, reset

    def wait(self, last_id: int, timeout: float) -> bool:
        """Wait until an event after `last_id` exists; False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: self.last > last_id, timeout)

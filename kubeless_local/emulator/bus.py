"""The session's event bus: what happens in `dev` (function states, invocations, log lines, cron runs, and the
dashboard's rows), one stream with a monotonic id, for a client that resumes (the dashboard's server-sent
events with `Last-Event-ID`, the admin API's `/api/events`).

Guarantee: publishing never blocks and never grows memory without bound. The bus keeps the last `capacity`
events and at most `max_bytes` of their data (oldest dropped first); a reader that asks for events after an id
no longer held is told to reset (it missed some), never given a gap silently; so is one that names an id the
bus never gave (a session started since). Ids start at 1 and only grow for the life of the session. Readers
hold no buffer of their own: one that never reads costs nothing but its cursor.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from typing import Any, NamedTuple

CAPACITY = 10_000
MAX_BYTES = 4 * 1024 * 1024  # of the events' data (their `weight`)


def weight(data: Any) -> int:
    """About how many bytes a JSON value holds: its strings' lengths, 8 for anything else. A third of the cost
    of encoding it (which waits for a reader)."""
    if isinstance(data, str):
        return len(data)
    if isinstance(data, dict):
        return sum(8 + len(key) + weight(value) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return sum(8 + weight(value) for value in data)
    return 8


class Event:
    """One thing that happened. A plain class with slots: one is made on the call path for each invocation."""

    __slots__ = ("_encoded", "data", "id", "kind", "time", "weight")

    def __init__(self, id: int, kind: str, data: Any, time: float, weight: int) -> None:
        self.id = id
        self.kind = kind  # function-state, invocation-start|end, log, cron-run, topic-*, dead-letter*; dashboard rows
        self.data = data  # a JSON value
        self.time = time
        self.weight = weight  # about how many bytes `data` holds
        self._encoded: str | None = None

    @property
    def encoded(self) -> str:
        """`data` as JSON, encoded once for every reader, and only when one reads (not on the call path)."""
        if self._encoded is None:
            self._encoded = json.dumps(self.data, separators=(",", ":"))
        return self._encoded

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "data": self.data, "time": self.time}


class Batch(NamedTuple):
    """What a reader gets: the events after its id; reset=True when some of them are gone (the events are then
    the oldest held, or none for an id the bus never gave)."""

    events: list[Event]
    reset: bool


class EventBus:
    def __init__(self, capacity: int = CAPACITY, max_bytes: int = MAX_BYTES) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self.ring: collections.deque[Event] = collections.deque()
        self.size = 0  # bytes of the encoded data held
        self.last = 0
        # publishing (on the call path) takes the plain lock itself: a Condition's `with` is a call in Python
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.waiting = 0  # readers waiting for an event: publishing wakes them only when there are some

    @property
    def last_id(self) -> int:
        return self.last

    def publish(self, kind: str, data: Any, heavy: int | None = None) -> int:
        """Add an event; returns its id. The oldest go when the bus holds too many, or too many bytes. `heavy`:
        its `weight` when the publisher knows it (on the call path, cheaper than measuring `data`)."""
        if heavy is None:
            heavy = weight(data)
        with self.lock:
            self.last += 1
            self.ring.append(Event(self.last, kind, data, time.time(), heavy))
            self.size += heavy
            self._added()
            return self.last

    def publish_all(self, kind: str, items: list[tuple[Any, int]]) -> int:
        """Add an event for each (data, its weight), in order; returns the last id. The events are made before
        the lock is taken, which then only numbers and keeps them: a door's thread that publishes meanwhile
        waits for that, not for a whole batch's events to be made."""
        now = time.time()
        events = [Event(0, kind, data, now, heavy) for data, heavy in items]
        added = sum(event.weight for event in events)
        with self.lock:
            for ident, event in zip(itertools.count(self.last + 1), events):
                event.id = ident
            self.last += len(events)
            self.ring.extend(events)
            self.size += added
            self._added()
            return self.last

    def _added(self) -> None:
        """(Under the lock, after events were added.) The oldest go past the bounds; waiting readers wake."""
        while len(self.ring) > self.capacity or (self.size > self.max_bytes and len(self.ring) > 1):
            self.size -= self.ring.popleft().weight
        if self.waiting:
            self.changed.notify_all()

    def after(self, last_id: int, timeout: float = 0.0, limit: int = 1000) -> Batch:
        """The events after `last_id` (at most `limit`), waiting up to `timeout` s for one when there is none."""
        with self.changed:
            if timeout > 0 and last_id == self.last:
                self._wait_for(last_id, timeout)
            if last_id > self.last:
                return Batch([], True)  # an id of another session's bus
            oldest = self.ring[0].id if self.ring else self.last + 1
            reset = last_id + 1 < oldest and last_id < self.last
            start = max(last_id + 1, oldest) - oldest
            return Batch([self.ring[index] for index in range(start, min(start + limit, len(self.ring)))], reset)

    def wait(self, last_id: int, timeout: float) -> bool:
        """Wait until an event after `last_id` exists; False on timeout."""
        with self.changed:
            return self._wait_for(last_id, timeout)

    def _wait_for(self, last_id: int, timeout: float) -> bool:
        self.waiting += 1
        try:
            return self.changed.wait_for(lambda: self.last > last_id, timeout)
        finally:
            self.waiting -= 1

"""The dashboard's live events: one ordered log with monotonic ids that every browser tab reads from.

Guarantees: ids only grow; a reader that asks for the events after id N gets each later event exactly
once, in order, as long as they are still held; when they are not (the reader was away too long) it gets
`reset` instead and reloads the state. The log is bounded (MAX_EVENTS events and MAX_BYTES of their data,
oldest dropped first), and readers hold no buffer of their own: a tab that never reads costs its cursor,
never memory, and never slows a writer.

`EventLog.after` is the one call the server's stream makes: an invocation recorder's event bus that keeps
its own ids plugs in here by offering the same `after`. Until then `Feed` fills the log from a `Source`
(source.py): log lines as they are printed, function states and triggers polled.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from kubeless_local.dashboard.source import Source

MAX_EVENTS = 5000
MAX_BYTES = 4 * 1024 * 1024
POLL_INTERVAL = 0.05  # function states
QUICK_INTERVAL = 0.005  # …for a while after the engine said something (a reload begins: it may last 20 ms)
QUICK_FOR = 2.0


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # function | function-removed | log | cron | topics
    data: str  # JSON, encoded once for every reader


@dataclass(frozen=True)
class Batch:
    """What a reader gets: the events after its id, or reset=True when some of them are gone."""

    events: tuple[Event, ...] = ()
    reset: bool = False


class EventLog:
    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self.events: collections.deque[Event] = collections.deque()
        self.size = 0
        self.last_id = 0
        self.dropped_up_to = 0  # the highest id no longer held
        self.changed = threading.Condition()

    def publish(self, kind: str, data: Any) -> int:
        encoded = json.dumps(data, separators=(",", ":"))
        with self.changed:
            self.last_id += 1
            self.events.append(Event(self.last_id, kind, encoded))
            self.size += len(encoded)
            while len(self.events) > self.max_events or (self.size > self.max_bytes and len(self.events) > 1):
                gone = self.events.popleft()
                self.size -= len(gone.data)
                self.dropped_up_to = gone.id
            self.changed.notify_all()
            return self.last_id

    def after(self, last_seen: int, timeout: float = 0.0, limit: int = 500) -> Batch:
        """The events after id `last_seen` (at most `limit`), waiting up to `timeout` s for one to come."""
        with self.changed:
            if last_seen > self.last_id or last_seen < self.dropped_up_to:
                return Batch(reset=True)  # a future id (the session restarted) or one no longer held
            if last_seen == self.last_id and timeout > 0:
                self.changed.wait_for(lambda: self.last_id > last_seen, timeout)
                if last_seen < self.dropped_up_to:
                    return Batch(reset=True)
            skip = last_seen - self.dropped_up_to  # ids are consecutive: the index of the first wanted
            return Batch(tuple(self.events[i] for i in range(skip, min(len(self.events), skip + limit))))


class Feed:
    """Fills an EventLog from a Source: every log line as it is printed, and each function row (state,
    generation…), cron row and topic row whenever it differs from the last one sent."""

    def __init__(
        self, source: Source, log: EventLog, interval: float = POLL_INTERVAL, watched: Callable[[], bool] = lambda: True
    ) -> None:
        """`watched()`: some tab reads the stream. Rows are polled only then; what changed meanwhile is
        published when a tab comes (a row differs from the one last sent), so `dev` alone polls nothing."""
        self.source, self.log, self.interval, self.watched = source, log, interval, watched
        self.stopping = threading.Event()
        self.lines: queue.Queue = source.subscribe_logs()
        self.seen: dict[tuple[str, str], Any] = {}  # (kind, name) → the row last published
        self.quick_until = 0.0  # poll at QUICK_INTERVAL until this time.monotonic()
        self.threads = [
            threading.Thread(target=self._forward_lines, daemon=True, name="dashboard-logs"),
            threading.Thread(target=self._poll, daemon=True, name="dashboard-poll"),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.lines.put(None)
        self.source.unsubscribe_logs(self.lines)
        for thread in self.threads:
            thread.join(timeout=2)

    def _forward_lines(self) -> None:
        while not self.stopping.is_set():
            line = self.lines.get()
            if line is None:
                return
            self.log.publish("log", line)
            if line.get("stream") == "system":  # the engine speaks: a reload or a crash may be under way
                self.quick_until = time.monotonic() + QUICK_FOR

    def _poll(self) -> None:
        slow_due = 0.0
        while not self.stopping.wait(QUICK_INTERVAL if time.monotonic() < self.quick_until else self.interval):
            if not self.watched():
                continue
            self.publish_changes("function", self.source.states())
            if time.monotonic() >= slow_due:  # once a second: schedules and topics change slowly
                self.publish_changes("cron", self.source.cron())
                self.publish_changes("topic", self.source.topics())
                slow_due = time.monotonic() + 1.0

    def publish_changes(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Publish each row of `kind` that changed since last time, and `<kind>-removed` for those gone."""
        names = set()
        for row in rows:
            key = (kind, row["name"])
            names.add(key)
            if self.seen.get(key) != row:
                self.seen[key] = row
                self.log.publish(kind, row)
        for key in [key for key in self.seen if key[0] == kind and key not in names]:
            del self.seen[key]
            self.log.publish(kind + "-removed", {"name": key[1]})

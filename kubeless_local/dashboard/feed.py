"""The dashboard's rows on the session's event bus (emulator/bus.py), the one stream every browser tab reads.

The bus carries what the engine publishes by itself (log lines, state changes, invocations, cron runs); `Feed`
adds the rows the page shows, as the Source (source.py) gives them: a function's whole row (its state read
off the reload lock too, its generation, triggers), each CronJobTrigger's row (next fires), each topic's
(positions, lag, dead letters), each trigger's edges to its functions, and each function's metrics (every
METRICS_INTERVAL), published whenever a row differs from the last one sent. A dashboard without a session's
bus (a Source of its own) gets a bus of its own, and the Feed forwards the Source's log lines too.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from kubeless_local.dashboard.source import Source
    from kubeless_local.emulator.bus import EventBus

POLL_INTERVAL = 0.05  # function states
QUICK_INTERVAL = 0.005  # …for a while after the engine said something (a reload begins: it may last 20 ms)
QUICK_FOR = 2.0
METRICS_INTERVAL = 2.0  # the metrics rows: calls and errors scraped from /metrics, durations from the recorder


class Feed:
    """Publishes on a bus each function row (state, generation…), cron row, topic row and metrics row whenever
    it differs from the last one sent; and, with `forward_lines`, every log line as it is printed."""

    def __init__(
        self,
        source: Source,
        bus: EventBus,
        interval: float = POLL_INTERVAL,
        watched: Callable[[], bool] = lambda: True,
        forward_lines: bool = True,
    ) -> None:
        """`watched()`: some tab reads the stream. Rows are polled only then; what changed meanwhile is
        published when a tab comes (a row differs from the one last sent), so `dev` alone polls nothing.
        `forward_lines`: False when the bus gets the log lines already (a session's bus does); the lines are
        still read, to poll quickly while the engine speaks (a reload may last 20 ms)."""
        self.source, self.bus, self.interval, self.watched = source, bus, interval, watched
        self.forward_lines = forward_lines
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
            if self.forward_lines:
                self.bus.publish("log", line)
            if line.get("stream") == "system":  # the engine speaks: a reload or a crash may be under way
                self.quick_until = time.monotonic() + QUICK_FOR

    def _poll(self) -> None:
        slow_due = metrics_due = 0.0
        while not self.stopping.wait(QUICK_INTERVAL if time.monotonic() < self.quick_until else self.interval):
            if not self.watched():
                continue
            self.publish_changes("function", self.source.states())
            if time.monotonic() >= slow_due:  # once a second: schedules and topics change slowly
                self.publish_changes("cron", self.source.cron())
                self.publish_changes("topic", self.source.topics())
                self.publish_changes("trigger", self.source.graph())
                slow_due = time.monotonic() + 1.0
            if time.monotonic() >= metrics_due:  # a scrape of each runtime server's /metrics
                self.publish_changes("metrics", self.source.metrics())
                metrics_due = time.monotonic() + METRICS_INTERVAL

    def publish_changes(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Publish each row of `kind` that changed since last time, and `<kind>-removed` for those gone."""
        names = set()
        for row in rows:
            key = (kind, row["name"])
            names.add(key)
            if self.seen.get(key) != row:
                self.seen[key] = row
                self.bus.publish(kind, row)
        for key in [key for key in self.seen if key[0] == kind and key not in names]:
            del self.seen[key]
            self.bus.publish(kind + "-removed", {"name": key[1]})

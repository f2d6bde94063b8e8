"""The invocation recorder: every request a function handles, whoever sent it, kept for `history` and `replay`.

A record is one exchange the function's front door saw (emulator/proxy.py on the process backend,
emulator/frontdoor.py on the docker backend's relay and bridge modes; its host mode has no door, no records):
who sent it (`source`: `call`, `http` for any client that does not say, `kafka`, `nats`, `cron`, `replay`,
`test`, later `gateway`; and the trigger), the request and the answer (bodies cut at MAX_BODY bytes and marked
truncated, bytes that are not UTF-8 kept as bytes), how long it took, whether it timed out (408) or failed,
which generation of the code (and the sha256 of its source) served it, and the log lines the function printed
meanwhile.

A call's log lines are found by the rule the test emulator uses too (emulator/logs.py): its stdout ends at
the runtime's access-log line of the call (written once the answer is sent, on the same stream, so it can
reach `dev` after the answer), its stderr a QUIET moment later (another pipe), and it begins after the
access line the call before took. The writer waits for that line, at most `access_wait` seconds after
the answer; a function whose runtime wrote none in that time gets the lines from its start to its answer
(and its next calls are not held for it, until an access line of it is seen again). Calls to one function
at the same time cannot be told apart by line: each record holds the lines from its start to the first
access line of the same request line and User-Agent that no earlier record took, the other calls' too.

Guarantee: recording never slows or breaks a call. The request thread (or the docker doors' loop) only puts
the exchange on a bounded queue (`submit`, never blocking): when the queue is full the record is dropped and
counted, the call is answered all the same. One writer thread stores records in `invocations.db` (SQLite, WAL)
beside the topics, and keeps at most `keep` records and `max_bytes` of them per function (the oldest go
first). The event bus hears of a call as it begins (`invocation-start`, from the door) and once its record is
stored, or dropped by the database (`invocation-end`, from the writer, a batch at a time: not built and
published on the door's threads, where it cost more than in a batch; `flush` waits for it). A thread, not a
process of its own: measured, a writer process moves the CPU a record costs without saving any, and the door's
threads do not wait on `dev`'s GIL for it (BENCHMARKS.md, "The writer in a process of its own?"). A damaged
or locked database does not stop `dev`: the file is moved aside (`invocations.db.damaged-<time>`), a fresh one
is started and this is said once; if even that fails, records are dropped (counted) and the calls go on. A full
disk is no damage: what does not fit is dropped (counted, said once), the database kept for when there is room.

Exports (`export`, what the admin API answers) show `Authorization`, `Cookie` and their kin as REDACTED; the
stored record keeps them so that a replay sends what the function received.
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import operator
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeless_local import config
from kubeless_local.emulator.http1 import header_of, header_pairs
from kubeless_local.emulator.logs import LogLine, access_line, access_line_of, function_lines
from kubeless_local.errors import BadRequest, NotFound, Unavailable, disk_full
from kubeless_local.events import SOURCE_HEADER

if TYPE_CHECKING:
    from kubeless_local.emulator.bus import EventBus
    from kubeless_local.emulator.logs import LogHub

FILENAME = "invocations.db"
MAX_BODY = 256 * 1024  # bytes of each body that are kept
QUEUE_SIZE = 10_000  # exchanges waiting for the writer; beyond, dropped and counted
WRITER_PAUSE = 0.1  # seconds between the writer's looks at its queue: one commit a look (a flush looks at once)
BATCH = 500  # records stored in one transaction
ROWS_AT_ONCE = 64  # records stored in one INSERT statement (`Recorder._insert_run`)
MAX_LOG_LINES = 200  # log lines kept per record
LOG_GRACE = 0.05  # seconds of quiet after which a call's late stderr lines are taken as complete (another pipe)
ACCESS_WAIT = 2.0  # seconds after the answer the writer waits for the access-log line that ends a call's lines
STARTS_KEPT = 2048  # call start times kept per function: where the next call's lines may begin (a look's worth;
# a call older than all of them takes no late stderr lines: _Window.next_start)
BUSY_TIMEOUT = 2.0
OPEN_WAIT = 10.0  # seconds a reader waits for the writer to open the database (two tries of BUSY_TIMEOUT, at most)
SOURCES = ("call", "http", "kafka", "nats", "cron", "replay", "test", "gateway")
REDACTED = "REDACTED"
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie"))
VOLATILE_HEADERS = frozenset(("date",))  # differ on every answer: left out of a replay's diff
NOT_CALLS = frozenset(("/healthz", "/metrics"))  # the runtime's own endpoints: not recorded
# a call's outcome by its answer's status (0: no answer at all), as `list` filters it
OUTCOMES = {"ok": "status BETWEEN 200 AND 399", "error": "(status >= 400 OR status < 200)"}

# request_headers and response_headers hold a head as it passed (a BLOB: start line, header lines, blank line),
# or `header_text`'s `Name: value` lines (TEXT: headers given as pairs, and every row stored before heads were
# kept as they passed); `header_list` reads both
SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    generation INTEGER,
    source_sha256 TEXT,
    source TEXT NOT NULL,
    trigger TEXT,
    replay_of TEXT,
    started REAL NOT NULL,
    duration_ms REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    request_headers TEXT NOT NULL,
    request_body BLOB NOT NULL,
    request_size INTEGER NOT NULL,
    status INTEGER NOT NULL,
    response_headers TEXT NOT NULL,
    response_body BLOB NOT NULL,
    response_size INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    error TEXT NOT NULL,
    logs TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations (function, seq);
"""
COLUMNS = [
    "seq",
    "id",
    "function",
    "generation",
    "source_sha256",
    "source",
    "trigger",
    "replay_of",
    "started",
    "duration_ms",
    "method",
    "path",
    "query",
    "request_headers",
    "request_body",
    "request_size",
    "status",
    "response_headers",
    "response_body",
    "response_size",
    "timeout",
    "error",
    "logs",
]
SUMMARY = [
    "seq",
    "id",
    "function",
    "generation",
    "source",
    "trigger",
    "started",
    "duration_ms",
    "method",
    "path",
    "status",
    "timeout",
    "error",
]

Headers = list[tuple[str, str]]
# an exchange's headers given as pairs (the doors give heads instead: `()`, no list made for each call, which
# would outlive the call in the writer's queue and set the garbage collector going every few hundred calls)
Pairs = Sequence[tuple[str, str]]
# the row's values (`Recorder._row`: COLUMNS[1:] and bytes) that are often None: generation, source_sha256,
# trigger, replay_of
NULLABLE = tuple(COLUMNS.index(name) - 1 for name in ("generation", "source_sha256", "trigger", "replay_of"))
BYTES, ABSENT = len(COLUMNS) - 1, len(COLUMNS)  # a row's `bytes` value, and after the values: which NULLABLE are None
absent_of = operator.itemgetter(ABSENT)  # the row's NULLs (`_row` notes them as it makes the row)


# ------------------------------------------------------------ the source mark senders put on a request


def mark(source: str, trigger: str | None = None, of: str | None = None) -> str:
    """The SOURCE_HEADER value that says who sends a request (`kafka; trigger=orders`)."""
    return source + "".join("; %s=%s" % (key, value) for key, value in (("trigger", trigger), ("of", of)) if value)


def read_mark(value: str | None) -> tuple[str, str | None, str | None]:
    """(source, trigger, replay of) of a SOURCE_HEADER value; no value (or a source we do not know): `http`."""
    if not value:
        return "http", None, None
    source, *rest = [part.strip() for part in value.split(";")]
    params = dict(part.partition("=")[::2] for part in rest)
    if source not in SOURCES:
        return "http", None, None
    return source, params.get("trigger") or None, params.get("of") or None


def marked(instance: Any, source: str, trigger: str | None = None) -> dict[str, str]:
    """The header a sender adds so the instance's front door records who sent the request; {} when the instance
    has no front door that reads it (the function would see the header)."""
    return {SOURCE_HEADER: mark(source, trigger)} if getattr(instance, "front_door", False) else {}


# ------------------------------------------------------------ what the front door hands over


@dataclass
class Exchange:
    """One request and its answer as the front door saw them; bodies already cut at MAX_BODY."""

    function: str
    method: str
    target: str  # the request target: path and query
    request_headers: Pairs
    started: float = field(default_factory=time.time)  # epoch seconds
    source: str = "http"
    trigger: str | None = None
    replay_of: str | None = None
    request_body: bytes = b""
    request_size: int = 0
    status: int = 0  # 0: no answer (the server closed the connection, or could not be reached)
    response_headers: Pairs = ()
    response_body: bytes = b""
    response_size: int = 0
    duration: float = 0.0  # seconds
    error: str = ""
    id: str = ""
    generation: int | None = None  # None: the code serving when it is submitted
    source_sha256: str | None = None
    logs: list[LogLine] | None = None  # set by the writer once they are complete
    # the heads as the door passed them on (start line to blank line), in place of the headers above: stored as
    # they are, parsed only when the record is read (`header_list`)
    request_head: bytes = b""
    response_head: bytes = b""


def new_id() -> str:
    """12 random hex digits. From the interpreter's generator (seeded from os.urandom), not os.urandom itself:
    that is a system call, for which the door's thread would give up the GIL and wait to get it back."""
    return "%012x" % random.getrandbits(48)


def source_digest(folder: Path) -> str:
    """sha256 over a generation's code folder: each file's relative path and bytes, in order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            continue
        digest.update(b"\0")
    return digest.hexdigest()


class _Window:
    """One function's log lines as the writer reads them for one look at its queue, with what finds a call's
    place in them without reading them all again for each record (a look holds up to BATCH records)."""

    def __init__(self, lines: list[LogLine], since: float, starts: list[float], evicted: bool = False) -> None:
        self.lines, self.since, self.starts = lines, since, starts  # starts: the calls' start times, sorted
        self.evicted = evicted  # older starts than these were let go (STARTS_KEPT): before the first, none is known
        self.times = [line.time for line in lines]  # the hub keeps lines in the order they came
        self.taken: tuple[LogLine | None, int] = (None, 0)  # the last access line taken, and the index after it

    def first_after(self, at: float) -> int:
        """The index of the first line from `at` on."""
        return bisect.bisect_left(self.times, at)

    def after(self, line: LogLine | None) -> int:
        """The index after `line` (0 when the window does not hold it)."""
        if line is None or line.time < self.since:
            return 0
        if self.taken[0] is line:
            return self.taken[1]
        for index in range(bisect.bisect_left(self.times, line.time), len(self.lines)):
            if self.lines[index] is line:
                self.taken = (line, index + 1)
                return index + 1
            if self.times[index] > line.time:
                break
        return 0

    def next_start(self, started: float) -> float | None:
        """When the first call after one that began at `started` began (None: none has yet). For a call older than
        every start kept, when starts were let go: `started` itself, so that no line after its access line is
        taken as its own (it may be the next call's, whose start is not known any more)."""
        index = bisect.bisect_right(self.starts, started)
        if index == 0 and self.evicted:
            return started
        return self.starts[index] if index < len(self.starts) else None


# ------------------------------------------------------------ the recorder


Served = Callable[[str], tuple[int | None, str | None]]  # function → (generation, source sha256) serving
Durations = dict[str, list[float]]  # function → milliseconds


class Recorder:
    """`submit()` from any thread (never blocks); `list()`/`get()` read; `close()` stores what is queued."""

    def __init__(
        self,
        state_dir: Path,
        *,
        keep: int = config.Recorder.keep,
        max_bytes: int = config.Recorder.max_bytes,
        logs: LogHub | None = None,
        bus: EventBus | None = None,
        served: Served = lambda name: (None, None),
        say: Callable[[str], None] = lambda text: None,
        queue_size: int = QUEUE_SIZE,
        log_grace: float = LOG_GRACE,
        access_wait: float = ACCESS_WAIT,
        busy_timeout: float = BUSY_TIMEOUT,
        open_now: bool = True,
    ) -> None:
        self.path = Path(state_dir) / FILENAME
        self.keep, self.max_bytes = keep, max_bytes
        self.logs, self.bus, self.served, self.say = logs, bus, served, say
        self.log_grace, self.access_wait, self.busy_timeout = log_grace, access_wait, busy_timeout
        self.digests: dict[tuple[str, int], str] = {}  # (function, generation) → its source's sha256 (writer's)
        self.held: dict[str, tuple[int, int]] = {}  # function → its stored records and their bytes (writer's)
        self.data_version: int | None = None  # the database's, when the writer counted `held`
        self.starts: dict[str, collections.deque[float]] = {}  # function → its last calls' start times
        # function → the access line its latest call's record ended at, and when that call began (writer's)
        self.taken: dict[str, tuple[LogLine, float]] = {}
        self.without_access: set[str] = set()  # functions whose runtime wrote no access line in time (writer's)
        # the writer's queue: a deque (appending is one atomic step, no lock on the call path), bounded by
        # `queue_size` and looked at every WRITER_PAUSE; None asks the writer to finish
        self.queue: collections.deque[Exchange | None] = collections.deque()
        self.queue_size = queue_size
        self.dropped = 0  # records lost: the queue was full, or the database refused them
        self.submitted = self.written = 0
        self.opened = self.closed = 0  # calls begun (`started`) and handed over (`submit`): what a flush waits for
        # the call path takes the plain lock itself (a Condition's `with` is a call in Python); flushes wait on it
        self.progress_lock = threading.Lock()
        self.progress = threading.Condition(self.progress_lock)
        self.flushing = 0  # flushes waiting for calls to be handed over: only then does `submit` wake them
        self.wake = threading.Event()  # flush and close: the writer looks at once
        self.said: set[str] = set()  # what was said once already
        self.read_lock = threading.Lock()
        self.db: sqlite3.Connection | None = None  # the writer's
        self.reopen = False  # the database could not be opened for a full disk: the next batch tries again
        self.rows_at_once = [1]  # how many rows an INSERT takes, largest first (`_connect`)
        self.reader: sqlite3.Connection | None = None
        # the writer opens the database (a new one takes 10-20 ms of file writes: not on `dev`'s start), at once or
        # when `open_database` is called (`open_now` False: the session's first server boots first); readers wait
        self.may_open = threading.Event()
        if open_now:
            self.may_open.set()
        self.opened_db = threading.Event()
        self.writer = threading.Thread(target=self._write_forever, name="recorder", daemon=True)
        self.writer.start()

    # ---------------------------------------------------------------- the call path

    def submit(self, exchange: Exchange) -> str:
        """Queue one exchange to be stored; returns its id. Never blocks: a full queue drops it (counted)."""
        exchange.id = exchange.id or new_id()
        if exchange.generation is None:  # else the door knew it; its sha256 is the writer's to find
            try:
                exchange.generation, exchange.source_sha256 = self.served(exchange.function)
            except Exception:  # noqa: BLE001 - a record without its generation beats a call that fails
                pass
            if exchange.generation is not None and exchange.source_sha256 is not None:
                self.digests[(exchange.function, exchange.generation)] = exchange.source_sha256
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
        else:
            self.queue.append(exchange)
            self.submitted += 1  # only the flush waits on it: a count off by one under a race costs a flush a pause
        with self.progress_lock:
            self.closed += 1
            if self.flushing:
                self.progress.notify_all()
        return exchange.id

    def started(self, function: str, method: str, target: str, source: str, at: float | None = None) -> None:
        """A call began at `at` (epoch seconds; for the event bus, `flush` and where the call before's lines end;
        nothing is stored). Its `invocation-end` event is the writer's, once the record is stored."""
        starts = self.starts.get(function)
        if starts is None:
            starts = self.starts.setdefault(function, collections.deque(maxlen=STARTS_KEPT))
        starts.append(time.time() if at is None else at)
        with self.progress_lock:
            self.opened += 1
        if self.bus is not None:
            self.bus.publish(
                "invocation-start",
                {"function": function, "method": method, "path": target},
                START_WEIGHT + len(function) + len(method) + len(target),
            )

    # ---------------------------------------------------------------- the writer

    def _open(self) -> None:
        """The database, or a fresh one when it is damaged or locked (the old one moved aside, said once)."""
        for attempt in range(2):
            try:
                self._connect()
                return
            except OSError as exc:  # the folder itself is missing or not ours: a fresh file would not help
                self._close_connections()
                self._say_once("open", "invocations are not recorded: %s cannot be opened (%s)" % (self.path, exc))
                return
            except sqlite3.Error as exc:
                self._close_connections()
                if disk_full(exc):
                    self._say_full(exc)
                    self.reopen = True  # at the next batch: there may be room by then
                    return
                if attempt == 0:
                    self._move_aside(exc)
                else:
                    self._say_once("open", "invocations are not recorded: %s cannot be opened (%s)" % (self.path, exc))

    def _connect(self) -> None:
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        self.db = db
        self.held.clear()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        # rows one INSERT takes at most (then fewer, then one by one), within the parameters SQLite binds at once
        # (999 before 3.32; Python before 3.11 cannot ask)
        limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(db, "getlimit") else 999
        most = max(1, min(ROWS_AT_ONCE, limit // len(COLUMNS)))
        self.rows_at_once = sorted({most, min(most, 8), 1}, reverse=True)
        db.execute("SELECT COUNT(*) FROM invocations").fetchone()
        self.reader = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _close_connections(self) -> None:
        for db in (self.db, self.reader):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
        self.db = self.reader = None

    def _move_aside(self, exc: Exception) -> None:
        aside = self.path.with_name("%s.damaged-%d" % (FILENAME, time.time()))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(str(self.path) + suffix, str(aside) + suffix)
        self._say_once(
            "moved:%s" % aside,
            "%s was damaged or locked (%s): moved to %s, recording in a fresh one" % (self.path, exc, aside),
        )

    def _say_full(self, exc: Exception) -> None:
        self._say_once(
            "full",
            "invocations are not recorded while the disk of %s is full (%s); those stored are kept, and recording "
            "goes on once there is room" % (self.path, exc),
        )

    def _say_once(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.say(text)

    def open_database(self) -> None:
        """Let the writer open the database (a Recorder made with `open_now` False)."""
        self.may_open.set()

    def _write_forever(self) -> None:
        self.may_open.wait()
        with self.read_lock:
            self._open()
        self.opened_db.set()
        while True:
            batch, stop = self._settled()
            if batch:
                self._store(batch)
                if self.bus is not None:  # once stored (or dropped), all at once: not on the door's threads
                    self.bus.publish_all("invocation-end", [(summary_of(e), summary_weight(e)) for e in batch])
                self._finish_batch(len(batch))
            if stop:
                self._finish_batch(0)
                return
            if len(batch) < BATCH:  # the queue is drained (or waits for lines): what comes next is one batch
                self.wake.wait(WRITER_PAUSE)
                self.wake.clear()

    def _settled(self) -> tuple[list[Exchange], bool]:
        """The exchanges at the head of the queue whose log lines are complete, in order (at most BATCH), and
        whether the writer is asked to finish. Closing, the lines are taken as they are."""
        batch: list[Exchange] = []
        now = time.time()
        closing = bool(self.queue) and self.queue[-1] is None
        windows: dict[str, _Window] = {}  # each function's lines, read once for this look (not once a record)
        while self.queue and len(batch) < BATCH:
            first = self.queue[0]
            if first is None:
                if batch:
                    break  # stored first, then the writer finishes
                self.queue.popleft()
                return batch, True
            self._complete(first)
            try:
                lines = self._lines_of(first, now, closing, windows)
            except Exception:  # noqa: BLE001 - a record without its lines beats a writer that stops
                lines = []
            if lines is None:
                break  # its lines may still be on their way: the next look
            first.logs = lines
            batch.append(first)
            self.queue.popleft()
        return batch, False

    def _complete(self, exchange: Exchange) -> None:
        """What the docker backend's door left to the writer: the sha256 of the generation it named (known once
        that generation served a stored call or serves now)."""
        if exchange.source_sha256 is None and exchange.generation is not None:
            key = (exchange.function, exchange.generation)
            if key not in self.digests:
                try:
                    generation, digest = self.served(exchange.function)
                except Exception:  # noqa: BLE001 - a record without its sha256 beats a writer that stops
                    generation, digest = None, None
                if generation is not None and digest is not None:
                    self.digests[(exchange.function, generation)] = digest
            exchange.source_sha256 = self.digests.get(key)

    def _window(self, windows: dict[str, _Window], function: str, since: float, now: float) -> _Window:
        """`function`'s lines from `since` to `now`: the look's window, read again only for a call that began
        before it."""
        assert self.logs is not None
        window = windows.get(function)
        if window is None or since < window.since:
            if window is not None:
                starts, evicted = window.starts, window.evicted
            else:
                kept = self.starts.get(function, ())
                starts, evicted = sorted(kept), len(kept) >= STARTS_KEPT  # full: older ones were let go
            window = windows[function] = _Window(self.logs.between(function, since, now), since, starts, evicted)
        return window

    def _lines_of(
        self, exchange: Exchange, now: float, closing: bool, windows: dict[str, _Window] | None = None
    ) -> list[LogLine] | None:
        """The lines `exchange`'s call printed, or None while they may still be on their way: until the
        runtime's access line of the call and a QUIET moment after it (stderr), or the bounded wait's end."""
        if self.logs is None:
            return []
        function, end = exchange.function, exchange.started + exchange.duration
        window = self._window({} if windows is None else windows, function, exchange.started, now)
        lines = window.lines
        taken, taken_by = self.taken.get(function, (None, 0.0))
        if end <= taken_by:  # a later call's record came first, and this call ended before it began: no bound here
            taken = None
        begin = max(window.first_after(exchange.started), window.after(taken))
        agent = user_agent(exchange)
        for index in range(begin, len(lines)):
            access = lines[index]
            matched = access_line_of(access.text, access.stream, exchange.method, exchange.target, agent)
            if matched is not None:
                late = self._late_stderr(lines, index + 1, access.time, now, window.next_start(exchange.started))
                if late is None and not closing and now < end + self.access_wait:
                    return None
                if taken_by <= exchange.started:
                    self.taken[function] = (access, exchange.started)
                    window.taken = (access, index + 1)
                self.without_access.discard(function)
                if index == begin and not late:  # the common case: the call printed nothing (or only glued output)
                    return [dataclasses.replace(access, text=matched["output"])] if matched["output"] else []
                return function_lines(lines[begin : index + 1]) + (late or [])
        answered = exchange.status != 0  # a server that crashed on the call writes no access line for it
        wait = self.access_wait if answered and function not in self.without_access else self.log_grace
        if not closing and now < end + wait:
            return None
        if any(access_line(line.text, line.stream) for line in lines[begin:]):
            self.without_access.discard(function)  # its runtime writes them: this one came late or did not match
        elif answered and wait == self.access_wait:
            self.without_access.add(function)
        return function_lines(line for line in lines[begin:] if line.time <= end)

    def _late_stderr(
        self, lines: list[LogLine], start: int, since: float, now: float, next_start: float | None
    ) -> list[LogLine] | None:
        """The stderr lines from `lines[start]` on that follow the access line (at `since`) each within QUIET of
        the one before and before the next call began; None while more may come."""
        late: list[LogLine] = []
        last = since
        for index in range(start, len(lines)):
            line = lines[index]
            if line.time > last + self.log_grace or (next_start is not None and line.time >= next_start):
                return late  # a later line came: none of ours is still on its way
            if line.stream == "stderr":
                late.append(line)
                last = line.time
        return late if now >= last + self.log_grace else None

    def _finish_batch(self, count: int) -> None:
        with self.progress:
            self.written += count
            self.progress.notify_all()

    def _store(self, batch: list[Exchange]) -> None:
        """Insert a batch; a database that is damaged or locked by another program is moved aside and the batch
        goes into a fresh one (said once); if that fails too, the batch is dropped and counted. A record whose
        row cannot be made (a door handed something malformed) is dropped and counted alone, said once."""
        rows = []
        for exchange in batch:
            try:
                rows.append(self._row(exchange))
            except Exception as exc:  # noqa: BLE001 - one malformed record must not stop the writer
                self.dropped += 1
                self._say_once(
                    "row", "a call to %s could not be stored (%s): recording goes on" % (exchange.function, exc)
                )
        if not rows:
            return
        if self.db is None and self.reopen:  # it could not be opened for a full disk
            self.reopen = False
            with self.read_lock:
                self._open()
        for attempt in range(2):
            if self.db is None:
                break
            try:
                self._insert(rows, {exchange.function for exchange in batch})
                return
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
                break  # these records, not the file: the batch is dropped, the database kept
            except sqlite3.Error as exc:
                if disk_full(exc):
                    self._say_full(exc)
                    break  # these records do not fit: dropped; the database (and what it holds) kept
                if attempt == 0:
                    with self.read_lock:
                        self._close_connections()
                        self._move_aside(exc)
                        self._open()
        self.dropped += len(rows)

    def _insert(self, rows: list[tuple], functions: Iterable[str]) -> None:
        assert self.db is not None
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = db.execute("PRAGMA data_version").fetchone()
            if version != self.data_version:  # another connection wrote (a clear, another program): count again
                self.held.clear()
                self.data_version = version
            for absent, run in itertools.groupby(rows, absent_of):  # runs of rows with the same NULLs, in order
                self._insert_run(db, absent, list(run))
            added: dict[str, list[int]] = {function: [0, 0] for function in functions}
            for row in rows:
                sums = added[row[1]]
                sums[0] += 1
                sums[1] += row[BYTES]
            for function, (count, size) in added.items():
                self._retain(db, function, count, size)
            db.execute("COMMIT")
        except BaseException:
            self.held.clear()
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _insert_run(self, db: sqlite3.Connection, absent: tuple[bool, ...], run: list[tuple]) -> None:
        """Rows with the same NULLs, in order, up to `self.rows_at_once` in one INSERT: one step of SQLite (and one
        release of the GIL, which the door's threads take meanwhile) for many rows, not one a row as
        `executemany`'s."""
        at = 0
        for count in self.rows_at_once:
            if len(run) - at < count:
                continue
            sql, values = inserting(absent, count)
            while len(run) - at >= count:
                db.execute(sql, tuple(itertools.chain.from_iterable(map(values, run[at : at + count]))))
                at += count

    def _retain(self, db: sqlite3.Connection, function: str, added: int, added_bytes: int) -> None:
        """At most `keep` records and `max_bytes` of them for `function`: the oldest go. What it holds is counted
        once and then kept up to date here, so that a batch costs what it adds and removes, not a scan of all
        the function's records."""
        held = self.held.get(function)
        if held is None:
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM invocations WHERE function = ?", (function,)
            ).fetchone()
        else:
            count, size = held[0] + added, held[1] + added_bytes
        if count > self.keep:
            last, gone = db.execute(
                "SELECT MAX(seq), SUM(bytes) FROM (SELECT seq, bytes FROM invocations WHERE function = ? "
                "ORDER BY seq LIMIT ?)",
                (function, count - self.keep),
            ).fetchone()
            db.execute("DELETE FROM invocations WHERE function = ? AND seq <= ?", (function, last))
            count, size = self.keep, size - (gone or 0)
        if size > self.max_bytes:
            row = db.execute(
                "SELECT seq FROM (SELECT seq, SUM(bytes) OVER (ORDER BY seq DESC) AS kept FROM invocations "
                "WHERE function = ?) WHERE kept > ? ORDER BY seq DESC LIMIT 1",
                (function, self.max_bytes),
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM invocations WHERE function = ? AND seq <= ?", (function, row[0]))
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM invocations WHERE function = ?", (function,)
            ).fetchone()
        self.held[function] = (count, size)

    def _row(self, exchange: Exchange) -> tuple:
        """The values of COLUMNS[1:] and `bytes`, then which NULLABLE values are None (ABSENT: not bound, the
        INSERT takes the values it names). Bytes are given as bytearrays: the sqlite3 module binds those at once,
        where for bytes it first looks for an adapter (as for None: `inserting`)."""
        path, _, query = exchange.target.partition("?")
        said = exchange.logs
        logs = (
            json.dumps([{"text": line.text, "stream": line.stream} for line in said[-MAX_LOG_LINES:]]) if said else "[]"
        )
        request_headers, response_headers = (  # a head as it passed (bytes), or the headers given as lines (text)
            bytearray(exchange.request_head) if exchange.request_head else header_text(exchange.request_headers),
            bytearray(exchange.response_head) if exchange.response_head else header_text(exchange.response_headers),
        )
        request_body, response_body = bytearray(exchange.request_body), bytearray(exchange.response_body)
        generation, digest, trigger, replay_of = (
            exchange.generation,
            exchange.source_sha256,
            exchange.trigger,
            exchange.replay_of,
        )
        size = len(request_body) + len(response_body) + len(request_headers) + len(response_headers) + len(logs)
        return (
            exchange.id,
            exchange.function,
            generation,
            digest,
            exchange.source,
            trigger,
            replay_of,
            exchange.started,
            round(exchange.duration * 1000, 3),
            exchange.method,
            path,
            query,
            request_headers,
            request_body,
            exchange.request_size,
            exchange.status,
            response_headers,
            response_body,
            exchange.response_size,
            int(exchange.status == 408),
            exchange.error,
            logs,
            size,
            (generation is None, digest is None, trigger is None, replay_of is None),  # in NULLABLE's order
        )

    # ---------------------------------------------------------------- reading

    def flush(self, timeout: float = 5.0, begun: bool = True) -> bool:
        """Wait until every call begun so far is stored (or dropped): one whose answer the client already has
        may not be handed over yet. `begun=False`: only the calls handed over already (one still running is
        not waited for). False on timeout."""
        deadline = time.monotonic() + timeout
        with self.progress:
            opened = self.opened if begun else 0
            self.flushing += 1
            try:
                if not self.progress.wait_for(lambda: self.closed >= opened, timeout):
                    return False
            finally:
                self.flushing -= 1
            target = self.submitted
        self.wake.set()
        with self.progress:
            return self.progress.wait_for(lambda: self.written >= target, max(0.0, deadline - time.monotonic()))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        self.opened_db.wait(OPEN_WAIT)
        with self.read_lock:
            if self.reader is None:
                raise NotFound("no invocations are recorded (%s cannot be opened)" % self.path, "invocation")
            yield self.reader

    def list(
        self, function: str | None = None, limit: int = 50, before: int | None = None, outcome: str | None = None
    ) -> list[dict[str, Any]]:
        """Summaries, newest first: of one function (or all), at most `limit`, older than sequence `before`,
        with an OUTCOMES key's status (or any)."""
        where: list[str] = []
        args: list[Any] = []
        if function:
            where.append("function = ?")
            args.append(function)
        if outcome:
            if outcome not in OUTCOMES:
                raise BadRequest("outcome must be one of %s" % ", ".join(OUTCOMES), "invocation outcome", outcome)
            where.append(OUTCOMES[outcome])
        if before:
            where.append("seq < ?")
            args.append(before)
        query = "SELECT %s FROM invocations %s ORDER BY seq DESC LIMIT ?" % (
            ", ".join(SUMMARY),
            ("WHERE " + " AND ".join(where)) if where else "",
        )
        with self._reading() as db:
            rows = db.execute(query, (*args, limit)).fetchall()
        return [dict(zip(SUMMARY, row), timeout=bool(row[SUMMARY.index("timeout")])) for row in rows]

    def get(self, ident: str) -> dict[str, Any]:
        """The whole record `ident` (its id, or its sequence number) as stored: secrets included. An id may be
        decimal digits only (hex digits that happen to be): the id is looked up first."""
        query = "SELECT %s FROM invocations WHERE %%s = ?" % ", ".join(COLUMNS)
        with self._reading() as db:
            row = db.execute(query % "id", (str(ident),)).fetchone()
            if row is None and str(ident).isdigit():
                row = db.execute(query % "seq", (int(ident),)).fetchone()
        if row is None:
            raise NotFound("no recorded invocation %r" % ident, "invocation", str(ident))
        return record_of(dict(zip(COLUMNS, row)))

    def durations(self) -> Durations:
        """function → the durations (ms) of its stored calls, newest first."""
        found: Durations = {}
        with self._reading() as db:
            for function, duration in db.execute(
                "SELECT function, duration_ms FROM invocations ORDER BY function, seq DESC"
            ):
                found.setdefault(function, []).append(duration)
        return found

    def by_trigger(self) -> dict[tuple[str, str], int]:
        """(source, trigger) → how many stored calls it sent (calls with no trigger are not counted)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT source, trigger, COUNT(*) FROM invocations WHERE trigger IS NOT NULL GROUP BY source, trigger"
            ).fetchall()
        return {(source, trigger): count for source, trigger, count in rows}

    def replay_of(self, ident: str) -> str | None:
        """The id of the newest record that replays `ident` (None: none is stored)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT id FROM invocations WHERE replay_of = ? ORDER BY seq DESC LIMIT 1", (ident,)
            ).fetchone()
        return row[0] if row else None

    def stats(self) -> dict[str, Any]:
        with self._reading() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM invocations").fetchone()
        return {"stored": count, "dropped": self.dropped, "queued": len(self.queue), "path": str(self.path)}

    def clear(self, timeout: float = 5.0) -> None:
        """Forget every record: what is queued is stored first (then deleted), so none arrives after."""
        self.flush(timeout)
        with self._reading() as db:
            db.execute("DELETE FROM invocations")

    def close(self, timeout: float = 5.0) -> None:
        """Store what is queued (waiting at most `timeout`), then close the database."""
        self.queue.append(None)
        self.wake.set()
        self.may_open.set()  # what is queued is stored, however early the session ends
        self.writer.join(timeout)
        with self.read_lock:
            self._close_connections()


@functools.cache
def inserting(absent: tuple[bool, ...], count: int = 1) -> tuple[str, Callable[[tuple], tuple]]:
    """The INSERT of `count` rows whose NULLABLE values are None where `absent` says, and what takes the values
    it binds from a row: those columns are left out (NULL by default). The sqlite3 module binds str, int, float and
    bytearray at once, but looks for an adapter for None (and bytes) first, which costs more than the insert's
    other work for that value."""
    skipped = {index for index, gone in zip(NULLABLE, absent) if gone}
    kept = [index for index in range(len(COLUMNS)) if index not in skipped]
    names = [*COLUMNS[1:], "bytes"]
    sql = "INSERT INTO invocations (%s) VALUES %s" % (
        ", ".join(names[index] for index in kept),
        ", ".join(["(%s)" % ", ".join("?" * len(kept))] * count),
    )
    return sql, operator.itemgetter(*kept)


def header_text(headers: Pairs) -> str:
    """Headers given as pairs, as stored: `Name: value` lines (a header line holds no line break; a name no
    colon)."""
    return "\n".join("%s: %s" % pair for pair in headers)


def user_agent(exchange: Exchange) -> str:
    """The request's User-Agent ("" when it sent none): the first header of that name, as `header_pairs` reads
    it, found in the head without reading its other lines."""
    head = exchange.request_head
    if not head:
        return next((value for name, value in exchange.request_headers if name.lower() == "user-agent"), "")
    lowered = head.lower()
    at = lowered.find(b"\n")
    while at >= 0:
        at = lowered.find(b"user-agent", at + 1)
        if at < 0:
            break
        start, end = lowered.rfind(b"\n", 0, at) + 1, lowered.find(b"\n", at)
        name, value = header_of(head[start : end if end >= 0 else len(head)])
        if name.lower() == "user-agent":
            return value
    return ""


def header_list(stored: str | bytes) -> list[list[str]]:
    """Stored headers as [name, value] pairs: a head as it passed (bytes), or `header_text`'s lines (the text
    that rows stored before heads were kept as they passed hold, and headers given as pairs)."""
    if isinstance(stored, bytes):
        return [[name, value] for name, value in header_pairs(stored)]
    return [[name, value.lstrip()] for name, _, value in (line.partition(":") for line in stored.split("\n") if line)]


# about what bus.weight() measures of an invocation-start event and of a summary, less their strings' lengths
START_WEIGHT = 3 * 8 + len("functionmethodpath")
SUMMARY_WEIGHT = 11 * 8 + len("idfunctionsourcetriggermethodpathstatusduration_msstartedtimeouterror") + 12 + 5 * 8


def summary_weight(exchange: Exchange) -> int:
    return SUMMARY_WEIGHT + len(exchange.function) + len(exchange.target) + len(exchange.error) + len(exchange.source)


def summary_of(exchange: Exchange) -> dict[str, Any]:
    return {
        "id": exchange.id,
        "function": exchange.function,
        "source": exchange.source,
        "trigger": exchange.trigger,
        "method": exchange.method,
        "path": exchange.target,
        "status": exchange.status,
        "duration_ms": round(exchange.duration * 1000, 3),
        "started": exchange.started,
        "timeout": exchange.status == 408,
        "error": exchange.error,
    }


def _body(data: bytes, size: int) -> dict[str, Any]:
    """A body as JSON: text when it is UTF-8, else base64; with its full size and whether it was cut."""
    shown: dict[str, Any] = {"size": size, "truncated": size > len(data)}
    try:
        shown["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        shown["base64"] = base64.b64encode(data).decode()
    return shown


def record_of(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the record the API shows (before `export` redacts it)."""
    return {
        "seq": row["seq"],
        "id": row["id"],
        "function": row["function"],
        "generation": row["generation"],
        "source_sha256": row["source_sha256"],
        "source": row["source"],
        "trigger": row["trigger"],
        "replay_of": row["replay_of"],
        "started": row["started"],
        "duration_ms": row["duration_ms"],
        "timeout": bool(row["timeout"]),
        "error": row["error"],
        "request": {
            "method": row["method"],
            "path": row["path"],
            "query": row["query"],
            "headers": header_list(row["request_headers"]),
            "body": _body(row["request_body"], row["request_size"]),
        },
        "response": {
            "status": row["status"],
            "headers": header_list(row["response_headers"]),
            "body": _body(row["response_body"], row["response_size"]),
        },
        "logs": json.loads(row["logs"]),
    }


def redacted(headers: Headers) -> Headers:
    return [[name, REDACTED if name.lower() in SECRET_HEADERS else value] for name, value in headers]  # type: ignore[misc]


def export(record: dict[str, Any]) -> dict[str, Any]:
    """The record as shown outside the engine: secret headers (Authorization, Cookie…) REDACTED."""
    shown = json.loads(json.dumps(record))
    for part in ("request", "response"):
        shown[part]["headers"] = redacted(shown[part]["headers"])
    return shown


def body_bytes(body: dict[str, Any]) -> bytes:
    """The bytes of a body as `_body` shows it (text or base64)."""
    if "base64" in body:
        return base64.b64decode(body["base64"])
    return str(body.get("text", "")).encode()


def edited_request(original: dict[str, Any], edited: dict[str, Any] | None) -> dict[str, Any]:
    """The request to replay: the original, or an edited export of it; a header left REDACTED keeps the
    original's value (an export does not hold it)."""
    if edited is None:
        return original["request"]
    secrets = {name.lower(): value for name, value in original["request"]["headers"]}
    headers = [
        [name, secrets.get(name.lower(), value) if value == REDACTED else value]
        for name, value in edited.get("headers", original["request"]["headers"])
    ]
    return {**original["request"], **edited, "headers": headers}


def diff(original: dict[str, Any], replayed: dict[str, Any]) -> dict[str, Any]:
    """How the answer to a replay differs from the original answer: status, headers (Date left out), body (a
    unified diff of text, or whether the bytes differ)."""
    before, after = original["response"], replayed["response"]
    headers_before = {name.lower(): value for name, value in before["headers"] if name.lower() not in VOLATILE_HEADERS}
    headers_after = {name.lower(): value for name, value in after["headers"] if name.lower() not in VOLATILE_HEADERS}
    changed = {
        name: [headers_before.get(name), headers_after.get(name)]
        for name in sorted(set(headers_before) | set(headers_after))
        if headers_before.get(name) != headers_after.get(name)
    }
    body: list[str] = []
    if body_bytes(before["body"]) != body_bytes(after["body"]):
        if "text" in before["body"] and "text" in after["body"]:
            body = list(
                difflib.unified_diff(
                    before["body"]["text"].splitlines(),
                    after["body"]["text"].splitlines(),
                    "original",
                    "replay",
                    lineterm="",
                )
            )
        else:
            body = ["binary bodies differ (%d and %d bytes)" % (before["body"]["size"], after["body"]["size"])]
    return {
        "same": before["status"] == after["status"] and not changed and not body,
        "status": [before["status"], after["status"]] if before["status"] != after["status"] else None,
        "headers": changed,
        "body": body,
    }


# ------------------------------------------------------------ replay

NOT_RESENT = frozenset(("host", "content-length", "transfer-encoding", "connection", SOURCE_HEADER.lower()))


def replay(recorder: Recorder, supervisor: Any, ident: str, edited: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send recorded invocation `ident`'s request (or `edited`, an export of it) to its function again, marked
    `replay`, and return {original, replay, diff}: the two exports and how the answers differ. The function's
    front door records the replay as any call."""
    import http.client

    original = recorder.get(ident)
    request = edited_request(original, edited)
    body = request.get("body") or {}
    if edited is None and body.get("truncated"):
        raise BadRequest(
            "invocation %s's request body was cut at %d bytes when it was recorded; it cannot be sent as it was"
            % (ident, MAX_BODY),
            "invocation",
            ident,
        )
    ready = supervisor.wait_ready(original["function"], 5.0)
    if ready is None:
        raise Unavailable("function %s is not serving" % original["function"], "function", original["function"])
    instance = ready[0]
    headers = [(name, value) for name, value in request.get("headers", []) if name.lower() not in NOT_RESENT]
    if instance.front_door:
        headers.append((SOURCE_HEADER, mark("replay", of=original["id"])))
    target = request.get("path") or "/"
    if request.get("query"):
        target += "?" + request["query"]
    connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=None)
    try:
        connection.putrequest(request.get("method") or "GET", target, skip_accept_encoding=True)
        data = body_bytes(body)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        answer = response.read()
        replayed: dict[str, Any] = {
            "response": {
                "status": response.status,
                "headers": [[name, value] for name, value in response.getheaders()],
                "body": _body(answer[:MAX_BODY], len(answer)),
            }
        }
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(
            "function %s did not answer the replay (%s)" % (original["function"], exc), "function", original["function"]
        ) from None
    finally:
        connection.close()
    recorder.flush()
    replayed["id"] = recorder.replay_of(original["id"])
    return {"original": export(original), "replay": export_response(replayed), "diff": diff(original, replayed)}


def export_response(replayed: dict[str, Any]) -> dict[str, Any]:
    shown = json.loads(json.dumps(replayed))
    shown["response"]["headers"] = redacted(shown["response"]["headers"])
    return shown

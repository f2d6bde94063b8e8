"""Per-function log buffers that the CLI streams (`dev` output, `logs -f`, the admin API).

Bounded, so a handler that prints its 50 MB request body cannot grow `dev` without end: each line
is cut at MAX_LINE bytes (with a visible marker) and each function keeps at most MAX_BYTES of
lines, oldest dropped first. A subscriber (the terminal `dev` prints to, `logs -f`, the dashboard) that
falls FOLLOW_LINES lines or FOLLOW_BYTES behind a function printing faster than it can show misses the
lines past that, and is told how many in a system line where they were.

Also the one rule that tells which lines a call printed (`closes_the_call`, `printed_by_the_function`),
shared by the recorder and the test emulator: every runtime writes one access-log line per request once
the answer is sent, on the same stream as the function's stdout, so a call's stdout ends at it.
"""

import collections
import dataclasses
import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_LINE = 16 * 1024  # bytes of one line that are kept
MAX_BYTES = 4 * 1024 * 1024  # bytes of lines kept per function
MAX_CONTROL_LINE = 1024 * 1024  # a control line (JSON with a load error) is kept whole up to this
KEEP_LINES = 5000
FOLLOW_LINES = 10_000  # lines a subscriber may fall behind (a terminal: a fraction of a second's worth)
FOLLOW_BYTES = 4 * 1024 * 1024  # and bytes
MISSED = (
    "… %s log lines not shown here: they came faster than they could be shown "
    "(`kubeless-local logs NAME`: a function's last lines)"
)


# The one access-log line every runtime writes per request (runtimes/README.md), once the answer is sent:
# Apache's combined format (`peer - user [time] "POST / HTTP/1.1" 200 2 "referer" "agent"`), or Go's
# `peer "POST / HTTP/1.1" 200 agent`.
_REQUEST = r' (?:- \S+ \[[^\]]+\] )?"(?P<method>\S+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}|-) (?P<rest>.*)$'
ACCESS_LINE = re.compile(r"^(?P<output>)\S+" + _REQUEST)
# Output the function left without a newline is glued before it on that stream, as in the pod's log; its end
# is found where the line's address begins: the loopback addresses a runtime writes as the peer (Go's and
# Java's forms too).
GLUED_ACCESS_LINE = re.compile(
    r"^(?P<output>.*?)(?:(?:::ffff:)?(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?|\[?::1\]?(?::\d+)?|0:0:0:0:0:0:0:1)" + _REQUEST
)


def access_line(text: str, stream: str) -> re.Match[str] | None:
    """The access-log line in `text`, its `output` group what the function printed before it without a newline
    (mostly empty); None for any other line."""
    if stream == "system" or '" ' not in text:  # the quick no: most lines are the function's
        return None
    return GLUED_ACCESS_LINE.match(text) or ACCESS_LINE.match(text)


def access_line_of(text: str, stream: str, method: str, path: str, agent: str) -> re.Match[str] | None:
    """The runtime's access-log line of a `method path` call made with User-Agent `agent` in `text`, or None."""
    access = access_line(text, stream)
    if (
        access is not None
        and access["method"] == method
        and access["path"] == path
        and access["rest"].rstrip('"').endswith(agent)
    ):
        return access
    return None


def closes_the_call(text: str, stream: str, method: str, path: str, agent: str) -> bool:
    """True for the runtime's access-log line of a `method path` call made with User-Agent `agent`."""
    return access_line_of(text, stream, method, path, agent) is not None


def printed_by_the_function(text: str, stream: str) -> str | None:
    """What of a line the function printed: the line, or the output glued before an access-log line; None for
    the engine's lines and an access-log line alone."""
    if stream == "system":
        return None
    access = access_line(text, stream)
    if access is None:
        return text
    return access["output"] or None


def function_lines(lines: Iterable["LogLine"]) -> list["LogLine"]:
    """The function's own output among `lines`: an output glued before an access-log line is a line of its own."""
    kept = []
    for line in lines:
        text = printed_by_the_function(line.text, line.stream)
        if text is not None:
            kept.append(line if text is line.text else dataclasses.replace(line, text=text))
    return kept


def truncation_marker(dropped):
    return f" … [truncated {dropped:,} bytes]"


MARKER_ROOM = 64  # a line already cut (by LineSplitter) keeps its marker


def cap_line(text, limit=MAX_LINE):
    """`text` cut to `limit` bytes of UTF-8, with a marker saying how much was dropped."""
    if len(text) <= limit // 4:
        return text  # the common case: short enough whatever its characters
    data = text.encode("utf-8", "replace")
    if len(data) <= limit + MARKER_ROOM:
        return text
    kept = data[:limit].decode("utf-8", "ignore")  # never half a character
    return kept + truncation_marker(len(data) - len(kept.encode("utf-8")))


class LineSplitter:
    """Splits a byte stream into lines without ever holding more than `limit` bytes of one line:
    the rest of an overlong line is counted, not kept (a handler printing 50 MB without a newline).
    Lines that hold `control` (the runtime's control lines, whose load error may be a long traceback, maybe after
    output left without a newline) may be up to `control_limit` bytes, so they stay whole and parseable."""

    def __init__(self, limit=MAX_LINE, control=None, control_limit=MAX_CONTROL_LINE):
        self.limit, self.control, self.control_limit = limit, control, control_limit
        self.pending = b""
        self.dropped = 0  # bytes of the current line beyond the limit

    def feed(self, chunk):
        """The complete lines in `chunk` (and what came before it), decoded."""
        lines = []
        *complete, rest = chunk.split(b"\n")
        limit = self.limit
        for part in complete:
            if self.pending or self.dropped or len(part) > limit:
                lines.append(self._finish(part))
            else:  # the common case (a whole line of a usual length in this chunk): no copy kept
                lines.append(part.decode("utf-8", "replace"))
        self._keep(rest)
        return lines

    def flush(self):
        """The last line when the stream ended without a newline ([] when there is none)."""
        if not self.pending and not self.dropped:
            return []
        return [self._finish(b"")]

    def _keep(self, part):
        limit = self.limit
        if self.control and len(self.pending) + len(part) > limit and self.control in self.pending + part:
            limit = self.control_limit  # a control line, or one after output left without a newline
        room = limit - len(self.pending)
        self.pending += part[: max(room, 0)]
        self.dropped += max(len(part) - max(room, 0), 0)

    def _finish(self, part):
        self._keep(part)
        text = self.pending.decode("utf-8", "replace")
        if self.dropped:
            text += truncation_marker(self.dropped)
        self.pending, self.dropped = b"", 0
        return text


@dataclass(frozen=True)
class LogLine:
    function: str
    text: str
    stream: str = "stdout"  # stdout | stderr | system (the engine speaking)
    time: float = 0.0


class _Buffer:
    """One function's last lines, bounded in count and in bytes."""

    def __init__(self, keep, max_bytes):
        self.lines: collections.deque[LogLine] = collections.deque()
        self.sizes: collections.deque[int] = collections.deque()
        self.size = 0
        self.keep, self.max_bytes = keep, max_bytes

    def append(self, line):
        text = line.text
        size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        self.lines.append(line)
        self.sizes.append(size)
        self.size += size
        while len(self.lines) > self.keep or (self.size > self.max_bytes and len(self.lines) > 1):
            self.lines.popleft()
            self.size -= self.sizes.popleft()


class Following(queue.Queue):
    """A subscriber's queue of new lines (`LogHub.subscribe`), bounded by FOLLOW_LINES and FOLLOW_BYTES: a line
    offered to a reader that far behind is dropped and counted (and so on until it is half way back), and the count
    reaches the reader as a system line in the dropped lines' place (before the next line it gets, or once it has
    read all). Without it a function printing in a loop faster than the terminal shows grew `dev` by its whole
    output (~1.5 MB a second here)."""

    def __init__(self, function: str | None = None, bounded: bool = True) -> None:
        super().__init__()
        self.function, self.bounded = function, bounded
        self.bytes = 0
        self.missed = 0

    def offer(self, line: "LogLine") -> None:
        with self.mutex:
            share = 2 if self.missed else 1  # once missing, until it is half way back: one notice a stretch
            if self.bounded and (len(self.queue) >= FOLLOW_LINES // share or self.bytes >= FOLLOW_BYTES // share):
                self.missed += 1
                return
            if self.missed:
                self._put(self._missed_line())
            self._put(line)
            self.not_empty.notify()

    def _missed_line(self) -> "LogLine":
        line = LogLine(self.function or "dev", MISSED % format(self.missed, ","), "system", time.time())
        self.missed = 0
        return line

    def _put(self, item: "LogLine | None") -> None:
        if item is not None:
            self.bytes += len(item.text)
        self.queue.append(item)

    def _get(self) -> "LogLine | None":
        item = self.queue.popleft()
        if item is not None:
            self.bytes -= len(item.text)
        if self.missed and not self.queue:  # caught up after the lines stopped: said now, not with the next one
            self._put(self._missed_line())
        return item


class LogHub:
    """Keeps the last lines of each function and fans new lines out to subscribers."""

    def __init__(self, keep=KEEP_LINES, max_line=MAX_LINE, max_bytes=MAX_BYTES):
        self.keep, self.max_line, self.max_bytes = keep, max_line, max_bytes
        self.lines = collections.defaultdict(lambda: _Buffer(self.keep, self.max_bytes))
        self.subscribers = []
        self.lock = threading.Lock()

    def emit(self, function, text, stream="stdout"):
        line = LogLine(function, cap_line(text.rstrip("\n"), self.max_line), stream, time.time())
        with self.lock:
            self.lines[function].append(line)
            subscribers = list(self.subscribers)
        for wanted, q in subscribers:
            if wanted is None or wanted == function:
                q.offer(line)

    def tail(self, function, count=None):
        with self.lock:
            buffer = self.lines.get(function)
            lines = list(buffer.lines) if buffer is not None else []
        return lines if count is None else lines[-count:] if count else []

    def between(self, function, start, end):
        """The lines of `function` that arrived from `start` to `end` (epoch seconds), oldest first; read from
        the newest back, so a recent span costs what it holds."""
        found = []
        with self.lock:
            buffer = self.lines.get(function)
            for line in reversed(buffer.lines) if buffer is not None else ():
                if line.time < start:
                    break
                if line.time <= end:
                    found.append(line)
        found.reverse()
        return found

    def subscribe(self, function=None, bounded=True):
        """A queue that receives every new line (of one function, or of all when None); `bounded` False: every one,
        however far behind its reader falls (a test's capture of one call's output), else see `Following`."""
        q = Following(function, bounded)
        with self.lock:
            self.subscribers.append((function, q))
        return q

    def unsubscribe(self, q):
        with self.lock:
            self.subscribers = [(f, s) for f, s in self.subscribers if s is not q]

"""HTTP/1.1 as both front doors read it: proxy.py (the process backend's, a thread per connection, blocking
reads) and frontdoor.py (the docker backend's, an asyncio byte relay). One header-line parser, one rule for
which answer has a body, and `Stream`: one direction of a relayed connection read as its bytes pass.

`Stream`'s guarantee: the bytes it returns are the bytes it was given, but for a head its `on_head` rewrote
(the only change a front door makes: SOURCE_HEADER taken out). It copies a message's head (at most
MAX_HEAD bytes; a longer one, or anything that is not HTTP/1.1 framing, turns the stream opaque: passed on
as it is, no longer read) and nothing of a body: `on_body` gets views of the bytes as they pass, and the
caller keeps what it wants (the recorder: MAX_BODY bytes). A body is followed only as far as its framing
needs (Content-Length counted, chunk sizes read, an answer without either lasts until the connection ends).
"""

from __future__ import annotations

import re
from typing import Callable

MAX_LINE = 64 * 1024  # a request line or a header line longer than this is refused (proxy.py)
MAX_HEADERS = 200
MAX_HEAD = MAX_HEADERS * 1024  # bytes of a head the relay reads before it gives up reading (frontdoor.py)
NO_BODY_STATUS = (204, 304)
HEAD_END = re.compile(rb"\r?\n\r?\n")


def header_of(line: bytes) -> tuple[str, str]:
    """(name, value) of one header line, spaces and the line break stripped."""
    name, _, value = line.decode("latin-1").partition(":")
    return name.strip(), value.strip()


def header_pairs(head: bytes) -> list[tuple[str, str]]:
    """The headers of a whole head (its start line and blank line included), in order."""
    lines = head.split(b"\n")[1:]
    return [header_of(line) for line in lines if line.strip()]


def is_chunked(fields: dict[str, str]) -> bool:
    return "chunked" in fields.get("transfer-encoding", "").lower()


def keeps_alive(version: str, fields: dict[str, str]) -> bool:
    connection = fields.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def answer_has_body(method: str, status: int) -> bool:
    """An answer to `method` with `status` carries a body (RFC 9112 6.3)."""
    return not (method == "HEAD" or status in NO_BODY_STATUS or status < 200)


def field(lowered: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lower case, with its colon: b"content-length:") in a lowered head; None when
    absent. A scan in C, not a parse: what the relay's loop needs to follow the framing."""
    start = lowered.find(b"\n" + name)
    if start < 0:
        return None
    start += 1 + len(name)
    end = lowered.find(b"\n", start)
    return lowered[start:end].strip()


# ------------------------------------------------------------ one direction of a relayed connection

NONE, LENGTH, CHUNKED, UNTIL_CLOSE, OPAQUE = "none", "length", "chunked", "until-close", "opaque"
Framing = tuple[str, int]  # (one of the above, the length for LENGTH)

# the states of a Stream besides reading a head
_HEAD, _SIZE, _DATA, _DATA_END, _TRAILERS = "head", "size", "data", "data-end", "trailers"


def _crlf_head_end(data: bytes) -> int:
    """Where the head that `data` starts with ends, when its first empty line is a CRLF one (none with a bare LF
    before it) and no line break comes before its first line: what HEAD_END finds, found without a regex; -1
    for any other start (HEAD_END decides those)."""
    end = data.find(b"\r\n\r\n")
    if end <= 0 or data[:1] in (b"\r", b"\n"):
        return -1
    if data.find(b"\n\n", 0, end + 3) >= 0 or data.find(b"\n\r\n", 0, end + 3) >= 0:
        return -1
    return end + 4


class Stream:
    """Reads one direction's messages as they pass: `feed(data)` returns the bytes to pass on.

    on_head(head) → (the head to pass on, its body's framing) or None (not HTTP: opaque from there);
    on_body(piece) for each piece of a body's data (a memoryview: copy what you keep); on_end() once a message
    is over (its body ended, or it had none)."""

    def __init__(
        self,
        on_head: Callable[[bytes], tuple[bytes, Framing] | None],
        on_body: Callable[[memoryview], None],
        on_end: Callable[[], None],
    ) -> None:
        self.on_head, self.on_body, self.on_end = on_head, on_body, on_end
        self.state = _HEAD
        self.left = 0  # bytes left of a Content-Length body or a chunk (and its line break)
        self.pending = b""  # the start of a head, or of a chunk-size or trailer line, split across reads

    def flush(self) -> bytes:
        """The start of a head held back when the connection ends: passed on as it is."""
        held = self.pending if self.state == _HEAD else b""
        self.pending = b""
        return held

    def opaque(self) -> None:
        """No more messages to read (an upgraded connection): bytes pass on as they are."""
        self.state, self.pending = OPAQUE, b""

    def feed(self, data: bytes) -> bytes:
        state = self.state
        if state in (OPAQUE, UNTIL_CLOSE):
            if state == UNTIL_CLOSE:
                self.on_body(memoryview(data))
            return data
        if state == _DATA and len(data) < self.left:  # the common case of a body: the whole piece is data
            self.left -= len(data)
            self.on_body(memoryview(data))
            return data
        out: list[bytes] = []
        changed = self._read(data, out)
        if not changed:
            return data
        return out[0] if len(out) == 1 else b"".join(out)

    def _read(self, data: bytes, out: list[bytes]) -> bool:
        """Read `data`, appending the bytes to pass on to `out`; True when they differ from `data`."""
        changed, pos, view = False, 0, memoryview(data)
        mark = 0  # where the bytes not yet appended to `out` start
        while pos < len(data):
            state = self.state
            if state == _HEAD:
                if pos > mark:
                    out.append(data[mark:pos])
                buffer = self.pending + data[pos:] if self.pending else data[pos:]
                self.pending = b""
                stripped = buffer.lstrip(b"\r\n")  # line breaks between messages (RFC 9112 2.2)
                end = _crlf_head_end(stripped)
                if end < 0:  # not the usual CRLF head: the pattern decides
                    found = HEAD_END.search(stripped)
                    end = found.end() if found is not None else -1
                if end < 0:
                    if len(stripped) > MAX_HEAD:
                        self.opaque()
                        out.append(stripped)
                    else:
                        self.pending = stripped
                    return True
                head = stripped[:end]
                read = self.on_head(head)
                if read is None:
                    self.opaque()
                    out.append(stripped)
                    return True
                passed, (kind, length) = read
                out.append(passed)
                data, view, pos, mark, changed = stripped, memoryview(stripped), end, end, True
                self._begin(kind, length)
            elif state == _DATA:
                take = min(self.left, len(data) - pos)
                self.on_body(view[pos : pos + take])
                pos += take
                self.left -= take
                if self.left == 0:
                    if self.chunked:
                        self.state, self.left = _DATA_END, 2
                    else:
                        self._end()
            elif state == _DATA_END:  # the line break after a chunk's data
                take = min(self.left, len(data) - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = _SIZE
            elif state in (_SIZE, _TRAILERS):
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self.pending += data[pos:]
                    if len(self.pending) > MAX_LINE:
                        self.opaque()
                    break
                line, self.pending = self.pending + data[pos : newline + 1], b""
                pos = newline + 1
                if state == _TRAILERS:
                    if not line.strip():
                        self._end()
                    continue
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.opaque()
                    break
                if size:
                    self.state, self.left = _DATA, size
                else:
                    self.state = _TRAILERS
            elif state == UNTIL_CLOSE:
                self.on_body(view[pos:])
                pos = len(data)
            else:  # opaque
                break
        if changed and mark < len(data):
            out.append(data[mark:])
        return changed

    chunked = False

    def _begin(self, kind: str, length: int) -> None:
        self.chunked = kind == CHUNKED
        if kind == LENGTH and length > 0:
            self.state, self.left = _DATA, length
        elif kind == CHUNKED:
            self.state = _SIZE
        elif kind in (UNTIL_CLOSE, OPAQUE):
            self.state = kind
        else:
            self._end()

    def _end(self) -> None:
        self.state = _HEAD
        self.on_end()

"""A function's front door on the process backend: the URL `ls` prints, in front of the runtime server's own port.

The runtime server listens on a private loopback port (unlisted, new at each start); the front door listens on
the function's port for as long as the function exists, across reloads and restarts, and relays each HTTP
request to the server and the answer back, byte for byte, except one header: SOURCE_HEADER (recorder.py),
with which `call`, the triggers and `replay` say who sends, is read and removed. Each exchange is handed to the
recorder (a plain client without the header is `http`); the runtime's own /healthz and /metrics are not calls
and are not recorded.

Guarantees: a call is answered as the server answers it (a 408 on timeout, a 500, a streamed body: relayed in pieces
of at most CHUNK bytes as they arrive, never held whole nor waiting for more; only the first MAX_BODY bytes of each
body are kept for the record). A server that takes a request and closes the connection without answering (it crashed
on it) makes the front door close the client's connection without an answer too. While the server restarts (a crash,
a reload that needs a new server) a request waits for it instead of being refused, up to SERVER_WAIT; then a plain
client gets 503, a sender that marked its request a closed connection, as if nothing had taken it.

Speed: one keep-alive connection to the server per concurrent request, reused; a client's connection is
served by a pooled worker thread (no thread is created per request), and the recorder never blocks it.
"""

from __future__ import annotations

import collections
import functools
import io
import queue
import select
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING, cast

from kubeless_local.emulator.base import Instance, State
from kubeless_local.emulator.http1 import MAX_HEADERS, MAX_LINE, answer_has_body, header_of, is_chunked, keeps_alive
from kubeless_local.emulator.recorder import MAX_BODY, NOT_CALLS, SOURCE_HEADER, Exchange, read_mark

if TYPE_CHECKING:
    from kubeless_local.emulator.recorder import Recorder

CHUNK = 64 * 1024
CLIENT_IDLE = 75.0  # seconds a kept-alive client connection may wait between two requests
CLIENT_IO = 120.0  # seconds a client may take to send a piece of its request or read a piece of the answer
SERVER_WAIT = 60.0  # seconds a request waits for a server that is (re)starting
RETRY_SECONDS = 0.02  # while it starts, its port is tried again at its change of state, or after this
# An upstream connection idle longer is not reused: under the shortest idle timeout of the runtime servers
# (Node's keepAliveTimeout, 5 s), so a request never meets a connection the server is closing at that moment.
UPSTREAM_IDLE = 2.0
WAITED_STATES = frozenset((State.INSTALLING, State.STARTING, State.CRASHED))  # a server is (re)starting
SKIPPED_REQUEST_HEADERS = (SOURCE_HEADER.lower().encode(), b"expect")


def moved_on(instance: Instance, since: tuple[State, int]) -> bool:
    """Whether a (re)starting server's (state, port) is no longer `since`."""
    return (instance.state, instance.server_port) != since


class Workers:
    """Threads that serve connections: an idle one takes the next; one is added when the jobs waiting outnumber
    the idle threads (up to `most`); one idle for `idle_seconds` ends, unless a job is on its way. The counts
    move under one lock, so a job never waits behind a thread that is not coming."""

    def __init__(self, most: int = 512, idle_seconds: float = 30.0) -> None:
        self.most, self.idle_seconds = most, idle_seconds
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = self.count = self.waiting = 0

    def run(self, job) -> None:
        with self.lock:
            self.waiting += 1
            grow = self.waiting > self.idle and self.count < self.most
            if grow:
                self.count += 1
        if grow:
            threading.Thread(target=self._work, name="front-door", daemon=True).start()
        self.jobs.put(job)

    def _work(self) -> None:
        with self.lock:
            self.idle += 1
        while True:
            try:
                job = self.jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self.lock:
                    if self.waiting:
                        continue  # a job counted on this thread: it is being put
                    self.idle -= 1
                    self.count -= 1
                return
            with self.lock:
                self.idle -= 1
                self.waiting -= 1
            try:
                job()
            except Exception:  # noqa: BLE001 - one connection's failure must not end the worker; a bug is shown
                traceback.print_exc()
            with self.lock:
                self.idle += 1


WORKERS = Workers()  # shared by every front door of the process


class NoAnswer(Exception):
    """The server took the request and closed the connection without an answer."""


class Upstream:
    """One keep-alive connection to the runtime server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = cast(io.BufferedReader, self.sock.makefile("rb", buffering=CHUNK))
        self.idle_since = 0.0  # time.monotonic() when it went back to the pool

    def stale(self) -> bool:
        """It was idle too long, or closed (or says something) while idle: not to be used again."""
        if time.monotonic() - self.idle_since > UPSTREAM_IDLE:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        for part in (self.reader, self.sock):
            try:
                part.close()
            except OSError:
                pass


class FrontDoor:
    """Listens on 127.0.0.1:`port` for `instance` (OSError when the port is taken); `close()` stops it."""

    def __init__(self, instance: Instance, port: int, recorder: Recorder | None = None, workers: Workers = WORKERS):
        self.instance, self.port, self.recorder, self.workers = instance, port, recorder, workers
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(256)
        except OSError:
            self.listener.close()
            raise
        self.idle: collections.deque[Upstream] = collections.deque()
        self.clients: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closing = False
        self.forwarded = 0  # requests handed to the server whole (tests wait on it)
        threading.Thread(target=self._accept, name="front-door-%d" % port, daemon=True).start()

    def close(self) -> None:
        self.closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            clients, self.clients = list(self.clients), set()
            idle = list(self.idle)
            self.idle.clear()
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for upstream in idle:
            upstream.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                if self.closing:
                    return
                time.sleep(0.01)  # out of file descriptors: try again shortly
                continue
            with self.lock:
                self.clients.add(client)
            self.workers.run(lambda client=client: self._serve(client))

    # ---------------------------------------------------------------- one client connection

    def _serve(self, client: socket.socket) -> None:
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = cast(io.BufferedReader, client.makefile("rb", buffering=CHUNK))
            while not self.closing:
                client.settimeout(CLIENT_IDLE)
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue  # a stray line break between requests (RFC 9112 2.2)
                client.settimeout(CLIENT_IO)
                if not self._exchange(client, reader, line):
                    return
        except (OSError, ValueError):
            return  # the client went away, or sent what is not HTTP
        finally:
            with self.lock:
                self.clients.discard(client)
            try:
                client.close()
            except OSError:
                pass

    def _exchange(self, client: socket.socket, reader: io.BufferedIOBase, line: bytes) -> bool:
        """Relay one request and its answer; True when the client's connection may carry another."""
        started = time.time()
        parts = line.split()
        if len(line) > MAX_LINE or len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        if not line.endswith(b"\n"):
            return False  # the client's input ended inside it: nothing to relay
        method, target, version = (part.decode("latin-1") for part in parts)
        head, fields = read_head(reader)
        if head is None:
            client.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n")
            return False
        source, trigger, replay_of = read_mark(fields.get(SOURCE_HEADER.lower()))
        if "100-continue" in fields.get("expect", "").lower():
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # we read the body at once; the server need not say it
        exchange = Exchange(
            "%s" % self.instance.name,
            method,
            target,
            (),
            started=started,
            source=source,
            trigger=trigger,
            replay_of=replay_of,
        )
        recorded = self.recorder is not None and target.partition("?")[0] not in NOT_CALLS
        if recorded and self.recorder is not None:
            self.recorder.started(exchange.function, method, target, source, started)
        client_keeps = keeps_alive(version, fields)
        exchange.request_head = line + head  # the record's headers: parsed when it is read, not here
        try:
            keep = self._relay(client, reader, exchange.request_head, fields, exchange, method, client_keeps)
        finally:
            exchange.duration = time.time() - started
            if recorded and self.recorder is not None:
                self.recorder.submit(exchange)
        return keep

    def _relay(
        self,
        client: socket.socket,
        reader: io.BufferedIOBase,
        head: bytes,
        fields: dict[str, str],
        exchange: Exchange,
        method: str,
        client_keeps: bool,
    ) -> bool:
        upstream = self._upstream(exchange)
        if upstream is None:
            self.refuse(client, exchange)
            return False
        try:
            upstream.sock.sendall(head)
            exchange.request_body, exchange.request_size = relay_body(reader, upstream.sock.sendall, fields, None)
            self.forwarded += 1
            status_line, response_head, response_fields = read_response_head(upstream.reader)
        except NoAnswer as exc:
            upstream.close()
            exchange.error = str(exc)
            return False  # the client's connection closes unanswered, as the server's did
        except OSError as exc:
            upstream.close()
            exchange.error = "the function's server closed the connection without answering (%s)" % exc
            return False
        exchange.status = int(status_line.split()[1])
        exchange.response_head = status_line + response_head
        no_body = not answer_has_body(method, exchange.status)
        framed = no_body or "content-length" in response_fields or is_chunked(response_fields)
        server_keeps = framed and keeps_alive(status_line.split()[0].decode("latin-1"), response_fields)
        try:
            if no_body:
                client.sendall(exchange.response_head)
            else:
                exchange.response_body, exchange.response_size = relay_body(
                    upstream.reader, client.sendall, response_fields, exchange.response_head
                )
        except OSError as exc:
            upstream.close()
            exchange.error = exchange.error or "the answer was cut short (%s)" % exc
            return False
        if server_keeps and client_keeps:  # the client's `Connection: close` went to the server too: it closes
            upstream.idle_since = time.monotonic()
            with self.lock:
                self.idle.append(upstream)
        else:
            upstream.close()
        return client_keeps and server_keeps

    def _upstream(self, exchange: Exchange) -> Upstream | None:
        """A connection to the server: an idle one, or a new one; while the server is (re)starting, waited for.
        None when it does not come: the client was answered 503 (or, for a marked request, nothing)."""
        port = self.instance.server_port
        while True:
            with self.lock:
                upstream = self.idle.pop() if self.idle else None
            if upstream is None:
                break
            if upstream.port == port and not upstream.stale():
                return upstream
            upstream.close()
        deadline = time.monotonic() + SERVER_WAIT
        while not self.closing:
            port = self.instance.server_port
            try:
                return Upstream(port)
            except OSError:
                pass
            instance = self.instance
            state = instance.state
            expected = instance.serves or state in WAITED_STATES
            if not expected or time.monotonic() > deadline:
                break
            # The server says it is ready (a change of state) once it listens: try again then, not a tick later.
            instance.wait_for(functools.partial(moved_on, since=(state, port)), RETRY_SECONDS)
        exchange.status = 503 if exchange.source == "http" else 0
        exchange.error = "the function's server is not running (%s)" % self.instance.state.value
        return None

    def refuse(self, client: socket.socket, exchange: Exchange) -> None:
        """The answer when no server comes: 503 for a plain client, nothing for a marked sender."""
        if exchange.source == "http":
            text = ("%s is not serving: %s\n" % (self.instance.name, self.instance.state.value)).encode()
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(text), text)
            )


# ---------------------------------------------------------------- HTTP/1.1 framing


def read_head(reader: io.BufferedIOBase) -> tuple[bytes | None, dict[str, str]]:
    """(the header lines to forward, ending with the blank line; {lower name: value}), without SOURCE_HEADER
    and Expect. (None, …) when there are too many or too long. ConnectionAbortedError when the client's input
    ends inside it (a client that gave up): a head cut short is no request, relayed it would be taken for one."""
    kept: list[bytes] = []
    fields: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return None, fields
        if not line.endswith(b"\n"):
            raise ConnectionAbortedError("the request's head was cut short")
        if line in (b"\r\n", b"\n"):
            kept.append(b"\r\n")
            return b"".join(kept), fields
        name, value = header_of(line)
        lower = name.lower()
        fields[lower] = "%s, %s" % (fields[lower], value) if lower in fields else value
        if lower.encode() in SKIPPED_REQUEST_HEADERS:
            continue
        kept.append(line)
    return None, fields


def read_response_head(reader: io.BufferedIOBase) -> tuple[bytes, bytes, dict[str, str]]:
    """(status line, header lines with the blank line, {lower name: value}); interim 1xx answers are skipped.
    NoAnswer when the server closed the connection before an answer."""
    while True:
        try:
            status_line = reader.readline(MAX_LINE + 1)
        except ConnectionResetError as exc:
            raise NoAnswer("the function's server closed the connection without answering (%s)" % exc) from None
        if not status_line:
            raise NoAnswer("the function's server closed the connection without answering; did it crash?")
        lines, fields = [], {}
        for _ in range(MAX_HEADERS):
            line = reader.readline(MAX_LINE + 1)
            lines.append(line)
            if line in (b"\r\n", b"\n", b""):
                break
            name, value = header_of(line)
            fields[name.lower()] = value
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise NoAnswer("the function's server answered what is not HTTP: %r" % status_line[:80])
        if parts[1].startswith(b"1") and parts[1] != b"101":
            continue
        return status_line, b"".join(lines), fields


def relay_body(reader: io.BufferedIOBase, send, fields: dict[str, str], first: bytes | None) -> tuple[bytes, int]:
    """Relay one message body from `reader` to `send` in pieces (Content-Length, chunked, or until the
    connection ends when neither is given and `first` is a response's head); returns (its first MAX_BODY
    bytes, its size). `first` (a response's head) goes out with the first piece; a chunked body's head at once.
    What has arrived is sent before waiting for more (read1; a chunked body at each chunk's end): a server that
    streams its answer (server-sent events, progress) reaches its client piece by piece."""
    kept = bytearray()
    size = 0
    pending = first or b""

    def keep(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if len(kept) < MAX_BODY:
            kept.extend(data[: MAX_BODY - len(kept)])

    if is_chunked(fields):
        if pending:  # the head at once: a streamed answer's headers may come long before its first chunk
            send(pending)
            pending = b""
        while True:
            size_line = reader.readline(MAX_LINE + 1)
            if not size_line:
                raise ConnectionResetError("the body ended inside a chunk")
            length = int(size_line.split(b";")[0].strip() or b"0", 16)
            last = length == 0
            pending += size_line
            while length > 0:  # a chunk's data, in pieces
                data = reader.read1(min(length, CHUNK))
                if not data:
                    raise ConnectionResetError("the body ended inside a chunk")
                length -= len(data)
                keep(data)
                pending += data
                if len(pending) >= CHUNK:
                    send(pending)
                    pending = b""
            if last:
                while True:  # trailers, then the blank line
                    trailer = reader.readline(MAX_LINE + 1)
                    pending += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                send(pending)
                return bytes(kept), size
            send(pending + read_exactly(reader, 2))  # the chunk and its CRLF
            pending = b""
    if "content-length" in fields:
        remaining = int(fields["content-length"])
        while remaining > 0:
            data = reader.read1(min(remaining, CHUNK))
            if not data:
                raise ConnectionResetError("the body ended %d bytes early" % remaining)
            remaining -= len(data)
            keep(data)
            pending += data
            send(pending)
            pending = b""
        if pending:
            send(pending)
        return bytes(kept), size
    if first is None:  # a request without a length has no body
        return b"", 0
    if pending:
        send(pending)
    while True:  # an answer that ends when the connection does
        data = reader.read1(CHUNK)
        if not data:
            return bytes(kept), size
        keep(data)
        send(data)


def read_exactly(reader: io.BufferedIOBase, length: int) -> bytes:
    data = reader.read(length)
    if len(data) != length:
        raise ConnectionResetError("the body ended early")
    return data

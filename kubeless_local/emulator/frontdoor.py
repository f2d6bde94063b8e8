"""A function's front door: 127.0.0.1:<its port> on the host, each connection forwarded into a container
that has a network namespace of its own (the docker backend's relay and bridge modes, docker/network.py).

Guarantee:
- it listens on 127.0.0.1 only, never on another address of the machine;
- a connection it accepts reaches only the container it points at (its target). Relay mode: it asks that
  container's connector (docker/connector.py, in the container's namespace) over a unix socket in a
  private folder (0700) of the session's state, and the connector hands back a TCP connection it made to
  127.0.0.1:8080 *inside* that namespace. Bridge mode: it connects to 127.0.0.1:<the port the engine
  published for that container alone>. So whatever answers through the door is that container's server;
- bytes go through as they are, both ways; a side that cannot take more stops the reading of the other
  (asyncio's write-buffer limits: bounded memory per connection); an end that finishes sending is passed on
  as a half-close, an end that breaks aborts both;
- `point()` switches where new connections go, atomically; open ones finish where they started (the seam
  a blue/green reload switches at). `drain(target)` then moves the open connections off the old target
  without cutting a call: a keep-alive connection's next request (client bytes after an answer that start
  like an HTTP request line) goes to the current target on a new upstream connection; a connection that
  is idle (answered, flushed, nothing moved for IDLE_AFTER seconds) lets go of its old upstream and waits
  for its next request the same way; the gateway's calls on the old target (it reaches the container past the
  door, `visit`) are waited for too. So the old container can go once its calls are answered; an upgraded
  (WebSocket) or streaming connection that pauses that long is cut then;
- `close()` stops listening and aborts the open connections; the event loop's thread (one for all doors
  of the process) ends with the last door.

A door given a recorder (emulator/recorder.py) also records each call, as the process backend's door
(proxy.py) does: it reads the HTTP/1.1 framing of both directions as the bytes pass (http1.Stream: heads
copied, bodies only counted and their first MAX_BODY bytes kept), takes SOURCE_HEADER (who sends: `call`,
a trigger, `replay`; a plain client is `http`) out of each request's head before the head goes on, and
hands each exchange to the recorder once its answer ended. The code that served it is the one serving the
function then (the recorder asks the supervisor), or, for a call answered by a container the door no longer
points at (blue/green), the generation `point` gave with that container (one it reloaded in place since is
not known here). The recorder's `submit` never blocks; the heads are stored as they passed and parsed only
when a record is read, not on this loop. The runtime's own /healthz and /metrics are not recorded. A connection
that stops being HTTP/1.1 (an upgrade, a head over http1.MAX_HEAD) is relayed as it is from there, unread.

Why a handed-over connection and not a relay in the container too: the bytes cross one user-space relay
(this one) instead of two. Why one asyncio loop and not threads: a thread pair per connection spent most of
its time handing the GIL over (0.35× of host networking for a Python hello; see BENCHMARKS.md).
"""

import array
import asyncio
import collections
import concurrent.futures
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from kubeless_local.emulator import http1
from kubeless_local.emulator.portholder import held_by
from kubeless_local.emulator.recorder import MAX_BODY, NOT_CALLS, SOURCE_HEADER, Exchange, read_mark

if TYPE_CHECKING:
    from kubeless_local.emulator.recorder import Recorder

CONNECT_TIMEOUT = 65.0  # seconds for the connector's answer: longer than its own connect (connector.py)
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the loop to close the door
HANDED = b"+"  # the connector's answer with the connection as an SCM_RIGHTS file descriptor (else "-" + reason)
WRITE_LIMIT = 256 * 1024  # bytes buffered towards one side before the other side's reading pauses
REQUEST_START = re.compile(rb"[A-Z]{1,20}(?: |$)")  # an HTTP method (a new request on a kept-alive connection)
IDLE_AFTER = 1.0  # seconds without bytes, after an answer, that make a connection idle (drain)
DRAIN_TICK = 0.05  # seconds between drain's looks at the old target's connections
MARK = SOURCE_HEADER.lower().encode() + b":"  # as found in a lowered head
NOT_ANSWERED = "the connection ended before the function's server answered"
CUT_SHORT = "the connection ended before the answer did"

# Where the door sends connections: a connector's unix socket path (relay mode), or the 127.0.0.1 address
# the engine published for one container (bridge mode).
Target = Union[str, tuple[str, int]]


class PortTaken(OSError):
    """127.0.0.1:<port> is in use by another program."""


def _handed(message: bytes, ancillary: list) -> socket.socket:
    """The connection in a connector's answer; ConnectionRefusedError with its reason when there is none."""
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    handed = [socket.socket(fileno=fd) for fd in fds]
    if message[:1] == HANDED and len(handed) == 1:
        return handed[0]
    for extra in handed:
        extra.close()
    raise ConnectionRefusedError(message[1:].decode("utf-8", "replace") or "the connector closed")


async def receive_connection(connector: str) -> socket.socket:
    """A TCP connection made by the connector listening at unix socket `connector` (non-blocking); OSError
    with the connector's reason when it could not make one (nothing listens on the port, no connector)."""
    loop = asyncio.get_running_loop()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(unix, connector), CONNECT_TIMEOUT)
        readable = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(unix.fileno(), ready)
        try:
            await asyncio.wait_for(readable, CONNECT_TIMEOUT)
        finally:
            loop.remove_reader(unix.fileno())
        message, ancillary, _, _ = unix.recvmsg(512, socket.CMSG_SPACE(array.array("i").itemsize))
        return _handed(message, ancillary)
    except asyncio.TimeoutError:
        raise TimeoutError("the connector did not answer within %ds" % CONNECT_TIMEOUT) from None
    finally:
        unix.close()


async def connect_tcp(address: tuple[str, int]) -> socket.socket:
    """A TCP connection to `address` (bridge mode: the port published for the container); OSError with why."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        sock.close()
        raise ConnectionRefusedError("nothing listens on %s:%d, the container's published port" % address) from None
    except (OSError, asyncio.TimeoutError) as exc:
        sock.close()
        raise OSError("cannot connect to %s:%d: %s" % (*address, exc or "timed out")) from None
    return sock


def open_to(target: Target, timeout: float) -> socket.socket:
    """A blocking connection through `target` (readiness probes, from any thread): the connector's handed
    connection, or a TCP one; OSError with the reason when there is none."""
    if isinstance(target, tuple):
        try:
            return socket.create_connection(target, timeout=timeout)
        except ConnectionRefusedError:
            raise ConnectionRefusedError("nothing listens on %s:%d, the container's published port" % target) from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.settimeout(timeout)
        unix.connect(target)
        message, ancillary, _, _ = unix.recvmsg(512, socket.CMSG_SPACE(array.array("i").itemsize))
        handed = _handed(message, ancillary)
    handed.settimeout(timeout)
    return handed


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives is written to `peer`; flow control both ways.
    `answers`: the container's end (what it sends is an answer: drain's idle test)."""

    def __init__(self, relay: "_Relay", answers: bool = False) -> None:
        self.relay = relay
        self.answers = answers
        self.transport: Any = None
        self.peer: Optional[_Side] = None
        self.early: list[bytes] = []  # read before the other end was connected
        self.eof = False
        self.detached = False  # an old container's end the relay let go of (drain): its loss is no one's

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        transport.pause_reading()  # until both ends are connected (the bytes wait in the kernel)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay.moving and not self.answers and relay.answered and (relay.parked or REQUEST_START.match(data)):
            relay.move(data)  # a new request, and its container is going: it goes to the current one
            return
        relay.answered, relay.quiet = self.answers, 0
        if relay.calls is not None:
            data = relay.calls.passing(data, self.answers)
            if not data:
                return  # the start of a head, held until it is whole
        if self.peer is None:  # before both ends are connected (uvloop may read once before the pause)
            self.early.append(data)
            self.transport.pause_reading()
            return
        self.peer.transport.write(data)

    def link(self, peer: "_Side") -> None:
        """Connect to `peer`: what arrived before goes first, then reading starts."""
        self.peer = peer
        for data in self.early:
            peer.transport.write(data)
        self.early.clear()
        if self.eof:
            self.pass_eof()

    def eof_received(self) -> bool:
        if self.relay.parked:  # the client ended a connection between requests
            self.relay.close()
            return False
        self.eof = True
        held = self.relay.calls.ended(self.answers) if self.relay.calls is not None else b""
        if held and self.peer is not None:
            self.peer.transport.write(held)
        elif held:
            self.early.append(held)
        if self.peer is not None:  # else link() passes it on
            self.pass_eof()
        return True  # keep the other direction going

    def pass_eof(self) -> None:
        """This end finished sending: half-close the other; both finished: the connection is done."""
        assert self.peer is not None, "linked"
        if self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        if self.peer.eof:
            self.relay.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.detached:
            self.relay.lost(self, exc)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.eof:
            self.peer.transport.resume_reading()


class _Relay:
    """A client connection and the connection handed for it."""

    def __init__(self, door: "FrontDoor", target: Optional[Target]) -> None:
        self.door, self.target = door, target
        self.client = _Side(self)
        self.upstream: Optional[_Side] = None
        self.closed = False
        self.task: Optional[asyncio.Task] = None  # connect(), referenced while it runs
        self.answered = False  # the last bytes were the container's (between requests, if it stays quiet)
        self.quiet = 0  # drain's looks since bytes last moved
        self.moving = False  # its container is going (drain): its next request goes to the door's target
        self.parked = False  # moving, and let go of its old upstream: waiting for its next request
        self.generation = door.generation  # of the code behind `target` when it was pointed at (the records')
        self.calls = _Calls(self, door.recorder) if door.recorder is not None else None

    async def connect(self) -> None:
        """Connect the client to the container; nothing is read from either until both are there."""
        client, target = self.client.transport, self.target
        if target is None:
            self.abort()
            return
        try:
            sock = await (connect_tcp(target) if isinstance(target, tuple) else receive_connection(target))
        except OSError as exc:
            self.door.last_refusal = str(exc.strerror or exc) if exc.strerror else str(exc)
            self.abort()
            return
        if self.closed:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        upstream = _Side(self, answers=True)
        try:
            await loop.connect_accepted_socket(lambda: upstream, sock)
        except OSError as exc:
            self.door.last_refusal = str(exc)
            sock.close()
            self.abort()
            return
        self.upstream = upstream
        if self.closed:
            upstream.transport.abort()
            return
        self.client.link(upstream)
        upstream.link(self.client)
        if self.closed:
            return  # both ends had finished before they were linked
        client.resume_reading()
        upstream.transport.resume_reading()

    def lost(self, side: _Side, exc: Optional[Exception]) -> None:
        if exc is not None:
            self.abort()  # a reset: both go
        else:
            self.close()

    def close(self) -> None:
        """Both directions ended (or one side is gone): flush and close both ends."""
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                side.transport.close()
        self._forget()

    def idle(self) -> bool:
        """Between requests: it was answered, its answer is flushed, and nothing moved since."""
        sides = [s for s in (self.client, self.upstream) if s is not None and s.transport is not None]
        return (
            self.answered
            and self.quiet * DRAIN_TICK >= IDLE_AFTER
            and all(s.transport.get_write_buffer_size() == 0 for s in sides)
        )

    def park(self) -> None:
        """Let go of the old container's end; the client's next request connects anew (move)."""
        self._detach()
        self.moving, self.parked, self.target = True, True, None
        if not self.client.eof:
            self.client.transport.resume_reading()

    def move(self, data: bytes) -> None:
        """A new request (`data` its first bytes) on a connection whose container is going: to the door's
        target, over a new upstream connection (nothing of it reached the old one)."""
        self._detach()
        if not REQUEST_START.match(data):
            self.abort()  # not HTTP between requests (an upgraded connection): it cannot follow
            return
        self.moving = self.parked = self.answered = False
        self.target, self.generation = self.door.target, self.door.generation
        passed = self.calls.passing(data, False) if self.calls is not None else data
        if passed:
            self.client.early.append(passed)
        self.client.transport.pause_reading()
        self.task = self.door.loop.create_task(self.connect())

    def _detach(self) -> None:
        if self.calls is not None:
            self.calls.moved()
        old, self.upstream, self.client.peer = self.upstream, None, None
        if old is not None:
            old.detached, old.peer = True, None
            if old.transport is not None:
                old.transport.abort()

    def abort(self) -> None:
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                side.transport.abort()
        self._forget()

    def _forget(self) -> None:
        self.closed = True
        self.door.open.discard(self)
        if self.calls is not None:
            self.calls.finish()


class _Call:
    """One request on a relayed connection and what is kept of it for the record."""

    __slots__ = ("answer", "exchange", "recorded", "request")

    def __init__(self, exchange: Exchange, recorded: bool) -> None:
        self.exchange, self.recorded = exchange, recorded
        self.request = bytearray()  # the first MAX_BODY bytes of each body
        self.answer = bytearray()


def _keep(kept: bytearray, piece: memoryview) -> None:
    if len(kept) < MAX_BODY:
        kept += piece[: MAX_BODY - len(kept)]


class _Calls:
    """The HTTP exchanges of one relayed connection, handed to `recorder` as each answer ends (requests may be
    pipelined: answers come in their order). Runs on the doors' loop: it reads what the framing needs."""

    def __init__(self, relay: "_Relay", recorder: "Recorder") -> None:
        self.relay, self.recorder = relay, recorder
        self.requests = http1.Stream(self._request_head, self._request_body, self._request_end)
        self.answers = http1.Stream(self._answer_head, self._answer_body, self._answer_end)
        self.sent: collections.deque[_Call] = collections.deque()  # requests whose answers have not ended
        self.reading: Optional[_Call] = None  # the request whose body passes
        self.interim = False  # the answer passing is no request's: a 1xx before the real one, or unasked

    def passing(self, data: bytes, answers: bool) -> bytes:
        """The bytes to pass on for `data` (from the container when `answers`, else from the client)."""
        return self.answers.feed(data) if answers else self.requests.feed(data)

    def ended(self, answers: bool) -> bytes:
        """One end finished sending: what it held back (a head's start), to pass on; an answer that lasts until
        the connection ends is over."""
        if answers and self.answers.state == http1.UNTIL_CLOSE and self.sent and not self.interim:
            self._done(self.sent.popleft())
        return self.answers.flush() if answers else self.requests.flush()

    def finish(self) -> None:
        """The connection is gone: what was not answered is recorded so (status 0 when no answer began)."""
        self.ended(True)
        while self.sent:
            call = self.sent.popleft()
            call.exchange.error = CUT_SHORT if call.exchange.status else NOT_ANSWERED
            self._done(call)

    def moved(self) -> None:
        """The old container's end is let go (drain): what it left unanswered is recorded so, and the next
        container's answers are read from their start."""
        self.finish()
        self.answers = http1.Stream(self._answer_head, self._answer_body, self._answer_end)
        self.interim = False

    def _request_head(self, head: bytes) -> Optional[tuple[bytes, http1.Framing]]:
        line = head[: head.find(b"\n")].split()
        if len(line) != 3 or not line[2].startswith(b"HTTP/"):
            return None
        lowered = head.lower()
        framing = _framing(lowered, http1.NONE)
        if framing is None:
            return None
        mark = http1.field(lowered, MARK)
        if mark is not None:  # who sends: for the record, not for the function
            head = b"".join(part for part in head.splitlines(keepends=True) if not part.lower().startswith(MARK))
        source, trigger, replay_of = read_mark(mark.decode("latin-1") if mark is not None else None)
        method, target = line[0].decode("latin-1"), line[1].decode("latin-1")
        exchange = Exchange(
            self.relay.door.name,
            method,
            target,
            (),
            source=source,
            trigger=trigger,
            replay_of=replay_of,
            request_head=head,
        )
        call = _Call(exchange, target.partition("?")[0] not in NOT_CALLS)
        if call.recorded:
            self.recorder.started(exchange.function, method, target, source, exchange.started)
        self.sent.append(call)
        self.reading = call
        return head, framing

    def _request_body(self, piece: memoryview) -> None:
        if self.reading is not None:
            self.reading.exchange.request_size += len(piece)
            _keep(self.reading.request, piece)

    def _request_end(self) -> None:
        self.reading = None

    def _answer_head(self, head: bytes) -> Optional[tuple[bytes, http1.Framing]]:
        line = head[: head.find(b"\n")].split()
        if len(line) < 2 or not line[1].isdigit():
            return None
        status = int(line[1])
        if 100 <= status < 200 and status != 101:  # a 1xx before the answer
            self.interim = True
            return head, (http1.NONE, 0)
        self.interim = not self.sent
        if self.interim:  # an answer to no request (a server's 408 on an idle connection): followed, not kept
            return head, _framing(head.lower(), http1.UNTIL_CLOSE) or (http1.OPAQUE, 0)
        call = self.sent[0]
        call.exchange.status, call.exchange.response_head = status, head
        if status == 101:  # upgraded: no longer HTTP/1.1 from here
            self.requests.opaque()
            self._done(self.sent.popleft())
            return head, (http1.OPAQUE, 0)
        if not http1.answer_has_body(call.exchange.method, status):
            return head, (http1.NONE, 0)
        return head, _framing(head.lower(), http1.UNTIL_CLOSE) or (http1.OPAQUE, 0)

    def _answer_body(self, piece: memoryview) -> None:
        if self.sent and not self.interim:
            self.sent[0].exchange.response_size += len(piece)
            _keep(self.sent[0].answer, piece)

    def _answer_end(self) -> None:
        if self.interim:
            self.interim = False
        elif self.sent:
            self._done(self.sent.popleft())

    def _done(self, call: _Call) -> None:
        exchange = call.exchange
        exchange.duration = time.time() - exchange.started
        exchange.request_body, exchange.response_body = bytes(call.request), bytes(call.answer)
        relay = self.relay
        if relay.target != relay.door.target:  # a container the door no longer points at: the code it started
            exchange.generation = relay.generation  # with (else the code serving now: the recorder asks)
        if self.reading is call:
            self.reading = None
        if call.recorded:
            self.recorder.submit(exchange)


def _framing(lowered: bytes, otherwise: str) -> Optional[http1.Framing]:
    """How a message's body is framed, by its lowered head (`otherwise`: neither header); None when its length
    is not digits alone (RFC 9110: a sign, a space or an underscore, which int() would take, would have the door
    and the server read the body differently; the gateway refuses the same lengths)."""
    encoding = http1.field(lowered, b"transfer-encoding:")
    if encoding is not None and b"chunked" in encoding:
        return http1.CHUNKED, 0
    length = http1.field(lowered, b"content-length:")
    if length is None:
        return otherwise, 0
    return (http1.LENGTH, int(length)) if length.isdigit() else None


def new_loop() -> asyncio.AbstractEventLoop:
    """The doors' loop: asyncio's own (uvloop measured no cheaper per request here: BENCHMARKS.md)."""
    return asyncio.new_event_loop()


class _Loop:
    """The event loop thread all doors of the process share; it ends with the last door."""

    lock = threading.Lock()
    loop: Optional[asyncio.AbstractEventLoop] = None
    thread: Optional[threading.Thread] = None
    users = 0

    @classmethod
    def acquire(cls) -> asyncio.AbstractEventLoop:
        with cls.lock:
            if cls.loop is None:
                loop = new_loop()
                cls.thread = threading.Thread(target=loop.run_forever, name="front doors", daemon=True)
                cls.loop = loop
                cls.thread.start()
            cls.users += 1
            return cls.loop

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users or cls.loop is None:
                return
            loop, thread, cls.loop, cls.thread = cls.loop, cls.thread, None, None
        loop.call_soon_threadsafe(loop.stop)
        assert thread is not None, "a loop runs in its thread"
        thread.join(CLOSE_TIMEOUT)
        loop.close()


class FrontDoor:
    """127.0.0.1:`port` → the target it points at (None: refuse, by closing at once)."""

    def __init__(self, port: int, name: str = "", recorder: Optional["Recorder"] = None) -> None:
        """Listens at once; PortTaken when another program has the port. `recorder`: each call of function
        `name` is recorded there (None: the bytes are relayed unread)."""
        self.port, self.name, self.recorder = port, name, recorder
        self.target: Optional[Target] = None
        self.generation: Optional[int] = None  # of the code behind `target`
        self.last_refusal = ""  # why the last connection could not be handed on (readiness explains with it)
        self.open: set[_Relay] = set()
        # calls the gateway has in flight on a target past this door (Reach, base.py): drain waits for them too
        self.visits: collections.Counter = collections.Counter()
        self.visits_lock = threading.Lock()
        self.draining: set[asyncio.Task] = set()  # drain()s running: close() ends them
        self.closed = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR: connections of an earlier door in TIME_WAIT do not block the port; a program that
        # listens on it (a stale server) still does, on Linux, as it must
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(1024)
        except OSError as exc:
            self.listener.close()
            holder = held_by(port) or " by another program"
            raise PortTaken(exc.errno, "127.0.0.1:%d is in use%s" % (port, holder)) from None
        self.loop = _Loop.acquire()
        self.server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(self._relay, sock=self.listener), self.loop
        ).result(CLOSE_TIMEOUT)

    def _relay(self) -> asyncio.Protocol:
        relay = _Relay(self, self.target)
        self.open.add(relay)

        def connect() -> None:  # after connection_made, which the transport schedules first
            relay.task = self.loop.create_task(relay.connect())

        self.loop.call_soon(connect)
        return relay.client

    def point(self, target: Union[Path, str, tuple[str, int], None], generation: Optional[int] = None) -> None:
        """New connections go to `target` (a connector's unix socket path, or a TCP address), where code
        `generation` serves (what the records say); None: they are refused."""
        with self.visits_lock:  # a visit counted on the old target is counted before a drain of it looks
            self.target = target if target is None or isinstance(target, tuple) else str(target)
            self.generation = generation
        self.last_refusal = ""

        async def mark() -> None:  # before the switch returns: a kept-alive client's next request follows it
            for relay in self.open:
                relay.moving = relay.moving or relay.target != self.target

        if not self.closed:
            try:
                asyncio.run_coroutine_threadsafe(mark(), self.loop).result(CLOSE_TIMEOUT)
            except RuntimeError:
                pass  # the door closed meanwhile: no connection is left to follow it

    def visit(self, target: Target, calls: int) -> bool:
        """Another relay (the gateway) starts (`calls` 1) or ends (-1) a call on `target` past this door; a drain of
        `target` waits until its visits end too. Starting one is refused (False) when the door no longer points
        there: the target may be drained already, so the caller asks where the door points now."""
        with self.visits_lock:
            if calls > 0 and target != self.target:
                return False
            self.visits[target] += calls
            if self.visits[target] <= 0:
                del self.visits[target]
            return True

    def drain(self, target: Union[Path, str, tuple[str, int]], timeout: float) -> int:
        """Move the open connections off `target` (no longer pointed at) as each finishes its call (see the
        module's docstring); returns once none is left on it, or after `timeout` seconds with those still
        busy aborted: how many that was."""
        wanted = target if isinstance(target, tuple) else str(target)

        async def drain() -> int:
            deadline = time.monotonic() + timeout
            task = asyncio.current_task()
            assert task is not None, "a task of the loop"
            self.draining.add(task)
            try:
                return await drained(deadline)
            finally:
                self.draining.discard(task)

        async def drained(deadline: float) -> int:
            while True:
                left = [r for r in self.open if r.target == wanted]
                if not left and not self.visits.get(wanted):  # the gateway's calls there are its own to end
                    return 0
                if time.monotonic() > deadline:
                    for relay in left:
                        relay.abort()
                    return len(left)
                for relay in left:
                    relay.moving = True
                    if relay.idle():
                        relay.park()
                    relay.quiet += 1
                await asyncio.sleep(DRAIN_TICK)

        try:
            future = asyncio.run_coroutine_threadsafe(drain(), self.loop)
        except RuntimeError:  # the loop closed with the door: its connections went with it
            return 0
        while True:
            try:
                return future.result(CLOSE_TIMEOUT)
            except concurrent.futures.TimeoutError:
                if self.closed:  # its loop may have stopped with it: nothing runs the drain any more
                    if not self.loop.is_closed():
                        future.cancel()
                    return 0
            except concurrent.futures.CancelledError:
                return 0

    def close(self) -> None:
        """Stop listening and abort the open connections; returns once the loop did (CLOSE_TIMEOUT at most)."""

        async def close() -> None:
            self.server.close()
            for task in list(self.draining):
                task.cancel()
            relays = list(self.open)
            connecting = [r.task for r in relays if r.task is not None and not r.task.done()]
            for relay in relays:
                relay.abort()
            for task in connecting:
                task.cancel()  # its unix socket closes, and with it a connection handed but not yet taken
            await asyncio.gather(*connecting, return_exceptions=True)
            await asyncio.sleep(0)  # the transports' closing callbacks run

        self.closed = True
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(CLOSE_TIMEOUT)
        finally:
            _Loop.release()

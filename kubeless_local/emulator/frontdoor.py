"""A function's front door: 127.0.0.1:<its port> on the host, each connection forwarded into a container
that has a network namespace of its own (the docker backend's relay mode, docker/network.py).

Guarantee:
- it listens on 127.0.0.1 only, never on another address of the machine;
- a connection it accepts reaches only the container it points at: it asks that container's connector
  (docker/connector.py, in the container's namespace) over a unix socket in a private folder (0700) of the
  session's state, and the connector hands back a TCP connection it made to 127.0.0.1:8080 *inside* that
  namespace. So whatever answers through the door is that container's server, by construction;
- bytes go through as they are, both ways; a side that cannot take more stops the reading of the other
  (asyncio's write-buffer limits: bounded memory per connection); an end that finishes sending is passed on
  as a half-close, an end that breaks aborts both;
- `point()` switches where new connections go, atomically; open ones finish where they started (the seam
  a blue/green reload switches at);
- `close()` stops listening and aborts the open connections; the event loop's thread (one for all doors
  of the process) ends with the last door.

Why a handed-over connection and not a relay in the container too: the bytes cross one user-space relay
(this one) instead of two. Why one asyncio loop and not threads: a thread pair per connection spent most of
its time handing the GIL over (0.35× of host networking for a Python hello; see BENCHMARKS.md).
"""

import array
import asyncio
import socket
import threading
from pathlib import Path
from typing import Any, Optional

CONNECT_TIMEOUT = 65.0  # seconds for the connector's answer: longer than its own connect (connector.py)
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the loop to close the door
HANDED = b"+"  # the connector's answer with the connection as an SCM_RIGHTS file descriptor (else "-" + reason)
WRITE_LIMIT = 256 * 1024  # bytes buffered towards one side before the other side's reading pauses


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


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives is written to `peer`; flow control both ways."""

    def __init__(self, relay: "_Relay") -> None:
        self.relay = relay
        self.transport: Any = None
        self.peer: Optional[_Side] = None
        self.early: list[bytes] = []  # read before the other end was connected
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        transport.pause_reading()  # until both ends are connected (the bytes wait in the kernel)

    def data_received(self, data: bytes) -> None:
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
        self.eof = True
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
        self.relay.lost(self, exc)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.eof:
            self.peer.transport.resume_reading()


class _Relay:
    """A client connection and the connection handed for it."""

    def __init__(self, door: "FrontDoor") -> None:
        self.door = door
        self.client = _Side(self)
        self.upstream: Optional[_Side] = None
        self.closed = False
        self.task: Optional[asyncio.Task] = None  # connect(), referenced while it runs

    async def connect(self, connector: Optional[str]) -> None:
        """Connect the client to the container; nothing is read from either until both are there."""
        client = self.client.transport
        if connector is None:
            self.abort()
            return
        try:
            sock = await receive_connection(connector)
        except OSError as exc:
            self.door.last_refusal = str(exc.strerror or exc) if exc.strerror else str(exc)
            self.abort()
            return
        if self.closed:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        upstream = _Side(self)
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

    def abort(self) -> None:
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                side.transport.abort()
        self._forget()

    def _forget(self) -> None:
        self.closed = True
        self.door.open.discard(self)


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
    """127.0.0.1:`port` → the connector it points at (None: refuse, by closing at once)."""

    def __init__(self, port: int, name: str = "") -> None:
        """Listens at once; PortTaken when another program has the port."""
        self.port, self.name = port, name
        self.connector: Optional[str] = None
        self.last_refusal = ""  # why the last connection could not be handed on (readiness explains with it)
        self.open: set[_Relay] = set()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR: connections of an earlier door in TIME_WAIT do not block the port; a program that
        # listens on it (a stale server) still does, on Linux, as it must
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(1024)
        except OSError as exc:
            self.listener.close()
            raise PortTaken(exc.errno, "127.0.0.1:%d is in use by another program" % port) from None
        self.loop = _Loop.acquire()
        self.server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(self._relay, sock=self.listener), self.loop
        ).result(CLOSE_TIMEOUT)

    def _relay(self) -> asyncio.Protocol:
        relay = _Relay(self)
        self.open.add(relay)

        def connect() -> None:  # after connection_made, which the transport schedules first
            relay.task = self.loop.create_task(relay.connect(self.connector))

        self.loop.call_soon(connect)
        return relay.client

    def point(self, connector: Optional[Path]) -> None:
        """New connections go to `connector` (a unix socket path); None: they are refused."""
        self.connector = str(connector) if connector is not None else None
        self.last_refusal = ""

    def close(self) -> None:
        """Stop listening and abort the open connections; returns once the loop did (CLOSE_TIMEOUT at most)."""

        async def close() -> None:
            self.server.close()
            relays = list(self.open)
            connecting = [r.task for r in relays if r.task is not None and not r.task.done()]
            for relay in relays:
                relay.abort()
            for task in connecting:
                task.cancel()  # its unix socket closes, and with it a connection handed but not yet taken
            await asyncio.gather(*connecting, return_exceptions=True)
            await asyncio.sleep(0)  # the transports' closing callbacks run

        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(CLOSE_TIMEOUT)
        finally:
            _Loop.release()

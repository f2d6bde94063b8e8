"""A function's front door: 127.0.0.1:<its port> on the host, each connection forwarded into a container
that has a network namespace of its own (the docker backend's relay mode, docker/network.py).

Guarantee:
- it listens on 127.0.0.1 only, never on another address of the machine;
- a connection it accepts reaches only the container it points at: it asks that container's connector
  (docker/connector.py, in the container's namespace) over a unix socket in a private folder (0700) of the
  session's state, and the connector hands back a TCP connection it made to 127.0.0.1:8080 *inside* that
  namespace. So whatever answers through the door is that container's server, by construction;
- bytes go through as they are, both ways, through one bounded buffer (BUFFER) per direction; an end that
  finishes sending is passed on as a half-close, an end that breaks closes both;
- `point()` switches where new connections go, atomically; open ones finish where they started (the seam
  a blue/green reload switches at);
- `close()` stops listening, ends every open connection and returns once every thread it started ended.

Why a handed-over connection and not a second relay in the container: the bytes cross one user-space
relay (this one) instead of two.
"""

import array
import socket
import threading
from pathlib import Path
from typing import Optional

BUFFER = 256 * 1024  # bytes read at once per direction (bounded: a slow reader stops the sender)
CONNECT_TIMEOUT = 5.0  # seconds for the connector's answer
JOIN_TIMEOUT = 5.0  # seconds close() waits for the connections' threads
REFUSED = b"-"  # the connector's answer when it could not connect (then the reason, as text)
HANDED = b"+"  # the connector's answer with the connection as an SCM_RIGHTS file descriptor


class PortTaken(OSError):
    """127.0.0.1:<port> is in use by another program."""


def receive_connection(connector: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A TCP connection made by the connector listening at unix socket `connector`; OSError with the
    connector's reason when it could not make one (nothing listens on the port, the connector is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.settimeout(timeout)
        unix.connect(connector)
        fds = array.array("i")
        message, ancillary, _, _ = unix.recvmsg(512, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        handed = [socket.socket(fileno=fd) for fd in fds]
        if message[:1] == HANDED and len(handed) == 1:
            handed[0].setblocking(True)
            return handed[0]
        for extra in handed:
            extra.close()
        raise ConnectionRefusedError(message[1:].decode("utf-8", "replace") or "the connector closed")


class Connection:
    """One client connection and the connection handed for it: two relay directions."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.lock = threading.Lock()
        self.finished = 0  # directions done; both: close the sockets

    def relay(self, source: socket.socket, sink: socket.socket) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while True:
                size = source.recv_into(buffer)
                if not size:
                    sink.shutdown(socket.SHUT_WR)  # pass the half-close on: the other direction goes on
                    break
                sink.sendall(view[:size])
        except OSError:
            self.abort()  # a reset or a close(): both ends go
        finally:
            self._done()

    def abort(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv
            except OSError:
                pass  # not connected (anymore)

    def _done(self) -> None:
        with self.lock:
            self.finished += 1
            if self.finished < 2:
                return
        self.client.close()
        self.upstream.close()


class FrontDoor:
    """127.0.0.1:`port` → the connector it points at (None: refuse, by closing at once)."""

    def __init__(self, port: int, name: str = "") -> None:
        """Listens at once; PortTaken when another program has the port."""
        self.port, self.name = port, name
        self.connector: Optional[str] = None
        self.last_refusal = ""  # why the last connection could not be handed on (readiness explains with it)
        self.lock = threading.Lock()
        self.open: set[Connection] = set()
        self.threads: set[threading.Thread] = set()
        self.closed = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR: connections of an earlier door in TIME_WAIT do not block the port; a program that
        # listens on it (a stale server) still does, on Linux, as it must
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(128)
        except OSError as exc:
            self.listener.close()
            raise PortTaken(exc.errno, "127.0.0.1:%d is in use by another program" % port) from None
        self.acceptor = threading.Thread(target=self._accept, name="front door %s" % name, daemon=True)
        self.acceptor.start()

    def point(self, connector: Optional[Path]) -> None:
        """New connections go to `connector` (a unix socket path); None: they are refused."""
        with self.lock:
            self.connector = str(connector) if connector is not None else None
            self.last_refusal = ""

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                if self.closed:
                    client.close()
                    return
                thread = threading.Thread(target=self._serve, args=(client, self.connector), daemon=True)
                self.threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket, connector: Optional[str]) -> None:
        try:
            if connector is None:
                client.close()
                return
            try:
                upstream = receive_connection(connector)
            except OSError as exc:
                self.last_refusal = str(exc.strerror or exc) if isinstance(exc, ConnectionRefusedError) else str(exc)
                client.close()
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = Connection(client, upstream)
            with self.lock:
                if self.closed:
                    connection.abort()
                self.open.add(connection)
            back = threading.Thread(target=connection.relay, args=(upstream, client), daemon=True)
            with self.lock:
                self.threads.add(back)
            back.start()
            connection.relay(client, upstream)
            back.join()
            with self.lock:
                self.open.discard(connection)
                self.threads.discard(back)
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())

    def close(self) -> None:
        """Stop listening, end the open connections, wait for the threads (JOIN_TIMEOUT at most)."""
        with self.lock:
            self.closed = True
            connections = list(self.open)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (a close alone does not, on Linux)
        except OSError:
            pass
        self.listener.close()
        self.acceptor.join(JOIN_TIMEOUT)
        for connection in connections:
            connection.abort()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(JOIN_TIMEOUT)

"""Sockets on 127.0.0.1 for the tests: a free port, a port held taken, a port that refuses, an HTTP answer read off a raw connection,
a server that answers with scripted raw bytes."""

import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Optional


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; the test hands it to a server at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@contextlib.contextmanager
def refusing_port(among: Iterable[int] = (0,)) -> Iterator[int]:
    """A port where every connection is refused, for as long as the block runs: bound but never listening,
    so no other program (another test's server) can take it meanwhile, as one could a free_port(). `among`:
    the ports to try, in order (0: the kernel's pick)."""
    with socket.socket() as sock:
        for port in among:
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                break
        else:
            raise AssertionError("none of the ports %s is free" % list(among))
        yield sock.getsockname()[1]


def read_to_end(sock: socket.socket) -> bytes:
    """Every byte the peer sends until it closes the connection; closes `sock`."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    return data


def answer_of(sock: socket.socket) -> tuple[int, str]:
    """(status, body) of the answer on a raw `Connection: close` connection (a chunked body decoded)."""
    head, _, body = read_to_end(sock).partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        decoded = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            length = int(size.split(b";")[0], 16)
            if length == 0:
                break
            decoded, body = decoded + rest[:length], rest[length + 2 :]
        body = decoded
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


def status_of(sock: socket.socket) -> int:
    """The status code of the answer on a raw connection, read as soon as its header has arrived; closes `sock`."""
    data = b""
    with sock:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    assert data.startswith(b"HTTP/1."), "no HTTP answer: %r" % data[:200]
    return int(data.split(b" ", 2)[1])


@contextlib.contextmanager
def scripted_server(answers: Iterable[Optional[bytes]]) -> Iterator[tuple[int, list[socket.socket]]]:
    """A server on 127.0.0.1 that answers each request it reads on a connection with the next of `answers`
    (raw bytes, sent as they are; None, or no answer left, closes the connection; an HTTP/1.0 answer ends
    its connection). Yields (port, connections accepted so far); stops listening when the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    script = iter(answers)

    def serve() -> None:
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return  # the block ended: the listener is closed
                accepted.append(conn)
                with conn, conn.makefile("rb") as reader:
                    while _read_request(reader) and (answer := next(script, None)) is not None:
                        conn.sendall(answer)
                        if answer.startswith(b"HTTP/1.0"):
                            break  # its body ends with the connection

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()


def _read_request(reader: BinaryIO) -> bool:
    """Reads one request (head, and a body of its Content-Length); False when the peer closed instead."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            break
        head += line
    if not head:
        return False
    lengths = [
        value for name, _, value in (h.partition(b": ") for h in head.split(b"\r\n")) if name == b"Content-Length"
    ]
    reader.read(int(lengths[0]) if lengths else 0)
    return True

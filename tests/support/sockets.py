"""Sockets on 127.0.0.1 for the tests: a free port, a port held taken, an HTTP answer read off a raw connection."""

import contextlib
import socket
from collections.abc import Iterator


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

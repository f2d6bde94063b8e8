"""The front door (emulator/frontdoor.py) with the relay's connector (docker/connector.py) on a real unix
socket, no Docker: the connector connects to a TCP server on 127.0.0.1 standing in for the container's."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sockets import free_port
from waiting import wait_until

from kubeless_local.emulator import frontdoor
from kubeless_local.emulator.docker import connector


class Connector:
    """connector.py's accept loop, in a thread, handing connections to `port` (a unix socket in tmp)."""

    def __init__(self, folder, port):
        self.path = str(folder / "c.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.port = port
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            connector.hand_over(client, self.port)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


class Upstream:
    """A TCP server on 127.0.0.1: each connection answers `tag` + everything it read, after the client's
    half-close (so the test sees both directions and the half-close pass through the door)."""

    def __init__(self, tag):
        self.tag = tag
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.port = self.address[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn:
            data = bytearray()
            try:
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(self.tag + bytes(data))
            except OSError:
                pass  # the door closed the connection (test_close_…)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def parts(tmp_path):
    made = []

    def make(kind, *args):
        part = kind(*args)
        made.append(part)
        return part

    yield make
    for part in reversed(made):
        part.close()


def call(port, payload):
    """What the door answers to `payload` (b"": closed without an answer, reset included)."""
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            raise
        except OSError:
            pass  # reset or not connected: the door closed it
    return bytes(answer)


def test_bytes_go_through_both_ways_with_the_half_close(tmp_path, parts):
    upstream = parts(Upstream, b"A:")
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    door.point(parts(Connector, tmp_path, upstream.port).path)
    payload = os.urandom(3 * frontdoor.WRITE_LIMIT + 17)  # more than the write limit: flow control works
    assert call(door.port, payload) == b"A:" + payload
    assert call(door.port, b"") == b"A:"


def test_point_switches_new_connections_and_none_refuses(tmp_path, parts):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    assert call(door.port, b"x") == b""  # pointing nowhere: closed at once
    door.point(parts(Connector, tmp_path / "a", parts(Upstream, b"A:").port).path)
    assert call(door.port, b"x") == b"A:x"
    door.point(parts(Connector, tmp_path / "b", parts(Upstream, b"B:").port).path)
    assert call(door.port, b"x") == b"B:x"


def test_nothing_listening_in_the_container_is_the_reason_given(tmp_path, parts):
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    closed = free_port()
    door.point(parts(Connector, tmp_path, closed).path)
    assert call(door.port, b"GET / HTTP/1.0\r\n\r\n") == b""
    assert door.last_refusal == "nothing listens on port %d in the container" % closed


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_a_port_another_program_listens_on_is_refused(parts, address):
    stale = socket.create_server((address, 0))  # a stale server, on loopback or every address
    try:
        held = r"127\.0\.0\.1:\d+ is in use by `.*` \(pid %d\)" % os.getpid()  # this process: named
        with pytest.raises(frontdoor.PortTaken, match=held):
            frontdoor.FrontDoor(stale.getsockname()[1], "fn")
    finally:
        stale.close()


def test_it_listens_on_loopback_only(parts):
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    assert door.listener.getsockname() == ("127.0.0.1", door.port)


def test_close_ends_open_connections_and_every_thread(tmp_path, parts):
    upstream = parts(Upstream, b"A:")
    conn = parts(Connector, tmp_path, upstream.port)
    baseline = threading.active_count()
    door = frontdoor.FrontDoor(free_port(), "fn")
    door.point(conn.path)
    held = [socket.create_connection(("127.0.0.1", door.port), timeout=10) for _ in range(3)]
    for sock in held:
        sock.sendall(b"in flight")  # never half-closed: the relay threads wait in recv
    wait_until(lambda: len(door.open) == 3, "three connections relayed", timeout=10)
    door.close()
    for sock in held:
        try:
            assert sock.recv(100) == b""  # closed by the door
        except ConnectionResetError:
            pass  # closed by the door, the request unread
        sock.close()
    assert not door.open and frontdoor._Loop.thread is None  # the loop's thread ended with the last door
    wait_until(lambda: threading.active_count() <= baseline, "no thread left (the upstream's ended too)", timeout=10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", door.port), timeout=2)


def test_a_long_state_folder_is_reached_through_the_folder_descriptor(tmp_path):
    from kubeless_local.emulator.docker.backend import SOCKET_PATH_MAX, _Relay

    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    relay = _Relay(container=None, folder=deep)
    try:
        assert len(str(deep / "connector.sock")) > SOCKET_PATH_MAX
        assert str(relay.connector) == "/proc/self/fd/%d/connector.sock" % relay.folder_fd
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(relay.connector))  # the same socket file as the long path names
        assert (deep / "connector.sock").exists()
        server.close()
    finally:
        relay.close()
    assert not deep.exists()


def held_lifeline(path):
    """dev's lifeline to the connector listening at `path` (once it takes one)."""
    life = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wait_until(lambda: life.connect_ex(str(path) + ".life") == 0, "the connector's lifeline socket", timeout=10)
    return life


def test_the_connector_exits_when_its_lifeline_ends(tmp_path):
    """connector.py (the relay container's program) never outlives dev: dev holds SOCKET.life; its end
    (dev stopped or killed: the kernel closes it) ends the connector, and so the container. Its socket appears
    only once the lifeline is held: dev cannot die between seeing it and holding the lifeline."""
    path = tmp_path / "c.sock"
    proc = subprocess.Popen([sys.executable, connector.__file__, str(path), str(free_port())])
    try:
        wait_until(lambda: Path(str(path) + ".life").exists(), "the connector's lifeline socket", timeout=10)
        assert not path.exists()
        life = held_lifeline(path)
        wait_until(path.exists, "the connector listening", timeout=10)
        assert proc.poll() is None
        life.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class KeptAlive(Upstream):
    """An HTTP-ish server on 127.0.0.1 keeping connections open: each request (up to a blank line) is answered
    `tag` + its first line; a request for /slow waits for `release` first. `open` counts its connections."""

    def __init__(self, tag):
        self.open, self.release = 0, threading.Event()
        super().__init__(tag)

    def answer(self, conn):
        self.open += 1
        with conn:
            data = b""
            try:
                while chunk := conn.recv(65536):
                    data += chunk
                    while b"\r\n\r\n" in data:
                        request, data = data.split(b"\r\n\r\n", 1)
                        if b"/slow" in request:
                            self.release.wait(10)
                        conn.sendall(self.tag + request.split(b"\r\n")[0] + b"\n")
            except OSError:
                pass
        self.open -= 1

    def close(self):
        self.release.set()
        super().close()


def ask(sock, path):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "closed after %r" % answer
        answer += chunk
    return answer


def test_drain_moves_kept_alive_connections_to_the_new_target_and_lets_calls_in_flight_finish(parts, monkeypatch):
    """The blue/green switch (bridge mode's TCP targets): a kept-alive connection's next request goes to the
    new container, an idle one lets go of the old, and a call in flight on the old one is answered there."""
    monkeypatch.setattr(frontdoor, "IDLE_AFTER", 0.2)  # the unit suite's time: idle sooner than a user's 1 s
    old, new = parts(KeptAlive, b"old:"), parts(KeptAlive, b"new:")
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    door.point(old.address)
    kept, idle, slow = (socket.create_connection(("127.0.0.1", door.port), timeout=10) for _ in range(3))
    assert ask(kept, b"/1") == ask(idle, b"/1") == b"old:GET /1 HTTP/1.1\n"
    slow.sendall(b"GET /slow HTTP/1.1\r\n\r\n")  # in flight: the old container has it
    wait_until(lambda: old.open == 3, "three connections on the old one", timeout=10)
    door.point(new.address)
    drained = []
    drainer = threading.Thread(target=lambda: drained.append(door.drain(old.address, 30)))
    drainer.start()
    assert ask(kept, b"/2") == b"new:GET /2 HTTP/1.1\n"  # its next request: the new one answers
    wait_until(lambda: old.open == 1, "the idle one let go of the old container", timeout=10)
    assert drainer.is_alive()  # the slow call is not answered yet
    old.release.set()
    assert slow.recv(100) == b"old:GET /slow HTTP/1.1\n"  # answered whole where it started
    drainer.join(10)
    assert drained == [0]  # nothing was cut
    assert ask(slow, b"/5") == b"new:GET /5 HTTP/1.1\n" and ask(idle, b"/6") == b"new:GET /6 HTTP/1.1\n"
    for sock in (kept, idle, slow):
        sock.close()


def test_drain_waits_for_the_gateways_calls_on_the_old_target_and_a_visit_there_after_the_switch_is_refused(parts):
    """The gateway reaches a container past its door (base.Reach): its calls in flight on the old container hold
    a blue/green drain as the door's own do; once the door points elsewhere, no new call may start there."""
    door = parts(frontdoor.FrontDoor, free_port(), "fn")
    old, new = ("127.0.0.1", 1), ("127.0.0.1", 2)
    door.point(old, 1)
    assert door.visit(old, 1) and door.visit(old, 1)  # two gateway calls on the old container
    door.point(new, 2)
    assert not door.visit(old, 1)  # the old one may be on its way out: the gateway connects to the new one
    assert door.visit(new, 1)
    drained = []
    drainer = threading.Thread(target=lambda: drained.append(door.drain(old, 30)))
    drainer.start()
    wait_until(lambda: door.draining, "the drain looks at the old target", timeout=10)
    door.visit(old, -1)
    assert not drained and drainer.is_alive()  # one call still in flight there: the old container stays
    door.visit(old, -1)
    drainer.join(10)
    assert drained == [0] and door.visits == {new: 1}

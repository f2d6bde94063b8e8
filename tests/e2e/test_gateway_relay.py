"""The gateway's relay against a function server it reaches directly, as on the process backend (issue O):
answers streamed as they come, a restarting server waited for on its new port, each call recorded by the
gateway with source=gateway and the trigger. The function server is a socket in a thread, so what it sends
and when is exact."""

import socket
import threading
from types import SimpleNamespace

import pytest
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.emulator.base import Reach
from kubeless_local.emulator.gateway import Gateway
from kubeless_local.emulator.logs import LogHub

TRIGGER = {
    "apiVersion": specs.API_VERSION,
    "kind": "HTTPTrigger",
    "metadata": {"name": "t"},
    "spec": {"function-name": "f", "host-name": "f.test", "path": "f"},
}


class FunctionServer:
    """127.0.0.1:<port>; each connection's first request is handed to `answer(sock, request)` in a thread."""

    def __init__(self, answer):
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.requests: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        with sock:
            request = b""
            while b"\r\n\r\n" not in request:
                data = sock.recv(65536)
                if not data:
                    return
                request += data
            self.requests.append(request)
            self.answer(sock, request)

    def close(self):
        self.listener.close()


class Recorded:
    """The recorder's two calls the gateway makes; `submitted()`: the exchanges, once there is one."""

    def __init__(self):
        self.starts, self.exchanges = [], []

    def started(self, *args):
        self.starts.append(args)

    def submit(self, exchange):
        self.exchanges.append(exchange)
        return "id"

    def submitted(self):
        wait_until(lambda: self.exchanges, "the call recorded", timeout=30)
        return self.exchanges


@pytest.fixture
def gateway(tmp_path):
    """(gateway, instances): the gateway routes f.test/f to function f, whose server is the instance that
    `instances[0]` names (its server_port), as `wait_ready` answers; a recorder records its calls."""
    instances: list = []
    recorder = Recorded()
    spec = SimpleNamespace(timeout="30")
    supervisor = SimpleNamespace(
        wait_ready=lambda name, timeout: (instances[0], spec) if instances else None,
        recorder=recorder,
        server_target=lambda instance: Reach(("127.0.0.1", instance.server_port)),
    )
    fn = specs.FunctionSpec(name="f", runtime="python3.11", handler="h.f", origin="f.yaml", function="x")
    trigger = specs.parse_http_trigger(TRIGGER, tmp_path / "t.yaml")
    gateway = Gateway(supervisor, LogHub(), tmp_path, port=0)
    gateway.update(specs.Manifests(functions=[fn], http_triggers=[trigger]))
    yield gateway, instances, recorder
    gateway.stop()


def instance(port, state="Ready"):
    return SimpleNamespace(name="f", url="http://127.0.0.1:1", server_port=port, state=SimpleNamespace(value=state))


def request(gateway):
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    sock.sendall(b"GET /f/x?q=1 HTTP/1.1\r\nHost: f.test\r\n\r\n")
    return sock


def read_until(sock, marker, received=b""):
    while marker not in received:
        data = sock.recv(65536)
        assert data, "the connection ended before %r: %r" % (marker, received)
        received += data
    return received


def in_two_parts(first, rest, keep_alive):
    """A FunctionServer that answers `first`, then `rest` once the returned event is set (and with
    `keep_alive` holds the connection until the gateway lets go)."""
    second = threading.Event()

    def answer(sock, _):
        sock.sendall(first)
        assert second.wait(30)
        sock.sendall(rest)
        if keep_alive:
            sock.recv(1)

    return FunctionServer(answer), second


def test_a_chunked_answer_is_relayed_piece_by_piece_and_recorded(gateway):
    gateway, instances, recorder = gateway
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Fn: 1\r\n\r\n"
    server, second = in_two_parts(head + b"3\r\none\r\n", b"3\r\ntwo\r\n0\r\n\r\n", keep_alive=True)
    instances.append(instance(server.port))
    with request(gateway) as sock:
        first = read_until(sock, b"one")  # before the function sent the rest: not held whole
        second.set()
        received = read_until(sock, b"0\r\n\r\n", first)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.lower().count(b"transfer-encoding: chunked") == 1 and b"X-Fn: 1" in head
    assert body == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
    assert server.requests[0].startswith(b"GET /?q=1 HTTP/1.1\r\n")  # the nginx rewrite, past the front door
    assert b"x-kubeless-local-source" not in server.requests[0].lower()
    exchange = recorder.submitted()[0]
    assert (exchange.source, exchange.trigger, exchange.function, exchange.status) == ("gateway", "t", "f", 200)
    assert (exchange.response_body, exchange.response_size, exchange.error) == (b"onetwo", 6, "")
    assert exchange.request_head.startswith(b"GET /?q=1 HTTP/1.1\r\n") and b"X-Forwarded-For" in exchange.request_head
    assert recorder.starts[0][:4] == ("f", "GET", "/?q=1", "gateway")
    server.close()


def test_an_answer_without_a_length_ends_with_its_connection(gateway):
    gateway, instances, recorder = gateway
    server, rest = in_two_parts(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1", b"part2", keep_alive=False)
    instances.append(instance(server.port))
    with request(gateway) as sock:
        first = read_until(sock, b"part1")
        rest.set()
        received = first
        while True:  # until the gateway closes the client's connection too
            data = sock.recv(65536)
            if not data:
                break
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and body == b"part1part2"
    assert recorder.submitted()[0].response_body == b"part1part2" and recorder.exchanges[0].error == ""
    server.close()


def test_a_restarting_server_is_waited_for_on_its_new_port(gateway):
    """The server's private port refuses (it restarts); the next look at the function names a new port."""
    gateway, _, recorder = gateway
    server = FunctionServer(lambda sock, _: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = closed.getsockname()[1]  # bound, not listening: refused
        looks = []

        def wait_ready(name, timeout):
            looks.append(timeout)
            return (instance(gone) if len(looks) < 3 else instance(server.port), SimpleNamespace(timeout="30"))

        gateway.supervisor.wait_ready = wait_ready
        with request(gateway) as sock:
            received = read_until(sock, b"\r\n\r\nok")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(server.requests) == 1 and recorder.submitted()[0].status == 200
    server.close()


def test_a_door_that_points_nowhere_while_its_container_restarts_is_waited_for_never_gone_around(gateway):
    """The docker backend's door points nowhere (Reach target None) while the container restarts: the gateway
    waits for it to point again and sends there, recorded here; it never goes through the function's URL with
    its mark instead, which the function would then see."""
    gateway, instances, recorder = gateway
    server = FunctionServer(lambda sock, _: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    instances.append(instance(0))
    looks = []

    def server_target(found):
        looks.append(found)
        return Reach(None if len(looks) < 3 else ("127.0.0.1", server.port))

    gateway.supervisor.server_target = server_target
    with request(gateway) as sock:
        received = read_until(sock, b"\r\n\r\nok")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and len(looks) >= 3
    assert len(server.requests) == 1 and b"x-kubeless-local-source" not in server.requests[0].lower()
    assert recorder.submitted()[0].status == 200
    server.close()


def test_a_server_that_never_comes_back_is_a_503_and_recorded_without_an_answer(gateway, monkeypatch):
    from kubeless_local.emulator import gateway as module

    monkeypatch.setattr(module, "READY_WAIT", 0.3)
    gateway, instances, recorder = gateway
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        instances.append(instance(closed.getsockname()[1], state="Crashed"))
        with request(gateway) as sock:
            received = read_until(sock, b"</html>")
    assert received.startswith(b"HTTP/1.1 503 Service Temporarily Unavailable\r\n")
    exchange = recorder.submitted()[0]
    assert exchange.status == 0 and exchange.error == "the function's server is not running (Crashed)"


def test_a_head_answer_keeps_its_length_and_the_connection_serves_the_next_request(gateway):
    gateway, instances, recorder = gateway

    def answer(sock, request):
        while True:  # one kept-alive connection: each request answered, HEAD without a body
            body = b"" if request.startswith(b"HEAD") else b"hello"
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
            request = sock.recv(65536)
            if not request:
                return

    server = FunctionServer(answer)
    instances.append(instance(server.port))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(b"HEAD /f HTTP/1.1\r\nHost: f.test\r\n\r\n")
        head = read_until(sock, b"\r\n\r\n")
        sock.sendall(b"GET /f HTTP/1.1\r\nHost: f.test\r\n\r\n")
        after = read_until(sock, b"hello")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5\r\n" in head
    assert head.endswith(b"\r\n\r\n") and after.startswith(b"HTTP/1.1 200 OK\r\n")  # no body after the HEAD's
    wait_until(lambda: len(recorder.exchanges) == 2, "both calls recorded", timeout=30)
    assert [e.method for e in recorder.exchanges] == ["HEAD", "GET"]
    server.close()


def test_an_answer_overdue_past_the_functions_timeout_is_a_502_and_recorded(gateway, monkeypatch):
    """The function's server takes the request and never answers: past its timeout (and the gateway's margin,
    0 here) the client gets a 502, the call is recorded with why, and the gateway serves the next request."""
    from kubeless_local.emulator import gateway as module

    monkeypatch.setattr(module, "ANSWER_MARGIN", 0.0)
    gateway, _, recorder = gateway
    released = threading.Event()
    silent = FunctionServer(lambda sock, _: released.wait(30))
    gateway.supervisor.wait_ready = lambda name, timeout: (instance(silent.port), SimpleNamespace(timeout="1"))
    try:
        with request(gateway) as sock:
            received = read_until(sock, b"</html>")
        assert received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        exchange = recorder.submitted()[0]
        assert exchange.status == 0 and "no answer within 1s" in exchange.error
        answering = FunctionServer(lambda sock, _: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        gateway.supervisor.wait_ready = lambda name, timeout: (instance(answering.port), SimpleNamespace(timeout="1"))
        with request(gateway) as sock:
            assert read_until(sock, b"\r\n\r\nok").startswith(b"HTTP/1.1 200 OK\r\n")
        answering.close()
    finally:
        released.set()
        silent.close()

"""The process backend's front door (emulator/proxy.py) against a fake runtime server: requests and answers
relayed byte for byte but for the source mark, which is read and removed; chunked and streamed bodies; a
server that closes without answering makes the front door close too; every exchange handed to the recorder;
the worker pool never leaves a connection waiting behind busy ones."""

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from waiting import wait_until

from kubeless_local.emulator import proxy
from kubeless_local.emulator.base import Instance, State
from kubeless_local.emulator.recorder import SOURCE_HEADER


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []
    release = threading.Event()  # a streamed answer's second piece waits for it

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if not size:
                    self.rfile.readline()  # the blank line after the last chunk
                    break
                body += self.rfile.read(size + 2)[:size]
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Upstream.seen.append((dict(self.headers), body))
        if self.path == "/crash":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"abc", b"defg"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/stream-"):  # a piece, then the rest once the test has seen the piece
            chunked = self.path == "/stream-chunked"
            self.send_response(200)
            self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", "11")))
            self.end_headers()
            for piece in (b"first\n", b"last\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                self.wfile.flush()
                Upstream.release.wait(30)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(201)
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Recorded:
    def __init__(self):
        self.exchanges = []

    def started(self, *args):
        pass

    def submit(self, exchange):
        self.exchanges.append(exchange)
        return "id"


@pytest.fixture
def door():
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    instance = Instance(name="fn", runtime="python3.11", port=0, state=State.READY)
    instance.server_port = server.server_address[1]
    recorder = Recorded()
    front = proxy.FrontDoor(instance, 0, recorder)
    front.port = front.listener.getsockname()[1]
    yield front, recorder
    front.close()
    server.shutdown()
    server.server_close()


def request(front, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read(), connection


def test_a_call_is_relayed_the_mark_removed_and_the_exchange_recorded(door):
    front, recorder = door
    response, body, connection = request(front, "POST", "/p?q=1", b"hello", {SOURCE_HEADER: "kafka; trigger=orders"})
    assert (response.status, body, response.getheader("X-Echo")) == (201, b"hello", "yes")
    headers, sent = Upstream.seen[0]
    assert sent == b"hello" and SOURCE_HEADER not in headers
    response, body, _ = request(front, "POST", "/again", b"x")  # a second call, on a connection of its own
    connection.close()
    wait_until(lambda: len(recorder.exchanges) == 2, "two exchanges recorded")
    # each is handed over once its answer went: the second's thread may get there first on a loaded machine
    first, second = sorted(recorder.exchanges, key=lambda exchange: exchange.target != "/p?q=1")
    assert (first.source, first.trigger, first.target, first.status) == ("kafka", "orders", "/p?q=1", 201)
    assert (first.request_body, first.response_body, first.response_size) == (b"hello", b"hello", 5)
    assert second.source == "http" and second.trigger is None
    # the heads as they passed, for the record (parsed when it is read): the mark is not in the request's
    assert first.request_head.startswith(b"POST /p?q=1 HTTP/1.1\r\n") and first.request_head.endswith(b"\r\n\r\n")
    assert SOURCE_HEADER.lower().encode() not in first.request_head.lower()
    assert first.response_head.startswith(b"HTTP/1.1 201 ") and b"X-Echo: yes\r\n" in first.response_head


def test_chunked_bodies_are_relayed_in_both_directions(door):
    front, recorder = door
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    connection.request("POST", "/chunked", body=iter([b"one", b"two"]), encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"abcdefg")
    assert Upstream.seen[0][1] == b"onetwo"
    wait_until(lambda: recorder.exchanges, "recorded")
    assert (recorder.exchanges[0].request_body, recorder.exchanges[0].response_body) == (b"onetwo", b"abcdefg")


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_a_streamed_answer_reaches_the_client_piece_by_piece(door, framing):
    # a server that writes part of its answer and the rest later (server-sent events, progress): the client
    # reads each piece as the server sends it, not once 64 KB have gathered or the answer ended
    front, recorder = door
    Upstream.release.clear()
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    connection.request("POST", "/stream-" + framing, body=b"")
    response = connection.getresponse()
    assert response.status == 200
    try:
        assert response.readline() == b"first\n"  # within the socket's 10 s, while the server waits
    finally:
        Upstream.release.set()
    assert response.read() == b"last\n"
    wait_until(lambda: recorder.exchanges, "recorded")
    assert recorder.exchanges[0].response_body == b"first\nlast\n"


def test_a_server_that_closes_without_answering_makes_the_front_door_close_too(door):
    front, recorder = door
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(front, "POST", "/crash", b"poison")
    wait_until(lambda: recorder.exchanges, "recorded")
    assert recorder.exchanges[0].status == 0 and "without answering" in recorder.exchanges[0].error


@pytest.mark.parametrize(
    "cut",
    [b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Le", b"POST /p HTTP/1.1", b"POST /p HTTP/1.1\r\nHost: x\r\n"],
    ids=["inside-a-header", "inside-the-request-line", "before-the-blank-line"],
)
def test_a_head_cut_short_by_the_client_is_not_relayed(door, cut):
    # Taken for a whole head (the end of input for its blank line), it went to the server as a request: Ruby's,
    # PHP's and Java's servers then waited for the rest, and the front door and the client with them.
    front, recorder = door
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as client:
        client.sendall(cut)
        client.shutdown(socket.SHUT_WR)
        assert client.recv(100) == b""  # closed at once, unanswered
    assert request(front, "POST", "/after", b"x")[1] == b"x"
    wait_until(lambda: recorder.exchanges, "the call after it recorded")
    assert [sent for _, sent in Upstream.seen] == [b"x"] and [e.target for e in recorder.exchanges] == ["/after"]


def test_a_plain_client_gets_503_when_no_server_comes(door):
    front, _ = door
    front.instance.set_state(State.CONFIG_ERROR, "broken")
    front.instance.server_port = 1  # nothing listens there
    response, body, _ = request(front, "GET", "/")
    assert response.status == 503 and b"ConfigError" in body


def test_the_pool_serves_a_connection_arriving_behind_many_busy_ones():
    """Regression: with idle workers counted before they took a job, the last job waited behind a thread that
    never came."""
    workers = proxy.Workers(most=100, idle_seconds=5)
    release, done = threading.Event(), threading.Event()
    for _ in range(3):  # idle workers from earlier
        workers.run(lambda: None)
    wait_until(lambda: workers.idle == workers.count, "idle")
    for _ in range(40):
        workers.run(release.wait)
    workers.run(done.set)
    try:
        assert done.wait(10)
    finally:
        release.set()


def test_an_upstream_connection_idle_too_long_is_not_reused(door, monkeypatch):
    front, _ = door
    request(front, "POST", "/", b"a")[2].close()
    wait_until(lambda: len(front.idle) == 1, "the connection back in the pool")
    kept = front.idle[0]
    assert not kept.stale()
    monkeypatch.setattr(proxy, "UPSTREAM_IDLE", -1.0)  # as if it had waited longer than the runtimes' idle timeouts
    assert kept.stale()
    request(front, "POST", "/", b"b")[2].close()
    wait_until(lambda: len(front.idle) == 1, "a new connection in the pool")
    assert front.idle[0] is not kept


def test_a_request_that_closes_its_connection_leaves_no_upstream_connection_to_reuse(door):
    """The client's `Connection: close` reaches the server, which closes after answering, and some (the JDK's
    HttpServer) do not say so in the answer: that connection must not go back to the pool, where the next
    request would find it closed."""
    front, recorder = door
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    client.request("POST", "/", body=b"x", headers={"Connection": "close"})
    assert client.getresponse().status == 201
    client.close()
    wait_until(lambda: len(recorder.exchanges) == 1, "the exchange handed to the recorder, after the pool's turn")
    assert not front.idle
    again = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    again.request("POST", "/", body=b"y")
    assert again.getresponse().status == 201
    wait_until(lambda: len(recorder.exchanges) == 2, "the second exchange handed to the recorder")
    assert len(front.idle) == 1  # a kept-alive exchange does pool its connection
    again.close()


def test_a_request_waiting_for_a_starting_server_goes_to_it_when_it_says_ready(door, monkeypatch):
    """`run`'s first request comes before the server listens: it is relayed at the server's Ready, not at the
    next retry (here an hour away)."""
    front, _ = door
    monkeypatch.setattr(proxy, "RETRY_SECONDS", 3600.0)
    instance, listening = front.instance, front.instance.server_port
    waits = []
    waited = instance.wait_for
    monkeypatch.setattr(instance, "wait_for", lambda *args: waits.append(args) or waited(*args))
    with socket.create_server(("127.0.0.1", 0)) as closed_soon:
        instance.server_port = closed_soon.getsockname()[1]  # nothing listens there once it is closed
    instance.set_state(State.STARTING)
    answers = []
    asking = threading.Thread(target=lambda: answers.append(request(front, "POST", "/", b"hi")[:2]), daemon=True)
    asking.start()
    wait_until(lambda: waits, "the request waiting for the server")
    assert not answers
    instance.server_port = listening
    instance.on_control("ready", 0)
    asking.join(10)
    assert [(r.status, body) for r, body in answers] == [(201, b"hi")]

"""The docker backend's front door (emulator/frontdoor.py) records each call, as the process backend's does
(proxy.py): a real Recorder, the door pointed (bridge-mode style) at an HTTP server on 127.0.0.1 standing in
for the container's. The sender's mark is taken out before the server sees it; the bytes are otherwise the
server's and the client's; http1.Stream passes every byte on however the reads split."""

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sockets import free_port
from waiting import wait_until

from kubeless_local.emulator import frontdoor, http1
from kubeless_local.emulator.recorder import MAX_BODY, SOURCE_HEADER, Recorder, mark


class Server(BaseHTTPRequestHandler):
    """Answers the body it read (a chunked one too) and which headers it saw; /chunked answers in chunks,
    /crash closes without an answer, /healthz is the runtime's own."""

    protocol_version = "HTTP/1.1"
    seen: list = []
    slow = threading.Event()

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size + 2)[:size]
            self.rfile.readline()
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        self.do_POST()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()

    def do_POST(self):
        body = self.body()
        Server.seen.append((dict(self.headers), body))
        if self.path == "/slow":
            assert Server.slow.wait(10)
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
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
            return
        answer = b"got:" + body
        self.send_response(201)
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


SERVED = {"fn": (7, "ab" * 32)}  # what the supervisor says serves now: the recorder asks


def serving():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server


@pytest.fixture
def door(tmp_path):
    Server.seen = []
    SERVED["fn"] = (7, "ab" * 32)
    server = serving()
    recorder = Recorder(tmp_path, served=lambda name: SERVED[name])
    door = frontdoor.FrontDoor(free_port(), "fn", recorder)
    door.point(server.server_address, 7)
    yield door, recorder
    door.close()
    recorder.close()
    server.shutdown()
    server.server_close()


def records(recorder, count):
    wait_until(lambda: recorder.flush(1) and len(recorder.list()) >= count, "%d records" % count, timeout=10)
    return [recorder.get(row["id"]) for row in reversed(recorder.list())]


def test_a_marked_call_is_recorded_with_its_source_and_the_server_never_sees_the_mark(door):
    door, recorder = door
    connection = http.client.HTTPConnection("127.0.0.1", door.port, timeout=10)
    connection.request(
        "POST", "/path?q=1", body=b"hello", headers={SOURCE_HEADER: mark("kafka", "orders"), "X-Mine": "1"}
    )
    response = connection.getresponse()
    assert (response.status, response.read()) == (201, b"got:hello")
    connection.close()
    assert {name.lower() for name in Server.seen[0][0]} == {"host", "accept-encoding", "x-mine", "content-length"}
    (record,) = records(recorder, 1)
    assert (record["source"], record["trigger"], record["function"]) == ("kafka", "orders", "fn")
    assert (record["request"]["method"], record["request"]["path"], record["request"]["query"]) == (
        "POST",
        "/path",
        "q=1",
    )
    assert ["X-Mine", "1"] in record["request"]["headers"]
    assert all(name != SOURCE_HEADER for name, _ in record["request"]["headers"])
    assert record["request"]["body"] == {"size": 5, "truncated": False, "text": "hello"}
    assert record["response"]["status"] == 201 and ["X-Echo", "yes"] in record["response"]["headers"]
    assert record["response"]["body"]["text"] == "got:hello"
    assert (record["generation"], record["source_sha256"]) == (7, "ab" * 32)
    assert record["duration_ms"] > 0 and not record["timeout"] and not record["error"]


def test_kept_alive_calls_chunked_bodies_and_head_are_each_recorded_and_the_runtimes_own_paths_are_not(door):
    door, recorder = door
    connection = http.client.HTTPConnection("127.0.0.1", door.port, timeout=10)
    for method, path, body in [
        ("POST", "/one", b"1"),
        ("GET", "/healthz", None),
        ("POST", "/chunked", iter([b"ab", b"cd"])),  # a chunked request (http.client chunks an iterator)
        ("HEAD", "/head", None),
        ("POST", "/two", b"2"),
    ]:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        answer = response.read()
        if path == "/chunked":
            assert answer == b"abcdefg"
    connection.close()
    shown = records(recorder, 4)
    assert [(r["request"]["method"], r["request"]["path"], r["source"]) for r in shown] == [
        ("POST", "/one", "http"),
        ("POST", "/chunked", "http"),
        ("HEAD", "/head", "http"),
        ("POST", "/two", "http"),
    ]
    chunked = shown[1]
    assert chunked["request"]["body"]["text"] == "abcd" and chunked["response"]["body"]["text"] == "abcdefg"
    assert shown[2]["response"]["status"] == 200 and shown[2]["response"]["body"] == {
        "size": 0,
        "truncated": False,
        "text": "",
    }
    assert shown[3]["response"]["body"]["text"] == "got:2"
    assert Server.seen[-1][1] == b"2"


def test_pipelined_requests_in_one_write_are_answered_and_recorded_in_order(door):
    door, recorder = door
    marked = "%s: %s\r\n" % (SOURCE_HEADER, mark("call"))
    payload = "".join(
        "POST /%d HTTP/1.1\r\nHost: x\r\n%sContent-Length: 1\r\n\r\n%d" % (n, marked if n == 1 else "", n)
        for n in range(3)
    ).encode()
    with socket.create_connection(("127.0.0.1", door.port), timeout=10) as sock:
        sock.sendall(payload)
        answer = b""
        while answer.count(b"got:") < 3:
            answer += sock.recv(65536)
    shown = records(recorder, 3)
    assert [(r["request"]["path"], r["source"], r["response"]["body"]["text"]) for r in shown] == [
        ("/0", "http", "got:0"),
        ("/1", "call", "got:1"),
        ("/2", "http", "got:2"),
    ]
    assert all(SOURCE_HEADER not in headers for headers, _ in Server.seen)


def test_a_body_over_max_body_reaches_the_server_whole_and_is_kept_cut(door):
    door, recorder = door
    big = b"x" * (MAX_BODY + 1000)
    connection = http.client.HTTPConnection("127.0.0.1", door.port, timeout=10)
    connection.request("POST", "/big", body=big)
    assert connection.getresponse().read() == b"got:" + big
    connection.close()
    (record,) = records(recorder, 1)
    assert record["request"]["body"]["size"] == len(big) and record["request"]["body"]["truncated"]
    assert len(record["request"]["body"]["text"]) == MAX_BODY
    assert record["response"]["body"]["size"] == len(big) + 4 and record["response"]["body"]["truncated"]


def test_a_call_the_server_closes_unanswered_is_recorded_with_no_status_and_why(door):
    door, recorder = door
    connection = http.client.HTTPConnection("127.0.0.1", door.port, timeout=10)
    connection.request("POST", "/crash", body=b"x", headers={SOURCE_HEADER: mark("cron", "nightly")})
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.getresponse()
    connection.close()
    (record,) = records(recorder, 1)
    assert (record["source"], record["response"]["status"]) == ("cron", 0)
    assert record["error"] == frontdoor.NOT_ANSWERED


def test_a_head_sent_a_byte_at_a_time_still_loses_its_mark(door):
    door, recorder = door
    request = (
        "POST / HTTP/1.1\r\nHost: x\r\n%s: replay; of=abc\r\nContent-Length: 2\r\n\r\nhi" % SOURCE_HEADER
    ).encode()
    with socket.create_connection(("127.0.0.1", door.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in request:
            sock.sendall(bytes([byte]))
        answer = b""
        while not answer.endswith(b"got:hi"):
            answer += sock.recv(65536)
    (record,) = records(recorder, 1)
    assert (record["source"], record["replay_of"], record["request"]["body"]["text"]) == ("replay", "abc", "hi")
    assert SOURCE_HEADER not in Server.seen[0][0]


def test_a_call_answered_by_a_container_the_door_no_longer_points_at_names_that_containers_code(door):
    door, recorder = door
    Server.slow.clear()
    requests.post("http://127.0.0.1:%d/before" % door.port, data="b", timeout=10)  # generation 7 served it
    calling = threading.Thread(
        target=lambda: requests.post("http://127.0.0.1:%d/slow" % door.port, data="s", timeout=10), daemon=True
    )
    calling.start()
    wait_until(lambda: any(body == b"s" for _, body in Server.seen), "the slow call reached the old server")
    successor = serving()
    try:
        door.point(successor.server_address, 8)  # blue/green: the successor serves generation 8 from now
        SERVED["fn"] = (8, "cd" * 32)
        requests.post("http://127.0.0.1:%d/after" % door.port, data="a", timeout=10)
        Server.slow.set()
        calling.join(10)
        shown = {r["request"]["path"]: r for r in records(recorder, 3)}
    finally:
        successor.shutdown()
        successor.server_close()
    assert (shown["/before"]["generation"], shown["/before"]["source_sha256"]) == (7, "ab" * 32)
    assert (shown["/slow"]["generation"], shown["/slow"]["source_sha256"]) == (7, "ab" * 32)
    assert (shown["/after"]["generation"], shown["/after"]["source_sha256"]) == (8, "cd" * 32)


def test_a_kept_alive_connection_moved_to_the_next_container_is_still_read_and_recorded(door):
    door, recorder = door
    connection = http.client.HTTPConnection("127.0.0.1", door.port, timeout=10)
    connection.request("POST", "/first", body=b"1")
    assert connection.getresponse().read() == b"got:1"
    successor = serving()
    try:
        door.point(successor.server_address, 8)  # blue/green: the connection's next request goes to the successor
        SERVED["fn"] = (8, "cd" * 32)
        connection.request("POST", "/second", body=b"2", headers={SOURCE_HEADER: mark("call")})
        assert connection.getresponse().read() == b"got:2"
        connection.close()
        shown = records(recorder, 2)
    finally:
        successor.shutdown()
        successor.server_close()
    assert [(r["request"]["path"], r["source"], r["generation"]) for r in shown] == [
        ("/first", "http", 7),
        ("/second", "call", 8),
    ]
    assert all(SOURCE_HEADER not in headers for headers, _ in Server.seen)


def test_an_answer_to_no_request_passes_whole_and_the_next_call_is_still_recorded(tmp_path):
    """A server may answer on a connection before any request (Node's 408 on an idle one): followed by its
    framing, recorded as no call."""
    listener = socket.create_server(("127.0.0.1", 0))
    unasked = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 7\r\n\r\ntoo lo\n"

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(unasked)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.recv(10)

    threading.Thread(target=serve, daemon=True).start()
    recorder = Recorder(tmp_path)
    door = frontdoor.FrontDoor(free_port(), "fn", recorder)
    try:
        door.point(listener.getsockname())
        with socket.create_connection(("127.0.0.1", door.port), timeout=10) as sock:
            answer = b""
            while answer != unasked:
                answer += sock.recv(65536)
            sock.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            while not answer.endswith(b"ok"):
                answer += sock.recv(65536)
        (record,) = records(recorder, 1)
        assert (record["request"]["path"], record["response"]["status"], record["response"]["body"]["text"]) == (
            "/late",
            200,
            "ok",
        )
    finally:
        door.close()
        recorder.close()
        listener.close()


def test_a_door_without_a_recorder_reads_nothing(tmp_path):
    door = frontdoor.FrontDoor(free_port(), "fn")
    try:
        assert door.recorder is None
        relay = frontdoor._Relay(door, None)
        assert relay.calls is None
    finally:
        door.close()


MESSAGES = (
    b"POST /a HTTP/1.1\r\nX-Kubeless-Local-Source: call\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n"
    b"\r\nGET /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz"
    b"HEAD /c HTTP/1.1\r\n\r\n"
)


@pytest.mark.parametrize("split", range(1, len(MESSAGES), 7))
def test_a_stream_passes_every_byte_but_the_mark_however_the_reads_split(split):
    heads, bodies, ends = [], [], []

    def on_head(head):
        heads.append(head)
        lowered = head.lower()
        kept = b"".join(line for line in head.splitlines(keepends=True) if not line.lower().startswith(b"x-kubeless"))
        if http1.field(lowered, b"transfer-encoding:"):
            return kept, (http1.CHUNKED, 0)
        length = http1.field(lowered, b"content-length:")
        return kept, (http1.LENGTH, int(length)) if length else (http1.NONE, 0)

    stream = http1.Stream(on_head, lambda piece: bodies.append(bytes(piece)), lambda: ends.append(len(heads)))
    passed = stream.feed(MESSAGES[:split]) + stream.feed(MESSAGES[split:]) + stream.flush()
    assert passed == MESSAGES.replace(b"X-Kubeless-Local-Source: call\r\n", b"").replace(b"\r\n\r\nGET", b"\r\nGET")
    assert [head.split(b" ")[1] for head in heads] == [b"/a", b"/b", b"/c"]
    assert b"".join(bodies) == b"abcwxyz" and ends == [1, 2, 3]


@pytest.mark.parametrize(
    "length, framing",
    [
        (b"5", (http1.LENGTH, 5)),
        (b" 12 ", (http1.LENGTH, 12)),
        (b"-1", None),
        (b"+5", None),
        (b"1_0", None),
        (b"x", None),
    ],
)
def test_a_length_that_is_not_digits_alone_is_not_followed(length, framing):
    # int() takes "-1", "+5" and "1_0"; the runtime servers' parsers refuse them: the door must not read a body
    # the server reads otherwise (the gateway refuses the same lengths)
    assert frontdoor._framing(b"post / http/1.1\r\ncontent-length: " + length + b"\r\n\r\n", http1.NONE) == framing


@pytest.mark.parametrize(
    "data, quick",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"GET / HTTP/1.1\nHost: x\n\nGET /2 HTTP/1.1\r\n\r\n", False),  # a bare-LF head before a CRLF one
        (b"GET / HTTP/1.1\nHost: x\n\r\n\r\n", False),  # its first empty line is LF then CRLF
        (b"GET / HTTP/1.1\r\nHost: x\r\n\n", False),  # CRLF then a bare LF: no CRLF empty line at all
        (b"\r\nGET / HTTP/1.1\r\n\r\n", False),  # line breaks between messages
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),  # not whole yet
    ],
)
def test_the_quick_look_for_a_heads_end_finds_what_the_pattern_finds_or_leaves_it_to_the_loop(data, quick):
    end = http1._crlf_head_end(data)
    assert end == (http1.HEAD_END.search(data).end() if quick else -1)
    # read whole, a stream passes on the bytes and sees the heads it does when read a byte at a time (the loop)
    passed, heads = [], []
    for pieces in (split_all(data), [data]):
        seen: list = []
        stream = http1.Stream(lambda head, seen=seen: seen.append(head) or (head, (http1.NONE, 0)), len, list)
        passed.append(b"".join(stream.feed(piece) for piece in pieces) + stream.flush())
        heads.append(seen)
    assert passed[0] == passed[1] and heads[0] == heads[1]


def split_all(data):
    return [data[i : i + 1] for i in range(len(data))]

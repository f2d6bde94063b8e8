"""client.send: the CLI's `call` over client.exchange (no HTTP library to import) reads answers as the `requests`
call it replaces did (issue R): framing (length, chunks, the close), charsets, redirects."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kubeless_local.client import call, send
from kubeless_local.errors import Unavailable


class Function(BaseHTTPRequestHandler):
    """Answers by path: /latin (text/plain without a charset), /json, /utf8, /see-other, /moved, /temporary
    (redirects to /echo), /chunked, /to-the-close (no length: up to the close), /empty (204), else the request
    it got."""

    seen: list = []

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Function.seen.append((self.command, self.path, dict(self.headers), body))
        if self.path in ("/chunked", "/to-the-close", "/empty"):
            return self.framed()
        redirects = {"/see-other": 303, "/moved": 302, "/temporary": 307}
        if self.path in redirects:
            self.send_response(redirects[self.path])
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content_type, text = {
            "/latin": ("text/plain", "café".encode()),
            "/json": ("application/json", '{"k": "é"}'.encode()),
            "/utf8": ("text/html; charset=UTF-8", "é".encode()),
        }.get(self.path, ("text/plain; charset=utf-8", ("%s %s " % (self.command, self.path)).encode() + body))
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def framed(self):
        self.protocol_version = "HTTP/1.1" if self.path == "/chunked" else "HTTP/1.0"
        self.send_response(204 if self.path == "/empty" else 200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.path == "/chunked":
            self.wfile.write(b"3\r\nab\n\r\n4;x=y\r\ncd\xc3\xa9\r\n0\r\nTrailer: t\r\n\r\n")
        elif self.path == "/to-the-close":
            self.wfile.write(b"line one\nline two\n")
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args):
        pass


@pytest.fixture
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Function)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    Function.seen = []
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_body_is_decoded_as_requests_decodes_it(url):
    assert send(url, path="/utf8").text == "é"
    assert send(url, path="/json").text == '{"k": "é"}'  # JSON without a charset: UTF-8
    assert send(url, path="/latin").text == "café".encode().decode("iso-8859-1")  # text/* without one


def test_the_event_is_the_cli_envelope_with_the_flags_over_it(url):
    answer = send(url, '{"a": 1}', path="x y", method="PUT", headers={"X-Trace": "t"}, mark="call")
    assert answer.status_code == 200 and answer.reason == "OK"
    method, path, headers, body = Function.seen[0]
    assert (method, path, body) == ("PUT", "/x%20y", b'{"a": 1}')  # a space is sent quoted, as requests sends it
    assert headers["Content-Type"] == "application/json" and headers["event-namespace"] == "cli.kubeless.io"
    assert headers["X-Trace"] == "t" and headers["X-Kubeless-Local-Source"] == "call"


def test_redirects_are_followed_as_requests_follows_them(url):
    assert send(url, "data", path="/see-other").text == "GET /echo "  # 303: a GET without the body
    assert send(url, "data", path="/moved").text == "GET /echo "  # 302 after a POST: the same
    assert send(url, "data", path="/temporary").text == "POST /echo data"  # 307 keeps method and body
    assert "Content-Type" not in Function.seen[1][2]  # the GET after the 303 carries no body's type
    assert "Content-Length" not in Function.seen[1][2]  # nor a length (requests sends none with a GET)


def test_nothing_listening_is_unavailable(url):
    closed = "http://127.0.0.1:1"
    with pytest.raises(Unavailable, match="cannot reach the function at http://127.0.0.1:1"):
        send(closed)


@pytest.mark.parametrize("path", ["/utf8", "/json", "/latin", "/chunked", "/to-the-close", "/empty", "/see-other"])
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_send_reads_what_requests_reads(url, path, method):
    sent, expected = send(url, "d", path=path, method=method), call(url, "d", path=path, method=method)
    assert (sent.status_code, sent.reason, sent.content) == (expected.status_code, expected.reason, expected.content)
    assert sent.text == expected.text

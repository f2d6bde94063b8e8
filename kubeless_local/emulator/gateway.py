"""The HTTPTrigger gateway of `dev`: one listener on 127.0.0.1 routing as the cluster's ingress controller does.

Guarantee: every request is decided by `http_routes.RouteTable.decide`, the table `gateway explain` and push's
Ingresses use too; this module only moves bytes. It listens only while the project has HTTPTriggers (bound
on the first table that has routes; a taken port is a `Conflict` then). A request the table forwards goes
to the function's own URL over a kept-alive connection (a pool per URL), with the ingress-nginx forwarded
headers set, `Proxy` (and after basic auth, `Authorization`) removed, and the route's CORS headers replacing
any of the same name the function set. A function that does not serve yet is waited for a few seconds,
then answered 503 as an ingress without endpoints answers.
"""

import http.client
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.errors import Conflict

DEFAULT_PORT = 8480
HOST = "127.0.0.1"
LOG_NAME = "gateway"  # the log the gateway's lines go to (`kubeless-local logs gateway`)
READY_WAIT = 10.0  # seconds a request waits for a function that is starting or reloading
# Hop-by-hop headers (RFC 9110 §7.6.1): never passed on; Content-Length is recomputed.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
UNAVAILABLE = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>503 Service Temporarily"
    b" Unavailable</body></html>"
)


class Upstreams:
    """Idle kept-alive connections to each function URL; a connection serves one request at a time."""

    def __init__(self):
        self.idle: dict = {}  # (host, port) → [HTTPConnection]
        self.lock = threading.Lock()

    def take(self, url: str, timeout: float) -> tuple:
        """(connection, reused)."""
        parts = urlsplit(url)
        key = (parts.hostname, parts.port)
        with self.lock:
            pool = self.idle.get(key)
            if pool:
                connection = pool.pop()
                connection.timeout = timeout
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                return connection, True
        return http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout), False

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            self.idle.setdefault((connection.host, connection.port), []).append(connection)

    def close(self) -> None:
        with self.lock:
            pools, self.idle = self.idle, {}
        for pool in pools.values():
            for connection in pool:
                connection.close()


class Gateway:
    """Create, then feed it manifests with `update` (the project calls it on every load); `stop` at the end."""

    def __init__(self, supervisor, logs, root: Path, ignore=(), port: Optional[int] = None, say: Callable = print):
        self.supervisor = supervisor
        self.logs = logs
        self.root = Path(root)
        self.ignore = ignore
        self.port = DEFAULT_PORT if port is None else port
        self.say = say
        self.table = http_routes.RouteTable()
        self.server: Optional[ThreadingHTTPServer] = None
        self.thread: Optional[threading.Thread] = None
        self.upstreams = Upstreams()
        self.shown: tuple = ()  # the route lines last printed
        self.problems: list = []
        self.loaded = False  # the first update (dev's start) raises a taken port; later ones say it

    @property
    def url(self) -> str:
        return "http://%s:%d" % (HOST, self.port)

    def emit(self, text: str) -> None:
        self.logs.emit(LOG_NAME, text, "system")

    def update(self, manifests: specs.Manifests) -> None:
        """A new table from the manifests; the listener starts with the first routes (a Conflict if its port is
        taken). Each problem (a trigger the controller refuses, a missing secret, two triggers on one route) is
        said once, as one line naming its file."""
        built = http_routes.build(manifests, http_routes.secrets_in(self.root, self.ignore))
        for _, message in built.problems:
            if message not in self.problems:
                self.emit(message)
        self.problems = [message for _, message in built.problems]
        self.table = built.table
        if built.table and self.server is None:
            try:
                self.start()
            except Conflict as exc:
                if not self.loaded:
                    raise  # `dev` starting: it exits saying so
                self.emit(str(exc))  # a trigger added while `dev` runs: said, the functions keep running
        self.loaded = True
        lines = tuple(route.describe() for route in built.table.routes)
        if lines != self.shown and self.server is not None:
            self.shown = lines
            self.emit("routes on %s (Host: <host-name> or <host-name>.localhost):" % self.url)
            for route in built.table.routes:
                self.emit("  %s  %s" % (self.example(route), route.describe()))

    def example(self, route: http_routes.Route) -> str:
        """A URL that reaches the route from this machine (no DNS: *.localhost is loopback)."""
        host = "%s.localhost" % route.host if route.host else "localhost"
        return "http://%s:%d%s" % (host, self.port, route.path)

    def start(self) -> None:
        try:
            server = _Server((HOST, self.port), _Handler)
        except OSError as exc:
            raise Conflict(
                "the HTTPTrigger gateway cannot listen on %s:%d: %s" % (HOST, self.port, exc.strerror or exc),
                "gateway port",
                str(self.port),
            ) from None
        server.gateway = self
        self.port = server.server_address[1]  # port 0: the one the system gave
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="gateway", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.upstreams.close()

    # ------------------------------------------------------------ forwarding
    def forward(self, decision: http_routes.Decision, method: str, headers: list, body: bytes) -> tuple:
        """(status, reason, headers, body) of the function's answer to the decided request."""
        route = decision.route
        assert route is not None
        found = self.supervisor.wait_ready(route.function, READY_WAIT)
        if found is None:
            self.emit("%s %s: function %s does not serve: 503" % (method, decision.target, route.function))
            return 503, "Service Temporarily Unavailable", [("Content-Type", "text/html")], UNAVAILABLE
        instance, spec = found
        replaced = {name.lower() for name, _ in decision.set_headers}
        dropped = set(decision.drop_headers) | HOP_BY_HOP | replaced | {"content-length"}
        sent = [(k, v) for k, v in headers if k.lower() not in dropped] + list(decision.set_headers)
        timeout = float(spec.timeout) + 10  # the function answers 408 itself at its timeout
        for attempt in range(2):
            connection, reused = self.upstreams.take(instance.url, timeout)
            try:
                connection.putrequest(method, decision.target, skip_host=True, skip_accept_encoding=True)
                for name, value in sent:
                    connection.putheader(name, value)
                if body or method in ("POST", "PUT", "PATCH"):
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body or None)
                response = connection.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                connection.close()
                if reused and attempt == 0:
                    continue  # a kept-alive connection the function closed while idle: a fresh one
                return self._bad_gateway(route, exc)
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                return self._bad_gateway(route, exc)
            if response.will_close:
                connection.close()
            else:
                self.upstreams.give_back(connection)
            return response.status, response.reason, response.getheaders(), answer
        raise AssertionError("unreachable")

    def _bad_gateway(self, route, exc) -> tuple:
        self.emit("function %s did not answer (%s): 502" % (route.function, exc or type(exc).__name__))
        return 502, "Bad Gateway", [("Content-Type", "text/html")], b"<html><body>502 Bad Gateway</body></html>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    gateway: Gateway
    scheme = "http"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method goes through the table
            return self._serve
        raise AttributeError(name)

    def log_message(self, format, *args):
        pass  # the function's own access log records each call

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        gateway = self.server.gateway
        headers = list(self.headers.items())
        try:
            body = self._body()
        except ValueError:
            self._answer(400, [], b"bad request body")
            return
        decision = gateway.table.decide(
            self.command,
            self.headers.get("Host") or "",
            self.path,
            {k.lower(): v for k, v in headers},
            client=self.client_address[0],
            scheme=self.server.scheme,
            port=self.server.server_address[1],
        )
        if decision.status:
            if decision.status in (404, 401):
                gateway.emit(
                    "%s %s (Host %s): %d, %s"
                    % (self.command, self.path, self.headers.get("Host"), decision.status, decision.reason)
                )
            self._answer(decision.status, list(decision.response_headers), decision.body)
            return
        status, reason, answered, answer = gateway.forward(decision, self.command, headers, body)
        replaced = {name.lower() for name, _ in decision.response_headers}
        kept = [(k, v) for k, v in answered if k.lower() not in replaced | HOP_BY_HOP | {"content-length"}]
        self._answer(status, kept + list(decision.response_headers), answer, reason)

    def _answer(self, status: int, headers: list, body: bytes, reason: str = "") -> None:
        lines = ["HTTP/1.1 %d %s" % (status, reason or _reason(status))]
        lines += ["%s: %s" % (k, v) for k, v in headers if k.lower() != "content-length"]
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            lines.append("Content-Length: %d" % len(body))
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if no_body or self.command == "HEAD" else head + body)

"""The HTTPTrigger gateway of `dev`: one listener on 127.0.0.1 routing as the cluster's ingress controller does.

Guarantee: every request is decided by `http_routes.RouteTable.decide`, the table `gateway explain` and push's
Ingresses use too; this module only moves bytes. It listens only while the project has HTTPTriggers (bound
on the first table that has routes; a taken port is a `Conflict` then). A request the table forwards goes
to the function's own URL over a kept-alive connection (a pool per URL), with the ingress-nginx forwarded
headers set, `Proxy` (and after basic auth, `Authorization`) removed, and the route's CORS headers replacing
any of the same name the function set. A function that does not serve yet is waited for a few seconds,
then answered 503 as an ingress without endpoints answers.

One asyncio loop in a thread of its own serves every connection (HTTP/1.1 keep-alive, parsed here: the
threaded http.server reached a quarter of the direct throughput, BENCHMARKS.md "HTTPTrigger gateway"), and,
once a trigger has `tls` or `tls-secret`, a second listener for HTTPS whose certificate SNI picks
(emulator/tls.py).
"""

import asyncio
import functools
import hashlib
import os
import socket
import ssl
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.emulator.recorder import SOURCE_HEADER, marked
from kubeless_local.errors import Conflict, UserError
from kubeless_local.paths import STATE_DIRNAME

DEFAULT_PORT = 8480
DEFAULT_HTTPS_PORT = 8443  # the HTTPS listener, once a trigger has tls or tls-secret
HOST = "127.0.0.1"
LOG_NAME = "gateway"  # the name its lines carry in dev's output
READY_WAIT = 10.0  # seconds a request waits for a function that is starting or reloading
UNAVAILABLE = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>503 Service Temporarily"
    b" Unavailable</body></html>"
)


MAX_HEAD = 64 * 1024  # headers larger than this: a client's connection is closed, a function's answer is a 502
MAX_IDLE = 16  # idle kept-alive connections kept per function
MAX_IDLE_SECONDS = 4.0  # below the shortest keep-alive timeout of the runtimes' servers (Node: 5 s)


@functools.lru_cache(maxsize=256)
def _address(url: str) -> tuple:
    """(host, port) of a function's URL."""
    parts = urlsplit(url)
    return parts.hostname or HOST, parts.port


class BadMessage(Exception):
    """A request or answer that is not HTTP/1.x as this reads it."""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def parse_head(head: bytes) -> tuple:
    """(first line's three parts, [(name, value)]) of a message head ending in CRLF CRLF."""
    try:
        first, *lines = head[:-4].decode("latin-1").split("\r\n")
        parts = first.split(" ", 2)
    except ValueError:
        raise BadMessage("undecodable head") from None
    if len(parts) < 2:
        raise BadMessage("malformed first line %r" % first[:80])
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadMessage("malformed header line %r" % line[:80])
        headers.append((name, value.strip()))
    return (*parts, "")[:3], headers


async def read_body(reader: asyncio.StreamReader, headers: dict, until_eof: bool = False) -> bytes:
    """The body of a message whose headers (lower-cased names) are `headers`; chunked decoded."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list = []
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadMessage("malformed chunk size") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadMessage("malformed Content-Length")
        return await reader.readexactly(int(length)) if int(length) else b""
    return await reader.read() if until_eof else b""


class Upstream:
    """One kept-alive connection to a function's server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.since = 0.0  # when it was last put back idle

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """The function did not answer in time: the read waiting on it fails (IncompleteReadError)."""
        self.writer.transport.abort()


class Gateway:
    """Create, then feed it manifests with `update` (the project calls it on every load); `stop` at the end."""

    def __init__(
        self,
        supervisor,
        logs,
        root: Path,
        ignore=(),
        port: Optional[int] = None,
        https_port: Optional[int] = None,
    ):
        self.supervisor = supervisor
        self.logs = logs
        self.root = Path(root)
        self.ignore = ignore
        self.port = DEFAULT_PORT if port is None else port
        self.table = http_routes.RouteTable()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.server: Optional[asyncio.Server] = None
        self.thread: Optional[threading.Thread] = None
        self.idle: dict = {}  # (host, port) → [Upstream], touched only by the loop's thread
        self.shown: tuple = ()  # the route lines last printed
        self.problems: list = []
        self.loaded = False  # the first update (dev's start) raises a taken port; later ones say it
        self.https_port = DEFAULT_HTTPS_PORT if https_port is None else https_port
        self.https_server: Optional[asyncio.Server] = None
        self.contexts: dict = {}  # SNI host name → SSLContext
        self.certificates: dict = {}  # (kind, host, digest) → SSLContext, kept across reloads

    @property
    def url(self) -> str:
        return "http://%s:%d" % (HOST, self.port)

    def emit(self, text: str) -> None:
        self.logs.emit(LOG_NAME, text, "system")

    def update(self, manifests: specs.Manifests) -> None:
        """A new table from the manifests; the listener starts with the first routes (a Conflict if its port is
        taken). Each problem (a trigger the controller refuses, a missing secret, two triggers on one route) is
        said once, as one line naming its file."""
        if not manifests.http_triggers and self.server is None:
            self.loaded = True
            return  # no HTTPTrigger yet: nothing to read, nothing listens (a reload pays nothing for it)
        secrets = http_routes.secrets_in(self.root, self.ignore)
        built = http_routes.build(manifests, secrets)
        for _, message in built.problems:
            if message not in self.problems:
                self.emit(message)
        self.problems = [message for _, message in built.problems]
        self.table = built.table
        try:
            if built.table and self.server is None:
                self.start()
            secured = [route for route in built.table.routes if route.tls or route.tls_secret]
            if secured and self.server is not None:
                self._serve_tls(secured, secrets)
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
        if (route.tls or route.tls_secret) and self.https_server is not None:
            return "https://%s:%d%s" % (host, self.https_port, route.path)
        return "http://%s:%d%s" % (host, self.port, route.path)

    def start(self) -> None:
        self.server = self._listen(self.port, "http")
        self.port = self.server.sockets[0].getsockname()[1]  # port 0: the one the system gave

    def _listen(self, port: int, scheme: str, context: Optional[ssl.SSLContext] = None) -> asyncio.Server:
        """A listener on the gateway's loop (started with the first one); a Conflict when the port is taken."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.loop.set_exception_handler(self._loop_error)
            self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
            self.thread.start()
        serve = functools.partial(self._serve, scheme)
        opening = asyncio.start_server(serve, HOST, port, backlog=128, limit=MAX_HEAD, ssl=context)
        try:
            return asyncio.run_coroutine_threadsafe(opening, self.loop).result(timeout=10)
        except OSError as exc:
            raise Conflict(
                "the HTTPTrigger gateway cannot listen on %s:%d: %s"
                % (HOST, port, os.strerror(exc.errno) if exc.errno else exc),
                "gateway port",
                str(port),
            ) from None

    def _loop_error(self, loop, context: dict) -> None:
        """What asyncio would print on the terminal: a peer's reset is nobody's business (the connection's
        closed-future nobody awaits), anything else goes to the gateway's log."""
        if isinstance(context.get("exception"), (ConnectionError, asyncio.CancelledError)):
            return
        self.emit("internal: %s %r" % (context.get("message"), context.get("exception")))

    def stop(self) -> None:
        loop = self.loop
        if loop is None:
            return
        servers = [s for s in (self.server, self.https_server) if s is not None]
        self.server = self.https_server = None

        async def close():
            for server in servers:
                server.close()
            for pool in self.idle.values():
                for upstream in pool:
                    upstream.close()
            self.idle.clear()
            requests = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in requests:
                task.cancel()  # connections still open: each closes its socket as it ends
            await asyncio.gather(*requests, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            self.thread.join(timeout=5)
        loop.close()
        self.loop = None

    # ------------------------------------------------------------ TLS
    def _serve_tls(self, routes: list, secrets: dict) -> None:
        """Certificates for the routes with tls / tls-secret (SNI picks one by host), and the HTTPS listener
        once there is one. A certificate that cannot be made or loaded is said, and its route serves HTTP only."""
        from kubeless_local.emulator import tls

        for route in routes:
            names = [route.host, route.host + ".localhost"] if route.host else ["localhost"]
            try:
                if route.tls_secret:
                    cert, key = http_routes.tls_pair(route, secrets)
                    cached = ("secret", route.host, hashlib.sha256(cert + key).hexdigest())
                else:
                    cached = ("ca", route.host, "")
                context = self.certificates.get(cached)
                if context is None:
                    if not route.tls_secret:
                        cert, key = tls.DevCA().issue(names)
                    folder = self.root / STATE_DIRNAME / "tls"
                    context = tls.server_context(cert, key, folder, names[0], route.origin)
                    self.certificates[cached] = context
            except UserError as exc:
                if str(exc) not in self.problems:
                    self.problems.append(str(exc))
                    self.emit(str(exc))
                continue
            for name in names:
                self.contexts[name] = context
        if self.contexts and self.https_server is None:
            default = next(iter(self.contexts.values()))
            default.sni_callback = self._pick_certificate
            self.https_server = self._listen(self.https_port, "https", default)
            self.https_port = self.https_server.sockets[0].getsockname()[1]

    def _pick_certificate(self, connection, server_name, context) -> None:
        """SNI: the certificate of the host the client names (the listener's default otherwise)."""
        chosen = self.contexts.get((server_name or "").lower())
        if chosen is not None and chosen is not context:
            connection.context = chosen

    # ------------------------------------------------------------ serving
    async def _serve(self, scheme: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        try:
            while await self._one_request(reader, writer, peer[0], scheme):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away, or sent something too large to read
        except asyncio.CancelledError:
            pass  # the gateway stops: the connection ends here (asyncio logs a cancelled connection task)
        except BadMessage:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the gateway; said in its log
            self.emit("request from %s failed: %r" % (peer[0], exc))
        finally:
            writer.close()

    async def _one_request(self, reader, writer, client: str, scheme: str) -> bool:
        """Serve one request; False when the connection is to close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise BadMessage("incomplete head") from None
            return False  # closed between requests
        (method, target, version), headers = parse_head(head)
        lower = {name.lower(): value for name, value in headers}
        if lower.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await read_body(reader, lower)
        connection = lower.get("connection", "").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        decision = self.table.decide(
            method,
            lower.get("host", ""),
            target,
            lower,
            client=client,
            scheme=scheme,
            port=self.https_port if scheme == "https" else self.port,
            https_port=self.https_port,
        )

        if decision.status:
            if decision.status in (404, 401):
                self.emit(
                    "%s %s (Host %s): %d, %s" % (method, target, lower.get("host"), decision.status, decision.reason)
                )
            self._answer(writer, method, decision.status, "", list(decision.response_headers), decision.body, keep)
        else:
            status, reason, answered, answer = await self.forward(decision, method, headers, body)
            self._answer(writer, method, status, reason, decision.response_headers_over(answered), answer, keep)
        await writer.drain()
        return keep

    @staticmethod
    def _answer(writer, method: str, status: int, reason: str, headers: list, body: bytes, keep: bool) -> None:
        lines = ["HTTP/1.1 %d %s" % (status, reason or _reason(status))]
        lines += ["%s: %s" % (k, v) for k, v in headers if k.lower() != "content-length"]
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            lines.append("Content-Length: %d" % len(body))
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        writer.write(head if no_body or method == "HEAD" else head + body)

    # ------------------------------------------------------------ forwarding
    async def _ready(self, name: str):
        found = self.supervisor.wait_ready(name, 0)  # serving: the common case, without a thread
        if found is None:
            found = await asyncio.get_running_loop().run_in_executor(None, self.supervisor.wait_ready, name, READY_WAIT)
        return found

    async def forward(self, decision: http_routes.Decision, method: str, headers: list, body: bytes) -> tuple:
        """(status, reason, headers, body) of the function's answer to the decided request."""
        route = decision.route
        assert route is not None
        found = await self._ready(route.function)
        if found is None:
            self.emit("%s %s: function %s does not serve: 503" % (method, decision.target, route.function))
            return 503, "Service Temporarily Unavailable", [("Content-Type", "text/html")], UNAVAILABLE
        instance, spec = found
        # the function's front door records it as the gateway's, with the trigger (a client's own mark is dropped)
        sent = [pair for pair in decision.request_headers(headers) if pair[0].lower() != SOURCE_HEADER.lower()]
        sent += marked(instance, "gateway", route.trigger).items()
        if body or method in ("POST", "PUT", "PATCH"):
            sent.append(("Content-Length", str(len(body))))
        lines = ["%s %s HTTP/1.1" % (method, decision.target)] + ["%s: %s" % pair for pair in sent]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        key = _address(instance.url)
        timeout = float(spec.timeout) + 10  # the function answers 408 itself at its timeout
        for attempt in range(2):
            upstream = self._idle_upstream(key) if attempt == 0 else None  # a retry: a fresh connection
            reused = upstream is not None
            try:
                if upstream is None:
                    upstream = Upstream(*await asyncio.open_connection(*key, limit=MAX_HEAD))
            except OSError as exc:
                return self._bad_gateway(route, exc)
            expiry = asyncio.get_running_loop().call_later(timeout, upstream.abort)  # cheaper than wait_for
            try:
                upstream.writer.write(request)
                answer = await self._response(upstream, method)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                upstream.close()
                if expiry.cancelled() is False and expiry.when() <= asyncio.get_running_loop().time():
                    return self._bad_gateway(route, TimeoutError("no answer within %gs" % timeout))
                if reused and attempt == 0:
                    continue  # a kept-alive connection the function closed while idle: a fresh one
                return self._bad_gateway(route, exc)
            except (OSError, TimeoutError, asyncio.LimitOverrunError, BadMessage) as exc:
                upstream.close()
                return self._bad_gateway(route, exc)
            finally:
                expiry.cancel()
            status, reason, answered, data, will_close = answer
            if will_close:
                upstream.close()
            elif len(self.idle.setdefault(key, [])) < MAX_IDLE:
                upstream.since = time.monotonic()
                self.idle[key].append(upstream)
            else:
                upstream.close()
            return status, reason, answered, data
        raise AssertionError("unreachable")

    def _idle_upstream(self, key) -> Optional[Upstream]:
        """A kept-alive connection to `key` that the function's server has not closed, nor will close any
        moment now (Node closes one idle for 5 s): the most recently used one."""
        pool = self.idle.get(key) or []
        while pool:
            upstream = pool.pop()
            if not upstream.reader.at_eof() and time.monotonic() - upstream.since < MAX_IDLE_SECONDS:
                return upstream
            upstream.close()
        return None

    @staticmethod
    async def _response(upstream: Upstream, method: str) -> tuple:
        head = await upstream.reader.readuntil(b"\r\n\r\n")
        (version, status_text, reason), headers = parse_head(head)
        if not status_text.isdigit():
            raise BadMessage("malformed status line")
        status = int(status_text)
        lower = {name.lower(): value for name, value in headers}
        connection = lower.get("connection", "").lower()
        will_close = connection == "close" if version == "HTTP/1.1" else connection != "keep-alive"
        if method == "HEAD" or status in (204, 304) or status < 200:
            data = b""
        else:
            framed = "content-length" in lower or "chunked" in lower.get("transfer-encoding", "").lower()
            will_close = will_close or not framed
            data = await read_body(upstream.reader, lower, until_eof=not framed)
        return status, reason, headers, data, will_close

    def _bad_gateway(self, route, exc) -> tuple:
        self.emit("function %s did not answer (%s): 502" % (route.function, exc or type(exc).__name__))
        return 502, "Bad Gateway", [("Content-Type", "text/html")], b"<html><body>502 Bad Gateway</body></html>"

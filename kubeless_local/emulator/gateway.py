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
from kubeless_local.emulator import http1
from kubeless_local.emulator.recorder import MAX_BODY, NOT_CALLS, SOURCE_HEADER, Exchange, marked
from kubeless_local.errors import Conflict, UserError
from kubeless_local.paths import STATE_DIRNAME

DEFAULT_PORT = 8480
DEFAULT_HTTPS_PORT = 8443  # the HTTPS listener, once a trigger has tls or tls-secret
HOST = "127.0.0.1"
LOG_NAME = "gateway"  # the name its lines carry in dev's output
READY_WAIT = 10.0  # seconds a request waits for a function that is starting or reloading
RETRY_PAUSE = 0.02  # seconds between two attempts to reach a server that is restarting
CHUNK = 64 * 1024  # an answer's body is relayed in pieces of at most this; a smaller one in one write
UNSENT = frozenset((SOURCE_HEADER.lower(), "expect"))  # request headers the function never receives
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


async def read_body(reader: asyncio.StreamReader, headers: dict) -> bytes:
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
    return b""


class Upstream:
    """One kept-alive connection to a function's server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: tuple):
        self.reader, self.writer, self.key = reader, writer, key  # key: (host, port) it is connected to
        self.since = 0.0  # when it was last put back idle

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """The function did not answer in time: the read waiting on it fails (IncompleteReadError)."""
        self.writer.transport.abort()


class Relayed:
    """How far an answer got: once its head went to the client, a failure can only cut the connection."""

    head_sent = False


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
        self.idle: dict = {}  # function → [Upstream], touched only by the loop's thread
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
            keep = await self.forward(decision, method, headers, body, writer, keep)
        await writer.drain()
        return keep

    @classmethod
    def _answer(cls, writer, method: str, status: int, reason: str, headers: list, body: bytes, keep: bool) -> None:
        """A whole answer: `headers` (their Content-Length aside) and `body`, with its length."""
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            headers.append(("Content-Length", str(len(body))))
        head = cls._head(status, reason, headers, keep)
        writer.write(head if no_body or method == "HEAD" else head + body)

    @staticmethod
    def _head(status: int, reason: str, headers: list, keep: bool) -> bytes:
        lines = ["HTTP/1.1 %d %s" % (status, reason or _reason(status))] + ["%s: %s" % pair for pair in headers]
        if not keep:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    # ------------------------------------------------------------ forwarding
    async def _ready(self, name: str, wait: float = READY_WAIT):
        found = self.supervisor.wait_ready(name, 0)  # serving: the common case, without a thread
        if found is None and wait > 0:
            found = await asyncio.get_running_loop().run_in_executor(None, self.supervisor.wait_ready, name, wait)
        return found

    async def forward(self, decision: http_routes.Decision, method: str, headers: list, body: bytes, writer, keep):
        """Send the decided request to the function and relay its answer to `writer`; False when the client's
        connection is to close (an answer that ends with its connection, or one cut short)."""
        route = decision.route
        assert route is not None
        found = await self._ready(route.function)
        if found is None:
            self.emit("%s %s: function %s does not serve: 503" % (method, decision.target, route.function))
            self._unavailable(writer, method, keep)
            return keep
        instance, spec = found
        # the headers the function sees; Expect was answered here, and a client's own source mark is dropped
        sent = [pair for pair in decision.request_headers(headers) if pair[0].lower() not in UNSENT]
        if body or method in ("POST", "PUT", "PATCH"):
            sent.append(("Content-Length", str(len(body))))
        exchange, recorder = None, self.supervisor.recorder
        if instance.server_port:  # the process backend: its server's own port, past the front door; recorded here
            if recorder is not None and decision.target.partition("?")[0] not in NOT_CALLS:
                exchange = Exchange(
                    instance.name, method, decision.target, list(sent), source="gateway", trigger=route.trigger
                )
                exchange.request_body, exchange.request_size = body[:MAX_BODY], len(body)
                recorder.started(instance.name, method, decision.target, "gateway", exchange.started)
        else:  # the function's own URL: its front door (if any) records it as the gateway's, with the trigger
            sent += marked(instance, "gateway", route.trigger).items()
        lines = ["%s %s HTTP/1.1" % (method, decision.target)] + ["%s: %s" % pair for pair in sent]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        try:
            return await self._exchange(decision, instance, spec, method, request, writer, keep, exchange)
        finally:
            if exchange is not None:
                exchange.duration = time.time() - exchange.started
                recorder.submit(exchange)

    async def _exchange(self, decision, instance, spec, method, request, writer, keep, exchange) -> bool:
        route = decision.route
        loop = asyncio.get_running_loop()
        timeout = float(spec.timeout) + 10  # the function answers 408 itself at its timeout
        for attempt in range(2):
            # a retry: a fresh connection
            upstream = self._idle_upstream(route.function, instance) if attempt == 0 else None
            reused = upstream is not None
            if upstream is None:
                upstream = await self._connect(route.function, instance)
                if upstream is None:
                    self.emit("%s %s: function %s does not serve: 503" % (method, decision.target, route.function))
                    if exchange is not None:
                        exchange.error = "the function's server is not running (%s)" % instance.state.value
                    self._unavailable(writer, method, keep)
                    return keep
            expiry = loop.call_later(timeout, upstream.abort)  # cheaper than wait_for
            relayed = Relayed()
            try:
                upstream.writer.write(request)
                return await self._relay(upstream, writer, method, decision, keep, exchange, relayed)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                upstream.close()
                if relayed.head_sent:
                    return self._cut_short(exchange, exc)
                if not expiry.cancelled() and expiry.when() <= loop.time():
                    late = TimeoutError("no answer within %gs" % timeout)
                    return self._bad_gateway(route, late, writer, keep, exchange)
                if reused and attempt == 0:
                    continue  # a kept-alive connection the function closed while idle: a fresh one
                return self._bad_gateway(route, exc, writer, keep, exchange)
            except (OSError, TimeoutError, asyncio.LimitOverrunError, BadMessage) as exc:
                upstream.close()
                if relayed.head_sent:
                    return self._cut_short(exchange, exc)
                return self._bad_gateway(route, exc, writer, keep, exchange)
            finally:
                expiry.cancel()
        raise AssertionError("unreachable")

    async def _connect(self, name: str, instance) -> Optional[Upstream]:
        """A new connection to the function's server; one that is (re)starting or reloading is waited for (its
        private port changes at each start, so it is asked again), up to READY_WAIT. None when none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT
        while True:
            try:
                key = self._address(instance)
                return Upstream(*await asyncio.open_connection(*key, limit=MAX_HEAD), key)
            except OSError:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
            await asyncio.sleep(RETRY_PAUSE)
            found = await self._ready(name, max(deadline - loop.time(), 0))
            if found is None:
                return None
            instance = found[0]

    @staticmethod
    def _address(instance) -> tuple:
        """Where the function's server takes connections: its private port (process backend), else its URL."""
        return (HOST, instance.server_port) if instance.server_port else _address(instance.url)

    def _idle_upstream(self, function: str, instance) -> Optional[Upstream]:
        """A kept-alive connection to the function's server that it has not closed, nor will close any moment
        now (Node closes one idle for 5 s): the most recently used one."""
        pool = self.idle.get(function) or []
        key = self._address(instance)
        while pool:
            upstream = pool.pop()
            fresh = time.monotonic() - upstream.since < MAX_IDLE_SECONDS
            if upstream.key == key and fresh and not upstream.reader.at_eof():  # a restarted server: a new port
                return upstream
            upstream.close()
        return None

    def _pool(self, upstream: Upstream, function: str) -> None:
        pool = self.idle.setdefault(function, [])
        if len(pool) < MAX_IDLE:
            upstream.since = time.monotonic()
            pool.append(upstream)
        else:
            upstream.close()

    async def _relay(self, upstream, writer, method, decision, keep, exchange, relayed) -> bool:
        """Relay the function's answer: its head with the route's headers over it, its body in pieces as it comes
        (never held whole); the upstream connection goes back to the pool when the answer was framed."""
        reader = upstream.reader
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            (version, status_text, reason), answered = parse_head(head)
            if not status_text.isdigit():
                raise BadMessage("malformed status line")
            status = int(status_text)
            if not (100 <= status < 200) or status == 101:
                break  # an interim answer (100 Continue) is skipped, as the front door does
        lower = {name.lower(): value for name, value in answered}
        chunked = http1.is_chunked(lower)
        length = lower.get("content-length")
        if length is not None and not length.isdigit():
            raise BadMessage("malformed Content-Length")
        has_body = http1.answer_has_body(method, status)
        framed = not has_body or chunked or length is not None
        server_keeps = framed and http1.keeps_alive(version, lower)
        keep = keep and framed  # an answer that ends with its connection ends the client's too
        if exchange is not None:
            exchange.status, exchange.response_headers = status, answered
        headers = decision.response_headers_over(answered)
        if not has_body:
            self._answer(writer, method, status, reason, headers, b"", keep)
        elif length is not None and int(length) <= CHUNK:
            data = await reader.readexactly(int(length)) if int(length) else b""
            self._answer(writer, method, status, reason, headers, data, keep)
            if exchange is not None:
                exchange.response_body, exchange.response_size = data[:MAX_BODY], len(data)
        else:
            framing = [("Content-Length", length)] if length is not None else []
            framing += [("Transfer-Encoding", "chunked")] if chunked else []
            writer.write(self._head(status, reason, headers + framing, keep))
            relayed.head_sent = True
            if chunked:
                await self._relay_chunked(reader, writer, exchange)
            else:
                await self._relay_bytes(reader, writer, int(length) if length is not None else None, exchange)
        if server_keeps:
            self._pool(upstream, decision.route.function)
        else:
            upstream.close()
        return keep

    @staticmethod
    async def _relay_bytes(reader, writer, length: Optional[int], exchange) -> None:
        """`length` bytes (None: until the connection ends), passed on piece by piece."""
        kept, size = bytearray(), 0
        while length is None or size < length:
            data = await reader.read(CHUNK if length is None else min(CHUNK, length - size))
            if not data:
                if length is None:
                    break
                raise asyncio.IncompleteReadError(bytes(kept), length)
            size += len(data)
            if exchange is not None and len(kept) < MAX_BODY:
                kept += data[: MAX_BODY - len(kept)]
            writer.write(data)
            await writer.drain()
        if exchange is not None:
            exchange.response_body, exchange.response_size = bytes(kept), size

    @staticmethod
    async def _relay_chunked(reader, writer, exchange) -> None:
        """A chunked body passed on chunk by chunk as it is (sizes, data, trailers)."""
        kept, size = bytearray(), 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadMessage("malformed chunk size") from None
            if length == 0:
                while line != b"\r\n":  # trailers, then the blank line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                break
            data = await reader.readexactly(length + 2)
            size += length
            if exchange is not None and len(kept) < MAX_BODY:
                kept += data[: min(length, MAX_BODY - len(kept))]
            writer.write(line + data)
            await writer.drain()
        if exchange is not None:
            exchange.response_body, exchange.response_size = bytes(kept), size

    def _cut_short(self, exchange, exc) -> bool:
        """The answer broke after its head went to the client: the client's connection closes."""
        if exchange is not None:
            exchange.error = "the answer was cut short (%s)" % (exc or type(exc).__name__)
        return False

    def _unavailable(self, writer, method: str, keep: bool) -> None:
        """What an ingress without endpoints answers."""
        self._answer(
            writer, method, 503, "Service Temporarily Unavailable", [("Content-Type", "text/html")], UNAVAILABLE, keep
        )

    def _bad_gateway(self, route, exc, writer, keep, exchange) -> bool:
        self.emit("function %s did not answer (%s): 502" % (route.function, exc or type(exc).__name__))
        if exchange is not None:
            exchange.status = 0
            exchange.error = "the function's server closed the connection without answering (%s)" % (
                exc or type(exc).__name__
            )
        body = b"<html><body>502 Bad Gateway</body></html>"
        self._answer(writer, "GET", 502, "Bad Gateway", [("Content-Type", "text/html")], body, keep)
        return keep

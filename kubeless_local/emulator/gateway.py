"""The HTTPTrigger gateway of `dev`: one listener on 127.0.0.1 routing as the cluster's ingress controller does.

Guarantee: every request is decided by `http_routes.RouteTable.decide`, the table `gateway explain` and push's
Ingresses use too; this module only moves bytes. A decision is worked out once per request head (Plan: the same
head from the same address and scheme, under the same table, is decided alike; only its X-Request-ID is new each
time), and a function's answer head is read once per distinct head (answer_head). It listens only while the
project has HTTPTriggers (bound on the first table that has routes; a taken port is a `Conflict` then). A request
the table forwards goes to the function's server over a kept-alive connection (a pool per function), with the
ingress-nginx forwarded headers set, `Proxy`, `Expect` (answered here) and, after basic auth, `Authorization`
removed; the answer comes back with the route's CORS headers replacing any of the same name the function set, its
body relayed in the pieces it arrives in (never held whole; one without a length ends the client's connection with
it). A function that does not serve yet, or whose server is restarting, is waited for up to READY_WAIT seconds,
then answered 503 as an ingress without endpoints answers; one whose answer has not ended within its timeout +
ANSWER_MARGIN seconds, 502 (found by one sweep a second, not a timer per request).

Where it goes: past the function's front door, where the backend says its server is (Backend.server_target,
asked again at each new connection): the process backend's server on its private port (it changes at each
start); the docker backend's container through the door's own target (a connector's handed-over connection
in relay mode, the published port in bridge mode; in host mode, which has no door, the function's port). The
gateway records the call itself, as the door would (recorder.Exchange with source=gateway and the trigger;
/healthz and /metrics are not calls). A call in flight on a container is counted with its door
(FrontDoor.visit), so that a blue/green save removes the old container only once it is answered; a connection
to a container the door no longer points at is not used again. Where the backend names none, the function's
URL, with the gateway's mark (recorder.marked). One relay in `dev` either way: through the door as well, a
request crossed two Python relays sharing dev's GIL (0.4× of the direct throughput at c10, BENCHMARKS.md
"HTTPTrigger gateway").

One asyncio loop in a thread of its own serves every connection with Protocols (Client, Upstream; HTTP/1.1
read as it passes by http1.Stream, as the docker door reads it: streams cost more per request), and, once a
trigger has `tls` or `tls-secret`, a second listener for HTTPS whose certificate SNI picks (emulator/tls.py).
"""

import asyncio
import collections
import functools
import hashlib
import os
import re
import socket
import ssl
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.emulator import http1
from kubeless_local.emulator.base import Reach
from kubeless_local.emulator.frontdoor import FrontDoor, receive_connection
from kubeless_local.emulator.portholder import held_by
from kubeless_local.emulator.recorder import MAX_BODY, NOT_CALLS, SOURCE_HEADER, Exchange, marked
from kubeless_local.errors import Conflict, UserError
from kubeless_local.paths import STATE_DIRNAME

DEFAULT_PORT = 8480
DEFAULT_HTTPS_PORT = 8443  # the HTTPS listener, once a trigger has tls or tls-secret
MOVE_UP_TO = 20  # a default port in use (most often by another project's `dev`): the ports above it tried
HOST = "127.0.0.1"
LOG_NAME = "gateway"  # the name its lines carry in dev's output
READY_WAIT = 10.0  # seconds a request waits for a function that is starting or reloading
RETRY_PAUSE = 0.02  # seconds between two attempts to reach a server that is restarting
ANSWER_MARGIN = 10.0  # seconds past the function's timeout its answer is waited for (it answers 408 itself then)
SWEEP_EVERY = 1.0  # seconds between two looks for overdue answers (one timer for every request, not one each)
UNSENT = frozenset((SOURCE_HEADER.lower(), "expect"))  # request headers the function never receives
UNAVAILABLE = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>503 Service Temporarily"
    b" Unavailable</body></html>"
)


MAX_PIPELINED = 16  # requests a client sent ahead of their answers; beyond, its connection is not read
MAX_IDLE = 16  # idle kept-alive connections kept per function
MAX_IDLE_SECONDS = 4.0  # below the shortest keep-alive timeout of the runtimes' servers (Node: 5 s)
PLANS = 256  # request heads whose plans are kept (answer heads read: as many)
KEPT_HEAD = 8 * 1024  # bytes of the longest head whose plan or reading is kept (they are kept whole, as keys)
MOVES = 5  # connections made for one request whose function's server moved meanwhile (blue/green), at most


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
    """(first line's three parts, [(name, value)]) of a message head ending in a blank line."""
    try:
        first, *lines = head.decode("latin-1").rstrip("\r\n").replace("\r\n", "\n").split("\n")
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


class Gateway:
    """Create, then feed it manifests with `update` (the project calls it on every load); `stop` at the end.
    `loaded`: made after the session's first load (by a reload that added the first HTTPTrigger)."""

    def __init__(
        self,
        supervisor,
        logs,
        root: Path,
        ignore=(),
        port: Optional[int] = None,
        https_port: Optional[int] = None,
        loaded: bool = False,
    ):
        self.supervisor = supervisor
        self.logs = logs
        self.root = Path(root)
        self.ignore = ignore
        self.port = DEFAULT_PORT if port is None else port
        self.chosen = {"http": port is not None, "https": https_port is not None}  # by the user: that port or none
        self.table = http_routes.RouteTable()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.server: Optional[asyncio.Server] = None
        self.thread: Optional[threading.Thread] = None
        self.idle: dict = {}  # function → [Upstream], touched only by the loop's thread
        self.clients: set = set()  # the open client connections (Client)
        self.shown: tuple = ()  # the route lines last printed
        self.problems: list = []
        self.loaded = loaded  # the first update (dev's start) raises a taken port; later ones say it
        self.https_port = DEFAULT_HTTPS_PORT if https_port is None else https_port
        self.https_server: Optional[asyncio.Server] = None
        self.contexts: dict = {}  # SNI host name → SSLContext
        self.certificates: dict = {}  # (kind, host, digest) → SSLContext, kept across reloads
        self.sweeper: Optional[asyncio.TimerHandle] = None
        self.plans: dict = {}  # (head, client address, scheme) → Plan, made under...
        self.planned_under: tuple = ()  # ...this (route table, HTTPS port)

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
        self.server = self._listen_where_free(self.port, "http")
        self.port = self.server.sockets[0].getsockname()[1]  # port 0: the one the system gave

    def _listen_where_free(self, port: int, scheme: str, context: Optional[ssl.SSLContext] = None) -> asyncio.Server:
        """A listener on `port`, or, where it is the default port and in use, on the first free one of the
        MOVE_UP_TO above it, said in a line (as a function whose port is taken gets another): two projects' `dev`
        both have their gateway. A port the user chose is that port or a Conflict."""
        try:
            return self._listen(port, scheme, context)
        except Conflict:
            if self.chosen[scheme] or not port:
                raise
            taken = held_by(port)
            for other in range(port + 1, port + 1 + MOVE_UP_TO):
                try:
                    server = self._listen(other, scheme, context)
                except Conflict:
                    continue
                self.emit(
                    "%s:%d is in use%s: the %s routes are on port %d (--gateway-%sport chooses one)"
                    % (HOST, port, taken, scheme.upper(), other, "https-" if scheme == "https" else "")
                )
                return server
            raise

    def _listen(self, port: int, scheme: str, context: Optional[ssl.SSLContext] = None) -> asyncio.Server:
        """A listener on the gateway's loop (started with the first one); a Conflict when the port is taken."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.loop.set_exception_handler(self._loop_error)
            self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
            self.thread.start()
            self.loop.call_soon_threadsafe(self._sweep)
        opening = self.loop.create_server(lambda: Client(self, scheme), HOST, port, backlog=128, ssl=context)
        try:
            return asyncio.run_coroutine_threadsafe(opening, self.loop).result(timeout=10)
        except OSError as exc:
            raise Conflict(
                "the HTTPTrigger gateway cannot listen on %s:%d: %s%s"
                % (HOST, port, os.strerror(exc.errno) if exc.errno else exc, held_by(port) if port else ""),
                "gateway port",
                str(port),
            ) from None

    def _sweep(self) -> None:
        """Every SWEEP_EVERY seconds: a forwarded request whose answer is overdue ends (502). One timer for all:
        one per request was a heap entry made and cancelled per request, freed by the garbage collector."""
        assert self.loop is not None
        self.sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)  # first: a failure below stops no later sweep
        now = self.loop.time()
        for client in list(self.clients):
            job = client.job
            if job is not None and job.upstream is not None and not job.finished and job.deadline <= now:
                job.expire()

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
            if self.sweeper is not None:
                self.sweeper.cancel()
            for server in servers:
                server.close()
            for pool in self.idle.values():
                for upstream in pool:
                    upstream.close()
            self.idle.clear()
            for client in list(self.clients):
                client.close()  # an answer being relayed is cut: its job ends as its client goes
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
            self.https_server = self._listen_where_free(self.https_port, "https", default)
            self.https_port = self.https_server.sockets[0].getsockname()[1]

    def _pick_certificate(self, connection, server_name, context) -> None:
        """SNI: the certificate of the host the client names (the listener's default otherwise)."""
        chosen = self.contexts.get((server_name or "").lower())
        if chosen is not None and chosen is not context:
            connection.context = chosen

    # ------------------------------------------------------------ serving
    def _answer(
        self,
        client: "Client",
        method: str,
        status: int,
        reason: str,
        headers: list,
        body: bytes,
        keep: bool,
        http10: bool,
    ):
        """A whole answer: `headers` (their Content-Length aside) and `body`, with its length; `http10`: to an
        HTTP/1.0 request."""
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            headers.append(("Content-Length", str(len(body))))
        head = head_of(status, reason, headers, keep, http10)
        client.write(head if no_body or method == "HEAD" else head + body)

    def plan(self, head: bytes, client: "Client") -> "Plan":
        """The plan of a request head from this client's address and scheme. Made once for the table in force and
        the HTTPS port (a new table or port starts a new set) and kept, but for a long head, until PLANS are kept
        (then all are let go: heads that never repeat cost a parse each, as without plans)."""
        table, known = self.table, self.plans
        under = (table, self.https_port)
        if self.planned_under != under or len(known) > PLANS:
            known = self.plans = {}
            self.planned_under = under
        key = (head, client.peer, client.scheme)
        plan = known.get(key)
        if plan is None:
            decide = functools.partial(
                table.decide,
                client=client.peer,
                scheme=client.scheme,
                port=self.https_port if client.scheme == "https" else self.port,
                https_port=self.https_port,
            )
            plan = Plan(head, decide)
            if len(head) <= KEPT_HEAD:
                known[key] = plan
        return plan

    def serve(self, client: "Client", request: "Request") -> None:
        """Answer one request: decided here, or forwarded (`client.done` once its answer is out)."""
        plan = request.plan
        decision = plan.decision
        if decision.status:
            if decision.status in (404, 401):
                self.emit(
                    "%s %s (Host %s): %d, %s"
                    % (plan.method, plan.target, plan.fields.get("host"), decision.status, decision.reason)
                )
            headers = list(decision.response_headers)
            self._answer(client, plan.method, decision.status, "", headers, decision.body, plan.keep, plan.http10)
            client.done(plan.keep)
            return
        route = decision.route
        assert route is not None
        found = self.supervisor.wait_ready(route.function, 0)  # serving: the common case, without a thread
        job = Job(self, client, request, found)
        upstream = self._idle_upstream(route.function, job.target) if found is not None else None
        if upstream is None or not job.send(upstream, reused=True):
            client.task = asyncio.ensure_future(self.reach(job))  # waits for the function, or connects

    # ------------------------------------------------------------ forwarding
    async def _ready(self, name: str, wait: float = READY_WAIT):
        found = self.supervisor.wait_ready(name, 0)
        if found is None and wait > 0:
            found = await asyncio.get_running_loop().run_in_executor(None, self.supervisor.wait_ready, name, wait)
        return found

    async def reach(self, job: "Job") -> None:
        """A job without an idle connection: the function waited for (a few seconds, then 503), a connection made."""
        name = job.decision.route.function
        if job.found is None:
            job.found = await self._ready(name)
            if job.found is None:
                self.emit("%s %s: function %s does not serve: 503" % (job.method, job.decision.target, name))
                job.unavailable(recorded=False)
                return
            job.prepare()
        for _ in range(MOVES):
            upstream = await self._connect(name, job)
            if upstream is None:
                self.emit("%s %s: function %s does not serve: 503" % (job.method, job.decision.target, name))
                job.unavailable(recorded=True)
                return
            if job.send(upstream, reused=False):
                return
        job.unavailable(recorded=True)  # the function's server moved at every attempt

    async def _connect(self, name: str, job: "Job") -> Optional["Upstream"]:
        """A new connection to the function's server; one that is (re)starting or reloading is waited for (its
        private port changes at each start, so it is asked again), up to READY_WAIT. None when none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT
        while True:
            job.aim()
            target, generation = job.target, job.reach.generation if job.reach is not None else None
            try:
                made = functools.partial(Upstream, target, generation)
                if target is None:
                    raise ConnectionRefusedError("the function's door points nowhere yet")
                if isinstance(target, str):  # a connector's socket (the docker backend's relay mode)
                    _, upstream = await loop.create_connection(made, sock=await receive_connection(target))
                else:
                    _, upstream = await loop.create_connection(made, *target)
                return upstream
            except OSError:
                if deadline - loop.time() <= 0:
                    return None
            await asyncio.sleep(RETRY_PAUSE)
            found = await self._ready(name, max(deadline - loop.time(), 0))
            if found is None:
                return None
            job.found = found

    def _idle_upstream(self, function: str, key) -> Optional["Upstream"]:
        """A kept-alive connection to the function's server that it has not closed, nor will close any moment
        now (Node closes one idle for 5 s): the most recently used one."""
        pool = self.idle.get(function)
        if not pool:
            return None
        while pool:
            upstream = pool.pop()
            fresh = time.monotonic() - upstream.since < MAX_IDLE_SECONDS
            if upstream.key == key and fresh and not upstream.closed:  # a restarted server: a new port
                return upstream
            upstream.close()
        return None

    def pool(self, upstream: "Upstream", function: str) -> None:
        pool = self.idle.setdefault(function, [])
        if len(pool) < MAX_IDLE and not upstream.closed:
            upstream.since = time.monotonic()
            pool.append(upstream)
        else:
            upstream.close()

    def bad_gateway(self, job: "Job", exc) -> None:
        self.emit("function %s did not answer (%s): 502" % (job.decision.route.function, exc or type(exc).__name__))
        body = b"<html><body>502 Bad Gateway</body></html>"
        self._answer(job.client, "GET", 502, "Bad Gateway", [("Content-Type", "text/html")], body, job.keep, job.http10)

    def unavailable(self, client: "Client", method: str, keep: bool, http10: bool) -> None:
        """What an ingress without endpoints answers."""
        headers = [("Content-Type", "text/html")]
        self._answer(client, method, 503, "Service Temporarily Unavailable", headers, UNAVAILABLE, keep, http10)


@functools.lru_cache(maxsize=64)
def dropping(replaced: tuple) -> "re.Pattern[bytes]":
    """The header lines of an answer's head the client never gets: hop-by-hop ones, its framing (set again by the
    gateway), and those whose names the route sets itself (`replaced`, its CORS headers)."""
    names = sorted(http_routes.HOP_BY_HOP | {"content-length"} | {name.lower() for name in replaced})
    # a line is taken out from its start to its own CR (the one before stays): twice as fast as matching \r?\n
    return re.compile(rb"\n(?:%s)[ \t]*:[^\n]*" % b"|".join(re.escape(n.encode()) for n in names), re.I)


@functools.lru_cache(maxsize=64)
def answer_rewrite(replacing: tuple) -> tuple:
    """(the pattern of the header lines an answer loses, the header lines the route sets on it as bytes, each
    after a line break): made once per route's headers, not per answer."""
    added = "".join("\r\n%s: %s" % pair for pair in replacing).encode("latin-1", "replace")
    return dropping(tuple(name for name, _ in replacing)), added


def answer_head(head: bytes, method: str, keep: bool, replacing: tuple, http10: bool) -> tuple:
    """read_answer_head, kept for the next heads but for a long one: each distinct head is read once (a server's
    heads repeat but for their Date, which changes once a second)."""
    if len(head) > KEPT_HEAD:
        return read_answer_head(head, method, keep, replacing, http10)
    return _kept_answer_head(head, method, keep, replacing, http10)


def read_answer_head(head: bytes, method: str, keep: bool, replacing: tuple, http10: bool) -> tuple:
    """(status, the head the client gets, its body's framing, whether the server keeps the connection, whether
    the client's is kept) of a function's answer head to `method` (of an HTTP/1.0 request: `http10`) on a client
    connection kept alive or not (`keep`), under a route setting the headers `replacing` (CORS): the function's
    head with its hop-by-hop
    headers and those the route sets taken out as bytes, the route's and the framing's added. An interim
    answer (100 Continue) passes on as b""."""
    end = head.find(b"\n")
    parts = head[:end].split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit() or not parts[0].startswith(b"HTTP/1."):
        raise BadMessage("malformed status line")
    status = int(parts[1])
    if 100 <= status < 200 and status != 101:
        return status, b"", (http1.NONE, 0), True, keep
    lowered = head.lower()
    length, connection = http1.field(lowered, b"content-length:"), http1.field(lowered, b"connection:")
    if length is not None and not length.isdigit():
        raise BadMessage("malformed Content-Length")
    chunked = b"chunked" in (http1.field(lowered, b"transfer-encoding:") or b"")
    has_body = http1.answer_has_body(method, status)
    framed = not has_body or chunked or length is not None
    version = parts[0].decode("latin-1")
    fields = {"connection": connection.decode("latin-1")} if connection is not None else {}
    upgraded = status == 101  # not relayed as such: neither connection carries HTTP after it
    server_keeps = framed and not upgraded and http1.keeps_alive(version, fields)
    keep = keep and framed and not upgraded  # an answer that ends with its connection ends the client's
    dropped, added = answer_rewrite(replacing)
    if not has_body:
        framing: http1.Framing = (http1.NONE, 0)
        if status not in http1.NO_BODY_STATUS and length is not None:
            added += b"\r\nContent-Length: " + length  # a HEAD's answer says the length a GET's would have
    elif chunked:
        framing = (http1.CHUNKED, 0)
        added += b"\r\nTransfer-Encoding: chunked"
    elif length is not None:
        framing = (http1.LENGTH, int(length))
        added += b"\r\nContent-Length: " + length
    else:
        framing = (http1.UNTIL_CLOSE, 0)
    if not keep:
        added += b"\r\nConnection: close"
    elif http10:
        added += b"\r\nConnection: keep-alive"  # else an HTTP/1.0 client waits for the close (ab -k)
    kept = dropped.sub(b"", head.rstrip(b"\r\n")).rstrip(b"\r")
    return status, kept + added + b"\r\n\r\n", framing, server_keeps, keep


_kept_answer_head = functools.lru_cache(maxsize=PLANS)(read_answer_head)


def head_of(status: int, reason: str, headers: list, keep: bool, http10: bool) -> bytes:
    lines = ["HTTP/1.1 %d %s" % (status, reason or _reason(status))] + ["%s: %s" % pair for pair in headers]
    if not keep:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


class Plan:
    """What the gateway does with one request head from one client address and scheme, worked out once per
    distinct head: a client's heads repeat (a browser's, a test's, a load generator's), and everything the table
    decides follows from the head, the address, the scheme and the gateway's ports. Holds the head read, the
    table's decision and, for a forwarded request, the head the function receives up to its framing, split
    where its X-Request-ID goes (a new one for each request, unless the client sent its own)."""

    __slots__ = ("after", "before", "decision", "fields", "framing", "http10", "is_call", "keep", "method", "target")

    def __init__(self, head: bytes, decide) -> None:
        (self.method, self.target, version), headers = parse_head(head)
        if not version.startswith("HTTP/1."):
            raise BadMessage("not HTTP/1.x: %r" % version[:20])
        self.fields = {name.lower(): value for name, value in headers}
        self.keep = http1.keeps_alive(version, self.fields)
        self.http10 = version == "HTTP/1.0"
        self.framing = framing_of(self.fields)
        self.decision = decision = decide(self.method, self.fields.get("host", ""), self.target, self.fields)
        self.before = self.after = b""
        self.is_call = decision.target.partition("?")[0] not in NOT_CALLS  # a call of the function's, recorded
        if decision.status:
            return
        sent = decision.request_headers(headers, UNSENT)
        start = ("%s %s HTTP/1.1\r\n" % (self.method, decision.target)).encode("latin-1", "replace")
        if self.fields.get("x-request-id"):  # the client's own id (decide() passes it on): the same head each time
            self.before = start + header_lines(sent)
            return
        at = [name for name, _ in sent].index(http_routes.REQUEST_ID)  # the id decide() made: new for each request
        self.before = start + header_lines(sent[:at]) + http_routes.REQUEST_ID.encode() + b": "
        self.after = b"\r\n" + header_lines(sent[at + 1 :])

    def head(self) -> bytes:
        """A head for the function, without its framing and its final blank line; a new X-Request-ID in it."""
        if not self.after:
            return self.before
        return self.before + http_routes.new_request_id().encode() + self.after


def header_lines(pairs: list) -> bytes:
    return "".join(["%s: %s\r\n" % pair for pair in pairs]).encode("latin-1", "replace")


def framing_of(fields: dict) -> http1.Framing:
    """How a request's body is framed, by its headers (lower-cased names)."""
    if http1.is_chunked(fields):
        return http1.CHUNKED, 0
    length = fields.get("content-length")
    if length is None:
        return http1.NONE, 0
    if not length.isdigit():
        raise BadMessage("malformed Content-Length")
    return http1.LENGTH, int(length)


class Request:
    """One request as the client sent it: its head's plan, and its body whole (decoded when chunked)."""

    __slots__ = ("body", "plan")

    def __init__(self, plan: Plan) -> None:
        self.plan, self.body = plan, bytearray()


class Client(asyncio.Protocol):
    """One client connection: requests read as they come (http1.Stream), answered one at a time, in order."""

    def __init__(self, gateway: "Gateway", scheme: str) -> None:
        self.gateway, self.scheme = gateway, scheme
        self.transport: Optional[asyncio.Transport] = None
        self.peer = HOST
        self.stream = http1.Stream(self._head, self._body, self._end)
        self.reading: Optional[Request] = None
        self.waiting: collections.deque = collections.deque()  # complete requests not answered yet
        self.busy = False  # a request is being answered
        self.closed = False
        self.job: Optional[Job] = None  # the forwarded request being answered
        self.task: Optional[asyncio.Future] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = (transport.get_extra_info("peername") or (HOST, 0))[0]
        self.gateway.clients.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.gateway.clients.discard(self)
        if self.job is not None:
            self.job.client_gone()
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.stream.feed(data)
            if self.stream.state == http1.OPAQUE:
                raise BadMessage("a head too long, or not HTTP/1.1")
        except BadMessage:
            self.waiting.clear()
            self.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.close()
            return
        except Exception as exc:  # noqa: BLE001 - a head the table failed to decide: said, as a failed request is
            self.gateway.emit("request from %s failed: %r" % (self.peer, exc))
            self.close()
            return
        if len(self.waiting) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()  # a client that sends without reading: it waits
        self._next()

    def eof_received(self) -> bool:
        self.waiting.append(None)  # after the requests before it are answered, the connection closes
        self._next()
        return True  # half-closed: the answers still go out

    def pause_writing(self) -> None:
        if self.job is not None:
            self.job.pause(True)

    def resume_writing(self) -> None:
        if self.job is not None:
            self.job.pause(False)

    # the request stream's callbacks
    def _head(self, head: bytes) -> tuple:
        plan = self.gateway.plan(head, self)
        self.reading = Request(plan)
        expect = plan.fields.get("expect")
        if expect and "100-continue" in expect.lower():
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body is read here, whole
        return b"", plan.framing

    def _body(self, piece: memoryview) -> None:
        assert self.reading is not None
        self.reading.body += piece

    def _end(self) -> None:
        self.waiting.append(self.reading)
        self.reading = None

    def _next(self) -> None:
        """Serve the next complete request, unless one is being answered."""
        while not self.busy and self.waiting and not self.closed:
            request = self.waiting.popleft()
            if request is None:
                self.close()
                return
            self.busy = True
            try:
                self.gateway.serve(self, request)
            except Exception as exc:  # noqa: BLE001 - one bad request must not end the gateway; said in its log
                self.gateway.emit("request from %s failed: %r" % (self.peer, exc))
                self.close()

    def done(self, keep: bool) -> None:
        """The answer is out: the next request, or the connection closes."""
        self.busy, self.job, self.task = False, None, None
        if not keep:
            self.close()
            return
        if self.transport is not None and len(self.waiting) <= MAX_PIPELINED:
            self.transport.resume_reading()
        self._next()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # what is written still goes out


class Upstream(asyncio.Protocol):
    """One kept-alive connection to a function's server; its answers go to the job it carries."""

    def __init__(self, key: Any, generation: Optional[int] = None) -> None:
        self.key = key  # where it is connected: (host, port), or the connector socket that handed it over
        self.generation = generation  # of the code serving there when it was connected, if known
        self.transport: Optional[asyncio.Transport] = None
        self.job: Optional[Job] = None
        self.closed = False
        self.since = 0.0  # when it was last put back idle
        # the answers' reader, one per connection: a job's own would make a reference cycle per request, which
        # only the cyclic garbage collector frees
        self.stream = http1.Stream(self._head, self._body, self._end)

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.job is not None:
            self.job.feed(data)
        else:
            self.close()  # the server said something while idle: not to be used again

    def _head(self, head: bytes) -> tuple:
        assert self.job is not None
        return self.job.head(head)

    def _body(self, piece: memoryview) -> None:
        assert self.job is not None
        self.job.body(piece)

    def _end(self) -> None:
        assert self.job is not None
        self.job.end()

    def eof_received(self) -> bool:
        self.closed = True
        if self.job is not None:
            self.job.ended(ConnectionResetError("the function's server closed the connection"))
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.job is not None:
            self.job.ended(exc or ConnectionResetError("the function's server closed the connection"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Job:
    """One forwarded request: sent to the function's server, its answer relayed to the client as it comes
    (http1.Stream: the head rewritten, the body passed on in the pieces it arrives in, never held whole), and,
    on the process backend, recorded as the front door records a call."""

    __slots__ = (
        "client",
        "deadline",
        "decision",
        "done_reading",
        "exchange",
        "expired",
        "finished",
        "found",
        "gateway",
        "head_sent",
        "http10",
        "interim",
        "keep",
        "kept",
        "method",
        "payload",
        "reach",
        "request",
        "reused",
        "server_keeps",
        "size",
        "stream",
        "target",
        "upstream",
        "visiting",
    )  # one made per request: its attributes in slots, not a dict

    def __init__(self, gateway: Gateway, client: Client, request: Request, found) -> None:
        self.gateway, self.client, self.request, self.found = gateway, client, request, found
        plan = request.plan
        self.decision, self.method, self.keep, self.http10 = plan.decision, plan.method, plan.keep, plan.http10
        self.upstream: Optional[Upstream] = None
        self.reused = False
        self.deadline = 0.0  # loop time by which the answer must have ended (Gateway._sweep)
        self.expired = False
        self.head_sent = False  # once the answer's head went out, a failure can only cut the connection
        self.server_keeps = False
        self.interim = False
        self.finished = False
        self.exchange: Optional[Exchange] = None
        self.kept = bytearray()
        self.size = 0
        self.payload = b""
        self.stream: Optional[http1.Stream] = None  # the answer's reader: its connection's
        self.done_reading = False
        self.reach: Optional[Reach] = None  # past the function's front door (None: through its URL)
        self.target: Any = None  # where its connection goes: reach's target, else the URL's address
        self.visiting: Optional[FrontDoor] = None  # the door told of this call in flight on `target`
        client.job = self
        if found is not None:
            self.prepare()

    def aim(self) -> None:
        """Where the function's server is reached now: past its front door when the backend says where (one relay
        in `dev`: this one, which records the call), else through its URL (the door records it)."""
        assert self.found is not None
        instance = self.found[0]
        self.reach = self.gateway.supervisor.server_target(instance)
        self.target = self.reach.target if self.reach is not None else _address(instance.url)

    def prepare(self) -> None:
        """The request as the function's server receives it, and its record."""
        self.aim()
        assert self.found is not None
        instance, _ = self.found
        plan, body = self.request.plan, bytes(self.request.body)
        head = plan.head()
        if body or self.method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: %d\r\n" % len(body)
        if self.reach is None:  # the function's own URL: its front door (if any) records it, as the gateway's
            head += header_lines(list(marked(instance, "gateway", self.decision.route.trigger).items()))
        head += b"\r\n"
        self.payload = head + body
        recorder = self.gateway.supervisor.recorder
        if self.reach is not None and recorder is not None and plan.is_call:
            # past the front door: recorded here as the door does (the heads are stored as they are, parsed when
            # the record is read)
            target = self.decision.target
            self.exchange = exchange = Exchange(instance.name, self.method, target, (), source="gateway")
            exchange.trigger, exchange.request_head = self.decision.route.trigger, head
            exchange.request_body, exchange.request_size = body[:MAX_BODY], len(body)
            recorder.started(instance.name, self.method, target, "gateway", exchange.started)

    def send(self, upstream: Upstream, reused: bool) -> bool:
        """Send the request on `upstream`; False (the upstream closed) when the function's door points elsewhere
        since it was connected: its old server may be going, the caller connects again."""
        if self.client.closed:
            self.upstream = upstream
            self.finish(reusable=True, error="the client went away before the answer")
            return True
        door = self.reach.door if self.reach is not None else None
        if door is not None:
            if not door.visit(upstream.key, 1):
                upstream.close()
                return False
            self.visiting = door
        self.upstream, self.reused, upstream.job = upstream, reused, self
        self.stream = upstream.stream
        self.done_reading = self.head_sent = self.expired = False
        assert self.gateway.loop is not None and upstream.transport is not None
        self.deadline = self.gateway.loop.time() + self.waited()
        upstream.transport.write(self.payload)
        return True

    def waited(self) -> float:
        """Seconds its answer is waited for."""
        return float(self.found[1].timeout) + ANSWER_MARGIN

    def expire(self) -> None:
        self.expired = True
        self.ended(TimeoutError("no answer within %gs" % self.waited()))

    def feed(self, data: bytes) -> None:
        assert self.stream is not None
        try:
            out = self.stream.feed(data)
            if self.stream.state == http1.OPAQUE:
                raise BadMessage("an answer that is not HTTP/1.1")
        except BadMessage as exc:
            self.ended(exc)
            return
        if out:
            self.client.write(out)
        if self.stream.state == http1.UNTIL_CLOSE:
            return
        if self.done_reading:
            self.finish(reusable=self.server_keeps)

    def head(self, head: bytes) -> tuple:
        """The answer's head as the client gets it, and how its body is framed (answer_head)."""
        status, passed, framing, server_keeps, keep = answer_head(
            head, self.method, self.keep, self.decision.response_headers, self.http10
        )
        if not passed:
            self.interim = True  # an interim answer (100 Continue) is skipped, as the front door does
            return b"", framing
        self.server_keeps, self.keep = server_keeps, keep
        if self.exchange is not None:
            self.exchange.status, self.exchange.response_head = status, head
        self.head_sent = True
        return passed, framing

    def body(self, piece: memoryview) -> None:
        self.size += len(piece)
        if self.exchange is not None and len(self.kept) < MAX_BODY:
            self.kept += piece[: MAX_BODY - len(self.kept)]

    def end(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done_reading = True

    def pause(self, paused: bool) -> None:
        """The client reads slower than the function answers: the function's connection waits."""
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            if paused:
                upstream.transport.pause_reading()
            else:
                upstream.transport.resume_reading()

    def ended(self, exc: BaseException) -> None:
        """The function's connection ended (or failed, or timed out) before the answer did."""
        if self.finished:
            return
        if self.stream is not None and self.stream.state == http1.UNTIL_CLOSE and not self.expired:
            self.keep = False  # an answer without a length ends with its connection: it is whole
            self.finish(reusable=False)
            return
        if self.head_sent:
            self.keep = False
            self.finish(reusable=False, error="the answer was cut short (%s)" % (exc or type(exc).__name__))
            return
        if self.reused and not self.expired and self.upstream is not None:
            # a kept-alive connection the function closed while idle: once more, on a fresh one
            self._release(reusable=False)
            self.reused = False
            self.client.task = asyncio.ensure_future(self.gateway.reach(self))
            return
        self.gateway.bad_gateway(self, exc)
        error = "the function's server closed the connection without answering (%s)" % (exc or type(exc).__name__)
        self.finish(reusable=False, error=error)

    def _release(self, reusable: bool) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            return
        if self.visiting is not None:
            if self.exchange is not None:
                # answered by a container the door no longer points at: the code it started with; else None, the
                # code serving now (the recorder asks), which an in-place reload may have changed
                moved = upstream.key != self.visiting.target
                self.exchange.generation = upstream.generation if moved else None
            self.visiting.visit(upstream.key, -1)
            self.visiting = None
        upstream.job = None
        if upstream.transport is not None and upstream.transport.is_reading() is False and not upstream.closed:
            upstream.transport.resume_reading()
        if reusable:
            self.gateway.pool(upstream, self.decision.route.function)
        elif self.expired or not upstream.closed:
            upstream.abort()

    def unavailable(self, recorded: bool) -> None:
        """No server came: 503, as an ingress without endpoints answers."""
        self.gateway.unavailable(self.client, self.method, self.keep, self.http10)
        if recorded and self.exchange is not None:
            state = self.found[0].state.value if self.found is not None else "gone"
            self.finish(reusable=False, error="the function's server is not running (%s)" % state)
        else:
            self.exchange = None
            self.finish(reusable=False)

    def client_gone(self) -> None:
        """The client closed its connection while its request was being answered."""
        if not self.finished:
            self.finish(reusable=False, error="the client went away before the answer ended")

    def finish(self, reusable: bool, error: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        self._release(reusable)
        exchange = self.exchange
        if exchange is not None:
            exchange.error = exchange.error or error
            exchange.response_body, exchange.response_size = bytes(self.kept), self.size
            exchange.duration = time.time() - exchange.started
            recorder = self.gateway.supervisor.recorder
            if recorder is not None:
                recorder.submit(exchange)
        self.client.done(self.keep)

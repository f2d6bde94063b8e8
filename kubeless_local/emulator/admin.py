"""The admin HTTP API that `call`, `ls` and `logs` use to talk to a running `dev`/`run` (127.0.0.1 only).

The port and a per-session token are recorded in .kubeless-local/admin.json (mode 0600) beside the
project; every request must carry `Authorization: Bearer <token>`, so other users of the machine
can neither read the logs nor act on the functions.

The API is a table (`ROUTES`: method, path → a short handler); one dispatcher checks the token, matches
the route, parses the body and answers a typed error with its status (errors.HTTP_STATUS) and
{error, what, name}. The answers are in the engine's words: no CLI command or flag is named here.

It is served by `_Server` (socketserver's, a thread per request) and `_Request`, a small HTTP/1.0 reader, not
http.server: its import (http.client, email, ssl: ~17 ms of CPU) ran beside the first function's start.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hmac
import itertools
import json
import os
import queue
import secrets
import selectors
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from kubeless_local.emulator.http1 import MAX_HEADERS, MAX_LINE, header_of
from kubeless_local.emulator.triggers.cron import run_row as cron_row
from kubeless_local.errors import BadRequest, NotFound, Unavailable, UserError, status_of

if TYPE_CHECKING:
    from pathlib import Path

    from kubeless_local.emulator.bus import EventBus
    from kubeless_local.emulator.recorder import Recorder
    from kubeless_local.emulator.supervisor import Supervisor
    from kubeless_local.emulator.triggers.cron import Cron
    from kubeless_local.emulator.triggers.interface import Topics
    from kubeless_local.emulator.triggers.kafka_bridge import KafkaBridge

EVENT_SOURCES = ("kafka", "nats")  # what `emit` and `topic publish` may send to the session's topics
MAX_EMIT_COUNT = 1_000_000
STOP_WAIT = 1.0  # seconds stop() waits for the requests in progress (an emit being stored, say)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A thread per request, but only once the request arrives: a connection that sends nothing waits in
    one selector thread (no thread of its own) and is closed after `idle_timeout`, the oldest first when
    more than `max_waiting` wait; one that stops sending mid-request is dropped after the same time."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: connections arriving together are not made to retry
    idle_timeout = 10.0
    max_waiting = 256  # file descriptors are limited

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(address, handler)
        # (socket, client address): handed over to the waiter thread
        self.accepted: collections.deque[tuple[socket.socket, Any]] = collections.deque()
        self.waiting: dict[socket.socket, tuple[Any, float]] = {}  # → (address, deadline); the waiter thread's only
        self.selector = selectors.DefaultSelector()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_writer.setblocking(False)
        self.selector.register(self.wake_reader, selectors.EVENT_READ)
        self.closing = False
        self.waiter = threading.Thread(target=self._wait_for_requests, daemon=True)
        self.waiter.start()

    def process_request(self, request, client_address):
        """On accept: the waiter thread watches the connection until its request arrives."""
        self.accepted.append((request, client_address))
        self._wake()

    def _wake(self):
        try:
            self.wake_writer.send(b"\0")
        except BlockingIOError:
            pass  # already awake

    def _wait_for_requests(self):
        while not self.closing:
            deadlines = [deadline for _, deadline in self.waiting.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.wake_reader:
                    self.wake_reader.recv(4096)
                    continue
                connection = cast(socket.socket, key.fileobj)  # only the accepted sockets are registered besides
                address, _ = self.waiting.pop(connection)
                self.selector.unregister(connection)
                super().process_request(connection, address)  # its request has arrived: a thread serves it
            while self.accepted:
                connection, address = self.accepted.popleft()
                self.waiting[connection] = (address, time.monotonic() + self.idle_timeout)
                self.selector.register(connection, selectors.EVENT_READ)
            now, excess = time.monotonic(), len(self.waiting) - self.max_waiting
            for index, (connection, (_, deadline)) in enumerate(list(self.waiting.items())):  # the oldest first
                if deadline > now and index >= excess:
                    break
                self._drop(connection)
        for connection in list(self.waiting):
            self._drop(connection)

    def _drop(self, connection):
        if self.waiting.pop(connection, None) is not None:
            self.selector.unregister(connection)
            self.shutdown_request(connection)

    def server_close(self):
        if not self.closing:  # a second stop() is harmless
            self.closing = True
            self._wake()
            self.waiter.join(timeout=5)
            self.selector.close()
            self.wake_reader.close()
            self.wake_writer.close()
        super().server_close()

    def handle_error(self, request, client_address):
        """A client that went away (Ctrl-C on `logs -f`, `dev` stopping) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def write_private(path, text):
    """Write `path` readable by its owner only, with no moment where it is readable by others."""
    tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


class AdminServer:
    """The session's admin API: `start()` serves it and writes admin.json, `stop()` undoes both. The routes
    (`ROUTES`, below) answer from the supervisor and the triggers the session attaches."""

    def __init__(self, supervisor: Supervisor, state_dir: Path, root: Path):
        self.supervisor, self.state_dir, self.root = supervisor, state_dir, root
        self.token = secrets.token_urlsafe(32)
        self.server = _Server(("127.0.0.1", 0), _dispatcher_for(self))
        self.port: int = self.server.server_address[1]
        self.closing = threading.Event()
        self.idle = threading.Condition()  # notified as each request's handler ends
        self.in_progress = 0
        self.started = False
        self.topics: Topics | None = None  # the session's topics (triggers/interface.py: embedded or a broker), if any
        self.cron: Cron | None = None  # the session's cron.Cron: runs in `ls`, `emit cron`
        self.kafka: KafkaBridge | None = None  # the session's KafkaBridge (dev --kafka-brokers): its consumer groups
        self.recorder: Recorder | None = None  # the session's invocation recorder: `history`, `replay`
        self.bus: EventBus | None = None  # the session's event bus

    @property
    def info_path(self):
        return self.state_dir / "admin.json"

    def start(self):
        self.started = True
        # stop() waits one poll (20 ms)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        write_private(
            self.info_path,
            json.dumps(
                {
                    "port": self.port,
                    "pid": os.getpid(),
                    "root": str(self.root),
                    "backend": self.supervisor.backend.name,
                    "token": self.token,
                }
            ),
        )

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """A request's handler runs while the session's parts are open: stop() waits for the ones in progress
        (at most STOP_WAIT) before the session closes its topics and recorder; once it stops, new ones are 503."""
        with self.idle:
            if self.closing.is_set():
                raise Unavailable("the session is stopping", "session")
            self.in_progress += 1
        try:
            yield
        finally:
            with self.idle:
                self.in_progress -= 1
                self.idle.notify_all()

    def stop(self):
        with self.idle:
            self.closing.set()
            self.idle.wait_for(lambda: self.in_progress == 0, STOP_WAIT)
        try:
            info = json.loads(self.info_path.read_text())
            if info.get("pid") == os.getpid():
                self.info_path.unlink()
        except (OSError, ValueError):
            pass
        if self.started:
            self.server.shutdown()  # waits for serve_forever, so only when it runs
        self.server.server_close()


# ------------------------------------------------------------ the routes: (method, path) → handler


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: the path's named parts, the query and the JSON body ({} if none)."""

    params: dict[str, str]
    query: dict[str, list[str]]
    body: dict[str, Any]

    def arg(self, name: str, default: str = "") -> str:
        """The query's first `name`, or `default`."""
        return self.query.get(name, [default])[0]


@dataclass(frozen=True)
class Stream:
    """A handler's answer that is sent as it comes: one JSON line per item (x-ndjson), until the items end;
    then, or when the client goes away, `done()`."""

    lines: Iterator[dict[str, Any]]
    done: Callable[[], None] = lambda: None


Handler = Callable[[AdminServer, Call], Any]  # → a JSON value (200) or a Stream; a UserError → its status


class Routed(Protocol):
    """What match_route reads of a route."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=Routed)


def functions(admin: AdminServer, call: Call) -> Any:
    """?name=N only that function's row (none if unknown); ?counts=0 without the calls and errors (no /metrics
    scraped: what a lookup of one function asks)."""
    rows = admin.supervisor.status(call.query.get("name", [None])[0], counted=call.arg("counts", "1") != "0")
    if admin.topics is not None:
        dead = admin.topics.dead_letter_counts()
        for row in rows:
            row["dead_letters"] = dead.get(row["name"], 0)
    if admin.cron is not None:
        for row in rows:
            row["cron"] = admin.cron.for_function(row["name"])  # its CronJobTriggers and their last runs
    return rows


def logs(admin: AdminServer, call: Call) -> Stream:
    """?tail=N (-1: all) the last lines; ?follow=1 then every new line until the client or the session stops."""
    name, hub = call.params["name"], admin.supervisor.logs
    if name not in admin.supervisor.instances:
        raise NotFound("no function %r" % name, "function", name)
    follow = call.query.get("follow", ["0"])[0] == "1"
    try:
        tail = int(call.query.get("tail", ["-1"])[0])
    except ValueError:
        raise BadRequest("tail must be a number of lines") from None
    subscription = hub.subscribe(name) if follow else None  # before the tail is read: no line falls between
    tailed = [_log_row(line) for line in hub.tail(name, None if tail < 0 else tail)]
    if subscription is None:
        return Stream(iter(tailed))
    followed = _followed(subscription, admin.closing)
    return Stream(itertools.chain(tailed, followed), lambda: hub.unsubscribe(subscription))


def _followed(subscription: queue.Queue, closing: threading.Event) -> Iterator[dict[str, Any]]:
    while not closing.is_set():
        try:
            line = subscription.get(timeout=0.5)
        except queue.Empty:
            continue
        yield _log_row(line)


def _log_row(line: Any) -> dict[str, Any]:
    return {"text": line.text, "stream": line.stream, "time": line.time}


def _cron(admin: AdminServer) -> Cron:
    if admin.cron is None:  # a session without cron (`run`): as if the endpoint were not there
        raise NotFound("no such endpoint", "endpoint")
    return admin.cron


def cron_triggers(admin: AdminServer, call: Call) -> Any:
    return _cron(admin).status()


def fire_cron(admin: AdminServer, call: Call) -> Any:
    run = _cron(admin).fire(call.params["name"])  # waits for the function's answer (its timeout at most)
    return cron_row(run)


def kafka_groups(admin: AdminServer, call: Call) -> Any:
    return admin.kafka.status() if admin.kafka is not None else []


# The session's topics (triggers/interface.py): embedded, or a real broker's under `dev --kafka-brokers`.


def _topics(admin: AdminServer) -> Topics:
    if admin.topics is None:
        raise Unavailable("this session runs no embedded topics", "embedded topics")
    return admin.topics


def list_topics(admin: AdminServer, call: Call) -> Any:
    return _topics(admin).list()


def create_topic(admin: AdminServer, call: Call) -> Any:
    """{name} → {name, created} (False: it existed)."""
    topics = _topics(admin)
    name = call.body.get("name")
    name = name if isinstance(name, str) else ""
    return {"name": name, "created": topics.create(name)}


def delete_topic(admin: AdminServer, call: Call) -> Any:
    topics, topic = _topics(admin), call.params["topic"]
    topics.delete(topic)
    return {"deleted": topic}


def emit(admin: AdminServer, call: Call) -> Any:
    """{source, data (text) or data_base64, count, content_type} → the answer of Topics.emit
    (triggers/interface.py: one shape, embedded or on a broker); durable before it answers."""
    topics, topic, body = _topics(admin), call.params["topic"], call.body
    source = body.get("source", "kafka")
    if source not in EVENT_SOURCES:
        raise UserError("source must be one of %s" % ", ".join(EVENT_SOURCES))
    if "data_base64" in body:
        try:
            data = base64.b64decode(body["data_base64"], validate=True)
        except (TypeError, binascii.Error):
            raise UserError("data_base64 is not base64") from None
    elif isinstance(body.get("data"), str):
        data = body["data"].encode()
    else:
        raise UserError("an event needs data: data (text) or data_base64")
    content_type = body.get("content_type") or ""
    if "json" in content_type.lower():
        try:
            json.loads(data)
        except ValueError as exc:
            raise UserError(
                "the data is not valid JSON (%s) but the content type is %s" % (exc, content_type)
            ) from None
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_EMIT_COUNT:
        raise UserError("count must be a number from 1 to %d" % MAX_EMIT_COUNT)
    return topics.emit(topic, source, data, count)


def emit_outcome(admin: AdminServer, call: Call) -> Any:
    """?from=&to=&source= → {seq: {subscriber: delivered | dead-lettered | retrying (…) | pending}}."""
    topics, query = _topics(admin), call.query
    source = query.get("source", ["kafka"])[0]
    try:
        first, last = int(query["from"][0]), int(query["to"][0])
    except (KeyError, ValueError):
        raise UserError("from and to must be event sequence numbers") from None
    outcome = topics.outcome(call.params["topic"], source, first, last)
    return {str(seq): subs for seq, subs in outcome.items()}


def replay(admin: AdminServer, call: Call) -> Any:
    """{trigger, id} (both optional) → {replayed: how many dead letters are sent again}."""
    topics, body = _topics(admin), call.body
    count = topics.replay(call.params["topic"], body.get("trigger"), body.get("id"))
    return {"replayed": count}


# The recorded invocations (emulator/recorder.py) and the event bus (emulator/bus.py).


LIST_STORED_WITHIN = 1.0  # seconds a list waits for the calls already answered to be stored


def _recorder(admin: AdminServer) -> Recorder:
    if admin.recorder is None:
        raise Unavailable("this session records no invocations", "invocation recorder")
    return admin.recorder


def _number(call: Call, name: str, default: int, most: int) -> int:
    try:
        value = int(call.query.get(name, [str(default)])[0])
    except ValueError:
        raise BadRequest("%s must be a whole number" % name) from None
    if not 0 <= value <= most:
        raise BadRequest("%s must be from 0 to %d" % (name, most))
    return value


def invocations(admin: AdminServer, call: Call) -> Any:
    """?function=&limit=&before= → summaries, newest first (before: a sequence number, for the next page)."""
    function = call.query.get("function", [""])[0] or None
    recorder = _recorder(admin)
    recorder.flush(LIST_STORED_WITHIN, begun=False)  # `history` right after a call lists it
    return recorder.list(function, _number(call, "limit", 50, 10_000), _number(call, "before", 0, 2**62))


def invocation(admin: AdminServer, call: Call) -> Any:
    from kubeless_local.emulator.recorder import export

    return export(_recorder(admin).get(call.params["id"]))


def replay_invocation(admin: AdminServer, call: Call) -> Any:
    """{request} (optional: an edited export of the recorded request) → {original, replay, diff}."""
    from kubeless_local.emulator.recorder import replay as send_again

    edited = call.body.get("request")
    if edited is not None and not isinstance(edited, dict):
        raise BadRequest("request must be a JSON object: method, path, query, headers, body")
    return send_again(_recorder(admin), admin.supervisor, call.params["id"], edited)


def bus_events(admin: AdminServer, call: Call) -> Any:
    """?after=ID&wait=SECONDS → {events, reset, last}: the events after ID (reset: some were missed)."""
    if admin.bus is None:
        raise Unavailable("this session has no event bus", "event bus")
    after, wait = _number(call, "after", 0, 2**62), _number(call, "wait", 0, 30)
    if wait:
        admin.bus.wait(after, wait)
    events, reset = admin.bus.after(after)
    return {"events": [event.row() for event in events], "reset": reset, "last": admin.bus.last}


class Route(NamedTuple):
    method: str
    path: str  # {name}: any one path segment, handed to the handler unquoted as params["name"]
    handler: Handler


ROUTES = [
    Route("GET", "/api/functions", functions),
    Route("GET", "/api/functions/{name}/logs", logs),
    Route("GET", "/api/triggers/cron", cron_triggers),
    Route("POST", "/api/triggers/cron/{name}", fire_cron),
    Route("GET", "/api/triggers/kafka-broker", kafka_groups),
    Route("GET", "/api/topics", list_topics),
    Route("POST", "/api/topics", create_topic),
    Route("DELETE", "/api/topics/{topic}", delete_topic),
    Route("POST", "/api/topics/{topic}/events", emit),
    Route("GET", "/api/topics/{topic}/events", emit_outcome),
    Route("POST", "/api/topics/{topic}/replay", replay),
    Route("GET", "/api/invocations", invocations),
    Route("GET", "/api/invocations/{id}", invocation),
    Route("POST", "/api/invocations/{id}/replay", replay_invocation),
    Route("GET", "/api/events", bus_events),
]


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def match_route(routes: Sequence[R], method: str, path: str) -> tuple[R, dict[str, str]] | None:
    """The first of `routes` (each with a `method` and a `path` whose `{name}` segments match any one) that
    matches `method path`, with the path's named parts unquoted; None when none does. The dashboard's too."""
    parts = _segments(path)
    for candidate in routes:
        names = _segments(candidate.path)
        if candidate.method != method or len(names) != len(parts):
            continue
        params = {}
        for name, part in zip(names, parts):
            if name.startswith("{"):
                params[name[1:-1]] = unquote(part)
            elif name != part:
                break
        else:
            return candidate, params
    return None


def route(method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
    """The handler of `method path` with the path's named parts; None when no route matches."""
    found = match_route(ROUTES, method, path)
    return (found[0].handler, found[1]) if found is not None else None


class _Headers(dict):
    """A request's headers by their lower-case names; `get` takes a name in any case, as http.server's do."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class _Request(socketserver.StreamRequestHandler):
    """One HTTP/1.0 exchange as http.server's BaseHTTPRequestHandler makes it, for what the admin API needs: the
    request line and headers read (`command`, `path`, `headers`; the body left in `rfile`), `do_<METHOD>` called,
    its answer written with `send_response`, `send_header`, `end_headers` and `wfile`; then the connection
    closes. A request it cannot read is answered with its status and {error}."""

    command = path = ""
    headers: _Headers = _Headers()

    def handle(self) -> None:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return  # connected and went away
        if len(line) > MAX_LINE:
            return self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
        words = line.decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return self.send_error(HTTPStatus.BAD_REQUEST)
        self.command, self.path, version = words
        fields = _Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                return self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if not line.strip():
                break
            name, value = header_of(line)
            fields[name.lower()] = value
        else:
            return self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        self.headers = fields
        if version != "HTTP/1.0" and fields.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not self.accepted():
            return
        answer = getattr(self, "do_" + self.command, None)
        if answer is None:
            return self.send_error(HTTPStatus.NOT_IMPLEMENTED)
        answer()

    def accepted(self) -> bool:
        """Whether to answer the request just read; else its answer was sent."""
        return True

    def send_error(self, status: HTTPStatus) -> None:
        self.send_json(status, {"error": status.phrase})

    def send_json(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_response(self, status: int) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        self._head = ["HTTP/1.0 %d %s" % (status, reason), "Server: kubeless-local", "Connection: close"]

    def send_header(self, name: str, value: str) -> None:
        self._head.append("%s: %s" % (name, value))

    def end_headers(self) -> None:
        self.wfile.write(("\r\n".join(self._head) + "\r\n\r\n").encode("latin-1"))


def read_json_body(request: Any) -> dict[str, Any]:
    """The request's body as a JSON object ({} when there is none); BadRequest for anything else. `request`: an
    http.server handler or a `_Request`."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
        value = json.loads(request.rfile.read(length) or b"{}")
    except ValueError:
        raise BadRequest("the request body must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    return value


def _dispatcher_for(admin: AdminServer) -> type[_Request]:
    class AdminRequest(_Request):
        """The one dispatcher: checks the token, matches a route, parses the query and the body, calls the
        handler and sends its answer: JSON, a Stream of JSON lines, or for a UserError its status with
        {error, what, name}."""

        server: _Server

        def setup(self) -> None:
            self.timeout = self.server.idle_timeout  # type: ignore[misc]  # a request that stops coming is dropped
            super().setup()

        def accepted(self):
            """Every request, whatever its method, needs the session's token: else 401 and nothing else."""
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), admin.token.encode()):
                return True
            self.send_json(401, {"error": "the admin API needs the token from %s" % admin.info_path})
            return False

        def dispatch(self):
            url = urlsplit(self.path)
            found = route(self.command, url.path)
            try:
                if found is None:
                    raise NotFound("no such endpoint", "endpoint")
                handler, params = found
                body = self.read_json() if self.command == "POST" else {}
                with admin.answering():
                    answer = handler(admin, Call(params, parse_qs(url.query), body))
            except UserError as exc:
                what, name = getattr(exc, "what", None), getattr(exc, "name", None)
                return self.send_json(status_of(exc), {"error": str(exc), "what": what, "name": name})
            except Exception as exc:  # noqa: BLE001 - a bug of ours: the caller hears what failed, not that dev is gone
                import traceback  # not at the top: what the admin API imports delays the first server's start

                traceback.print_exc()  # on dev's console, for the report
                failed = "%s %s failed in the session: %s: %s" % (self.command, url.path, type(exc).__name__, exc)
                return self.send_json(500, {"error": failed, "what": None, "name": None})
            if isinstance(answer, Stream):
                return self.send_stream(answer)
            self.send_json(200, answer)

        do_GET = do_POST = do_DELETE = dispatch

        def read_json(self) -> dict[str, Any]:
            return read_json_body(self)

        def send_stream(self, stream: Stream):
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for line in stream.lines:
                    self.wfile.write((json.dumps(line) + "\n").encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                stream.done()

    return AdminRequest

"""The dashboard's HTTP server: the page's files, a JSON API over a Source, and one live event stream.

Served by the standard library's threaded server (the admin API's `_Server`: a connection that sends
nothing holds no thread), bound to 127.0.0.1. Every request passes the Guard first (guard.py). The
routes are a table (`ROUTES`); each handler takes the dashboard and the request and returns JSON data.
The stream (`/api/events`, server-sent events) reads the session's event bus (emulator/bus.py) from the id
the browser last saw (`Last-Event-ID`, sent again by the browser on reconnect, or `?after=`): each event
once, in order, or `reset` when they are gone. A tab that stops reading is dropped after SEND_TIMEOUT; it
holds no buffer.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kubeless_local.dashboard import saved_test
from kubeless_local.dashboard.feed import Feed
from kubeless_local.dashboard.guard import SECURITY_HEADERS, Guard
from kubeless_local.dashboard.source import Source
from kubeless_local.emulator.admin import Call as Request
from kubeless_local.emulator.admin import _Server, match_route, read_json_body, write_private
from kubeless_local.emulator.bus import EventBus
from kubeless_local.errors import BadRequest, UserError, status_of

if TYPE_CHECKING:
    from kubeless_local.dashboard.source import SessionSource

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
SEND_TIMEOUT = 10.0  # a stream whose reader does not take its bytes for this long is closed
KEEPALIVE = 15.0  # a comment on a quiet stream: a closed tab is noticed
MAX_STREAMS = 64  # open event streams at once (each holds a thread)
LOGIN_LINK = "/api/login-link"  # POST with the admin API's token: a new one-time login link
INFO_FILE = "dashboard.json"  # beside admin.json: the port, for `kubeless-local dashboard`
STATE_INVOCATIONS = 200  # the newest recorded calls a tab loads with the state (older ones: /api/invocations)


def static_files() -> dict[str, Path]:
    """URL path → file, for every file under static/ (nothing else is ever served)."""
    files = {"/" + str(path.relative_to(STATIC)): path for path in STATIC.rglob("*") if path.is_file()}
    files["/"] = STATIC / "index.html"
    return {url: path for url, path in files.items() if path.suffix in TYPES}


class Dashboard:
    """`start()` serves the dashboard of `source` on 127.0.0.1:`port` (0: a free one); `stop()` ends it.
    `admin_token` authorises POST /api/login-link (the admin API's token, readable by the user only).
    `events`: the session's event bus, which the stream reads and the Feed adds the page's rows to (feed.py);
    None: a bus of its own, to which the Feed forwards the source's log lines too."""

    def __init__(
        self,
        source: Source,
        port: int = 0,
        read_only: bool = False,
        admin_token: str = "",
        state_dir: Path | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.source, self.read_only, self.admin_token, self.state_dir = source, read_only, admin_token, state_dir
        self.files = static_files()
        self.closing = threading.Event()
        self.readers = 0  # streams open now (at most MAX_STREAMS)
        self.readers_lock = threading.Lock()
        # one stream of live events: the session's bus (its log lines are on it already), or a bus of our own
        self.events = events if events is not None else EventBus()
        self.feed = Feed(source, self.events, watched=self.watched, forward_lines=events is None)
        try:
            self.server = _Server(("127.0.0.1", port), _handler_for(self))
        except OSError as exc:
            raise UserError(
                "the dashboard cannot listen on 127.0.0.1:%d (%s); pick another port, or 0 for a free one"
                % (port, exc.strerror)
            ) from None
        self.port: int = self.server.server_address[1]
        self.guard = Guard(self.port, read_only)

    @classmethod
    def of_session(cls, session: Any, port: int = 0, read_only: bool = False) -> Dashboard:
        from kubeless_local.dashboard.source import SessionSource

        source: SessionSource = SessionSource(session)
        return cls(source, port, read_only, session.admin.token, session.state_dir, events=session.bus)

    def watched(self) -> bool:
        """Some tab reads the stream (the Feed polls rows only then)."""
        return self.readers > 0

    def start(self) -> str:
        """Serve; returns the first login link (one use)."""
        self.feed.start()
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()  # stop() waits one poll
        if self.state_dir is not None:
            write_private(self.info_path, json.dumps({"port": self.port, "pid": os.getpid()}))
        return self.guard.login_url()

    @property
    def info_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / INFO_FILE

    def stop(self) -> None:
        self.closing.set()
        self.feed.stop()
        if self.state_dir is not None:
            self.info_path.unlink(missing_ok=True)
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------ routes


def _number(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest("%s must be a number" % what) from None


def state(board: Dashboard, request: Request) -> Any:
    """Everything a tab shows, and the id of the last event it reflects (the stream goes on from there)."""
    last_id = board.events.last_id  # before the rows: an event between the two is sent again, never lost
    return {
        "last_id": last_id,
        "read_only": board.read_only,
        "functions": board.source.states(),
        "cron": board.source.cron(),
        "topics": board.source.topics(),
        "metrics": board.source.metrics(),
        "graph": board.source.graph(),
        "invocations": _recent_invocations(board, last_id),
    }


def _recent_invocations(board: Dashboard, last_id: int) -> list[dict[str, Any]]:
    """The newest calls up to event `last_id`: those stored, and those the bus saw end that the recorder's
    writer has not stored yet (the stream, going on from `last_id`, will not send them again)."""
    held = board.events.after(0, limit=board.events.capacity).events
    ended = [event.data for event in held if event.kind == "invocation-end" and event.id <= last_id]
    try:
        stored = board.source.invocations(None, None, STATE_INVOCATIONS, None)
    except UserError:
        stored = []  # a history database that cannot be read now: the page shows the calls that come
    known = {row["id"] for row in stored}
    rows = stored + [row for row in ended if row["id"] not in known]
    return sorted(rows, key=lambda row: row["started"], reverse=True)[:STATE_INVOCATIONS]


def invocations(board: Dashboard, request: Request) -> Any:
    """?function=&outcome=ok|error&limit=&before=SEQ → summaries, newest first (before: the next page)."""
    limit = max(1, min(_number(request.arg("limit", "100"), "limit"), 1000))
    before = _number(request.arg("before", "0"), "before") or None
    return board.source.invocations(request.arg("function") or None, request.arg("outcome") or None, limit, before)


def invocation(board: Dashboard, request: Request) -> Any:
    return board.source.invocation(request.params["id"])


def invocation_as_test(board: Dashboard, request: Request) -> Any:
    """{file, source}: the call as a pytest test (saved_test.py), to read or copy."""
    record = board.source.invocation(request.params["id"])
    return {"file": saved_test.file_name(record), "source": saved_test.pytest_source(record)}


def save_test(board: Dashboard, request: Request) -> Any:
    return board.source.save_test(request.params["id"])


def replay_invocation(board: Dashboard, request: Request) -> Any:
    edited = request.body.get("request")
    if edited is not None and not isinstance(edited, dict):
        raise BadRequest("request must be a JSON object: method, path, query, headers, body")
    return board.source.replay_invocation(request.params["id"], edited)


def logs(board: Dashboard, request: Request) -> Any:
    tail = _number(request.arg("tail", "500"), "tail")
    return board.source.logs(request.arg("function") or None, max(0, min(tail, 5000)))


def emit(board: Dashboard, request: Request) -> Any:
    return board.source.emit(request.params["topic"], request.body)


def outcome(board: Dashboard, request: Request) -> Any:
    first, last = _number(request.arg("from"), "from"), _number(request.arg("to"), "to")
    return board.source.outcome(request.params["topic"], request.arg("source", "kafka"), first, last)


def replay(board: Dashboard, request: Request) -> Any:
    letter = request.body.get("id")
    return board.source.replay(request.params["topic"], request.body.get("trigger"), letter)


def fire_cron(board: Dashboard, request: Request) -> Any:
    return board.source.fire_cron(request.params["name"])


def call(board: Dashboard, request: Request) -> Any:
    body = request.body
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadRequest("headers must be an object of strings")
    return board.source.call(
        request.params["name"],
        str(body.get("method") or ""),
        str(body.get("path") or "/"),
        str(body.get("data") or ""),
        headers,
    )


class Route(NamedTuple):
    method: str
    path: str  # {name}: one path segment, unquoted
    handler: Callable[[Dashboard, Request], Any]
    acts: bool = False  # changes something: refused by a read-only dashboard


ROUTES = [
    Route("GET", "/api/state", state),
    Route("GET", "/api/logs", logs),
    Route("POST", "/api/topics/{topic}/events", emit, acts=True),
    Route("GET", "/api/topics/{topic}/events", outcome),
    Route("POST", "/api/topics/{topic}/replay", replay, acts=True),
    Route("POST", "/api/cron/{name}", fire_cron, acts=True),
    Route("POST", "/api/functions/{name}/call", call, acts=True),
    Route("GET", "/api/invocations", invocations),
    Route("GET", "/api/invocations/{id}", invocation),
    Route("POST", "/api/invocations/{id}/replay", replay_invocation, acts=True),
    Route("GET", "/api/invocations/{id}/pytest", invocation_as_test),
    Route("POST", "/api/invocations/{id}/pytest", save_test, acts=True),
]


def route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    return match_route(ROUTES, method, path)


def _handler_for(board: Dashboard) -> type[BaseHTTPRequestHandler]:
    class DashboardRequest(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when it closes
        server: _Server

        def setup(self) -> None:
            self.timeout = SEND_TIMEOUT  # type: ignore[misc]  # a reader that stops taking bytes is dropped
            super().setup()

        def log_message(self, format, *args):
            pass

        def end_headers(self) -> None:
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            super().end_headers()

        def dispatch(self) -> None:
            url = urlsplit(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            if url.path == LOGIN_LINK and self.command == "POST":
                return self.login_link(headers)
            found = route(self.command, url.path)
            verdict = board.guard.check(self.command, self.path, headers, acts=found is not None and found[0].acts)
            if verdict.status == 303:
                self.send_response(303)
                self.send_header("Location", verdict.location)
                self.send_header("Set-Cookie", verdict.cookie)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if verdict.status is not None:
                return self.send_json(verdict.status, {"error": verdict.reason})
            if self.command == "GET" and url.path == "/api/events":
                return self.stream(headers, parse_qs(url.query))
            if found is None:
                if self.command == "GET" and url.path in board.files:
                    return self.send_file(board.files[url.path])
                return self.send_json(404, {"error": "no such page"})
            try:
                body = self.read_json() if self.command == "POST" else {}
                answer = found[0].handler(board, Request(found[1], parse_qs(url.query), body))
            except UserError as exc:
                return self.send_json(status_of(exc), {"error": str(exc)})
            self.send_json(200, answer)

        do_GET = do_POST = do_PUT = do_DELETE = dispatch

        def login_link(self, headers: dict[str, str]) -> None:
            """`kubeless-local dashboard`: the admin API's token buys a new one-time login link."""
            verdict = board.guard.site(headers)
            if verdict.status is not None:
                return self.send_json(verdict.status, {"error": verdict.reason})
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if not board.admin_token or not (
                scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), board.admin_token.encode())
            ):
                return self.send_json(401, {"error": "a login link needs the session's admin token"})
            self.send_json(200, {"url": board.guard.login_url()})

        def read_json(self) -> dict[str, Any]:
            return read_json_body(self)

        def send_json(self, status: int, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_file(self, path: Path) -> None:
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", TYPES[path.suffix])
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def stream(self, headers: dict[str, str], query: dict[str, list[str]]) -> None:
            """Server-sent events from the id the client names (Last-Event-ID, else ?after=, else now)."""
            named = headers.get("last-event-id") or query.get("after", [""])[0]
            try:
                cursor = int(named) if named else board.events.last_id
            except ValueError:
                return self.send_json(400, {"error": "Last-Event-ID must be an event id"})
            with board.readers_lock:
                full = board.readers >= MAX_STREAMS
                board.readers += 0 if full else 1
            if full:
                return self.send_json(503, {"error": "too many open dashboard tabs"})
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(b"retry: 1000\n\n")
                self.wfile.flush()
                while not board.closing.is_set():
                    batch = board.events.after(cursor, timeout=KEEPALIVE)
                    if batch.reset:
                        self.wfile.write(b"event: reset\ndata: {}\n\n")
                        self.wfile.flush()
                        return  # the page loads the state again and opens a new stream from its id
                    chunk = "".join("id: %d\nevent: %s\ndata: %s\n\n" % (e.id, e.kind, e.encoded) for e in batch.events)
                    self.wfile.write(chunk.encode() if chunk else b": keepalive\n\n")
                    self.wfile.flush()
                    if batch.events:
                        cursor = batch.events[-1].id
            except (OSError, ValueError):
                pass  # the tab closed, or stopped reading for SEND_TIMEOUT
            finally:
                with board.readers_lock:
                    board.readers -= 1

    return DashboardRequest

"""Talks to a running `dev`/`run` (admin API) and to functions; used by the CLI, tests and benchmarks."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.parse
from pathlib import Path
from urllib.parse import quote

from kubeless_local.emulator import registry
from kubeless_local.errors import HTTP_STATUS, Conflict, NotFound, Unavailable, UserError
from kubeless_local.events import SOURCE_HEADER, envelope
from kubeless_local.paths import SETTINGS_FILE, STATE_DIRNAME

# typing (~3 ms) and dataclasses (~8 ms, with inspect) are not imported: this module is most of `call`'s imports.
TYPE_CHECKING = False  # what mypy reads as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def project_of(folder, running_roots=()):
    """The project `folder` lies in: the nearest folder at or above it that a running session serves, that
    holds a state folder (left by its first `dev`) or the project's settings file; None outside any."""
    for candidate in (folder, *folder.parents):
        if candidate in running_roots or (candidate / STATE_DIRNAME).is_dir() or (candidate / SETTINGS_FILE).is_file():
            return candidate
    return None


def ambiguous(what, sessions):
    return Conflict(
        "%s runs in several sessions: %s; run the command from that project's folder"
        % (what, ", ".join(s.describe() for s in sessions))
    )


class AdminClient:
    """The running sessions a command speaks to. Inside a project folder: that project's only (its `dev` or
    `up` first, then the `run`s started there); with none running, a UserError says so. Outside any project
    (`across`): every running session of this user, and a name (function, topic, cron trigger) resolves in
    the one session that has it; the caller names the session it used (`SessionClient.describe`).
    `state_dir`: that one session only."""

    def __init__(self, state_dir=None, cwd=None):
        self.project, self.across = None, False
        if state_dir:
            self.sessions = [SessionClient(state_dir)]
            return
        here = Path(cwd or Path.cwd()).resolve()
        running = registry.sessions()
        self.project = project_of(here, {Path(info["root"]) for info in running})
        if self.project is None:
            self.across = True
            folders = [Path(info["admin"]).parent for info in running]
            if not folders:
                raise Unavailable(
                    "no running `kubeless-local dev` (nor run, up) found; start one, e.g. `kubeless-local dev` in"
                    " the project folder"
                )
        else:
            own = self.project / STATE_DIRNAME
            folders = [Path(info["admin"]).parent for info in running if Path(info["root"]) == self.project]
            if not folders and registry.answering(own / "admin.json"):
                folders = [own]  # a session that could not write the registry is still found from its folder
            if not folders:
                raise Unavailable(
                    "no running `kubeless-local dev` (nor run, up) for %s; start one there" % self.project
                )
            folders.sort(key=lambda folder: folder != own)  # its dev first
        self.sessions = [SessionClient(folder) for folder in folders]

    def functions(self):
        """The rows of the sessions spoken to, each with its `project` folder."""
        rows = []
        for session in self.sessions:
            try:
                rows += [dict(row, project=session.root) for row in session.functions()]
            except UserError:
                if not self.across:
                    raise
        return rows

    def owner(self, name):
        """(session, row) of function `name`: the first of the project's sessions that runs it; outside a
        project, the one session that does (several: an error listing them)."""
        found = []
        for session in self.sessions:
            try:
                rows = session.functions(name, counted=False)
            except UserError:
                if not self.across:
                    raise
                continue  # a session that stopped meanwhile
            found += [(session, dict(row, project=session.root)) for row in rows if row["name"] == name]
        if len(found) == 1 or (found and not self.across):
            return found[0]
        if found:
            raise ambiguous("function %r" % name, [session for session, _ in found])
        where = "any running session" if self.across else "the session of %s" % self.project
        raise NotFound("no function %r in %s; `kubeless-local ls` lists them" % (name, where), None, name)

    def function(self, name):
        return self.owner(name)[1]

    def logs(self, name, follow=False, tail=None):
        return self.owner(name)[0].logs(name, follow=follow, tail=tail)

    # Topics and triggers belong to one project: these pick its session.

    def topics(self):
        """The topics of the project's session; outside a project, of every running session (each row with
        its `project`)."""
        rows = []
        for session in self.sessions if self.across else self.sessions[:1]:
            try:
                rows += [dict(row, project=session.root) for row in session.topics()]
            except UserError:
                if not self.across:
                    raise
        return rows

    def project_session(self):
        """The project's session (its `dev` first); outside a project, the only session running."""
        if not self.across or len(self.sessions) == 1:
            return self.sessions[0]
        raise Conflict(
            "several sessions run (%s); run the command from the project's folder"
            % ", ".join(s.describe() for s in self.sessions)
        )

    def topic_session(self, topic):
        """The session whose embedded topics hold `topic` (outside a project: the one that has it)."""
        return self._session_with("topic %r" % topic, lambda s: topic in {row["name"] for row in s.topics()})

    def cron_session(self, trigger):
        """The session that runs CronJobTrigger `trigger` (outside a project: the one that does)."""
        return self._session_with(
            "CronJobTrigger %r" % trigger, lambda s: trigger in {row["name"] for row in s.cron_triggers()}
        )

    # The other topic and trigger calls go to the project's session (see project_session).
    PROJECT_CALLS = (
        "create_topic",
        "delete_topic",
        "emit",
        "outcome",
        "replay",
        "cron_triggers",
        "fire_cron",
        "kafka_groups",
        "invocations",
        "invocation",
        "replay_invocation",
    )

    def __getattr__(self, name):
        if name in AdminClient.PROJECT_CALLS:
            return getattr(self.project_session(), name)
        raise AttributeError(name)

    def _session_with(self, what, has):
        if not self.across:
            return self.sessions[0]
        found = []
        for session in self.sessions:
            try:
                if has(session):
                    found.append(session)
            except UserError:
                continue  # stopped meanwhile, or a session without embedded topics
        if len(found) == 1:
            return found[0]
        if found:
            raise ambiguous(what, found)
        raise NotFound("no running session has %s; run the command from the project's folder" % what)


# ------------------------------------------------------------ HTTP/1.1, one request per connection
# The standard library's http.client costs ~20 ms of CPU to import (email, ssl): a third of `call`'s own time.
# What the admin API and the runtime servers answer needs only this: a status line, headers, and a body framed
# by Content-Length, by chunks or by the connection's close (a request says `Connection: close` unless its
# headers say otherwise; either way this end closes once the answer is read).

BODILESS = (204, 304)  # and 1xx, and any answer to HEAD


class Reply:
    """An HTTP answer whose head is read: `status`, `reason`, `headers` (names lower-cased); its body is read
    with read() or line by line (a stream of JSON lines); close() (or `with`) closes the connection."""

    def __init__(self, sock: socket.socket, method: str) -> None:
        self.sock, self.file = sock, sock.makefile("rb")
        while True:  # a 1xx (e.g. 100 Continue) is followed by the answer
            version, status, reason = [*self._line().decode("latin-1").rstrip("\r\n").split(" ", 2), "", ""][:3]
            if not version.startswith("HTTP/") or not status.isdigit():
                raise ConnectionError("not an HTTP answer: %r" % version[:40])
            self.status, self.reason, self.headers = int(status), reason, self._headers()
            if not 100 <= self.status < 200:
                break
        bodiless = method == "HEAD" or self.status in BODILESS
        self.chunked = not bodiless and "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = "0" if bodiless else self.headers.get("content-length")
        self.left: int | None = None if self.chunked or not length else int(length)  # None: up to the close

    def _line(self) -> bytes:
        line = self.file.readline(65537)
        if not line:
            raise ConnectionError("the connection closed before the answer's head ended")
        return line

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        while (line := self._line()) not in (b"\r\n", b"\n"):
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            headers[key] = headers[key] + ", " + value.strip() if key in headers else value.strip()
        return headers

    def read(self) -> bytes:
        """The whole body (chunks joined); a body cut short raises ConnectionError."""
        if self.chunked:
            return b"".join(self._chunks())
        data = self.file.read() if self.left is None else self.file.read(self.left)
        if self.left is not None and len(data) < self.left:
            raise ConnectionError("the answer ended after %d of %d bytes" % (len(data), self.left))
        return data

    def _chunks(self) -> Iterator[bytes]:
        while size := int(self._line().split(b";")[0].strip() or b"0", 16):
            chunk = self.file.read(size)
            if len(chunk) < size:
                raise ConnectionError("a chunk ended after %d of %d bytes" % (len(chunk), size))
            yield chunk
            self._line()  # the CRLF after the chunk
        self._headers()  # trailers

    def __iter__(self) -> Iterator[bytes]:
        if self.chunked or self.left is not None:
            yield from self.read().splitlines(keepends=True)
        else:
            yield from self.file  # a stream: each line as it comes

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def exchange(
    host: str, port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"", timeout=None
) -> Reply:
    """Send one request on a new connection and read its answer's head (OSError when nothing answers)."""
    fields = {"Host": "%s:%d" % (host, port), **headers}
    if body or method not in ("GET", "HEAD"):  # as requests: no length for a GET without a body
        fields.setdefault("Content-Length", str(len(body)))
    fields.setdefault("Connection", "close")
    if any(set("\r\n") & set(text) for pair in fields.items() for text in pair):
        raise UserError("a header cannot hold a line break: %r" % fields)
    head = "%s %s HTTP/1.1\r\n%s\r\n" % (method, target, "".join("%s: %s\r\n" % pair for pair in fields.items()))
    # An ASCII host as bytes (getaddrinfo takes either; typeshed says str): a str one is encoded with the idna codec
    # (~1 ms to import), to the same bytes.
    address = (host.encode() if host.isascii() else host, port)
    sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]
    try:
        sock.sendall(head.encode("latin-1") + body)
        return Reply(sock, method)
    except BaseException:
        sock.close()
        raise


ERRORS = {status: error for error, status in HTTP_STATUS.items()}  # the admin API's status → the engine's error


def answered_error(answer: Reply) -> UserError:
    """The engine's error again from its answer: the type its status stands for, with its message, what and
    name (another status, e.g. 401 for a wrong token: a plain UserError with the message)."""
    try:
        fields = json.loads(answer.read() or b"{}")
        message = fields.get("error", answer.reason)
    except ValueError:
        fields, message = {}, "%d %s" % (answer.status, answer.reason)
    error = ERRORS.get(answer.status)
    if error is None:
        return UserError(message)
    return error(message, fields.get("what"), fields.get("name"))


class SessionClient:
    """One running session's admin API (its .kubeless-local/ or .kubeless-local/run-NAME/ folder)."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        try:
            self.info = json.loads((self.state_dir / "admin.json").read_text())
        except (OSError, ValueError):
            raise Unavailable("%s/admin.json is unreadable; restart `kubeless-local dev`" % self.state_dir) from None
        self.base = "http://127.0.0.1:%d" % self.info["port"]
        self.headers = {"Authorization": "Bearer %s" % self.info.get("token", "")}
        self.root = self.info.get("root") or str(self.state_dir.parent)
        self.kind = "dev" if self.state_dir.name == STATE_DIRNAME else self.state_dir.name.replace("-", " ", 1)

    def describe(self):
        """How a command names the session it used: `the dev session of /path`, `the run hello session of /path`."""
        return "the %s session of %s" % (self.kind, self.root)

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = 10) -> Any:
        """The open response to `method path` (with `body` as JSON); an error answer raises the engine's typed
        error again (its status → its type, its what and name), a session that does not answer Unavailable."""
        headers = self.headers
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            response = exchange("127.0.0.1", self.info["port"], method, path, headers, data or b"", timeout)
        except OSError:
            raise Unavailable(
                "`kubeless-local dev` for %s is not running (nothing answers on port %d); start it again"
                % (self.info.get("root", self.state_dir.parent), self.info["port"])
            ) from None
        if response.status >= 400:
            with response:
                raise answered_error(response) from None
        return response

    def functions(self, name=None, counted=True):
        """The functions' rows (`name`: that one's only). `counted=False`: without the call counts, which cost the
        session a scrape of each function's /metrics. A session older than these filters answers every row,
        counted: callers still pick theirs by name."""
        query = {"name": name} if name is not None else {}
        if not counted:
            query["counts"] = "0"
        return self._json("/api/functions" + ("?" + urllib.parse.urlencode(query) if query else ""), timeout=10)

    def function(self, name):
        for row in self.functions(name, counted=False):
            if row["name"] == name:
                return row
        raise NotFound("no function %r in this project; `kubeless-local ls` lists them" % name, None, name)

    def cron_triggers(self):
        """The CronJobTriggers: schedule, next time, error, the last 3 successful and 1 failed runs."""
        return self._json("/api/triggers/cron", timeout=10)

    def fire_cron(self, trigger):
        """Fire a CronJobTrigger now (`emit cron`); waits for the function's answer, returns the run."""
        path = "/api/triggers/cron/%s" % urllib.parse.quote(trigger, safe="")
        return self._json(path, method="POST", timeout=None)

    def kafka_groups(self):
        """Under `dev --kafka-brokers`: one row per consumer group (trigger, function, topic, state, counts)."""
        return self._json("/api/triggers/kafka-broker", timeout=10)

    def wait_settled(self, name, present=True, timeout=600.0):
        """The row of `name` once it is out of Installing/Starting/Reloading; present=False: until it is gone
        (None)."""
        deadline, pause = time.monotonic() + timeout, 0.01
        while time.monotonic() < deadline:
            row = next((r for r in self.functions() if r["name"] == name), None)
            if not present and row is None:
                return None
            if present and row is not None and row["state"] not in ("Installing", "Starting", "Reloading"):
                return row
            time.sleep(pause)
            pause = min(0.1, pause * 2)  # a quick start is seen at once, a long install is not asked 10×/s
        raise UserError(
            "%s did not %s within %ds; see `kubeless-local logs %s`"
            % (name, "start" if present else "stop", timeout, name)
        )

    def __eq__(self, other):
        return isinstance(other, SessionClient) and other.state_dir == self.state_dir

    __hash__ = None  # type: ignore[assignment]

    def logs(self, name, follow=False, tail=None):
        """Yields log line dicts; with follow, until interrupted."""
        query = "?follow=%d&tail=%d" % (1 if follow else 0, -1 if tail is None else tail)
        with self._request("GET", "/api/functions/%s/logs%s" % (name, query), timeout=None) as response:
            for raw in response:
                yield json.loads(raw)

    def _json(self, path: str, method: str = "GET", body: Any = None, timeout: float | None = 60) -> Any:
        """The JSON answer to `method path`."""
        with self._request(method, path, body, timeout) as response:
            try:
                return json.loads(response.read())
            except OSError:  # the session died while answering (kill -9)
                raise Unavailable(
                    "`kubeless-local dev` for %s stopped while answering; start it again" % self.root
                ) from None

    # ------------------------------------------------------------ embedded topics (emit, topic …)

    def topics(self):
        """Every topic with its subscribers (position, lag) and dead letters."""
        return self._json("/api/topics")

    def create_topic(self, name):
        return self._json("/api/topics", "POST", {"name": name})

    def delete_topic(self, name):
        return self._json("/api/topics/%s" % quote(name, safe=""), "DELETE")

    def emit(self, topic, data, *, source="kafka", count=1, content_type=None):
        """Store `count` events with `data` (text or bytes) on `topic`; returns {first, last, subscribers}
        once they are on disk."""
        body = {"source": source, "count": count, "content_type": content_type}
        if isinstance(data, bytes):
            body["data_base64"] = base64.b64encode(data).decode()
        else:
            body["data"] = data
        return self._json("/api/topics/%s/events" % quote(topic, safe=""), "POST", body, timeout=600)

    def outcome(self, topic, first, last, source="kafka"):
        """{seq: {subscriber: delivered | dead-lettered | retrying (…) | pending}}"""
        rows = self._json(
            "/api/topics/%s/events?from=%d&to=%d&source=%s" % (quote(topic, safe=""), first, last, source)
        )
        return {int(seq): subs for seq, subs in rows.items()}

    def replay(self, topic, trigger=None, letter_id=None):
        body = {"trigger": trigger, "id": letter_id}
        return self._json("/api/topics/%s/replay" % quote(topic, safe=""), "POST", body)

    # ------------------------------------------------------------ recorded invocations (history, replay)

    def invocations(self, function=None, limit=50, before=None):
        """Summaries of the recorded invocations, newest first (of one function, or all)."""
        query = urllib.parse.urlencode({"function": function or "", "limit": limit, "before": before or 0})
        return self._json("/api/invocations?" + query)

    def invocation(self, ident):
        """One recorded invocation whole (request, response, logs), secrets redacted."""
        return self._json("/api/invocations/%s" % quote(str(ident), safe=""))

    def replay_invocation(self, ident, request=None):
        """Send invocation `ident`'s request again (or `request`, an edited copy): {original, replay, diff}."""
        body = {} if request is None else {"request": request}
        return self._json("/api/invocations/%s/replay" % quote(str(ident), safe=""), "POST", body, timeout=None)

    def events(self, after=0, wait=0):
        """The session's bus events after id `after`: {events, reset, last}."""
        return self._json("/api/events?after=%d&wait=%d" % (after, wait), timeout=wait + 10)


def event_request(url, data=None, *, source="cli", topic=None, path="/", method=None, headers=None, mark=None):
    """(method, URL, headers, body) of one event to the function at `url`, the way Kubeless' event source sends
    it. `method` and `headers` (e.g. `call -X PUT -H 'K: V'`) override the envelope's. `mark`: the recorder's
    source (`call`), for a function whose front door reads it (its `ls` row says `recorded`)."""
    envelope_method, envelope_headers, body = envelope(source, data, topic=topic)
    headers = {**envelope_headers, **(headers or {})}
    if mark:
        headers[SOURCE_HEADER] = mark
    return method or envelope_method, function_url(url, path), headers, body


def call(url, data=None, *, source="cli", topic=None, path="/", timeout=None, method=None, headers=None, mark=None):
    """Send one event to a function (see event_request); returns the `requests` response."""
    import requests  # ~50 ms to import: the CLI's `call` sends with `send` instead

    method, url_path, headers, body = event_request(
        url, data, source=source, topic=topic, path=path, method=method, headers=headers, mark=mark
    )
    try:
        return requests.request(method, url_path, headers=headers, data=body, timeout=timeout)
    except requests.RequestException as exc:
        raise unreachable(url, exc) from None


def unreachable(url, exc):
    return Unavailable("cannot reach the function at %s (%s); is it running? see `kubeless-local ls`" % (url, exc))


REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 30  # as requests
URI_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what requests leaves unquoted in a URL (requote_uri): a space is sent as %20


class Answer:
    """A function's answer as `send` read it: what the CLI's `call` prints of it."""

    def __init__(self, status_code: int, reason: str, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.reason, self.content = status_code, reason, content
        self.headers = headers  # names lower-cased

    @property
    def text(self) -> str:
        """The body decoded as `requests` decodes it: the Content-Type's charset; text/* without one ISO-8859-1,
        JSON UTF-8; else the charset guessed from the bytes."""
        if not self.content:
            return ""
        content_type, *params = self.headers.get("content-type", "").split(";")
        fields = {k.strip(" \"'").lower(): v.strip(" \"'") for k, _, v in (p.partition("=") for p in params)}
        if fields.get("charset"):  # as requests.utils.get_encoding_from_headers
            encoding: str | None = fields["charset"]
        elif "text" in content_type:
            encoding = "ISO-8859-1"
        elif "application/json" in content_type:
            encoding = "utf-8"
        else:
            import charset_normalizer  # what requests guesses with; only for an answer that names no charset

            encoding = charset_normalizer.detect(self.content)["encoding"]
        try:
            return str(self.content, encoding or "utf-8", errors="replace")
        except (LookupError, TypeError):
            return str(self.content, errors="replace")


def send(url, data=None, *, path="/", timeout=None, method=None, headers=None, mark=None) -> Answer:
    """One `cli` event to the function at `url`, as `call` sends it, with `exchange`: the CLI's `call` then
    imports no HTTP library. Redirects are followed
    as `requests` follows them (a 301/302 to a POST and a 303 become a GET without the body)."""
    method, target, headers, body = event_request(url, data, path=path, method=method, headers=headers, mark=mark)
    # Connection: keep-alive, as requests sent it (the answer is read by its length or chunks, then this end
    # closes): the Node runtime under --debug hands a `Connection: close` request to no debugged worker.
    headers = {"User-Agent": "kubeless-local", "Accept": "*/*", "Connection": "keep-alive", **headers}
    for _ in range(MAX_REDIRECTS + 1):
        answer = _exchange(url, method, target, headers, body, timeout)
        location = answer.headers.get("location")
        if answer.status_code not in REDIRECTS or not location:
            return answer
        target = urllib.parse.urljoin(target, location)
        if (answer.status_code == 303 and method != "HEAD") or (answer.status_code in (301, 302) and method == "POST"):
            method, body = "GET", b""
            headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    raise Unavailable("the function at %s redirected more than %d times" % (url, MAX_REDIRECTS))


def _exchange(url, method, target, headers, body, timeout) -> Answer:
    parts = urllib.parse.urlsplit(target)
    where = quote((parts.path or "/") + ("?" + parts.query if parts.query else ""), safe=URI_SAFE)
    try:
        with exchange(parts.hostname or "127.0.0.1", parts.port or 80, method, where, headers, body, timeout) as reply:
            return Answer(reply.status, reply.reason, reply.headers, reply.read())
    except OSError as exc:
        raise unreachable(url, exc) from None


def function_url(url, path):
    """`path` on the function's `url`: a path is a path, never a host. Without its leading slash, `@host:port/x`
    appended to http://127.0.0.1:PORT would name another host (PORT its password) and send the call there."""
    return url.rstrip("/") + ("" if path.startswith("/") else "/") + path

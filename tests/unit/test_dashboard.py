"""The dashboard without a browser: its guard (Host, Origin, login, cookie, read-only), its routes over a
Source, and its event stream (ids, resume with Last-Event-ID, reset, a reader that never reads)."""

import http.client
import json
import queue
import socket
import threading
from types import SimpleNamespace

import pytest
from conftest import function
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.dashboard.feed import Feed
from kubeless_local.dashboard.guard import COOKIE, Guard
from kubeless_local.dashboard.server import LOGIN_LINK, Dashboard
from kubeless_local.dashboard.source import SessionSource, Source, error_location, metrics_row, percentile
from kubeless_local.emulator.admin import AdminServer
from kubeless_local.emulator.bus import EventBus
from kubeless_local.emulator.triggers.cron import Cron
from kubeless_local.errors import NotFound


class MemorySource(Source):
    """A session's view held in memory: what the routes answer, and what the actions were asked."""

    def __init__(self):
        self.rows = [{"name": "hello", "state": "Ready", "generation": 1}]
        self.lines: queue.Queue = queue.Queue()
        self.asked: list = []  # the actions
        self.listed: list = []  # the invocations lists read
        self.stored = [{"seq": 1, "id": "abc", "function": "hello", "status": 200, "started": 1.0}]

    def states(self):
        return [dict(row) for row in self.rows]

    def logs(self, name, tail):
        if name not in (None, "hello"):
            raise NotFound("no function %r" % name, "function", name)
        return [{"function": "hello", "text": "line %d" % i, "stream": "stdout", "time": i} for i in range(tail)]

    def subscribe_logs(self):
        return self.lines

    def unsubscribe_logs(self, subscription):
        pass

    def cron(self):
        return []

    def topics(self):
        return []

    def emit(self, topic, body):
        self.asked.append(("emit", topic, body))
        return {"first": 1, "last": 1, "subscribers": []}

    def outcome(self, topic, source, first, last):
        return {}

    def fire_cron(self, trigger):
        self.asked.append(("fire", trigger))
        return {"ok": True}

    def replay(self, topic, trigger, letter_id):
        self.asked.append(("replay", topic, trigger, letter_id))
        return {"replayed": 1}

    def call(self, name, method, path, data, headers):
        self.asked.append(("call", name, method, path, data, headers))
        return {"status": 200, "headers": {}, "body": "<b>hi</b>", "truncated": False, "ms": 1.0}

    def metrics(self):
        return [{"name": "hello", "calls": 3, "errors": 1, "p50_ms": 2.0}]

    def graph(self):
        return [{"name": "cron/nightly", "kind": "cron", "functions": ["hello"]}]

    def invocations(self, function, outcome, limit, before):
        self.listed.append((function, outcome, limit, before))
        return self.stored

    def invocation(self, ident):
        if ident != "abc":
            raise NotFound("no recorded invocation %r" % ident, "invocation", ident)
        return {"id": "abc", "function": "hello"}

    def replay_invocation(self, ident, request):
        self.asked.append(("replay-invocation", ident, request))
        return {"diff": {"same": True}}

    def save_test(self, ident):
        self.asked.append(("save-test", ident))
        return {"path": "tests/test_x.py", "source": ""}


@pytest.fixture(scope="module")
def shared_board():
    """One dashboard for the tests that only ask it (a server per test cost ~20 ms each)."""
    board = serve(MemorySource())
    yield board
    board.stop()


@pytest.fixture
def board(shared_board):
    shared_board.source.__init__()  # fresh rows and nothing asked yet
    return shared_board


@pytest.fixture
def source(request):
    """The source of the test's `board`, else one of its own."""
    return request.getfixturevalue("board").source if "board" in request.fixturenames else MemorySource()


def test_a_given_bus_is_read_as_it_is_and_gets_no_second_copy_of_a_log_line(source):
    bus = EventBus()
    board = serve(source, events=bus)
    try:
        assert board.events is bus and not board.feed.forward_lines
        source.lines.put({"function": "hello", "text": "reloading", "stream": "system", "time": 1.0})
        wait_until(lambda: board.feed.quick_until > 0, "the line read by the feed")
        assert [e.kind for e in bus.after(0).events] == []  # the session's bus has its lines already
    finally:
        board.stop()


def serve(source, **options):
    board = Dashboard(source, admin_token="admin-secret", **options)
    board.start()
    return board


def ask(board, method, path, headers=None, body=None, host=None, cookie=True):
    """(status, headers, body) of one request; with the session cookie unless cookie=False."""
    sent = {"Host": host or "127.0.0.1:%d" % board.port, **(headers or {})}
    if cookie:
        sent["Cookie"] = "%s=%s" % (COOKIE, board.guard.secret)
    connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
    try:
        connection.putrequest(method, path, skip_host=True)
        data = json.dumps(body).encode() if body is not None else b""
        for name, value in {**sent, "Content-Length": str(len(data))}.items():
            connection.putheader(name, value)
        connection.endheaders(data)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


# ------------------------------------------------------------ the guard


@pytest.mark.parametrize("host", ["evil.example:%d", "127.0.0.1:1", "localhost", "attacker.127.0.0.1.nip.io:%d"])
def test_a_foreign_host_is_refused_with_403(board, host):
    status, _, body = ask(board, "GET", "/api/state", host=host.replace("%d", str(board.port)))
    assert status == 403 and b"answers only to" in body


@pytest.mark.parametrize("host", ["127.0.0.1:%d", "localhost:%d", "[::1]:%d"])
def test_the_loopback_names_are_allowed(board, host):
    assert ask(board, "GET", "/api/state", host=host % board.port)[0] == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:1", "null"])
def test_a_foreign_origin_is_refused_with_403_even_with_the_cookie(board, source, origin):
    status, _, _ = ask(board, "POST", "/api/cron/nightly", {"Origin": origin}, body={})
    assert status == 403 and source.asked == []


def test_the_pages_own_origin_is_allowed(board, source):
    status, _, _ = ask(board, "POST", "/api/cron/nightly", {"Origin": "http://127.0.0.1:%d" % board.port}, body={})
    assert status == 200 and source.asked == [("fire", "nightly")]


def test_a_cross_site_fetch_is_refused_with_403(board, source):
    status, _, _ = ask(board, "POST", "/api/cron/nightly", {"Sec-Fetch-Site": "cross-site"}, body={})
    assert status == 403 and source.asked == []
    assert ask(board, "GET", "/api/state", {"Sec-Fetch-Site": "same-origin"})[0] == 200


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/events", "/app.js"])
def test_no_credentials_answer_401(board, path):
    status, _, body = ask(board, "GET", path, cookie=False)
    assert status == 401 and b"kubeless-local dashboard" in body
    status, _, _ = ask(board, "GET", path, {"Cookie": "%s=wrong" % COOKIE}, cookie=False)
    assert status == 401


def test_the_login_token_sets_an_httponly_strict_cookie_and_redirects_without_it(board):
    token = board.guard.login_token()
    status, headers, _ = ask(board, "GET", "/?view=logs&token=%s&q=a" % token, cookie=False)
    assert status == 303 and headers["Location"] == "/?view=logs&q=a"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("%s=%s;" % (COOKIE, board.guard.secret))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie


def test_a_login_token_works_once(board):
    token = board.guard.login_token()
    assert ask(board, "GET", "/?token=%s" % token, cookie=False)[0] == 303
    assert ask(board, "GET", "/?token=%s" % token, cookie=False)[0] == 401
    assert ask(board, "GET", "/?token=%s" % token)[0] == 303  # a tab that has the cookie just drops it


def test_a_made_up_token_is_refused(board):
    assert ask(board, "GET", "/?token=guess", cookie=False)[0] == 401


def test_the_admin_token_buys_a_new_login_link(board):
    status, _, _ = ask(board, "POST", LOGIN_LINK, {"Authorization": "Bearer wrong"}, body={}, cookie=False)
    assert status == 401
    status, _, body = ask(board, "POST", LOGIN_LINK, {"Authorization": "Bearer admin-secret"}, body={}, cookie=False)
    url = json.loads(body)["url"]
    assert status == 200 and url.startswith("http://127.0.0.1:%d/?token=" % board.port)
    assert ask(board, "GET", url.split(str(board.port), 1)[1], cookie=False)[0] == 303
    host = "evil.example:%d" % board.port
    assert ask(board, "POST", LOGIN_LINK, {"Authorization": "Bearer admin-secret"}, {}, host, False)[0] == 403


def test_every_answer_carries_the_content_security_policy(board):
    for path, cookie in [("/", True), ("/api/state", True), ("/", False), ("/missing", True)]:
        _, headers, _ = ask(board, "GET", path, cookie=cookie)
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_read_only_dashboard_shows_but_does_not_act(source):
    board = serve(source, read_only=True)
    try:
        assert ask(board, "GET", "/api/state")[0] == 200
        for path in ["/api/cron/nightly", "/api/topics/orders/events", "/api/topics/orders/replay"]:
            status, _, body = ask(board, "POST", path, body={"data": "x"})
            assert status == 403 and b"read-only" in body
        assert ask(board, "POST", "/api/functions/hello/call", body={})[0] == 403
        assert ask(board, "POST", "/api/invocations/abc/replay", body={})[0] == 403
        assert ask(board, "POST", "/api/invocations/abc/pytest", body={})[0] == 403
        assert source.asked == []
        assert json.loads(ask(board, "GET", "/api/state")[2])["read_only"] is True
    finally:
        board.stop()


def test_the_guard_keeps_a_bounded_number_of_unused_login_tokens():
    guard = Guard(8000)
    tokens = [guard.login_token() for _ in range(100)]
    assert len(guard.logins) == 32 and guard.logins[-1] == tokens[-1]


# ------------------------------------------------------------ the routes


def test_the_page_and_its_modules_are_served_with_their_types(board):
    status, headers, body = ask(board, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<script" in body
    assert b"<script>" not in body  # no inline script: the CSP would refuse it
    for path in sorted(board.files):
        status, headers, _ = ask(board, "GET", path)
        assert status == 200, path
    assert ask(board, "GET", "/../server.py")[0] == 404
    assert ask(board, "GET", "/%2e%2e/server.py")[0] == 404


def test_actions_reach_the_source_and_its_errors_keep_their_status(board, source):
    ask(board, "POST", "/api/topics/orders/events", body={"data": "x", "source": "nats"})
    ask(board, "POST", "/api/topics/orders/replay", body={"trigger": "t", "id": 3})
    status, _, body = ask(board, "POST", "/api/functions/hello/call", body={"method": "PUT", "data": "d"})
    assert status == 200 and json.loads(body)["body"] == "<b>hi</b>"
    assert source.asked == [
        ("emit", "orders", {"data": "x", "source": "nats"}),
        ("replay", "orders", "t", 3),
        ("call", "hello", "PUT", "/", "d", {}),
    ]
    status, _, body = ask(board, "GET", "/api/logs?function=nope")
    assert status == 404 and b"nope" in body
    assert ask(board, "GET", "/api/logs?tail=x")[0] == 400
    assert len(json.loads(ask(board, "GET", "/api/logs?tail=3")[2])) == 3


def test_a_body_that_is_not_a_json_object_is_a_400(board):
    assert ask(board, "POST", "/api/cron/x", body=[1])[0] == 400


def test_error_location_names_the_users_file_and_line():
    python = 'Traceback (most recent call last):\n  File "/s/gen-3/handler.py", line 7\n    def f(:\nSyntaxError: bad'
    assert error_location(python) == "handler.py:7"
    assert error_location("/kubeless/handler.js:12\n  x(\nSyntaxError: Unexpected") == "handler.js:12"
    assert error_location("no location") is None


# ------------------------------------------------------------ the event bus and the stream


def test_the_event_bus_gives_each_later_event_once_in_order():
    log = EventBus()
    ids = [log.publish("log", {"n": n}) for n in range(10)]
    assert ids == list(range(1, 11))
    assert [e.id for e in log.after(4).events] == [5, 6, 7, 8, 9, 10]
    assert log.after(10).events == [] and not log.after(10).reset
    assert [e.id for e in log.after(0, limit=3).events] == [1, 2, 3]


def test_the_event_bus_says_reset_when_the_events_are_gone_or_from_another_session():
    log = EventBus(capacity=5)
    for n in range(12):
        log.publish("log", n)
    assert log.after(6).reset and not log.after(7).reset
    assert [e.id for e in log.after(7).events] == [8, 9, 10, 11, 12]
    assert log.after(99).reset


def test_the_event_bus_is_bounded_in_bytes():
    log = EventBus(max_bytes=10_000)
    for _ in range(1000):
        log.publish("log", "x" * 1000)
    assert log.size <= 10_000 and len(log.ring) <= 10


def test_the_feed_publishes_a_row_only_when_it_changed_and_says_when_it_is_gone(source):
    log = EventBus()
    feed = Feed(source, log)
    feed.publish_changes("function", source.states())
    feed.publish_changes("function", source.states())
    source.rows[0]["state"] = "Reloading"
    feed.publish_changes("function", source.states())
    feed.publish_changes("function", [])
    kinds = [(e.kind, e.data.get("state")) for e in log.after(0).events]
    assert kinds == [("function", "Ready"), ("function", "Reloading"), ("function-removed", None)]


def read_events(response, count):
    """The next `count` events of an SSE response: (id, kind, data)."""
    events, fields = [], {}
    while len(events) < count:
        line = response.fp.readline().decode().rstrip("\n")
        if line == "":
            if "event" in fields:
                events.append((int(fields["id"]) if "id" in fields else None, fields["event"], fields.get("data")))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def open_stream(board, last_event_id=None, query=""):
    connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
    headers = {"Host": "127.0.0.1:%d" % board.port, "Cookie": "%s=%s" % (COOKIE, board.guard.secret)}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    connection.request("GET", "/api/events" + query, headers=headers)
    response = connection.getresponse()
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    return connection, response


@pytest.fixture
def quiet_board(source):
    """A dashboard whose events are only those the test publishes (no rows for the Feed to send)."""
    source.rows = []
    board = serve(source, events=EventBus())
    yield board
    board.stop()


def test_a_stream_resumed_with_last_event_id_gets_each_missed_event_once(quiet_board):
    board = quiet_board
    log = board.events
    first = log.publish("log", {"text": "before"})
    connection, response = open_stream(board, last_event_id=first)
    for n in range(5):
        log.publish("log", {"n": n})
    got = read_events(response, 5)
    connection.close()
    for n in range(5, 10):  # missed while away
        log.publish("log", {"n": n})
    connection, response = open_stream(board, last_event_id=got[-1][0])
    log.publish("log", {"n": 10})
    again = read_events(response, 6)
    connection.close()
    numbers = [json.loads(data)["n"] for _, _, data in got + again]
    assert numbers == list(range(11))
    ids = [event_id for event_id, _, _ in got + again]
    assert ids == sorted(set(ids))


def test_a_stream_from_an_id_no_longer_held_gets_reset(source):
    board = serve(source, events=EventBus(capacity=3))
    try:
        for n in range(10):
            board.events.publish("log", n)
        connection, response = open_stream(board, query="?after=2")
        assert read_events(response, 1) == [(None, "reset", "{}")]
        connection.close()
    finally:
        board.stop()


def test_a_reader_that_never_reads_neither_grows_memory_nor_stalls_the_writer(quiet_board):
    board = quiet_board
    stuck = socket.create_connection(("127.0.0.1", board.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(
        b"GET /api/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s=%s\r\n\r\n"
        % (board.port, COOKIE.encode(), board.guard.secret.encode())
    )
    try:
        done = threading.Event()

        def write():
            for _ in range(5_000):  # 5 MB: more than the log keeps
                board.events.publish("log", {"text": "x" * 1000})
            done.set()

        threading.Thread(target=write, daemon=True).start()
        wait_until(done.is_set, "5,000 events published past a reader that does not read", timeout=30)
        assert board.events.size <= 4 * 1024 * 1024
        assert ask(board, "GET", "/api/state")[0] == 200  # the server still answers others
    finally:
        stuck.close()


def test_the_feed_polls_rows_only_while_a_tab_reads_and_then_sends_what_changed_meanwhile(source):
    log, watched = EventBus(), threading.Event()
    feed = Feed(source, log, interval=0.001, watched=watched.is_set)
    feed.start()
    try:
        source.lines.put({"function": "hello", "text": "a line", "stream": "stdout", "time": 1.0})
        wait_until(lambda: log.last_id >= 1, "the line forwarded")
        source.rows[0]["state"] = "Crashed"
        kinds = lambda: [e.kind for e in log.after(0).events]  # noqa: E731
        assert kinds() == ["log"]  # no tab: no row polled
        watched.set()
        wait_until(lambda: "function" in kinds(), "the row sent once a tab reads")
        assert log.after(1).events[0].data["state"] == "Crashed"
    finally:
        feed.stop()


# ------------------------------------------------------------ SessionSource: a session's rows


def session_of(supervisor, manifests):
    """What SessionSource reads of a DevSession: its supervisor, logs, project's manifests, cron, admin."""
    admin = AdminServer(supervisor, supervisor.state_dir, supervisor.state_dir.parent)
    cron = Cron(lambda: manifests, supervisor, supervisor.logs)
    admin.cron = cron
    project = SimpleNamespace(manifests=manifests)
    return SimpleNamespace(
        supervisor=supervisor, logs=supervisor.logs, project=project, cron=cron, admin=admin, recorder=None
    )


def test_the_session_source_rows_show_generation_triggers_and_a_reload_in_progress(supervisor):
    hello = function("hello")
    manifests = specs.Manifests(
        functions=[hello],
        cron_triggers=[specs.CronJobTrigger("nightly", "hello", "0 3 * * *", "f.yaml")],
        http_triggers=[specs.HTTPTrigger("web", "hello", "f.yaml", path="shop")],
    )
    supervisor.start(hello)
    source = SessionSource(session_of(supervisor, manifests))
    (row,) = source.states()
    assert row["state"] == "Ready" and row["generation"] == 1 and row["last_reload"] is None
    assert row["triggers"] == ["http shop", "cron nightly (0 3 * * *)"]
    supervisor.backend.reloads["hello"] = [0.3]  # the new code serves 0.3 s after the signal
    reloading = threading.Thread(target=supervisor.reload, args=(function("hello", code="v2"),))
    reloading.start()  # the engine says Reloading while the last good code serves on
    try:
        assert supervisor.instances["hello"].wait_for(lambda i: i.state.value == "Reloading", 5)
        assert source.states()[0]["state"] == "Reloading" and source.states()[0]["generation"] == 1
    finally:
        reloading.join(5)
    (row,) = source.states()
    assert row["state"] == "Ready" and row["generation"] == 2 and row["last_reload"] is not None
    (cron,) = source.cron()
    assert len(cron["next_fires"]) == 5 and all(t.endswith("T03:00:00Z") for t in cron["next_fires"])


def test_the_session_source_merges_the_logs_by_time_and_knows_no_other_function(supervisor):
    hub = supervisor.logs
    supervisor.start(function("hello"))
    source = SessionSource(session_of(supervisor, None))
    hub.emit("a", "first")
    hub.emit("b", "second")
    assert [row["text"] for row in source.logs(None, 2)] == ["first", "second"]
    with pytest.raises(NotFound):
        source.logs("nobody", 5)


def test_the_stream_carries_what_the_engine_publishes_on_the_bus(quiet_board):
    board = quiet_board
    connection, response = open_stream(board, last_event_id=board.events.last_id)
    board.events.publish("invocation-end", {"id": "abc", "function": "hello", "status": 200})
    ((_, kind, data),) = read_events(response, 1)
    connection.close()
    assert kind == "invocation-end" and json.loads(data)["id"] == "abc"


# ------------------------------------------------------------ recorded invocations


def test_the_invocations_routes_pass_the_filters_and_the_replay_to_the_source(board, source):
    status, _, body = ask(board, "GET", "/api/invocations?function=hello&outcome=error&limit=5000&before=9")
    assert status == 200 and json.loads(body)[0]["id"] == "abc"
    ask(board, "GET", "/api/invocations")
    assert json.loads(ask(board, "GET", "/api/invocations/abc")[2]) == {"id": "abc", "function": "hello"}
    assert ask(board, "GET", "/api/invocations/nope")[0] == 404
    edited = {"method": "PUT", "body": {"text": "x"}}
    assert ask(board, "POST", "/api/invocations/abc/replay", body={"request": edited})[0] == 200
    assert ask(board, "POST", "/api/invocations/abc/replay", body={})[0] == 200
    assert ask(board, "POST", "/api/invocations/abc/replay", body={"request": "GET /"})[0] == 400
    assert ask(board, "GET", "/api/invocations?limit=x")[0] == 400
    assert source.listed == [("hello", "error", 1000, 9), (None, None, 100, None)]
    assert source.asked == [
        ("replay-invocation", "abc", edited),
        ("replay-invocation", "abc", None),
    ]


def test_the_state_holds_the_newest_invocations_stored_or_only_seen_ending_on_the_bus(quiet_board):
    board = quiet_board
    board.source.stored = [{"seq": 1, "id": "abc", "function": "hello", "status": 200, "started": 1.0}]
    board.events.publish("invocation-end", {"id": "abc", "function": "hello", "status": 200, "started": 1.0})
    board.events.publish("invocation-end", {"id": "new", "function": "hello", "status": 500, "started": 2.0})
    state = json.loads(ask(board, "GET", "/api/state")[2])
    assert [row["id"] for row in state["invocations"]] == ["new", "abc"]  # the newer one is not stored yet


def test_the_session_source_shows_a_call_that_ended_but_is_not_stored_yet(supervisor):
    from kubeless_local.emulator.recorder import Exchange, Recorder

    session = session_of(supervisor, None)
    session.recorder = session.admin.recorder = Recorder(supervisor.state_dir, log_grace=0.1)
    try:
        source = SessionSource(session)
        ident = session.recorder.submit(
            Exchange("hello", "GET", "/?a=1", [("Authorization", "Bearer s")], status=500, duration=0.001)
        )
        record = source.invocation(ident)  # the writer waits out its log grace before storing it
        assert record["request"]["headers"] == [["Authorization", "REDACTED"]]
        assert [row["id"] for row in source.invocations("hello", "error", 10, None)] == [ident]
        assert source.invocations("hello", "ok", 10, None) == []
        with pytest.raises(NotFound):
            source.invocation("nope")
    finally:
        session.recorder.close()


def test_a_session_without_a_recorder_lists_no_invocations(supervisor):
    session = session_of(supervisor, None)
    session.recorder = None
    assert SessionSource(session).invocations(None, None, 10, None) == []


# ------------------------------------------------------------ metrics


def test_percentiles_are_nearest_rank_over_the_recorded_durations():
    durations = [float(n) for n in range(100, 0, -1)]  # newest first, as the recorder gives them
    assert (percentile(durations, 0.5), percentile(durations, 0.95)) == (50.0, 95.0)
    assert percentile([7.0], 0.95) == 7.0 and percentile([], 0.5) is None


def test_a_metrics_row_takes_the_counts_of_ls_and_the_durations_of_the_recorder():
    row = metrics_row({"name": "hello", "calls": 3, "errors": 1}, [1.0, 2.0, 30.0])
    assert row == {
        "name": "hello",
        "calls": 3,
        "errors": 1,
        "error_rate": 33.3,
        "recorded": 3,
        "p50_ms": 2.0,
        "p95_ms": 30.0,
    }
    unknown = metrics_row({"name": "custom", "calls": None, "errors": None}, [])
    assert (unknown["calls"], unknown["error_rate"], unknown["p50_ms"]) == (None, None, None)
    assert metrics_row({"name": "idle", "calls": 0, "errors": 0}, [])["error_rate"] is None


def test_the_state_and_the_feed_carry_the_metrics_rows(board, source):
    assert json.loads(ask(board, "GET", "/api/state")[2])["metrics"][0]["calls"] == 3
    log = EventBus()
    Feed(source, log).publish_changes("metrics", source.metrics())
    assert [(e.kind, e.data["errors"]) for e in log.after(0).events] == [("metrics", 1)]


def test_the_session_source_metrics_use_the_recorders_durations(supervisor):
    from kubeless_local.emulator.recorder import Exchange, Recorder

    session = session_of(supervisor, None)
    session.recorder = Recorder(supervisor.state_dir, log_grace=0)
    try:
        supervisor.start(function("hello"))
        for ms in (10, 20, 30, 40):
            session.recorder.submit(Exchange("hello", "GET", "/", [], status=200, duration=ms / 1000))
        assert session.recorder.flush(10)
        (row,) = SessionSource(session).metrics()
        assert (row["name"], row["recorded"], row["p50_ms"], row["p95_ms"]) == ("hello", 4, 20.0, 40.0)
    finally:
        session.recorder.close()


# ------------------------------------------------------------ the trigger graph


def test_the_graph_has_a_row_per_trigger_with_the_functions_it_calls_and_its_recorded_calls(supervisor):
    import dataclasses

    from kubeless_local.emulator.recorder import Exchange, Recorder

    shop, other = dataclasses.replace(function("hello"), labels={"app": "shop"}), function("world")
    manifests = specs.Manifests(
        functions=[shop, other],
        cron_triggers=[specs.CronJobTrigger("nightly", "hello", "0 3 * * *", "f.yaml")],
        http_triggers=[specs.HTTPTrigger("web", "ghost", "f.yaml", path="shop", host_name="shop.example")],
        kafka_triggers=[
            specs.KafkaTrigger(
                "orders",
                "orders",
                {"app": "shop"},
                "f.yaml",
                expressions=(
                    {"key": "tier", "operator": "NotIn", "values": ["db"]},
                    {"key": "x", "operator": "Exists"},
                ),
            )
        ],
        nats_triggers=[specs.NATSTrigger("nobody", "news", {"app": "none"}, "f.yaml")],
    )
    session = session_of(supervisor, manifests)
    session.recorder = Recorder(supervisor.state_dir, log_grace=0)
    try:
        for _ in range(2):
            session.recorder.submit(Exchange("hello", "POST", "/", [], source="cron", trigger="nightly", status=200))
        session.recorder.submit(Exchange("hello", "POST", "/", [], source="kafka", trigger="nightly", status=200))
        assert session.recorder.flush(10)
        rows = {row["name"]: row for row in SessionSource(session).graph()}
    finally:
        session.recorder.close()
    assert sorted(rows) == ["cron/nightly", "http/web", "kafka/orders", "nats/nobody"]
    cron, http, kafka, nats = rows["cron/nightly"], rows["http/web"], rows["kafka/orders"], rows["nats/nobody"]
    assert (cron["from"], cron["functions"], cron["recorded"]) == ("0 3 * * *", ["hello"], 2)
    assert (http["from"], http["functions"], http["missing"], http["url"]) == ("shop.example/shop", [], ["ghost"], None)
    assert (kafka["from"], kafka["functions"], kafka["recorded"]) == ("orders", [], 0)  # tier/x: not labelled
    assert kafka["selector"] == "app=shop,tier notin (db),x"
    assert nats["functions"] == [] and nats["missing"] == []


def test_the_graph_selects_by_labels(supervisor):
    import dataclasses

    shop = dataclasses.replace(function("hello"), labels={"app": "shop", "x": "1"})
    trigger = specs.KafkaTrigger("orders", "orders", {"app": "shop"}, "f.yaml")
    manifests = specs.Manifests(functions=[shop, function("world")], kafka_triggers=[trigger])
    (row,) = SessionSource(session_of(supervisor, manifests)).graph()
    assert row["functions"] == ["hello"] and row["selector"] == "app=shop"


def test_the_state_and_the_feed_carry_the_graph(board, source):
    assert json.loads(ask(board, "GET", "/api/state")[2])["graph"][0]["name"] == "cron/nightly"


def test_an_invocation_is_shown_and_saved_as_a_pytest_test(board, source, monkeypatch):
    request = {"method": "GET", "path": "/", "query": "", "headers": [], "body": {"size": 0, "truncated": False}}
    answer = {"status": 200, "headers": [], "body": {"size": 2, "truncated": False, "text": "hi"}}
    recorded = {"function": "hello-world", "source": "call", "trigger": None, "request": request, "response": answer}
    monkeypatch.setattr(source, "invocation", lambda ident: {**recorded, "id": ident})
    status, _, body = ask(board, "GET", "/api/invocations/abc/pytest")
    shown = json.loads(body)
    assert status == 200 and shown["file"] == "test_hello_world_abc.py"
    assert "def test_hello_world_abc(kubeless):" in shown["source"]
    assert ask(board, "POST", "/api/invocations/abc/pytest", body={})[0] == 200
    assert source.asked == [("save-test", "abc")]

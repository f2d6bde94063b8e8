"""The admin API against a fake backend: the token on every request, functions, logs, follow, 404s."""

import http.client
import json
import os
import socket
import stat
import threading

import pytest
from conftest import function
from sockets import scripted_server
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.client import AdminClient
from kubeless_local.commands.events import EMIT_HINTS
from kubeless_local.commands.output import worded
from kubeless_local.emulator.admin import ROUTES, AdminServer, functions, logs, route
from kubeless_local.errors import BadRequest, Conflict, NotFound, Unavailable, UserError


@pytest.fixture
def admin(supervisor, tmp_path):
    server = AdminServer(supervisor, supervisor.state_dir, tmp_path)
    server.start()
    yield server
    server.stop()


def request(admin, path, token="right", method="GET"):
    """(status, parsed JSON body or raw bytes) of one request; token "right" sends the session's token."""
    headers = {} if token is None else {"Authorization": "Bearer %s" % (admin.token if token == "right" else token)}
    connection = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=5)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body


def test_admin_json_is_private_and_holds_the_token(admin):
    info_path = admin.state_dir / "admin.json"
    assert stat.S_IMODE(os.stat(info_path).st_mode) == 0o600
    info = json.loads(info_path.read_text())
    assert info["port"] == admin.port and info["pid"] == os.getpid() and len(info["token"]) >= 32
    assert not list(admin.state_dir.glob("*.tmp"))


def test_idle_connections_hold_no_thread_and_a_request_is_still_served(admin):
    before = threading.active_count()
    idle = []
    try:
        for _ in range(3):  # 100 at a time: more than the listen backlog (128) at once would wait 1 s for a SYN retry
            idle += [socket.create_connection(("127.0.0.1", admin.port), timeout=5) for _ in range(100)]
            assert request(admin, "/api/functions") == (200, [])  # accepted after every idle one (FIFO)
        assert threading.active_count() - before < 10, "%d threads" % (threading.active_count() - before)
    finally:
        for connection in idle:
            connection.close()


def raw_exchange(admin, data):
    """(status line, headers, body) the admin API answers to the bytes `data` (it closes the connection after)."""
    with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.decode("latin-1").split("\r\n")
    return status, dict(h.split(": ", 1) for h in headers), body


def test_requests_it_cannot_read_are_answered_with_their_status(admin):
    """What http.server answered, as JSON: the admin API reads its own requests (no http.server import)."""
    token = b"Authorization: Bearer " + admin.token.encode() + b"\r\n"
    cases = [
        (b"nonsense\r\n\r\n", "400 Bad Request"),
        (b"GET /" + b"x" * 70000 + b" HTTP/1.0\r\n\r\n", "414 Request-URI Too Long"),
        (b"GET /api/functions HTTP/1.0\r\n" + b"X-A: b\r\n" * 300 + b"\r\n", "431 Request Header Fields Too Large"),
        (b"PUT /api/functions HTTP/1.0\r\n" + token + b"\r\n", "501 Not Implemented"),
    ]
    for data, status in cases:
        line, headers, body = raw_exchange(admin, data)
        assert line == "HTTP/1.0 " + status, data[:40]
        assert headers["Content-Type"] == "application/json" and json.loads(body) == {"error": status.split(" ", 1)[1]}
    line, headers, body = raw_exchange(
        admin, b"GET /api/functions HTTP/1.1\r\nauthorization: bearer " + admin.token.encode() + b"\r\n\r\n"
    )  # a header's name and the scheme in any case
    assert (line, json.loads(body), headers["Content-Length"]) == ("HTTP/1.0 200 OK", [], str(len(body)))
    assert raw_exchange(admin, b"GET /api/functions HTTP/1.0\r\nAuthorization: Bearer nope\r\n\r\n")[0] == (
        "HTTP/1.0 401 Unauthorized"
    )


def test_a_body_announced_with_expect_is_asked_for(admin):
    """curl sends `Expect: 100-continue` before a larger body and waits for the go-ahead (a second, without one)."""
    with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as connection:
        body = json.dumps({"data": "x" * 2000}).encode()
        connection.sendall(
            b"POST /api/nothing-here HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % (admin.token.encode(), len(body))
        )
        assert connection.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(body)
        assert connection.recv(100).startswith(b"HTTP/1.0 404 Not Found\r\n")


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(admin, monkeypatch):
    monkeypatch.setattr(admin.server, "idle_timeout", 0.05)
    connection = socket.create_connection(("127.0.0.1", admin.port), timeout=10)
    try:
        assert connection.recv(1) == b""  # closed by the server, well before this socket's 10 s
    finally:
        connection.close()
    slow = socket.create_connection(("127.0.0.1", admin.port), timeout=10)
    try:
        slow.sendall(b"GET /api/functions HTTP/1.0\r\n")  # and never the rest: dropped after the read timeout
        assert slow.recv(1) == b""
    finally:
        slow.close()


def test_every_request_needs_the_token(admin, supervisor):
    supervisor.start(function())
    supervisor.say("hello", "secret log line")
    for path in ("/api/functions", "/api/functions/hello/logs", "/api/nothing"):
        for token in (None, "wrong", admin.token + "x", ""):
            status, body = request(admin, path, token=token)
            assert status == 401, (path, token)
            assert "hello" not in json.dumps(body) and "secret" not in json.dumps(body)
    assert request(admin, "/api/functions", method="POST", token=None)[0] == 401
    assert request(admin, "/api/functions")[0] == 200


def test_functions_and_logs(admin, supervisor):
    supervisor.start(function("a"))
    supervisor.fail(function("b"), "unknown runtime 'cobol85'")
    supervisor.say("a", "one")
    supervisor.say("a", "two")
    status, rows = request(admin, "/api/functions")
    assert status == 200 and [(r["name"], r["state"]) for r in rows] == [("a", "Ready"), ("b", "ConfigError")]
    status, body = request(admin, "/api/functions/a/logs?tail=2")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert status == 200 and [line["text"] for line in lines] == ["one", "two"]
    assert lines[0]["stream"] == "system" and lines[0]["time"] > 0
    assert request(admin, "/api/functions/a/logs?tail=0")[1] == b""


def test_one_function_by_name_and_without_counts(admin, supervisor, monkeypatch):
    supervisor.start(function("a"))
    supervisor.start(function("b"))
    asked = []
    status = supervisor.status
    monkeypatch.setattr(supervisor, "status", lambda *args, **kwargs: asked.append(kwargs) or status(*args, **kwargs))
    assert [r["name"] for r in request(admin, "/api/functions?name=b&counts=0")[1]] == ["b"]
    assert request(admin, "/api/functions?name=nope")[1] == []
    assert [r["name"] for r in request(admin, "/api/functions")[1]] == ["a", "b"]
    # a lookup of one function (call, logs, history NAME) asks for that row only, without counts
    assert AdminClient(admin.state_dir).function("b")["name"] == "b"
    assert asked == [{"counted": False}, {"counted": True}, {"counted": True}, {"counted": False}]


def test_unknown_function_and_endpoint_are_404(admin):
    status, body = request(admin, "/api/functions/nope/logs")
    assert status == 404 and "nope" in body["error"]
    assert request(admin, "/api/whatever")[0] == 404


def test_a_bad_tail_is_400(admin, supervisor):
    supervisor.start(function())
    status, body = request(admin, "/api/functions/hello/logs?tail=lots")
    assert status == 400 and "tail" in body["error"]


def test_follow_streams_new_lines(admin, supervisor):
    supervisor.start(function())
    client = AdminClient(admin.state_dir)
    lines = client.logs("hello", follow=True, tail=0)
    received = []

    def read_two():
        for line in lines:
            received.append(line["text"])
            if len(received) == 2:
                return

    reader = threading.Thread(target=read_two, daemon=True)
    reader.start()
    for _ in range(200):  # until the follower has subscribed (bounded)
        if any(function_name == "hello" for function_name, _ in supervisor.logs.subscribers):
            break
        reader.join(0.01)
    supervisor.say("hello", "first")
    supervisor.say("hello", "second")
    reader.join(5)
    lines.close()
    assert received == ["first", "second"]


def test_a_follower_that_goes_away_is_unsubscribed(admin, supervisor):
    supervisor.start(function())
    supervisor.say("hello", "before")
    connection = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=5)
    connection.request("GET", "/api/functions/hello/logs?follow=1", headers={"Authorization": "Bearer " + admin.token})
    response = connection.getresponse()
    assert json.loads(response.readline())["text"] == "before"  # the tail, then the follower waits
    assert any(name == "hello" for name, _ in supervisor.logs.subscribers)
    response.close()  # the response holds the socket too
    connection.close()

    def gone():  # a write after the peer's reset finds the connection gone: the stream ends, done() unsubscribes
        supervisor.say("hello", "after")
        return not supervisor.logs.subscribers

    wait_until(gone, "the follower unsubscribed", timeout=10)


def test_the_client_sends_the_token_and_reports_a_wrong_one(admin, supervisor):
    supervisor.start(function())
    assert AdminClient(admin.state_dir).function("hello")["state"] == "Ready"
    info_path = admin.state_dir / "admin.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(dict(info, token="stolen")))
    with pytest.raises(UserError, match="token"):
        AdminClient(admin.state_dir).functions()


def test_a_client_that_goes_away_is_not_a_traceback(admin, capsys):
    for error in (BrokenPipeError(), ConnectionResetError()):
        try:
            raise error
        except OSError:
            admin.server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real bug")
    except ValueError:
        admin.server.handle_error(None, ("127.0.0.1", 1))
    assert "a real bug" in capsys.readouterr().err


def test_stop_removes_admin_json_only_when_it_is_ours(supervisor, tmp_path):
    server = AdminServer(supervisor, supervisor.state_dir, tmp_path)
    server.start()
    info_path = supervisor.state_dir / "admin.json"
    info_path.write_text(json.dumps({"pid": os.getpid() + 1, "port": 1, "token": "other"}))
    server.stop()
    assert info_path.exists()


@pytest.fixture
def events_admin(admin, supervisor):
    """The admin API with embedded topics attached, as the session wires them."""
    from kubeless_local.emulator.triggers.delivery import Dispatcher
    from kubeless_local.emulator.triggers.interface import EmbeddedTopics
    from kubeless_local.emulator.triggers.topics import TopicStore

    dispatcher = Dispatcher(TopicStore(supervisor.state_dir), supervisor, supervisor.logs)
    admin.topics = EmbeddedTopics(dispatcher)
    yield admin
    dispatcher.stop()
    dispatcher.store.close()


def test_topics_through_the_client(events_admin, supervisor):
    client = AdminClient(supervisor.state_dir)
    with pytest.raises(NotFound, match="^no topic 'orders'$") as missing:  # the engine's type, words and fields
        client.emit("orders", "hi")
    assert (missing.value.what, missing.value.name) == ("topic", "orders")
    assert str(worded(missing.value, EMIT_HINTS)) == (  # what `emit` prints: the CLI names its commands
        "no topic 'orders'; create it with `kubeless-local topic create orders` or add a trigger for it"
    )
    assert client.create_topic("orders")["created"] is True
    result = client.emit("orders", b"\x00binary", count=3)  # bytes travel as base64
    (stored_at,) = result["ranges"]
    assert stored_at["last"] - stored_at["first"] == 2 and result["subscribers"] == []
    stored = events_admin.topics.dispatcher.store.events_after("orders", "kafka", 0)
    assert [e.data for e in stored] == [b"\x00binary"] * 3
    assert client.emit("orders", '{"a": 1}', source="nats", content_type="application/json")["ranges"][0]["first"] == 4
    assert client.outcome("orders", 1, 3) == {1: {}, 2: {}, 3: {}}  # no subscriber: nothing happens to them
    (row,) = client.topics()
    assert row["name"] == "orders" and row["events"] == 4 and row["dead_letters"] == []
    assert client.replay("orders") == {"replayed": 0}
    client.delete_topic("orders")
    assert client.topics() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "{oops", "content_type": "application/json"}, r"the data is not valid JSON \(.*\) but the content"),
        ({"data": "x", "source": "kinesis"}, "source must be one of kafka, nats"),
        ({"data": "x", "count": 0}, "count must be a number from 1 to"),
    ],
)
def test_bad_events_are_refused_before_anything_is_stored(events_admin, supervisor, kwargs, message):
    client = AdminClient(supervisor.state_dir)
    client.create_topic("orders")
    data = kwargs.pop("data")
    with pytest.raises(UserError, match=message):
        client.emit("orders", data, **kwargs)
    assert events_admin.topics.dispatcher.store.count("orders") == 0


def test_ls_rows_count_dead_letters_and_replay_names_unknown_topics(events_admin, supervisor):
    supervisor.start(function())
    store = events_admin.topics.dispatcher.store
    store.create("orders")
    (seq,) = store.append("orders", "kafka", [b"x"])
    store.dead_letter("default_orders_hello_orders", "orders", seq, 5, 500, "boom")
    client = AdminClient(supervisor.state_dir)
    assert [(r["name"], r["dead_letters"]) for r in client.functions()] == [("hello", 1)]
    with pytest.raises(UserError, match="no topic 'nope'"):
        client.replay("nope")
    assert client.replay("orders") == {"replayed": 1}


def test_a_full_disk_is_said_to_the_caller(events_admin, supervisor):
    client = AdminClient(supervisor.state_dir)
    client.create_topic("orders")
    store = events_admin.topics.dispatcher.store
    store.shared.execute("PRAGMA max_page_count = %d" % store.shared.execute("PRAGMA page_count").fetchone()[0])
    with pytest.raises(UserError, match="topics.db cannot be written: its disk is full; make room and try again$"):
        client.emit("orders", "x" * 100_000)


def test_a_handler_that_fails_unexpectedly_answers_500_with_why_not_a_dropped_connection(
    events_admin, supervisor, monkeypatch, capsys
):
    # the client took the dropped connection for a session that is gone ("dev is not running; start it again")
    def broken(name):
        raise KeyError("a bug")

    monkeypatch.setattr(events_admin.topics, "create", broken)
    with pytest.raises(UserError) as error:
        AdminClient(supervisor.state_dir).create_topic("orders")
    assert str(error.value) == "POST /api/topics failed in the session: KeyError: 'a bug'"
    assert "Traceback" in capsys.readouterr().err  # on dev's console, for a report


def test_without_embedded_topics_the_topic_endpoints_say_so(admin, supervisor):
    with pytest.raises(UserError, match="this session runs no embedded topics"):
        AdminClient(supervisor.state_dir).topics()


def test_a_session_that_dies_while_answering_is_one_clear_error(tmp_path):
    """`dev` killed (-9) in the middle of an answer: the client says so in one line, never a traceback
    (an emit that was not acknowledged must be reported as not acknowledged)."""
    from kubeless_local.client import SessionClient

    # the process died before the rest of the body: the connection closes after its first byte
    half = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 74\r\n\r\n{"
    with scripted_server([half]) as (port, _):
        state = tmp_path / ".kubeless-local"
        state.mkdir()
        (state / "admin.json").write_text(json.dumps({"port": port, "token": "t", "root": "/p"}))
        with pytest.raises(UserError, match="stopped while answering"):
            SessionClient(state).topics()


# ---------------------------------------------------------------- the route table and the typed errors


def test_the_api_is_a_route_table_and_every_route_needs_the_token(admin):
    for entry in ROUTES:
        path = entry.path.format(name="hello", topic="orders", id="abc")
        assert request(admin, path, token="wrong", method=entry.method)[0] == 401, entry
    assert route("GET", "/api/functions/a%20b/logs") == (logs, {"name": "a b"})  # a segment, unquoted
    assert route("GET", "/api//functions/") == (functions, {})
    assert route("PUT", "/api/functions") is None and route("GET", "/api/functions/hello") is None
    status, body = request(admin, "/api/functions", method="DELETE")  # a known path, another method
    assert status == 404 and body == {"error": "no such endpoint", "what": "endpoint", "name": None}


def test_engine_errors_keep_their_type_through_the_api_and_the_cli_adds_its_words(events_admin, supervisor):
    client = AdminClient(supervisor.state_dir)
    status, body = request(events_admin, "/api/topics/nope", method="DELETE")
    assert status == 404 and body == {"error": "no topic 'nope'", "what": "topic", "name": "nope"}
    with pytest.raises(NotFound) as missing:
        client.delete_topic("nope")
    assert str(worded(missing.value)) == "no topic 'nope'; `kubeless-local topic ls` lists them"
    hello = specs.FunctionSpec(name="hello", runtime="python3.11", handler="h.f", origin="f.yaml", labels={"a": "b"})
    orders = specs.KafkaTrigger(name="orders", topic="orders", selector={"a": "b"}, origin="t.yaml")
    events_admin.topics.dispatcher.update(specs.Manifests(functions=[hello], kafka_triggers=[orders]))
    with pytest.raises(Conflict, match="^topic 'orders' is used by KafkaTrigger orders; remove the trigger first$"):
        client.delete_topic("orders")
    with pytest.raises(NotFound) as missing:
        client.replay("orders", trigger="nope")
    assert str(worded(missing.value)) == "no KafkaTrigger or NATSTrigger 'nope' in this project"  # no hint: not a topic
    with pytest.raises(BadRequest, match="count must be a number"):
        client.emit("orders", "x", count=0)
    with pytest.raises(BadRequest, match="^an event needs data: data \\(text\\) or data_base64$"):
        client.emit("orders", None)  # the API's words: the CLI's --data is required, so only an API user sees it


def test_unavailable_parts_answer_503_and_the_cli_says_to_restart(events_admin, supervisor, tmp_path):
    from kubeless_local.emulator.triggers.interface import BrokerTopics
    from kubeless_local.emulator.triggers.kafka_bridge import KafkaBridge

    embedded, client = events_admin.topics, AdminClient(supervisor.state_dir)
    events_admin.topics = None
    with pytest.raises(Unavailable, match="^this session runs no embedded topics$"):
        client.topics()
    bridge = KafkaBridge(["127.0.0.1:1"], specs.Manifests, supervisor, supervisor.logs, tmp_path)
    events_admin.topics = BrokerTopics(bridge, embedded)
    with pytest.raises(Unavailable) as stopped:  # never started: its verbs cannot run
        client.topics()
    assert str(worded(stopped.value)) == "this dev's Kafka bridge is not running; restart `kubeless-local dev`"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["emit", "kafka", "--topic", "nope", "--data", "x"],
            "error: no topic 'nope'; create it with `kubeless-local topic create nope` or add a trigger for it",
        ),
        (["topic", "delete", "nope"], "error: no topic 'nope'; `kubeless-local topic ls` lists them"),
        (["topic", "replay", "nope"], "error: no topic 'nope'; `kubeless-local topic ls` lists them"),
    ],
)
def test_the_cli_prints_the_engine_error_with_its_own_hint(events_admin, tmp_path, monkeypatch, args, line):
    from click.testing import CliRunner

    from kubeless_local.commands import root

    monkeypatch.chdir(tmp_path)  # the project folder of the session under test
    result = CliRunner().invoke(root.main, args)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [line], result.output


# ---------------------------------------------------------------- recorded invocations and the event bus


def test_recorded_invocations_through_the_client_redacted_and_an_unknown_id_not_found(admin, supervisor):
    from kubeless_local.emulator.bus import EventBus
    from kubeless_local.emulator.recorder import Exchange, Recorder

    admin.bus = EventBus()
    admin.recorder = Recorder(supervisor.state_dir, bus=admin.bus, log_grace=0)
    try:
        ident = admin.recorder.submit(
            Exchange("hello", "GET", "/x?y=1", [("Cookie", "secret")], status=200, response_headers=[("A", "b")])
        )
        assert admin.recorder.flush(10)
        client = AdminClient(supervisor.state_dir)
        (row,) = client.invocations("hello")
        assert (row["id"], row["path"], row["status"]) == (ident, "/x", 200)
        assert client.invocations("other") == []
        record = client.invocation(ident)
        assert record["request"]["headers"] == [["Cookie", "REDACTED"]] and record["request"]["query"] == "y=1"
        with pytest.raises(NotFound, match="no recorded invocation 'nope'"):
            client.invocation("nope")
        events = client.project_session().events(after=0)
        assert [event["kind"] for event in events["events"]] == ["invocation-end"] and not events["reset"]
        assert client.project_session().events(after=events["last"])["events"] == []
    finally:
        admin.recorder.close()


def test_stop_waits_for_a_request_in_progress_and_refuses_new_ones(admin, supervisor, monkeypatch):
    # `dev` closes its topics and recorder after the admin API stops: an emit being stored must end first.
    status, stopped, seen = supervisor.status, threading.Event(), {}

    def status_while_stopping(*args, **kwargs):
        wait_until(admin.closing.is_set, "stop() began")
        seen["new request"] = request(admin, "/api/functions")[0]
        seen["stopped before this answered"] = stopped.wait(0.5)  # a wait that must time out
        return status(*args, **kwargs)

    monkeypatch.setattr(supervisor, "status", status_while_stopping)
    answers = []
    asking = threading.Thread(target=lambda: answers.append(request(admin, "/api/functions")[0]))
    asking.start()
    wait_until(lambda: admin.in_progress == 1, "the request in progress")
    admin.stop()
    stopped.set()
    asking.join(10)
    assert answers == [200] and seen == {"new request": 503, "stopped before this answered": False}

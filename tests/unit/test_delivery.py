"""The dispatcher against a fake function: a tiny HTTP server on 127.0.0.1 that answers as scripted."""

import http.client
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import Looks
from sockets import scripted_server
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.emulator.base import Instance, State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.supervisor import Supervisor
from kubeless_local.emulator.taps import Taps
from kubeless_local.emulator.triggers import delivery
from kubeless_local.emulator.triggers.delivery import Dispatcher
from kubeless_local.emulator.triggers.topics import TopicStore
from kubeless_local.errors import UserError


class FakeFunction:
    """Records every request (time, headers, body); `answer(body, attempt)` gives the status to return."""

    def __init__(self):
        self.calls: list[tuple[float, dict, bytes]] = []
        self.lock = threading.Condition()
        self.answer = lambda body, attempt: 200
        self.drop = lambda body: False  # True: close the connection without answering, as a crashed server
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # headers and body go in two writes: without this, each answer waits for a delayed ACK
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    attempt = sum(1 for c in fake.calls if c[2] == body) + 1
                    fake.calls.append((time.monotonic(), dict(self.headers), body))
                    fake.lock.notify_all()
                if fake.drop(body):
                    self.close_connection = True
                    return
                status = fake.answer(body, attempt)
                reply = b"answer %d" % status
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.005,), daemon=True).start()

    def wait_calls(self, count, timeout=10):
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
            return list(self.calls)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeSupervisor:
    """The supervisor's state that delivery reads, set by the tests; its `wait_ready` is the real one, and
    counts the looks: a sender asks before every try, so the count shows how far delivery got, no clock."""

    def __init__(self, logs):
        self.logs, self.instances = logs, {}
        self.looks = Looks()
        self.taps = Taps()

    def wait_ready(self, name, timeout):
        self.looks.saw(name)
        return Supervisor.wait_ready(self, name, timeout)  # type: ignore[arg-type]  # the state it reads is here

    @property
    def specs(self):
        return {name: fn() for name in self.instances}


def fn():
    return specs.FunctionSpec(
        name="hello", runtime="python3.11", handler="h.f", origin="f.yaml", labels={"app": "shop"}
    )


def trigger(name="orders", topic="orders", kind=specs.KafkaTrigger, **selector):
    return kind(name=name, topic=topic, selector=selector or {"app": "shop"}, origin="t.yaml: %s" % name)


@pytest.fixture
def world(tmp_path):
    """(dispatcher, fake function, supervisor): the function `hello` Ready on the fake server."""
    function = FakeFunction()
    logs = LogHub()
    supervisor = FakeSupervisor(logs)
    supervisor.instances["hello"] = Instance(name="hello", runtime="python3.11", port=function.port, state=State.READY)
    store = TopicStore(tmp_path)
    dispatcher = Dispatcher(store, supervisor, logs, max_attempts=3, retry_backoff=0.02, max_in_flight=1)
    yield dispatcher, function, supervisor
    dispatcher.stop()
    store.close()
    function.close()


def test_events_reach_the_function_in_order_with_the_kafka_envelope(world):
    dispatcher, function, _ = world
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    first, _ = dispatcher.emit("orders", "kafka", [b"hi", b'{"n": 2}', b"3"])
    calls = function.wait_calls(3)
    assert [c[2] for c in calls] == [b"hi", b'{"n": 2}', b"3"]
    headers = calls[0][1]
    assert headers["event-namespace"] == "kafkatriggers.kubeless.io" and headers["event-topic"] == "orders"
    assert headers["User-Agent"] == "Go-http-client/1.1"
    assert headers["event-type"] == "application/x-www-form-urlencoded"
    assert calls[1][1]["Content-Type"] == "application/json"
    stored = dispatcher.store.events_after("orders", "kafka", 0)
    assert [c[1]["event-id"] for c in calls] == [e.event_id for e in stored]
    assert [c[1]["event-time"] for c in calls] == [e.event_time for e in stored]
    wait_until(lambda: dispatcher.store.position("default_orders_hello_orders", "orders") == first[-1])
    outcome = dispatcher.outcome("orders", "kafka", first)
    assert all(v == {"default_orders_hello_orders": "delivered"} for v in outcome.values())


def test_nats_triggers_get_nats_messages_with_the_nats_envelope(world):
    dispatcher, function, _ = world
    dispatcher.update(
        specs.Manifests(functions=[fn()], kafka_triggers=[trigger()], nats_triggers=[trigger(kind=specs.NATSTrigger)])
    )
    dispatcher.emit("orders", "nats", [b"n1"])
    (call,) = function.wait_calls(1)
    assert call[1]["event-namespace"] == "natstriggers.kubeless.io" and "event-topic" not in call[1]
    dispatcher.emit("orders", "kafka", [b"sentinel"])  # the Kafka subscriber on the same topic sends it next…
    assert [c[2] for c in function.wait_calls(2)] == [b"n1", b"sentinel"]  # …so it never got the NATS message
    assert function.calls[1][1]["event-namespace"] == "kafkatriggers.kubeless.io"


def test_a_failure_is_retried_with_back_off_keeping_id_and_time(world):
    dispatcher, function, _ = world
    function.answer = lambda body, attempt: 500 if attempt < 3 else 200
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"flaky", b"next"])
    calls = function.wait_calls(4)
    assert [c[2] for c in calls] == [b"flaky", b"flaky", b"flaky", b"next"]  # in order: next waits
    assert len({(c[1]["event-id"], c[1]["event-time"]) for c in calls[:3]}) == 1
    gaps = [calls[1][0] - calls[0][0], calls[2][0] - calls[1][0]]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04  # back-off doubles
    assert dispatcher.store.dead_letters() == []


def test_after_max_attempts_the_event_is_dead_lettered_and_replay_sends_it_again(world):
    dispatcher, function, _ = world
    function.answer = lambda body, attempt: 503 if body == b"bad" else 200
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    seqs, _ = dispatcher.emit("orders", "kafka", [b"bad", b"good"])
    calls = function.wait_calls(4)
    assert [c[2] for c in calls] == [b"bad"] * 3 + [b"good"]
    wait_until(lambda: dispatcher.store.dead_letters())
    (letter,) = dispatcher.store.dead_letters()
    assert letter["attempts"] == 3 and letter["status"] == 503 and letter["body"] == "answer 503"
    assert letter["event_id"] == calls[0][1]["event-id"]
    wait_until(
        lambda: dispatcher.outcome("orders", "kafka", seqs)[seqs[1]] != {"default_orders_hello_orders": "pending"}
    )
    outcome = dispatcher.outcome("orders", "kafka", seqs)
    assert outcome == {
        seqs[0]: {"default_orders_hello_orders": "dead-lettered"},
        seqs[1]: {"default_orders_hello_orders": "delivered"},
    }
    assert dispatcher.dead_letter_counts() == {"hello": 1}
    assert dispatcher.topics()[0]["dead_letters"][0]["function"] == "hello"
    function.answer = lambda body, attempt: 200
    assert dispatcher.replay("orders") == 1
    replayed = function.wait_calls(5)[4]
    assert replayed[2] == b"bad" and replayed[1]["event-id"] == letter["event_id"]
    assert replayed[1]["event-time"] == calls[0][1]["event-time"]
    wait_until(lambda: dispatcher.store.dead_letters() == [])


def test_events_wait_for_a_function_that_is_not_ready_without_using_attempts(world):
    dispatcher, function, supervisor = world
    instance = supervisor.instances["hello"]
    instance.set_state(State.CRASHED, "down")
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"while down"])
    supervisor.looks.wait("hello")  # the sender has the event and waits for the function
    assert function.calls == []
    instance.set_state(State.READY)
    assert function.wait_calls(1)[0][2] == b"while down"


def test_a_function_that_does_not_answer_costs_no_attempt(world, monkeypatch):
    dispatcher, function, supervisor = world
    monkeypatch.setattr(delivery, "NOT_TAKEN_PAUSE", 0.005)  # the pause between looks: the count is what matters
    function.close()  # Ready on paper, nothing listens (reloading)
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"x"])
    # a look before each connection attempt: 5 looks, 4 refused attempts, more than max_attempts (3)
    supervisor.looks.wait("hello", 5, unless=dispatcher.store.dead_letters)
    assert dispatcher.store.dead_letters() == []
    again = FakeFunction()
    try:
        supervisor.instances["hello"].port = again.port
        assert again.wait_calls(1)[0][2] == b"x"
    finally:
        again.close()


def test_a_restarted_dispatcher_resumes_after_the_last_committed_event(world, tmp_path):
    dispatcher, function, supervisor = world
    manifests = specs.Manifests(functions=[fn()], kafka_triggers=[trigger()])
    dispatcher.update(manifests)
    dispatcher.emit("orders", "kafka", [b"1", b"2"])
    function.wait_calls(2)
    dispatcher.stop()
    dispatcher.store.append("orders", "kafka", [b"3"])  # emitted while `dev` is down
    again = Dispatcher(TopicStore(tmp_path), supervisor, supervisor.logs, max_in_flight=4)
    try:
        again.update(manifests)
        assert len(function.wait_calls(3)) == 3
        again.emit("orders", "kafka", [b"sentinel"])  # once it arrived, nothing else is on its way
        assert [c[2] for c in function.wait_calls(4)] == [b"1", b"2", b"3", b"sentinel"]
    finally:
        again.stop()
        again.store.close()


def test_a_store_that_cannot_be_written_for_a_while_holds_deliveries_back_then_they_go_on(world, monkeypatch):
    # a full disk: the subscriber's commit raised, its thread ended with a traceback, and no event reached the
    # function again until `dev` restarted
    dispatcher, function, supervisor = world
    store, commit, refusals = dispatcher.store, dispatcher.store.commit, []

    def full_disk_twice(*args):
        if len(refusals) < 2:
            refusals.append(args)
            raise UserError("topics.db cannot be written: its disk is full; make room and try again")
        return commit(*args)

    monkeypatch.setattr(store, "commit", full_disk_twice)
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"1"])
    function.wait_calls(1)
    wait_until(lambda: len(refusals) == 2, "the commit refused twice")
    (seq,) = dispatcher.emit("orders", "kafka", [b"2"])[0]
    assert [c[2] for c in function.wait_calls(2)] == [b"1", b"2"]  # the subscriber lives on
    wait_until(lambda: store.position("default_orders_hello_orders", "orders") == seq, "the position stored")
    said = [line.text for line in supervisor.logs.tail("dev")]
    assert len([text for text in said if "its disk is full" in text]) == 1, said  # said once, not every second


def test_a_window_sends_concurrently_but_commits_in_order(world, monkeypatch):
    dispatcher, function, supervisor = world
    wide = Dispatcher(
        dispatcher.store, supervisor, supervisor.logs, max_attempts=2, retry_backoff=0.05, max_in_flight=4
    )
    function.answer = lambda body, attempt: 500 if body == b"0" and attempt == 1 else 200
    backoff = wide.backoff

    def held(attempts):  # event 0's back-off lasts until 1, 2 and 3 arrived: a loaded machine may take 0.05 s first
        function.wait_calls(4)
        return backoff(attempts)

    monkeypatch.setattr(wide, "backoff", held)
    try:
        wide.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
        seqs, _ = wide.emit("orders", "kafka", [b"%d" % i for i in range(20)])
        function.wait_calls(21)
        wait_until(lambda: wide.store.position("default_orders_hello_orders", "orders") == seqs[-1])
        bodies = [c[2] for c in function.calls]
        assert sorted(bodies) == sorted([b"%d" % i for i in range(20)] + [b"0"])
        retry = len(bodies) - 1 - bodies[::-1].index(b"0")
        assert {b"1", b"2", b"3"} <= set(bodies[:retry])  # sent while event 0 waited for its retry
        assert bodies.index(b"4") > retry  # the window (4) moves once its head is settled
    finally:
        wide.stop()


def test_selectors_that_match_nothing_warn_and_removed_triggers_stop(world):
    dispatcher = world[0]
    hub = dispatcher.logs
    queue = hub.subscribe()
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger(app="other")]))
    line = queue.get(timeout=5)
    assert "t.yaml: orders: spec.functionSelector matches no Function in this project" in line.text
    assert dispatcher.subscribers == {} and dispatcher.store.topics() == ["orders"]
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    assert list(dispatcher.subscribers) == ["default_orders_hello_orders"]
    with pytest.raises(UserError, match="topic 'orders' is used by KafkaTrigger orders; remove the trigger first"):
        dispatcher.delete("orders")
    with pytest.raises(UserError, match="no KafkaTrigger or NATSTrigger 'nope'"):
        dispatcher.replay("orders", trigger="nope")
    dispatcher.update(specs.Manifests(functions=[fn()]))
    assert dispatcher.subscribers == {}
    dispatcher.delete("orders")
    assert dispatcher.store.topics() == []


def test_a_subscription_that_comes_back_resumes_after_the_old_one_without_resending(world):
    dispatcher, function, _ = world
    with_trigger = specs.Manifests(functions=[fn()], kafka_triggers=[trigger()])
    dispatcher.update(with_trigger)
    dispatcher.emit("orders", "kafka", [b"1", b"2"])
    function.wait_calls(2)
    old = dispatcher.subscribers["default_orders_hello_orders"]
    dispatcher.update(specs.Manifests(functions=[fn()]))  # the trigger is removed…
    dispatcher.update(with_trigger)  # …and saved back at once
    assert not old.is_alive() and dispatcher.subscribers["default_orders_hello_orders"] is not old
    dispatcher.emit("orders", "kafka", [b"3"])
    function.wait_calls(3)
    dispatcher.emit("orders", "kafka", [b"4"])  # a sentinel: once it arrived, nothing else is on its way
    function.wait_calls(4)
    assert [c[2] for c in function.calls] == [b"1", b"2", b"3", b"4"]


def inversions(bodies):
    numbers = [int(b) for b in bodies]
    return sum(1 for earlier, later in zip(numbers, numbers[1:]) if later < earlier)


def test_by_default_events_are_sent_one_at_a_time_in_order(tmp_path):
    """As kafka-trigger (one message at a time since v1.0.5) and NATS (sequential callbacks) do."""
    function = FakeFunction()
    logs = LogHub()
    supervisor = FakeSupervisor(logs)
    supervisor.instances["hello"] = Instance(name="hello", runtime="python3.11", port=function.port, state=State.READY)
    store = TopicStore(tmp_path)
    dispatcher = Dispatcher(store, supervisor, logs)  # every setting at its default
    try:
        dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
        dispatcher.emit("orders", "kafka", [b"%d" % i for i in range(300)])
        calls = function.wait_calls(300, timeout=60)
        assert inversions(c[2] for c in calls) == 0
    finally:
        dispatcher.stop()
        store.close()
        function.close()


def test_a_new_subscriber_starts_at_the_newest_event_and_a_renamed_trigger_replays_nothing(world):
    """As a new Kafka consumer group (OffsetNewest) and core NATS do."""
    dispatcher, function, _ = world
    dispatcher.store.create("orders")
    dispatcher.emit("orders", "kafka", [b"before any trigger"])
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"1", b"2"])
    function.wait_calls(2)
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger(name="orders-v2")]))
    dispatcher.emit("orders", "kafka", [b"3"])
    function.wait_calls(3)
    assert list(dispatcher.subscribers) == ["default_orders-v2_hello_orders"]
    dispatcher.emit("orders", "kafka", [b"4"])  # a sentinel: once it arrived, nothing else is on its way
    function.wait_calls(4)
    assert [c[2] for c in function.calls] == [b"1", b"2", b"3", b"4"]


def test_events_older_than_the_retention_are_pruned_once_every_subscriber_has_them(world):
    dispatcher, function, supervisor = world
    store = dispatcher.store
    short = Dispatcher(store, supervisor, supervisor.logs, retention_hours=1)
    try:
        short.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
        supervisor.instances["hello"].set_state(State.CRASHED, "down")  # nothing is delivered for now
        seqs, _ = short.emit("orders", "kafka", [b"old", b"old and dead", b"new"])
        store.db.execute("UPDATE events SET emitted = emitted - 7200 WHERE seq <= ?", (seqs[1],))
        store.dead_letter("someone_else", "orders", seqs[1], 5, 500, "boom")
        short.prune()
        assert store.count("orders") == 3  # not consumed yet by the subscriber: kept
        supervisor.instances["hello"].set_state(State.READY)
        function.wait_calls(3)
        wait_until(lambda: short.subscribers["default_orders_hello_orders"].position == seqs[-1])
        short.prune()
        assert [e.data for e in store.events_after("orders", "kafka", 0)] == [b"old and dead", b"new"]
    finally:
        short.stop()


def test_a_message_that_crashes_the_server_counts_as_a_failed_attempt_and_is_dead_lettered(world):
    """The server dies on the message (the connection closes without an answer): each time is an attempt."""
    dispatcher, function, _ = world
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    function.drop = lambda body: body == b"poison"
    seqs, _ = dispatcher.emit("orders", "kafka", [b"poison", b"after"])
    wait_until(lambda: b"after" in [c[2] for c in function.calls])
    (letter,) = dispatcher.store.dead_letters()
    assert letter["seq"] == seqs[0] and letter["attempts"] == 3 and letter["status"] == 0
    assert "closed the connection without answering" in letter["body"]
    assert [c[2] for c in function.calls].count(b"poison") <= 4  # a reused keep-alive connection may get one more


def test_a_function_showing_a_broken_save_gets_events_while_its_last_good_code_serves(world):
    """As in a cluster, where the old pod keeps consuming while the new one fails to start."""
    dispatcher, function, supervisor = world
    instance = supervisor.instances["hello"]
    instance.on_control("ready", 1)
    instance.broken = (State.COMPILE_ERROR, "handler.py:1: SyntaxError")
    instance.on_control("ready", 1)  # the server restarted on the last good code: it keeps showing the error
    assert instance.state == State.COMPILE_ERROR and instance.serves
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"while broken"])
    assert [c[2] for c in function.wait_calls(1)] == [b"while broken"]


def test_a_function_whose_code_never_loaded_gets_no_events_until_it_serves(world):
    dispatcher, function, supervisor = world
    instance = supervisor.instances["hello"]
    instance.on_control("load-failed", 0, "handler.py:1: SyntaxError")
    assert not instance.serves
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"waits"])
    instance.on_control("ready", 1)  # the fix loads: the event waited in the topic
    assert [c[2] for c in function.wait_calls(1)] == [b"waits"]


class _Capture:
    """A socket stand-in that keeps what http.client writes."""

    def __init__(self):
        self.data = b""

    def sendall(self, data):
        self.data += bytes(data)


def test_the_request_bytes_are_those_http_client_writes():
    from urllib.parse import urlsplit

    from kubeless_local.emulator.triggers.delivery import request_bytes
    from kubeless_local.events import envelope

    for data in ('{"a":1}', "plain", None):
        method, headers, body = envelope("kafka", data, topic="orders", event_id="id-1", event_time="t")
        connection = http.client.HTTPConnection("127.0.0.1", 8123)
        connection.sock = _Capture()
        connection.request(method, "/", body=body, headers=headers)
        assert request_bytes(method, urlsplit("http://127.0.0.1:8123/"), headers, body) == connection.sock.data


def test_the_function_link_reads_every_shape_of_answer_on_one_kept_alive_connection():
    from kubeless_local.emulator.triggers.delivery import FunctionLink

    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nbad\r\n2\r\n!!\r\n0\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast",
    ]
    with scripted_server(answers) as (port, accepted):
        url, link = "http://127.0.0.1:%d" % port, FunctionLink()
        read = [link.send("POST", url, {"event-id": str(i)}, b"x", 5) for i in range(5)]
        assert read == [(200, "ok"), (201, "new"), (500, "bad!!"), (204, ""), (200, "last")]
        assert len(accepted) == 1 and link.sock is None  # kept alive throughout, closed as the server asked
        link.close()


def test_the_function_link_reads_an_http_1_0_body_to_the_end_and_counts_a_close_without_answer():
    from kubeless_local.emulator.triggers.delivery import FunctionLink

    with scripted_server([b"HTTP/1.0 200 OK\r\n\r\nuntil the end", None]) as (port, accepted):
        url, link = "http://127.0.0.1:%d" % port, FunctionLink()
        assert link.send("GET", url, {}, b"", 5) == (200, "until the end")
        status, why = link.send("GET", url, {}, b"", 5)  # a new connection, closed without an answer: a failed attempt
        assert status == 0 and "closed the connection without answering" in why
        assert len(accepted) == 2
        link.close()


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_header_with_a_line_break_is_refused_as_http_client_refuses_it(value):
    with pytest.raises(ValueError, match="line break"):
        delivery.request_bytes("POST", urllib.parse.urlsplit("http://127.0.0.1:8080"), {"event-id": value}, b"")


class Ready:
    """A supervisor whose `wait_ready` answers from a list in turn (None: not serving within the wait), then
    `then`."""

    def __init__(self, *answers, then=("instance", "spec")):
        self.answers, self.then, self.asked = list(answers), then, 0

    def wait_ready(self, name, timeout):
        self.asked += 1
        return self.answers.pop(0) if self.answers else self.then


def test_send_when_ready_waits_while_the_function_does_not_serve_or_take_the_request():
    """The one send rule of every trigger: neither costs an attempt, the request is sent again."""
    sent = []

    def send(instance, spec):
        sent.append((instance, spec))
        if len(sent) == 1:
            raise delivery.NotAnswering("connection refused")  # restarting between the look and the call
        return 500, "failed"

    supervisor = Ready(None, None)
    assert delivery.send_when_ready(supervisor, "hello", send, threading.Event()) == (500, "failed")
    assert supervisor.asked == 4 and sent == [("instance", "spec")] * 2


def test_send_when_ready_ends_when_stopping_at_the_deadline_or_on_a_hopeless_function():
    never = Ready(then=None)
    stopping = threading.Event()
    stopping.set()
    assert delivery.send_when_ready(never, "hello", lambda i, s: 200, stopping) is None and never.asked == 0
    deadline = time.monotonic() + 0.05
    assert delivery.send_when_ready(never, "hello", lambda i, s: 200, threading.Event(), deadline) is None
    with pytest.raises(delivery.NotServing, match="removed"):
        delivery.send_when_ready(Ready(), "hello", lambda i, s: 200, threading.Event(), give_up=lambda f: "removed")


def test_the_answer_timeout_is_the_functions_plus_a_margin():
    assert delivery.answer_timeout(fn()) == 185.0
    assert (
        delivery.answer_timeout(specs.FunctionSpec(name="x", runtime="r", handler="h.f", origin="o", timeout="2")) == 7
    )


def test_a_fault_at_the_front_door_answers_in_the_functions_place_and_observers_see_every_exchange(world):
    dispatcher, function, supervisor = world
    seen = []
    supervisor.taps.observers.append(seen.append)
    supervisor.taps.fail("hello", 503, times=2)
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"first"])
    (call,) = function.wait_calls(1)  # the third attempt reaches the function: the two before were answered
    assert call[2] == b"first"
    wait_until(lambda: len(seen) == 3)
    assert [(e.status, e.injected) for e in seen] == [(503, True), (503, True), (200, False)]
    assert all(e.function == "hello" and e.source == "kafka" and e.body == b"first" for e in seen)
    assert seen[0].headers["event-topic"] == "orders" and seen[0].headers["event-id"] == call[1]["event-id"]
    assert seen[2].answer == "answer 200"


def test_clear_empties_the_topics_and_dead_letters_and_delivery_goes_on(world):
    dispatcher, function, _ = world
    function.answer = lambda body, attempt: 503 if body == b"bad" else 200
    dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
    dispatcher.emit("orders", "kafka", [b"bad"])
    wait_until(lambda: dispatcher.store.dead_letters())
    dispatcher.clear()
    assert dispatcher.store.dead_letters() == [] and dispatcher.store.count("orders") == 0
    assert dispatcher.store.topics() == ["orders"]
    dispatcher.emit("orders", "kafka", [b"after"])
    assert function.wait_calls(4)[3][2] == b"after"  # the subscriber started again after the emptied topic

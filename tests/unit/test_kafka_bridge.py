"""The real-broker bridge without a broker: settings, selectors, group names, the message envelope and
the delivery rules (retry, give up after N, wait while the function is not Ready). The broker end to end
is tests/e2e/test_kafka_broker.py."""

import asyncio
import collections
import re

import pytest
from conftest import Looks, function

from kubeless_local import config
from kubeless_local.emulator.base import State
from kubeless_local.emulator.triggers import delivery, kafka_bridge
from kubeless_local.emulator.triggers.delivery import NotAnswering
from kubeless_local.emulator.triggers.kafka_bridge import (
    KafkaBridge,
    instance_id,
    message_envelope,
    shares_the_controllers_group,
    subscriptions,
)
from kubeless_local.emulator.triggers.subscriptions import group_name, selector_matches
from kubeless_local.emulator.triggers.topics import check_topic_name
from kubeless_local.errors import UserError
from kubeless_local.spec import FunctionSpec, KafkaTrigger, Manifests

Message = collections.namedtuple("Message", "topic partition offset value timestamp")
Record = collections.namedtuple("Record", "partition offset")


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"app": "x"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "x", "tier": "a"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "y"}, False),
        ({"matchLabels": {"app": "x"}}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}, {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Sometimes"}]}, {"tier": "a"}, False),
        (
            {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["t"]}]},
            {"app": "x", "tier": "t"},
            False,
        ),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    assert selector_matches(labels, selector.get("matchLabels", {}), selector.get("matchExpressions", ())) is expected


def labelled(name, namespace="default", **labels):
    return FunctionSpec(
        name=name, runtime="python3.11", handler="h.f", origin="f.yaml", namespace=namespace, labels=labels
    )


def kafka_trigger(name, topic, selector, namespace=None):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    document = {"kind": "KafkaTrigger", "metadata": meta, "spec": {"topic": topic, "functionSelector": selector}}
    return KafkaTrigger(
        name=name,
        topic=topic,
        selector=selector.get("matchLabels", {}),
        origin="t.yaml: KafkaTrigger %s" % name,
        document=document,
        namespace=namespace or "default",
    )


def test_one_group_per_trigger_function_and_topic_named_as_kubeless_names_it():
    manifests = Manifests(
        functions=[labelled("a", app="shop"), labelled("b", app="shop"), labelled("c", "other", app="shop")],
        kafka_triggers=[
            kafka_trigger("orders", "t1", {"matchLabels": {"app": "shop"}}),
            kafka_trigger("lonely", "t2", {"matchLabels": {"app": "none"}}),
            kafka_trigger("there", "t3", {"matchLabels": {"app": "shop"}}, namespace="other"),
        ],
    )
    subs, unmatched = subscriptions(manifests, shared=True)
    found = {sub.name: (sub.namespace, sub.trigger, sub.function, sub.topic) for sub in subs}
    assert found == {
        "default_orders_a_t1": ("default", "orders", "a", "t1"),
        "default_orders_b_t1": ("default", "orders", "b", "t1"),
        "other_there_c_t3": ("other", "there", "c", "t3"),  # only functions of the trigger's namespace
    }
    assert [t.name for t in unmatched] == ["lonely"]
    assert group_name("default", "orders", "a", "t1") == "default_orders_a_t1"
    # by default dev consumes in groups of its own: a deployed controller on the same broker is not disturbed
    assert sorted(sub.name for sub in subscriptions(manifests)[0]) == [
        "default_orders_a_t1.kubeless-local",
        "default_orders_b_t1.kubeless-local",
        "other_there_c_t3.kubeless-local",
    ]


def test_the_controllers_own_group_only_on_request_and_with_a_warning(tmp_path, supervisor):
    assert shares_the_controllers_group(config.load(tmp_path)) is False
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {group: kubeless}\n")
    assert shares_the_controllers_group(config.load(tmp_path)) is True
    shared = shares_the_controllers_group(config.load(tmp_path))
    bridge = KafkaBridge(["127.0.0.1:1"], Manifests, supervisor, supervisor.logs, tmp_path, shared=shared)
    try:
        assert bridge.shared
        bridge.start()
        said = [line.text for line in supervisor.logs.tail("dev")]
        assert any("dev joins the deployed controller's consumer groups" in text for text in said), said
    finally:
        bridge.stop()
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {group: theirs}\n")
    with pytest.raises(UserError, match=r"kafka\.group must be local .* or kubeless .*, got 'theirs'"):
        shares_the_controllers_group(config.load(tmp_path))


def test_static_member_ids_are_stable_per_project_and_distinct_between_projects(tmp_path):
    group = "default_orders_a_t1"
    assert instance_id(tmp_path, group) == instance_id(tmp_path / "." / "", group)
    assert instance_id(tmp_path, group) != instance_id(tmp_path / "other", group)
    assert instance_id(tmp_path, group).endswith(group)


def test_brokers_come_from_the_flag_or_env_before_the_project_file(tmp_path):
    assert config.kafka_brokers(config.load(tmp_path)) == (None, 5)
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {brokers: [127.0.0.1:9092, 'b:9093'], attempts: 2}\n")
    assert config.kafka_brokers(config.load(tmp_path)) == (["127.0.0.1:9092", "b:9093"], 2)
    assert config.kafka_brokers(config.load(tmp_path), "h:1,h:2") == (["h:1", "h:2"], 2)
    assert config.parse_brokers("x:9092, y:9093,", "where") == ["x:9092", "y:9093"]
    for bad in ("x", "x:port", "x:70000", ":", ""):
        with pytest.raises(UserError, match="^where: .* must be HOST:PORT"):
            config.parse_brokers(bad, "where")
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {brokers: 'nonsense'}\n")
    with pytest.raises(UserError, match=r"\.kubeless-local\.yaml: kafka\.brokers: 'nonsense' must be HOST:PORT"):
        config.kafka_brokers(config.load(tmp_path))
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {attempts: 0}\n")
    with pytest.raises(UserError, match=r"kafka\.attempts must be a whole number ≥ 1, got 0"):
        config.kafka_brokers(config.load(tmp_path))
    (tmp_path / ".kubeless-local.yaml").write_text("kafka: [1]\n")
    with pytest.raises(UserError, match="kafka must be a mapping"):
        config.kafka_brokers(config.load(tmp_path))


def test_the_envelope_is_kafkas_with_the_id_and_time_of_the_message():  # vector 18
    method, headers, body = message_envelope("t", 0, 7, b"hi", 1611919083123)
    assert (method, body) == ("POST", b"hi")
    assert headers["event-namespace"] == "kafkatriggers.kubeless.io" and headers["event-topic"] == "t"
    assert headers["Content-Type"] == headers["event-type"] == "application/x-www-form-urlencoded"
    assert headers["event-time"] == "2021-01-29 11:18:03.123 +0000 UTC"  # Go's Time.String() trims zeros
    assert headers["User-Agent"] == "Go-http-client/1.1"
    assert re.fullmatch(r"[A-Za-z0-9_-]{15}", headers["event-id"])
    again = message_envelope("t", 0, 7, b"hi", 1611919083123)[1]
    assert again["event-id"] == headers["event-id"]  # a redelivery carries the same id
    assert message_envelope("t", 0, 8, b"hi", 1611919083123)[1]["event-id"] != headers["event-id"]
    _, headers, _ = message_envelope("t", 0, 9, b'{"a": 1}', 1611919083123)
    assert headers["event-type"] == "application/json"


class Sender:
    """The injected HTTP sender: answers from `answers` in turn (a status, (0, why): no answer, or an exception)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def __call__(self, method, url, headers, body, timeout):
        self.sent.append((method, url, headers["event-id"], body, timeout))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):
            return answer
        return answer, "body %d" % answer


@pytest.fixture
def bridge(supervisor, tmp_path, monkeypatch):
    monkeypatch.setattr(kafka_bridge, "BACKOFF_FIRST", 0.001)
    monkeypatch.setattr(kafka_bridge, "BACKOFF_MAX", 0.002)
    supervisor.start(function())
    made = KafkaBridge(
        ["127.0.0.1:1"], Manifests, supervisor, supervisor.logs, tmp_path, attempts=3, retry_backoff=0.001
    )
    yield made
    made.stop()


def deliver(bridge, sender, offset=4):
    bridge.send = sender
    message = Message("t", 0, offset, b"hi", 1611919083123)
    bridge.failed = asyncio.run(asyncio.wait_for(bridge.deliver("g", "hello", message), 10))
    return bridge.stats["g"]


def test_a_failed_answer_is_retried_with_the_same_event_until_a_2xx(bridge):
    sender = Sender(500, NotAnswering("connection refused"), 503, 204)
    stats = deliver(bridge, sender)
    assert [s[2] for s in sender.sent] == [sender.sent[0][2]] * 4  # same event-id every time
    assert (stats["delivered"], stats["failed"], stats["given_up"]) == (1, 2, 0)  # a refused connection is no attempt
    assert sender.sent[0][4] == 180 + 5 and sender.sent[0][1] == bridge.supervisor.instances["hello"].url
    logged = [line.text for line in bridge.supervisor.logs.tail("hello")]
    assert any("kafka g: message t[0]@4 answered 500: body 500; attempt 1 of 3, retrying" in text for text in logged)


def test_after_n_failed_answers_the_message_is_given_up_and_logged(bridge):
    sender = Sender(500, (0, "no answer within 185s"), 500, 200)
    stats = deliver(bridge, sender)
    assert len(sender.sent) == 3 and (stats["delivered"], stats["failed"], stats["given_up"]) == (0, 3, 1)
    last = bridge.supervisor.logs.tail("hello")[-1].text
    assert (
        last
        == "kafka g: message t[0]@4 answered 500: body 500; given up after 3 attempts: to the dead-letter topic t.dead-letter"
    )
    assert bridge.failed == (3, 500, "body 500")  # what its dead letter says (deliver_run produces it)


def test_messages_pass_the_functions_front_door(bridge):
    seen = []
    bridge.supervisor.taps.observers.append(seen.append)
    bridge.supervisor.taps.fail("hello", 503)
    sender = Sender(200)
    stats = deliver(bridge, sender)
    assert len(sender.sent) == 1 and (stats["delivered"], stats["failed"]) == (1, 1)  # the first answered for it
    assert [(e.function, e.source, e.status, e.injected) for e in seen] == [
        ("hello", "kafka", 503, True),
        ("hello", "kafka", 200, False),
    ]
    assert seen[1].headers["event-id"] == sender.sent[0][2] and seen[1].body == b"hi"


class Producer:
    """Stands in for the bridge's AIOKafkaProducer: records each send; the broker's acknowledgement is
    `ack` (a record), or `refuse` (an exception) raised when awaited."""

    def __init__(self, committer, refuse=None):
        self.committer, self.refuse = committer, refuse
        self.sent, self.settled_when_acknowledged = [], []

    async def send(self, topic, value, key=None, headers=None, timestamp_ms=None):
        self.sent.append((topic, value, key, dict(headers), timestamp_ms))

        async def acknowledged():
            self.settled_when_acknowledged.append(list(self.committer.settled_offsets))
            if self.refuse is not None:
                raise self.refuse
            return Record(0, 7)

        return asyncio.ensure_future(acknowledged())


class Committer:
    def __init__(self):
        self.settled_offsets = []

    def settled(self, partition, offset):
        self.settled_offsets.append(offset)


def deliver_run(bridge, producer, messages):
    bridge.producer, bridge.dead_letter_topics = producer, {"t.dead-letter"}
    asyncio.run(asyncio.wait_for(bridge.deliver_run("g", "hello", messages, producer.committer, "t-0"), 10))
    return producer.committer.settled_offsets


def test_a_message_that_fails_every_attempt_is_dead_lettered_before_its_offset_is_committed(bridge):
    bridge.send = Sender(200, 500, 500, 503, 200)
    producer = Producer(Committer())
    messages = [Message("t", 0, offset, b"m%d" % offset, 1611919083123) for offset in (4, 5, 6)]
    assert deliver_run(bridge, producer, messages) == [4, 5, 6]  # 5 dead-lettered, then 6 delivered
    assert producer.settled_when_acknowledged == [[4]]  # 5 is settled (committed) only once the broker has it
    ((topic, value, key, headers, timestamp),) = producer.sent
    assert (topic, value, key, timestamp) == ("t.dead-letter", b"m5", None, 1611919083123)
    assert headers == {
        "original-topic": b"t",
        "original-partition": b"0",
        "original-offset": b"5",
        "event-id": message_envelope("t", 0, 5, b"m5", 1611919083123)[1]["event-id"].encode(),
        "consumer-group": b"g",
        "function": b"hello",
        "attempts": b"3",
        "last-status": b"503",
        "last-body": b"body 503",
    }
    said = [line.text for line in bridge.supervisor.logs.tail("hello")]
    assert "kafka g: message t[0]@5 dead-lettered to t.dead-letter[0]@7; its offset is committed" in said


def test_a_dead_letter_the_broker_does_not_take_leaves_the_offset_uncommitted(bridge):
    """The consumer loop then rejoins from the committed offset: the message comes again, never lost."""
    from aiokafka.errors import KafkaTimeoutError

    bridge.send = Sender(500, 500, 500)
    producer = Producer(Committer(), refuse=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        deliver_run(bridge, producer, [Message("t", 0, 4, b"x", 1611919083123)])
    assert len(producer.sent) == 1 and bridge.stats["g"]["given_up"] == 1
    assert producer.committer.settled_offsets == []  # not committed: it is consumed again


def test_the_broker_waits_kafka_retry_backoff_between_attempts_as_the_embedded_topics_do(bridge):
    bridge.retry_backoff = 0.1  # kafka.retry_backoff (session.py passes it), the embedded topics' setting too
    deliver(bridge, Sender(500, 200))
    logged = [line.text for line in bridge.supervisor.logs.tail("hello")]
    assert any(text.endswith("attempt 1 of 3, retrying in 0.1 s") for text in logged), logged
    assert [delivery.backoff(n, 0.1, delivery.BACKOFF_MAX) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]


def test_a_function_that_is_not_ready_is_waited_for_without_using_attempts(bridge):
    instance = bridge.supervisor.instances["hello"]
    instance.set_state(State.CRASHED, "exited")
    sender = Sender()
    looks = Looks().watch(bridge.supervisor)

    async def scenario():
        task = asyncio.ensure_future(bridge.deliver("g", "hello", Message("t", 0, 1, b"x", 1)))
        await asyncio.get_running_loop().run_in_executor(None, looks.wait, "hello")  # the sender asks about hello
        assert not sender.sent and not task.done()
        instance.set_state(State.READY)
        await asyncio.wait_for(task, 10)

    bridge.send = sender
    asyncio.run(scenario())
    assert len(sender.sent) == 1 and bridge.stats["g"]["delivered"] == 1


def test_the_admin_api_lists_the_consumer_groups(supervisor, tmp_path):
    from kubeless_local.client import AdminClient
    from kubeless_local.emulator.admin import AdminServer

    manifests = Manifests(
        functions=[labelled("hello", app="shop")],
        kafka_triggers=[kafka_trigger("orders", "t1", {"matchLabels": {"app": "shop"}})],
    )
    made = KafkaBridge(["127.0.0.1:1"], lambda: manifests, supervisor, supervisor.logs, tmp_path)
    made.stats["default_orders_hello_t1.kubeless-local"] = {
        "delivered": 3,
        "failed": 1,
        "given_up": 0,
        "state": "consuming",
    }
    admin = AdminServer(supervisor, supervisor.state_dir, tmp_path)
    admin.start()
    try:
        client = AdminClient(supervisor.state_dir)
        assert client.kafka_groups() == []  # not in real-broker mode
        admin.kafka = made
        assert client.kafka_groups() == [
            {
                "group": "default_orders_hello_t1.kubeless-local",
                "trigger": "orders",
                "function": "hello",
                "topic": "t1",
                "delivered": 3,
                "failed": 1,
                "given_up": 0,
                "state": "consuming",
            }
        ]
    finally:
        admin.stop()
        made.stop()


def test_a_session_with_kafka_triggers_needs_its_broker_and_run_does_not(tmp_path):
    from conftest import FakeBackend, FakeGuardian

    from kubeless_local.emulator.session import DevSession

    (tmp_path / ".kubeless-local.yaml").write_text("kafka: {brokers: '127.0.0.1:1'}\n")  # nothing answers there
    triggered = Manifests(functions=[function()], kafka_triggers=[kafka_trigger("orders", "t", {})])
    session = DevSession(
        tmp_path, manifests=triggered, say=lambda text: None, backend=FakeBackend, guardian=FakeGuardian
    )
    try:
        with pytest.raises(UserError, match=r"^no Kafka broker answers at 127\.0\.0\.1:1; start one"):
            session.start()
        assert session.supervisor is not None and "hello" not in session.supervisor.instances  # refused before start
    finally:
        session.stop()
    plain = DevSession(
        tmp_path,
        manifests=Manifests(functions=[function()]),
        say=lambda t: None,
        backend=FakeBackend,
        guardian=FakeGuardian,
    )
    try:
        plain.start()  # `run`: no KafkaTrigger, so the project's broker is not needed
        assert plain.supervisor is not None and plain.kafka is None
        assert plain.supervisor.instances["hello"].state == State.READY
    finally:
        plain.stop()


@pytest.mark.parametrize("name", ["orders", "a.b_c-1", "x" * 249])
def test_topic_names_kafka_accepts_pass(name):
    check_topic_name(name)


@pytest.mark.parametrize("name", ["", "a/b", "with space", "x" * 250, ".", ".."])
def test_topic_names_kafka_refuses_are_one_line(name):
    with pytest.raises(UserError, match="must be 1-249 letters, digits, '.', '_' or '-' \\(as Kafka's\\)"):
        check_topic_name(name)


def test_a_verb_without_a_running_bridge_is_a_user_error(tmp_path):
    bridge = KafkaBridge(["127.0.0.1:9"], Manifests, None, None, tmp_path)
    try:
        with pytest.raises(UserError, match="Kafka bridge is not running"):
            bridge.produce("orders", b"x")
    finally:
        bridge.stop()


def test_a_run_of_messages_is_delivered_in_order_and_a_failure_goes_through_retries(bridge):
    """2xx answers go in one hand-off; the failing message is retried on its own, then the run goes on."""
    sender = Sender(200, 200, 500, 200, 200)
    bridge.send = sender
    settled = []

    class Committer:
        def settled(self, partition, offset):
            settled.append(offset)

    messages = [Message("t", 0, offset, b"m%d" % offset, 1611919083123) for offset in range(4)]
    asyncio.run(asyncio.wait_for(bridge.deliver_run("g", "hello", messages, Committer(), "tp"), 10))
    assert [s[3] for s in sender.sent] == [b"m0", b"m1", b"m2", b"m2", b"m3"]
    assert settled[-1] == 3 and settled == sorted(settled)
    assert (bridge.stats["g"]["delivered"], bridge.stats["g"]["failed"]) == (4, 1)


def test_broker_topics_answer_the_one_emit_shape_and_keep_nats_embedded():
    from kubeless_local.emulator.triggers.interface import BrokerTopics, EmbeddedTopics

    class Bridge:
        bootstrap = "127.0.0.1:9092"

        def produce(self, topic, data, count):
            return {"produced": count, "partitions": {1: [5, 6], 0: [3, 3]}, "subscribers": ["g"]}

    class Dispatcher:
        def emit(self, topic, source, datas):
            return list(range(7, 7 + len(datas))), []

    topics = BrokerTopics(Bridge(), EmbeddedTopics(Dispatcher()))
    assert topics.emit("orders", "kafka", b"x", 3) == {
        "topic": "orders",
        "source": "kafka",
        "count": 3,
        "subscribers": ["g"],
        "broker": "127.0.0.1:9092",
        "ranges": [{"partition": 0, "first": 3, "last": 3}, {"partition": 1, "first": 5, "last": 6}],
        "tracked": False,  # the broker's consumer groups track them
    }
    assert topics.emit("news", "nats", b"x", 2) == {
        "topic": "news",
        "source": "nats",
        "count": 2,
        "subscribers": [],
        "broker": None,  # no broker of ours carries NATS: the embedded log does
        "ranges": [{"partition": None, "first": 7, "last": 8}],
        "tracked": True,
    }

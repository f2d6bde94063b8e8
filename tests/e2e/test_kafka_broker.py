"""`dev --kafka-brokers` against a REAL Apache Kafka broker (scripts/kafka-up.sh): the KafkaTrigger's
functions get the Kafka envelope, offsets are committed only after a 2xx (a failing function's message
comes again), and a `dev` killed with SIGKILL mid-stream loses nothing acknowledged once restarted."""

import asyncio
import json
import re
import threading
import uuid

from conftest import cli
from waiting import wait_until

from kubeless_local.client import AdminClient
from kubeless_local.emulator.triggers.kafka_bridge import instance_id

HANDLER = """\
import json, os

OUT = %r
FLAG = %r

def hello(event, context):
    request = event["extensions"]["request"]
    failing = os.path.exists(FLAG)
    with open(OUT, "a") as out:  # one write per call: whole lines, whichever worker
        out.write(json.dumps({
            "data": event["data"] if isinstance(event["data"], (dict, list)) else event["data"].decode(),
            "id": event["event-id"],
            "time": event["event-time"],
            "namespace": event["event-namespace"],
            "topic": event.get("event-topic") or request.headers.get("event-topic"),
            "type": event["event-type"],
            "agent": request.headers.get("User-Agent"),
            "method": request.method,
            "failed": failing,
        }) + "\\n")
    if failing:
        raise RuntimeError("told to fail")
    return "ok"
"""

MANIFESTS = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  labels: {app: shop, tier: backend}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
---
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: bystander
  labels: {app: shop, tier: test}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec:
  topic: %s
  functionSelector:
    matchLabels: {app: shop}
    matchExpressions: [{key: tier, operator: NotIn, values: [test]}]
"""


def project(tmp_path, topic):
    """(project folder, file of calls, failure flag): `hello` records every call it gets into the file."""
    folder = tmp_path / "project"
    folder.mkdir()
    out, flag = tmp_path / "calls.jsonl", tmp_path / "fail"
    (folder / "handler.py").write_text(HANDLER % (str(out), str(flag)))
    (folder / "functions.yaml").write_text(MANIFESTS % topic)
    out.touch()
    return folder, out, flag


def calls(out):
    """What the function recorded; a line it is still writing is left for the next look."""
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def test_consume_deliver_the_envelope_and_commit_only_after_2xx(tmp_path, start_dev, kafka_broker):
    topic = "orders-" + uuid.uuid4().hex[:8]
    folder, out, flag = project(tmp_path, topic)
    (folder / ".kubeless-local.yaml").write_text("kafka: {brokers: %s, attempts: 1000}\n" % kafka_broker.address)
    group = "default_orders_hello_%s.kubeless-local" % topic  # the controller's group + the local suffix
    dev = start_dev("dev", cwd=folder)
    dev.wait_for_output("kafka %s: consuming %s[0] from offset 0" % (group, topic))
    assert kafka_broker.committed(group, topic) == 0  # a new group starts at the end, committed at once

    kafka_broker.produce(topic, ['{"n": 1}'])
    wait_until(lambda: len(calls(out)) == 1, "the message is delivered")
    (first,) = calls(out)
    assert first["data"] == {"n": 1} and first["method"] == "POST"
    assert (first["namespace"], first["topic"], first["type"]) == (
        "kafkatriggers.kubeless.io",
        topic,
        "application/json",
    )
    assert first["agent"] == "Go-http-client/1.1"
    assert re.fullmatch(r"[A-Za-z0-9_-]{15}", first["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])? \+0000 UTC", first["time"])
    wait_until(lambda: kafka_broker.committed(group, topic) == 1, "offset 1 committed after the 200")

    # The function fails: the message is retried with the same id and time, and its offset stays uncommitted.
    flag.touch()
    kafka_broker.produce(topic, ["plain text"])
    wait_until(lambda: len(calls(out)) >= 4, "three failed attempts")
    attempts = calls(out)[1:]
    assert all(c["failed"] and c["data"] == "plain text" for c in attempts)
    assert {(c["id"], c["time"]) for c in attempts} == {(attempts[0]["id"], attempts[0]["time"])}
    assert attempts[0]["type"] == "application/x-www-form-urlencoded"
    assert kafka_broker.committed(group, topic) == 1
    dev.wait_for_output("kafka %s: message %s[0]@1 answered 500" % (group, topic))

    flag.unlink()
    wait_until(lambda: not calls(out)[-1]["failed"], "delivered once the function answers 200")
    wait_until(lambda: kafka_broker.committed(group, topic) == 2, "offset 2 committed after the 200")
    assert calls(out)[-1]["id"] == attempts[0]["id"]
    assert "kafka default_orders_bystander" not in dev.output()  # NotIn tier=test: not selected
    (row,) = AdminClient(folder / ".kubeless-local").kafka_groups()
    assert (row["group"], row["delivered"], row["given_up"]) == (group, 2, 0) and row["failed"] >= 3


def dead_letters(address, topic):
    """Every message of `topic` on the broker: (value text, headers as a dict of text)."""

    async def run():
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=address, auto_offset_reset="earliest")  # no group
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=2000)
        finally:
            await consumer.stop()
        return [
            (m.value.decode(), {name: value.decode() for name, value in m.headers})
            for messages in batch.values()
            for m in messages
        ]

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_a_message_that_fails_every_attempt_is_dead_lettered_on_the_broker(tmp_path, start_dev, kafka_broker):
    """As the embedded topics keep a dead letter, the broker path produces it to <topic>.dead-letter (its
    value, key and timestamp; why in its headers) and commits its offset only then: no event is lost."""
    topic = "poison-" + uuid.uuid4().hex[:8]
    folder, out, flag = project(tmp_path, topic)
    (folder / ".kubeless-local.yaml").write_text("kafka: {brokers: %s, attempts: 2}\n" % kafka_broker.address)
    group = "default_orders_hello_%s.kubeless-local" % topic
    dev = start_dev("dev", cwd=folder)
    dev.wait_for_output("kafka %s: consuming %s[0] from offset 0" % (group, topic))
    flag.touch()
    kafka_broker.produce(topic, ["poison"])
    wait_until(lambda: len(calls(out)) == 2, "two failed attempts")
    letters: list = []

    def arrived():
        letters.extend(dead_letters(kafka_broker.address, topic + ".dead-letter"))
        return letters

    wait_until(arrived, "the dead letter")
    ((value, headers),) = letters
    assert value == "poison"
    assert headers["original-topic"] == topic and headers["original-partition"] == "0"
    assert headers["original-offset"] == "0" and headers["consumer-group"] == group
    assert headers["function"] == "hello" and headers["attempts"] == "2" and headers["last-status"] == "500"
    assert "Internal Server Error" in headers["last-body"] and headers["event-id"] == calls(out)[0]["id"]
    wait_until(lambda: kafka_broker.committed(group, topic) == 1, "its offset committed once dead-lettered")
    dev.wait_for_output("dead-lettered to %s.dead-letter" % topic)
    (row,) = AdminClient(folder / ".kubeless-local").kafka_groups()
    assert (row["delivered"], row["failed"], row["given_up"]) == (0, 2, 1)

    flag.unlink()  # the next message is delivered: the group moved on
    kafka_broker.produce(topic, ["fine"])
    wait_until(lambda: calls(out)[-1]["data"] == "fine" and not calls(out)[-1]["failed"], "the next message")
    wait_until(lambda: kafka_broker.committed(group, topic) == 2, "offset 2 committed")


def test_sigkill_of_dev_mid_stream_loses_no_acknowledged_message(tmp_path, start_dev, kafka_broker):
    topic = "stream-" + uuid.uuid4().hex[:8]
    folder, out, _ = project(tmp_path, topic)
    group = "default_orders_hello_%s.kubeless-local" % topic  # the controller's group + the local suffix
    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    dev.wait_for_output("kafka %s: consuming" % group)
    values = ["m%04d" % i for i in range(5000)]  # delivery is quick: enough that the kill comes mid-stream
    kafka_broker.produce(topic, values)  # all acknowledged (acks=all) before dev is killed

    wait_until(lambda: len(calls(out)) >= 40, "deliveries under way")
    static = instance_id(folder, group)  # the group.instance.id of dev's member: the same after a restart
    (dead,) = kafka_broker.members(group)
    assert dead.startswith(static + "-"), dead
    dev.proc.kill()
    dev.proc.wait(timeout=10)
    delivered_before = {c["data"] for c in calls(out)}
    assert len(delivered_before) < len(values), "the kill came too late to be mid-stream"

    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    # Static membership: the broker hands the dead member's partition to the member with the same
    # group.instance.id at once (it replaces the dead one), not after the dead one's 45 s session timeout
    # (a dynamic member waits for that); it resumes from the committed offset, not from the end.
    dev.wait_for_output("kafka %s: consuming" % group, timeout=30)
    (member,) = kafka_broker.members(group)
    assert member.startswith(static + "-") and member != dead, (member, dead)
    wait_until(lambda: {c["data"] for c in calls(out)} >= set(values), "every acknowledged message", timeout=120)
    seen = [c["data"] for c in calls(out)]
    assert sorted(set(seen)) == values  # nothing lost, nothing foreign; duplicates allowed
    wait_until(lambda: kafka_broker.committed(group, topic) == len(values), "every offset committed")


def test_a_broker_that_does_not_answer_is_one_line_and_exit_2(tmp_path, monkeypatch):
    folder, _, _ = project(tmp_path, "t")
    result = cli("dev", "--kafka-brokers", "127.0.0.1:9", cwd=folder, timeout=60)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no Kafka broker answers at 127.0.0.1:9") and "scripts/kafka-up.sh" in line
    assert line.endswith("or correct --kafka-brokers / KAFKA_BROKERS / kafka.brokers in .kubeless-local.yaml")
    monkeypatch.setenv("KAFKA_BROKERS", "not-an-address")
    result = cli("dev", cwd=folder, timeout=60)
    assert (
        result.returncode == 2 and "--kafka-brokers/KAFKA_BROKERS: 'not-an-address' must be HOST:PORT" in result.stderr
    )


def test_a_broker_restart_mid_stream_loses_nothing(tmp_path, start_dev, kafka_broker):
    topic = "restart-" + uuid.uuid4().hex[:8]
    folder, out, _ = project(tmp_path, topic)
    group = "default_orders_hello_%s.kubeless-local" % topic  # the controller's group + the local suffix
    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    dev.wait_for_output("kafka %s: consuming" % group)
    values = ["r%05d" % i for i in range(20000)]  # delivery is quick: enough that the broker dies mid-stream
    kafka_broker.produce(topic, values)
    wait_until(lambda: len(calls(out)) >= 40, "deliveries under way")
    kafka_broker.kill()
    delivered_at_kill = len({c["data"] for c in calls(out)})
    kafka_broker.up()  # the same broker: its data and port (before any assert: later tests need it)
    assert delivered_at_kill < len(values), "the broker died too late to be mid-stream"
    wait_until(lambda: {c["data"] for c in calls(out)} >= set(values), "every acknowledged message", timeout=120)
    assert sorted({c["data"] for c in calls(out)}) == values
    wait_until(lambda: kafka_broker.committed(group, topic) == len(values), "every offset committed", timeout=60)
    assert dev.proc.poll() is None


def test_emit_kafka_produces_to_the_broker_and_the_function_gets_it(tmp_path, start_dev, kafka_broker):
    topic = "emitted-" + uuid.uuid4().hex[:8]
    folder, out, _ = project(tmp_path, topic)
    group = "default_orders_hello_%s.kubeless-local" % topic  # the controller's group + the local suffix
    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    dev.wait_for_output("kafka %s: consuming %s[0] from offset 0" % (group, topic))

    result = cli("emit", "kafka", "--topic", topic, "--data", '{"a":1}', "--wait", cwd=folder)
    assert result.returncode == 0, result
    assert "1 message(s) produced to topic %s on %s (partition 0 offsets 0-0)" % (topic, kafka_broker.address) in (
        result.stdout
    )
    assert "consumed by %s" % group in result.stdout
    wait_until(lambda: len(calls(out)) == 1, "the produced message is delivered")
    (call,) = calls(out)
    assert call["data"] == {"a": 1} and call["method"] == "POST"
    assert (call["namespace"], call["topic"], call["type"]) == ("kafkatriggers.kubeless.io", topic, "application/json")
    assert call["agent"] == "Go-http-client/1.1"
    wait_until(lambda: kafka_broker.committed(group, topic) == 1, "committed after the 200: it went through the broker")

    result = cli("topic", "publish", "--topic", topic, "--data", "second", cwd=folder)
    assert result.returncode == 0 and "partition 0 offsets 1-1" in result.stdout, result
    wait_until(lambda: len(calls(out)) == 2, "the published message is delivered")
    assert calls(out)[-1]["data"] == "second"

    result = cli("emit", "kafka", "--topic", "nobody-" + topic, "--data", "x", "--count", "3", cwd=folder)
    assert result.returncode == 0 and "3 message(s) produced to topic nobody-" in result.stdout, result
    assert "no KafkaTrigger of this dev consumes topic nobody-%s" % topic in result.stderr


def test_topic_create_ls_delete_use_the_broker(tmp_path, start_dev, kafka_broker):
    topic = "orders-" + uuid.uuid4().hex[:8]
    folder, _, _ = project(tmp_path, topic)
    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    dev.wait_for_output("kafka default_orders_hello_%s.kubeless-local: consuming" % topic)
    name = "made-" + uuid.uuid4().hex[:8]

    result = cli("topic", "create", name, cwd=folder)
    assert result.returncode == 0 and "topic %s created" % name in result.stdout, result
    assert "topic %s already exists" % name in cli("topic", "create", name, cwd=folder).stdout
    kafka_broker.produce(name, ["one", "two"])  # the broker knows the topic: nothing local answers this
    rows = {row["name"]: row for row in json.loads(cli("topic", "ls", "-o", "json", cwd=folder, check=True).stdout)}
    assert rows[name]["events"] == 2 and rows[name]["subscribers"] == []
    assert [s["name"] for s in rows[topic]["subscribers"]] == ["default_orders_hello_%s.kubeless-local" % topic]
    assert not any(n.startswith("__") for n in rows)  # the broker's internal topics are left out
    assert name in cli("topic", "ls", cwd=folder, check=True).stdout

    result = cli("topic", "delete", name, cwd=folder)
    assert result.returncode == 0 and "topic %s deleted" % name in result.stdout, result
    wait_until(
        lambda: name not in {r["name"] for r in AdminClient(folder / ".kubeless-local").topics()},
        "gone from the broker",
    )
    result = cli("topic", "delete", name, cwd=folder)
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no topic %s on the Kafka broker at %s" % (name, kafka_broker.address))
    result = cli("topic", "create", "bad/name", cwd=folder)
    assert result.returncode == 2 and "must be 1-249 letters, digits, '.', '_' or '-'" in result.stderr, result


def test_a_verb_when_the_broker_does_not_answer_is_one_line_and_exit_2(tmp_path, start_dev, kafka_broker):
    topic = "gone-" + uuid.uuid4().hex[:8]
    folder, _, _ = project(tmp_path, topic)
    dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
    dev.wait_for_output("kafka default_orders_hello_%s.kubeless-local: consuming" % topic)
    kafka_broker.kill()
    try:
        for verb in (["emit", "kafka", "--topic", topic, "--data", "x"], ["topic", "create", "t-" + topic]):
            result = cli(*verb, cwd=folder, timeout=90)
            assert result.returncode == 2, result
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith("error: no Kafka broker answers at %s" % kafka_broker.address), line
    finally:
        kafka_broker.up()  # the same broker, for the tests that follow
    assert dev.proc.poll() is None


class Controller(threading.Thread):
    """Stands in for a deployed kafka-trigger controller: a plain consumer in the Kubeless group id with
    sarama's default assignor (range), collecting what it is given."""

    def __init__(self, address, group, topic):
        super().__init__(daemon=True)
        self.address, self.group, self.topic = address, group, topic
        self.values = []
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            asyncio.run(self.consume())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def consume(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.address,
            group_id=self.group,
            partition_assignment_strategy=(RangePartitionAssignor,),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                if consumer.assignment():
                    self.assigned.set()
                self.values += [m.value.decode() for messages in batch.values() for m in messages]
        finally:
            await consumer.stop()


def test_dev_and_a_deployed_controller_on_one_broker_both_get_every_message(tmp_path, start_dev, kafka_broker):
    """By default `dev` consumes in a group of its own: a controller consuming the Kubeless group on the
    same broker keeps getting its messages (no InconsistentGroupProtocol, no stolen partitions)."""
    topic = "shared-" + uuid.uuid4().hex[:8]
    folder, out, _ = project(tmp_path, topic)
    kafka_broker.produce(topic, ["before"])  # the topic exists before either consumer joins
    controller = Controller(kafka_broker.address, "default_orders_hello_" + topic, topic)
    controller.start()
    try:
        assert controller.assigned.wait(60), controller.error
        dev = start_dev("dev", "--kafka-brokers", kafka_broker.address, cwd=folder)
        dev.wait_for_output("kafka default_orders_hello_%s.kubeless-local: consuming" % topic)
        values = ["s%02d" % i for i in range(30)]
        kafka_broker.produce(topic, values)
        wait_until(lambda: [c["data"] for c in calls(out)] == values, "dev delivers all 30, in order", timeout=60)
        wait_until(lambda: controller.values == ["before", *values], "the controller gets all 30 too", timeout=60)
        assert "InconsistentGroupProtocol" not in dev.output()
    finally:
        controller.stopping.set()
        controller.join(30)


def test_in_the_controllers_group_on_request_dev_warns_and_hands_it_back_when_it_stops(
    tmp_path, start_dev, kafka_broker
):
    """`kafka.group: kubeless`: dev joins the controller's exact group (a warning says messages are split),
    as a dynamic member with sarama's assignor and session timeout (10 s), so a controller joining after
    dev stopped is not locked out for the 45 s a static member kept its partitions before."""
    topic = "joined-" + uuid.uuid4().hex[:8]
    folder, out, _ = project(tmp_path, topic)
    (folder / ".kubeless-local.yaml").write_text("kafka: {brokers: %s, group: kubeless}\n" % kafka_broker.address)
    kafka_broker.produce(topic, ["before"])
    group = "default_orders_hello_" + topic
    dev = start_dev("dev", cwd=folder)
    dev.wait_for_output("kafka %s: consuming" % group)
    assert "dev joins the deployed controller's consumer groups" in dev.output()
    kafka_broker.produce(topic, ["to dev"])
    wait_until(lambda: [c["data"] for c in calls(out)] == ["to dev"], "dev delivers in the controller's group")
    dev.stop()
    controller = Controller(kafka_broker.address, group, topic)
    controller.start()
    try:
        assert controller.assigned.wait(20), controller.error  # before: held for 45 s
    finally:
        controller.stopping.set()
        controller.join(30)

"""Embedded Kafka/NATS topics with the real command: `dev` delivers what `emit` stored, with the Kubeless
envelopes; nothing acknowledged is lost, even to a kill -9 of `dev`; failures end delivered or dead-lettered."""

import collections
import json
import re
import signal
import threading

from conftest import cli
from waiting import wait_until

from kubeless_local.client import AdminClient
from kubeless_local.errors import UserError

# The handler appends one JSON line per call: the event's headers and data. `FAIL` decides failures.
HANDLER = """\
import json

FAIL = %s


def handler(event, context):
    headers = dict(event["extensions"]["request"].headers)
    data = event["data"]
    data = data.decode() if isinstance(data, bytes) else data
    with open(%r, "a") as out:
        out.write(json.dumps({"headers": headers, "data": data}) + "\\n")
    if FAIL(data):
        raise RuntimeError("failing on purpose: %%r" %% (data,))
    return "ok"
"""
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: sink
  labels: {app: shop, tier: back}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.handler}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec:
  topic: orders
  functionSelector:
    matchLabels: {app: shop}
    matchExpressions: [{key: tier, operator: In, values: [back]}]
---
apiVersion: kubeless.io/v1beta1
kind: NATSTrigger
metadata: {name: news}
spec: {topic: news, functionSelector: {matchLabels: {app: shop}}}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: nobody}
spec: {topic: lonely, functionSelector: {matchLabels: {app: nobody}}}
"""
NEVER = "lambda data: False"


def calls_file(tmp_path):
    """Beside the project, not in it: the function's writes are no file changes `dev` has to look at."""
    return tmp_path.with_name(tmp_path.name + ".calls.jsonl")


def project(tmp_path, fail=NEVER, settings=""):
    (tmp_path / "handler.py").write_text(HANDLER % (fail, str(calls_file(tmp_path))))
    (tmp_path / "function.yaml").write_text(MANIFEST)
    if settings:
        (tmp_path / ".kubeless-local.yaml").write_text(settings)
    return tmp_path


def calls(tmp_path):
    try:
        lines = calls_file(tmp_path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def started(start_dev, tmp_path):
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    return dev


def one_line_error(result, text):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert text in lines[0], lines[0]


def test_emit_kafka_and_nats_reach_the_function_with_the_kubeless_envelopes(tmp_path, start_dev):
    project(tmp_path)
    dev = started(start_dev, tmp_path)
    assert "KafkaTrigger nobody: spec.functionSelector matches no Function in this project" in dev.output()
    result = cli("emit", "kafka", "--topic", "orders", "--data", "hi", "--wait", cwd=tmp_path, check=True)
    assert re.search(r"#\d+ default_orders_sink_orders: delivered", result.stdout), result.stdout
    (call,) = calls(tmp_path)
    headers = {k.lower(): v for k, v in call["headers"].items()}
    assert call["data"] == "hi"
    assert headers["event-namespace"] == "kafkatriggers.kubeless.io" and headers["event-topic"] == "orders"
    assert headers["user-agent"] == "Go-http-client/1.1"
    assert headers["event-type"] == headers["content-type"] == "application/x-www-form-urlencoded"
    assert re.fullmatch(r"[A-Za-z0-9_-]{15}", headers["event-id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])? \+0000 UTC", headers["event-time"])

    (tmp_path / "event.json").write_text('{"k": "v"}')
    cli("emit", "nats", "--topic", "news", "--data", "@event.json", "--wait", cwd=tmp_path, check=True)
    headers = {k.lower(): v for k, v in calls(tmp_path)[1]["headers"].items()}
    assert headers["event-namespace"] == "natstriggers.kubeless.io" and "event-topic" not in headers
    assert headers["content-type"] == "application/json"

    topics = {row["name"]: row for row in json.loads(cli("topic", "ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    assert set(topics) == {"orders", "news", "lonely"}
    assert topics["orders"]["subscribers"][0]["name"] == "default_orders_sink_orders"
    assert topics["orders"]["subscribers"][0]["lag"] == 0

    result = cli("emit", "kafka", "--topic", "lonely", "--data", "x", cwd=tmp_path, check=True)
    assert "no kafka trigger subscribes to topic lonely" in result.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path, start_dev):
    project(tmp_path)
    started(start_dev, tmp_path)
    one_line_error(cli("emit", "kafka", "--topic", "nope", "--data", "x", cwd=tmp_path), "no topic 'nope'")
    one_line_error(
        cli(
            "emit", "kafka", "--topic", "orders", "--data", "{oops", "--content-type", "application/json", cwd=tmp_path
        ),
        "the data is not valid JSON",
    )
    (tmp_path / "bad.json").write_text("{oops")
    one_line_error(
        cli("topic", "publish", "--topic", "orders", "--data", "@bad.json", cwd=tmp_path), "the data is not valid JSON"
    )
    one_line_error(
        cli("emit", "kafka", "--topic", "orders", "--data", "@missing", cwd=tmp_path), "cannot read the file"
    )
    one_line_error(
        cli("topic", "replay", "orders", "--trigger", "nope", cwd=tmp_path), "no KafkaTrigger or NATSTrigger"
    )
    one_line_error(cli("topic", "replay", "orders", "--id", "99", cwd=tmp_path), "no dead letter 99")
    one_line_error(cli("topic", "delete", "orders", cwd=tmp_path), "used by KafkaTrigger orders")
    one_line_error(cli("topic", "create", "a b", cwd=tmp_path), "topic name 'a b' must be")
    assert calls(tmp_path) == []
    assert "created" in cli("topic", "create", "spare", cwd=tmp_path, check=True).stdout
    assert "deleted" in cli("topic", "delete", "spare", cwd=tmp_path, check=True).stdout


def test_kill_9_of_dev_during_an_emit_loses_no_acknowledged_event(tmp_path, start_dev):
    project(tmp_path)
    dev = started(start_dev, tmp_path)
    client = AdminClient(tmp_path / ".kubeless-local")
    acknowledged = []
    failed = threading.Event()

    def emit_all():
        for n in range(1000):
            try:
                client.emit("orders", "event %d" % n)
            except UserError:
                failed.set()  # `dev` is gone: this one was not acknowledged
                return
            acknowledged.append("event %d" % n)

    emitter = threading.Thread(target=emit_all)
    emitter.start()
    wait_until(lambda: len(acknowledged) >= 300, what="300 acknowledged emits")
    dev.proc.send_signal(signal.SIGKILL)
    dev.proc.wait(timeout=10)
    emitter.join(timeout=60)
    assert failed.is_set() and 300 <= len(acknowledged) < 1000

    started(start_dev, tmp_path)
    wanted = set(acknowledged)
    wait_until(lambda: wanted <= {c["data"] for c in calls(tmp_path)}, what="every acknowledged event delivered")
    counts = collections.Counter(c["data"] for c in calls(tmp_path))
    duplicates = sum(n - 1 for n in counts.values())
    print("acknowledged %d, delivered %d distinct, %d duplicates" % (len(wanted), len(counts), duplicates))
    # The ids and times are the ones given at emit: a redelivered event carries the same ones.
    by_data = collections.defaultdict(set)
    for c in calls(tmp_path):
        headers = {k.lower(): v for k, v in c["headers"].items()}
        by_data[c["data"]].add((headers["event-id"], headers["event-time"]))
    assert all(len(ids) == 1 for ids in by_data.values())


def test_a_function_failing_every_10th_event_gets_every_event_delivered_or_dead_lettered(tmp_path, start_dev):
    project(
        tmp_path,
        fail="lambda data: int(data) % 10 == 0",
        settings="kafka: {max_attempts: 2, retry_backoff: 0.05}\n",
    )
    started(start_dev, tmp_path)
    client = AdminClient(tmp_path / ".kubeless-local")
    for n in range(1, 101):
        client.emit("orders", str(n))

    def settled():
        rows = json.loads(cli("topic", "ls", "-o", "json", cwd=tmp_path, check=True).stdout)
        orders = next(r for r in rows if r["name"] == "orders")
        return orders["subscribers"][0]["lag"] == 0 and orders

    wait_until(settled, what="every event settled")
    orders = settled()
    dead = {c["data"] for c in calls(tmp_path) if c["data"] in {str(n) for n in range(10, 101, 10)}}
    ok = {c["data"] for c in calls(tmp_path) if int(c["data"]) % 10}
    assert len(orders["dead_letters"]) == 10 and len(dead) == 10 and ok == {str(n) for n in range(1, 101) if n % 10}
    assert all(d["attempts"] == 2 and d["status"] == 500 for d in orders["dead_letters"])
    ls = {row["name"]: row for row in json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    assert ls["sink"]["dead_letters"] == 10

    # --wait says what happened; then the function is fixed (hot reload) and the dead letters replayed.
    result = cli("emit", "kafka", "--topic", "orders", "--data", "200", "--wait", cwd=tmp_path)
    assert result.returncode == 1 and re.search(r"#\d+ default_orders_sink_orders: dead-lettered", result.stdout)
    (tmp_path / "handler.py").write_text(HANDLER % (NEVER, str(calls_file(tmp_path))))
    wait_until(lambda: "reloaded" in cli("logs", "sink", cwd=tmp_path).stdout, what="the fixed handler reloaded")
    first_ids = {c["data"]: {k.lower(): v for k, v in c["headers"].items()}["event-id"] for c in calls(tmp_path)}
    result = cli("topic", "replay", "orders", cwd=tmp_path, check=True)
    assert "11 dead letter(s) of topic orders sent again" in result.stdout
    wait_until(lambda: not settled()["dead_letters"], what="the replayed dead letters delivered")
    replayed = [c for c in calls(tmp_path) if c["data"] in {str(n) for n in range(10, 101, 10)} | {"200"}][-11:]
    assert {c["data"] for c in replayed} == {str(n) for n in range(10, 101, 10)} | {"200"}
    assert all({k.lower(): v for k, v in c["headers"].items()}["event-id"] == first_ids[c["data"]] for c in replayed)


def test_an_event_that_kills_the_functions_server_is_dead_lettered_not_retried_forever(tmp_path, start_dev):
    project(
        tmp_path,
        # the handler runs in a worker process the server forked: the poison kills the server's process group
        # (the server and its workers; a worker answers the call itself, so killing the server alone would not
        # fail it)
        fail="lambda data: data == 'poison' and __import__('os').killpg(__import__('os').getpgid(0), 9)",
        settings="kafka: {max_attempts: 2, retry_backoff: 0.05}\n",
    )
    dev = started(start_dev, tmp_path)
    client = AdminClient(tmp_path / ".kubeless-local")
    client.emit("orders", "poison")
    client.emit("orders", "after")
    wait_until(lambda: "after" in [c["data"] for c in calls(tmp_path)], what="the event after the poison delivered")
    rows = json.loads(cli("topic", "ls", "-o", "json", cwd=tmp_path, check=True).stdout)
    letters = next(r for r in rows if r["name"] == "orders")["dead_letters"]
    assert len(letters) == 1, (dev.output(), calls(tmp_path))
    letter = letters[0]
    assert letter["attempts"] == 2 and letter["status"] == 0, letter
    assert [c["data"] for c in calls(tmp_path)].count("poison") in (2, 3), calls(tmp_path)
    assert "dead-lettered after 2 attempts" in dev.output()
    assert "; `kubeless-local topic replay orders` sends it again" in dev.output()  # the CLI's words in the log


def test_a_damaged_topics_db_stops_dev_with_one_line_naming_it(tmp_path):
    project(tmp_path)
    state = tmp_path / ".kubeless-local"
    state.mkdir()
    (state / "topics.db").write_bytes(b"not a database " * 500)
    result = cli("dev", cwd=tmp_path, timeout=120)
    one_line_error(result, "topics.db is damaged")
    assert "move it away" in result.stderr

"""KafkaTrigger delivery end to end, in order (the default): N events emitted through a real
`kubeless-local dev` to one Python function, against the same number of direct sequential HTTP calls to
the function over one keep-alive connection (the baseline), measured in the same run. Two modes: the
embedded topics, and a real Kafka broker (`dev --kafka-brokers`; one is started with
scripts/kafka-up.sh in a temporary folder unless --brokers names one).

The function appends each event's `event-id` (and data) to a file, so lost, duplicated and out-of-order
events are counted.

    python bench/bench_events.py [--events 10000] [--mode embedded|broker|both] [--brokers HOST:PORT]
"""

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeless_local.client import AdminClient  # noqa: E402
from kubeless_local.events import envelope  # noqa: E402

HANDLER = """\
import os

seen = open(os.environ["SEEN_FILE"], "a", buffering=1)


def handler(event, context):
    data = event["data"]
    seen.write("%s %s\\n" % (event["event-id"], data.decode() if isinstance(data, bytes) else data))
    return "ok"
"""
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: sink
  labels: {app: bench}
  annotations: {local.kubeless.io/source: handler.py}
spec:
  runtime: python3.11
  handler: handler.handler
  deployment: {spec: {template: {spec: {containers: [{env: [{name: SEEN_FILE, value: "%s"}]}]}}}}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: bench}
spec: {topic: %s, functionSelector: {matchLabels: {app: bench}}}
"""


def seen(path):
    """[(event-id, data)] in the order the function got them."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [tuple(line.split(" ", 1)) for line in lines if " " in line]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("%s within %ss" % (what, timeout))
        time.sleep(0.01)


def inversions(sequence):
    return sum(1 for earlier, later in zip(sequence, sequence[1:]) if later < earlier)


def produce(brokers, topic, values):
    """Values to the broker with acks=all, as a producer on the user's side would."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all")
        await producer.start()
        try:
            sent = [await producer.send(topic, value.encode()) for value in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def drain(stream, placed):
    """Read dev's output (so it never blocks writing it); `placed` once its consumer group is placed."""
    for line in stream:
        if ": consuming " in line:
            placed.set()


def start_broker(folder):
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "kafka-up.sh"), str(folder)], capture_output=True, text=True, check=True
    )
    return next(line.split("=", 1)[1] for line in result.stdout.splitlines() if line.startswith("KAFKA_BROKERS="))


def run(mode, n, brokers):
    """One row: (mode, n, emit ack s, end to end s, events/s, direct calls/s, lost, duplicated, inversions)."""
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-events-"))
    outside = Path(tempfile.mkdtemp(prefix="kl-bench-seen-"))  # not in the watched project: no reload checks
    file = outside / "seen.txt"
    (tmp / "handler.py").write_text(HANDLER)
    topic = "bench" if mode == "embedded" else "bench-" + tmp.name[-8:]  # a new topic for each broker run
    (tmp / "function.yaml").write_text(MANIFEST % (file, topic))
    command = [sys.executable, "-m", "kubeless_local", "dev"]
    if mode == "broker":
        command += ["--kafka-brokers", brokers]
        produce(brokers, topic, ["before"])  # the topic exists: the group is placed (at its end) at once
    dev = subprocess.Popen(
        command,
        cwd=tmp,
        stdout=subprocess.PIPE if mode == "broker" else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if mode == "broker" else subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        wait_until(lambda: (tmp / ".kubeless-local" / "admin.json").exists(), 60, "dev did not publish its admin API")
        client = AdminClient(tmp / ".kubeless-local")
        states = lambda: {row["name"]: row for row in client.functions()}  # noqa: E731
        wait_until(lambda: states().get("sink", {}).get("state") == "Ready", 120, "the function did not become Ready")
        url = states()["sink"]["url"]
        if mode == "broker":
            placed = threading.Event()
            threading.Thread(target=drain, args=(dev.stdout, placed), daemon=True).start()
            wait_until(placed.is_set, 60, "the consumer group was not placed")

        # Baseline: the same number of calls straight to the function, one keep-alive connection, in order.
        port = int(url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port)
        started = time.monotonic()
        for i in range(n):
            method, headers, body = envelope("kafka", str(i), topic="bench")
            connection.request(method, "/", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
        baseline = time.monotonic() - started
        connection.close()
        wait_until(lambda: len(seen(file)) >= n, 30, "the baseline calls were not all recorded")
        file.write_text("")

        # Through the topic: emitted (embedded: committed to disk; broker: produced, acks=all), then delivered.
        started = time.monotonic()
        if mode == "broker":
            produce(brokers, topic, [str(i) for i in range(n)])
        else:
            client.emit("bench", "x", count=n)
        acknowledged = time.monotonic() - started
        wait_until(lambda: len(seen(file)) >= n, 300, "not every event was delivered")
        elapsed = time.monotonic() - started
        client.emit("bench", "sentinel") if mode == "embedded" else produce(brokers, topic, ["sentinel"])
        wait_until(lambda: any(data == "sentinel" for _, data in seen(file)), 60, "the sentinel was not delivered")
        got = [row for row in seen(file) if row[1] != "sentinel"]
        ids = [event_id for event_id, _ in got]
        counts = collections.Counter(ids)
        if mode == "broker":
            order = [int(data) for _, data in got]
        else:  # the store's order of the event ids
            db = sqlite3.connect(tmp / ".kubeless-local" / "topics.db")
            position = {row[0]: row[1] for row in db.execute("SELECT event_id, seq FROM events")}
            db.close()
            order = [position[event_id] for event_id in ids]
        lost, duplicated = n - len(counts), sum(c - 1 for c in counts.values())
        return (mode, n, acknowledged, elapsed, n / elapsed, n / baseline, lost, duplicated, inversions(order))
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--mode", choices=("embedded", "broker", "both"), default="both")
    parser.add_argument("--brokers", help="a running Kafka broker; else one is started with scripts/kafka-up.sh")
    args = parser.parse_args()
    modes = ["embedded", "broker"] if args.mode == "both" else [args.mode]
    broker_dir = None
    brokers = args.brokers
    if "broker" in modes and not brokers:
        broker_dir = Path(tempfile.mkdtemp(prefix="kl-bench-kafka-"))
        brokers = start_broker(broker_dir)
    try:
        rows = [run(mode, args.events, brokers) for mode in modes]
    finally:
        if broker_dir is not None:
            subprocess.run(["sh", str(ROOT / "scripts" / "kafka-down.sh"), "--purge", str(broker_dir)], check=False)
            shutil.rmtree(broker_dir, ignore_errors=True)
    print("| mode | events | emit ack s | end to end s | events/s | direct calls/s | ratio | lost | dup | inversions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, n, ack, elapsed, rate, base, lost, dup, inv in rows:
        print(
            "| %s | %d | %.2f | %.2f | %.0f | %.0f | %.2f× | %d | %d | %d |"
            % (mode, n, ack, elapsed, rate, base, rate / base, lost, dup, inv)
        )
    print(
        json.dumps(
            {mode: {"ratio": round(rate / base, 2), "inversions": inv} for mode, _, _, _, rate, base, _, _, inv in rows}
        )
    )


if __name__ == "__main__":
    main()

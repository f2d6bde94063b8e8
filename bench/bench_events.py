"""Embedded Kafka topics end to end: N events emitted through a real `kubeless-local dev` to one Python
function behind a KafkaTrigger, against the same number of direct HTTP calls to the function (baseline).

The function appends each event's `event-id` to a file, so lost and duplicated events are counted.

    python bench/bench_events.py [--events 10000]
"""

import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
    seen.write(event["event-id"] + "\\n")
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
spec: {topic: bench, functionSelector: {matchLabels: {app: bench}}}
"""


def seen_ids(path):
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("%s within %ss" % (what, timeout))
        time.sleep(0.01)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    n = args.events
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-events-"))
    outside = Path(tempfile.mkdtemp(prefix="kl-bench-seen-"))  # not in the watched project: no reload checks
    seen = outside / "seen.txt"
    (tmp / "handler.py").write_text(HANDLER)
    (tmp / "function.yaml").write_text(MANIFEST % seen)
    dev = subprocess.Popen(
        [sys.executable, "-m", "kubeless_local", "dev"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        wait_until(lambda: (tmp / ".kubeless-local" / "admin.json").exists(), 60, "dev did not publish its admin API")
        client = AdminClient(tmp / ".kubeless-local")
        states = lambda: {row["name"]: row for row in client.functions()}  # noqa: E731
        wait_until(lambda: states().get("sink", {}).get("state") == "Ready", 120, "the function did not become Ready")
        url = states()["sink"]["url"]

        # Baseline: the same number of calls straight to the function, one keep-alive connection, in order.
        port = int(url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port)
        started = time.monotonic()
        for i in range(n):
            method, headers, body = envelope("kafka", '{"n": %d}' % i, topic="bench")
            connection.request(method, "/", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
        baseline = time.monotonic() - started
        connection.close()
        wait_until(lambda: len(seen_ids(seen)) >= n, 30, "the baseline calls were not all recorded")
        seen.write_text("")

        # Through the topic: emit (committed to disk), then delivered by the KafkaTrigger.
        started = time.monotonic()
        client.emit("bench", '{"n": 1}', count=n)
        acknowledged = time.monotonic() - started
        wait_until(lambda: len(seen_ids(seen)) >= n, 120, "not every event was delivered")
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # a duplicate would arrive after the last new event: give it the chance
        ids = seen_ids(seen)
        counts = collections.Counter(ids)
        lost = n - len(counts)
        duplicated = sum(c - 1 for c in counts.values())
        rate, base_rate = n / elapsed, n / baseline
        print("| events | emit ack s | end to end s | events/s | direct calls/s | ratio | lost | duplicated |")
        print("|---|---|---|---|---|---|---|---|")
        print(
            "| %d | %.2f | %.2f | %.0f | %.0f | %.2f× | %d | %d |"
            % (n, acknowledged, elapsed, rate, base_rate, rate / base_rate, lost, duplicated)
        )
        print(
            json.dumps(
                {"events_per_s": round(rate), "baseline_per_s": round(base_rate), "lost": lost, "dup": duplicated}
            )
        )
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


if __name__ == "__main__":
    main()

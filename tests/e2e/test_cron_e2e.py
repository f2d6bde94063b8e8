"""CronJobTriggers under a real `dev` with a Python function: `emit cron` delivers the cron envelope
(GET without payload, POST with it), `ls -o json` and `logs` show the runs, a bad schedule is reported
without stopping the functions and is exit 2 for `emit cron`."""

import json
import re

from conftest import cli

HANDLER = """\
import json

def hello(event, context):
    request = event["extensions"]["request"]
    print("EVENT " + json.dumps({
        "method": request.method,
        "data": repr(event["data"]),
        "id": event["event-id"],
        "time": event["event-time"],
        "namespace": event["event-namespace"],
        "type": event["event-type"],
        "content_type": request.headers.get("Content-Type"),
    }), flush=True)
    return "ok"
"""

MANIFESTS = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello, annotations: {local.kubeless.io/source: handler.py}}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: every-minute}
spec: {function-name: hello, schedule: "* * * * *"}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: with-payload}
spec: {function-name: hello, schedule: "0 3 * * *", payload: {x: 1, who: cron}}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: broken}
spec: {function-name: hello, schedule: "61 * * * *"}
"""


def events_seen(cwd):
    logs = cli("logs", "hello", cwd=cwd, check=True).stdout
    return [json.loads(line[len("EVENT ") :]) for line in logs.splitlines() if line.startswith("EVENT ")]


def test_emit_cron_delivers_the_cron_envelope_and_ls_shows_the_runs(tmp_path, start_dev):
    (tmp_path / "handler.py").write_text(HANDLER)
    (tmp_path / "functions.yaml").write_text(MANIFESTS)
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    # The bad schedule is reported by name and field (a ConfigError of its own); the function serves anyway.
    dev.wait_for_output("CronJobTrigger broken: spec.schedule: schedule '61 * * * *' is not valid")

    result = cli("emit", "cron", "every-minute", cwd=tmp_path, check=True)
    assert re.fullmatch(
        r"cron trigger every-minute → function hello: GET \(event-id [0-9a-f-]{36}\) answered 200 in \d+ ms\n",
        result.stdout,
    )
    result = cli("emit", "cron", "with-payload", cwd=tmp_path, check=True)
    assert "function hello: POST" in result.stdout and "answered 200" in result.stdout

    get, post = events_seen(tmp_path)[-2:]
    assert get["method"] == "GET" and get["data"] in ("None", "b''")
    assert post["method"] == "POST" and post["data"] == "{'who': 'cron', 'x': 1}"
    for event in (get, post):
        assert event["namespace"] == "cronjobtrigger.kubeless.io"
        assert event["type"] == event["content_type"] == "application/json"
        assert re.fullmatch(r"[0-9a-f-]{36}", event["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", event["time"])
    logs = cli("logs", "hello", cwd=tmp_path, check=True).stdout
    assert "cron every-minute: GET → 200 in " in logs and "cron with-payload: POST → 200 in " in logs

    rows = {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    row, broken = rows["hello"], rows["cronjobtrigger/broken"]
    assert row["state"] == "Ready"
    assert broken["state"] == "ConfigError" and "minute '61' is outside 0-59" in broken["error"]
    triggers = {t["name"]: t for t in row["cron"]}
    assert set(triggers) == {"every-minute", "with-payload"}
    (run,) = triggers["with-payload"]["succeeded"]
    assert (run["method"], run["status"], run["manual"], run["event_id"]) == ("POST", 200, True, post["id"])
    assert triggers["every-minute"]["succeeded"][0]["event_id"] == get["id"]
    assert triggers["every-minute"]["next"]

    # Bad input: one line, exit 2.
    for name, expected in [
        ("broken", "no CronJobTrigger 'broken' in this project"),  # not loaded: `ls` says why
        ("nothing", "no CronJobTrigger 'nothing' in this project"),
    ]:
        result = cli("emit", "cron", name, cwd=tmp_path)
        assert result.returncode == 2 and expected in result.stderr, result
        assert result.stderr.count("\n") == 1 and not result.stdout
    assert "cronjobtrigger/broken: " in cli("ls", cwd=tmp_path, check=True).stdout  # the table says why

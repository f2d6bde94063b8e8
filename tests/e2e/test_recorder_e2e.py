"""The invocation recorder with the real command: every call a function answers is recorded whoever sent it
(`call`, a plain HTTP client on the URL `ls` prints, `emit kafka`, `emit cron`), with its log lines, and the
sender's mark never reaches the function; `history` lists them, `replay` sends one again and shows the diff
(also edited in $EDITOR); unknown ids and a missing session are one line and exit 2."""

import json
import os
import sys

import pytest
import requests
from conftest import cli
from waiting import wait_until

HANDLER = """\
def handler(event, context):
    headers = dict(event["extensions"]["request"].headers)
    data = event["data"]
    data = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    print("handling", data, flush=True)
    with open(%r) as answer:
        suffix = answer.read()
    return "%%s|%%s|%%s" %% (data, suffix, ",".join(sorted(k.lower() for k in headers if k.lower().startswith("x-kubeless"))))
"""
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: echo
  labels: {app: shop}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.handler}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec: {topic: orders, functionSelector: {matchLabels: {app: shop}}}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: nightly}
spec: {function-name: echo, schedule: "0 0 1 1 *"}
"""


BACKENDS = os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(",")
# reads nothing outside its code: a container sees only that
SELF_CONTAINED = """\
def handler(event, context):
    data = event["data"]
    data = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    print("handling", data, flush=True)
    return "%s|VERSION" % data
"""


def project(tmp_path):
    answer = tmp_path.with_name(tmp_path.name + ".answer")  # beside the project: no reload when it changes
    answer.write_text("one")
    (tmp_path / "handler.py").write_text(HANDLER % str(answer))
    (tmp_path / "function.yaml").write_text(MANIFEST)
    return answer


def history(tmp_path, *args):
    return json.loads(cli("history", *args, "-o", "json", cwd=tmp_path, check=True).stdout)


def one_line_error(result, text):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert text in lines[0], lines[0]


def test_every_source_is_recorded_and_a_replay_shows_its_diff(tmp_path, start_dev, monkeypatch):
    answer = project(tmp_path)
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    url = json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)[0]["url"]

    assert cli("call", "echo", "--data", "by-call", cwd=tmp_path, check=True).stdout.strip() == "by-call|one|"
    assert [row["source"] for row in history(tmp_path, "echo")] == ["call"]  # listed right after its answer
    plain = requests.post(url, data="by-http", headers={"Authorization": "Bearer s3cret"}, timeout=30)
    assert plain.text == "by-http|one|"  # the function never sees a source mark
    cli("emit", "kafka", "--topic", "orders", "--data", "by-kafka", "--wait", cwd=tmp_path, check=True)
    cli("emit", "cron", "nightly", cwd=tmp_path, check=True)

    def recorded():
        return len(history(tmp_path, "echo")) >= 4

    wait_until(recorded, "four recorded calls", timeout=30)
    rows = {row["source"]: row for row in history(tmp_path)}
    assert set(rows) == {"call", "http", "kafka", "cron"}, rows
    assert rows["kafka"]["trigger"] == "orders" and rows["cron"]["trigger"] == "nightly"
    assert all(row["status"] == 200 and row["function"] == "echo" for row in rows.values())

    shown = cli("history", cwd=tmp_path, check=True).stdout
    assert "kafka:orders" in shown and "cron:nightly" in shown and "POST /" in shown

    answer.write_text("two")  # the function now answers otherwise: the replay's diff shows it
    result = cli("replay", rows["http"]["id"], cwd=tmp_path, check=True)
    assert "replayed %s (POST /) of echo" % rows["http"]["id"] in result.stdout
    assert "-by-http|one|" in result.stdout and "+by-http|two|" in result.stdout, result.stdout
    assert "status: 200 (same)" in result.stdout
    (replayed,) = [row for row in history(tmp_path) if row["source"] == "replay"]  # stored before replay answers
    assert replayed["status"] == 200 and replayed["path"] == "/"

    editor = tmp_path.with_name(tmp_path.name + ".editor.py")
    editor.write_text(
        "import json, sys\n"
        "request = json.load(open(sys.argv[1]))\n"
        "request['body'] = {'text': 'edited'}\n"
        "json.dump(request, open(sys.argv[1], 'w'))\n"
    )
    monkeypatch.setenv("EDITOR", "%s %s" % (sys.executable, editor))
    edited = cli("replay", rows["call"]["id"], "--edit", "-o", "json", cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr
    result = json.loads(edited.stdout)
    assert result["replay"]["response"]["body"]["text"] == "edited|two|"
    assert "+edited|two|" in result["diff"]["body"]


def test_the_record_holds_the_request_the_answer_and_the_log_lines_and_exports_hide_secrets(tmp_path, start_dev):
    from kubeless_local.client import AdminClient

    project(tmp_path)
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    url = json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)[0]["url"]
    requests.post(url + "/some/path?q=1", data=b"\xff\xfe", headers={"Cookie": "id=7"}, timeout=30)
    session = AdminClient(cwd=tmp_path).project_session()
    wait_until(lambda: session.invocations("echo"), "the call recorded", timeout=30)
    (row,) = session.invocations("echo")
    record = session.invocation(row["id"])
    assert (record["request"]["method"], record["request"]["path"], record["request"]["query"]) == (
        "POST",
        "/some/path",
        "q=1",
    )
    assert record["request"]["body"] == {"size": 2, "truncated": False, "base64": "//4="}
    assert ["Cookie", "REDACTED"] in record["request"]["headers"]
    assert record["response"]["status"] in (200, 500)
    assert record["generation"] is not None and len(record["source_sha256"]) == 64
    assert any("handling" in line["text"] for line in record["logs"]), record["logs"]


def test_each_of_many_calls_holds_its_own_log_line_and_no_other_calls(tmp_path, start_dev):
    from kubeless_local.client import AdminClient

    project(tmp_path)
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    url = json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)[0]["url"]
    with requests.Session() as client:  # back to back on one connection: the next call starts at once
        for number in range(40):
            assert client.post(url, data="call-%d" % number, timeout=30).status_code == 200
    session = AdminClient(cwd=tmp_path).project_session()
    wait_until(lambda: len(session.invocations("echo", limit=100)) >= 40, "forty calls recorded", timeout=30)
    for row in session.invocations("echo", limit=100):
        record = session.invocation(row["id"])
        printed = [line["text"] for line in record["logs"] if line["text"].startswith("handling")]
        assert printed == ["handling %s" % record["request"]["body"]["text"]], record["logs"]


def test_unknown_ids_and_no_session_are_one_line_and_exit_2(tmp_path, start_dev):
    project(tmp_path)
    one_line_error(cli("history", cwd=tmp_path), "no running")
    one_line_error(cli("replay", "abc", cwd=tmp_path), "no running")
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    one_line_error(cli("replay", "nope", cwd=tmp_path), "no recorded invocation 'nope'")
    one_line_error(cli("history", "ghost", cwd=tmp_path), "no function 'ghost'")


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backends_calls_are_recorded_from_every_source_and_replayed(tmp_path, start_dev, backend):
    """The docker backend's front door (frontdoor.py) records as the process backend's does: `call`, a plain
    client, kafka and cron each with its source, status and bodies; a replay after a save shows the diff and
    names the generation that answered it."""
    from kubeless_local.client import AdminClient

    (tmp_path / "handler.py").write_text(SELF_CONTAINED.replace("VERSION", "v1"))
    (tmp_path / "function.yaml").write_text(MANIFEST)
    dev = start_dev("dev", "--backend", backend, cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=180)
    (row,) = json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)
    assert (row["backend"], row["recorded"]) == (backend, True)

    assert cli("call", "echo", "--data", "by-call", cwd=tmp_path, check=True).stdout.strip() == "by-call|v1"
    assert requests.post(row["url"] + "/plain?x=1", data="by-http", timeout=30).text == "by-http|v1"
    cli("emit", "kafka", "--topic", "orders", "--data", "by-kafka", "--wait", cwd=tmp_path, check=True)
    cli("emit", "cron", "nightly", cwd=tmp_path, check=True)

    dev.wait_until(lambda: len(history(tmp_path, "echo")) >= 4, "four recorded calls", timeout=30)
    rows = {row["source"]: row for row in history(tmp_path, "echo")}
    assert set(rows) == {"call", "http", "kafka", "cron"}, rows
    assert (rows["kafka"]["trigger"], rows["cron"]["trigger"]) == ("orders", "nightly")
    assert rows["http"]["path"] == "/plain"
    session = AdminClient(cwd=tmp_path).project_session()
    for source, data in (("call", "by-call"), ("http", "by-http"), ("kafka", "by-kafka")):
        record = session.invocation(rows[source]["id"])
        assert record["response"]["status"] == 200, record
        assert record["request"]["body"]["text"] == data
        assert record["response"]["body"]["text"] == data + "|v1"
        assert all(name.lower() != "x-kubeless-local-source" for name, _ in record["request"]["headers"])
        assert any("handling " + data in line["text"] for line in record["logs"]), record["logs"]
    assert session.invocation(rows["cron"]["id"])["response"]["status"] == 200
    original = session.invocation(rows["http"]["id"])
    assert original["generation"] is not None and len(original["source_sha256"]) == 64

    (tmp_path / "handler.py").write_text(SELF_CONTAINED.replace("VERSION", "v2"))
    dev.wait_until(lambda: requests.post(row["url"], data="probe", timeout=30).text == "probe|v2", "v2 serves")
    result = cli("replay", rows["http"]["id"], cwd=tmp_path, check=True)
    assert "-by-http|v1" in result.stdout and "+by-http|v2" in result.stdout, result.stdout
    (replayed,) = [row for row in history(tmp_path, "echo") if row["source"] == "replay"]
    record = session.invocation(replayed["id"])
    assert record["replay_of"] == original["id"] and record["response"]["body"]["text"] == "by-http|v2"
    assert record["generation"] > original["generation"]
    assert record["source_sha256"] != original["source_sha256"]

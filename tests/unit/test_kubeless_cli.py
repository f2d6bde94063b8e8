"""The Kubeless CLI's verbs: `--dryrun -o yaml` prints what the Kubeless CLI v1.0.8 prints for the same
flags (golden files made by the real CLI: tests/fixtures/kubeless-cli/make-golden.sh), and deploy /
update / delete / trigger write and remove manifests that a running session (fake backend) picks up."""

import functools
import shlex
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import FakeBackend, FakeGuardian
from waiting import wait_until

from kubeless_local.commands import root as cli
from kubeless_local.emulator.session import DevSession

GOLDEN = Path(__file__).parent.parent / "fixtures" / "kubeless-cli"
CASES = sorted(p.stem for p in GOLDEN.glob("*.cmd"))


@pytest.fixture
def code_server():
    """Serves the fixtures' src/ folder, for the --from-file URL case."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(GOLDEN / "src"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.005,), daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("case", CASES)
def test_dryrun_prints_what_the_kubeless_cli_prints(case, monkeypatch, code_server):
    assert len(CASES) >= 13
    monkeypatch.chdir(GOLDEN / "src")
    command = (GOLDEN / (case + ".cmd")).read_text().replace("{URL}", code_server)
    args = [*shlex.split(command)[1:], "--dryrun", "-o", "yaml"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    expected = (GOLDEN / (case + ".yaml")).read_text().replace("{URL}", code_server)
    assert result.stdout == expected


def test_dryrun_json_is_the_same_object(monkeypatch):
    monkeypatch.chdir(GOLDEN / "src")
    import json

    args = shlex.split((GOLDEN / "secrets.cmd").read_text())[1:]
    result = invoke(*args, "--dryrun", "-o", "json")
    assert json.loads(result.stdout) == yaml.safe_load((GOLDEN / "secrets.yaml").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A running session (fake backend) for a project folder, the current folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "h.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (folder / "requirements.txt").write_text("six\n")
    session = DevSession(folder, say=lambda text: None, backend=FakeBackend, guardian=FakeGuardian, allow_empty=True)
    session.start()
    monkeypatch.chdir(folder)
    yield session
    session.stop()


def test_deploy_update_delete_through_the_running_session(project):
    result = invoke(
        "function", "deploy", "hello", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py",
        "--label", "app=shop,tier", "--env", "K=V", "--port", "9123", "--schedule", "*/5 * * * *",
        "--secrets", "db", "--dependencies", "requirements.txt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Function hello submitted for deployment" in result.stderr
    written = yaml.safe_load((project.root / "hello.yaml").read_text())
    assert written["metadata"]["annotations"] == {  # hot reload: the files
        "local.kubeless.io/source": "h.py",
        "local.kubeless.io/deps": "requirements.txt",
    }
    assert "function" not in written["spec"] and written["metadata"]["labels"]["tier"] == ""
    cron = yaml.safe_load((project.root / "hello.cronjobtrigger.yaml").read_text())
    assert (cron["kind"], cron["spec"]["schedule"], cron["spec"]["function-name"]) == (
        "CronJobTrigger",
        "*/5 * * * *",
        "hello",
    )
    spec = project.supervisor.specs["hello"]
    assert spec.handler == "h.hello" and spec.env == [("K", "V")] and spec.wanted_port == 9123
    assert project.supervisor.instances["hello"].state.value == "Ready"

    again = invoke(
        "function", "deploy", "hello", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py"
    )
    assert again.exit_code == 2 and "function update hello" in again.stderr

    listed = invoke("function", "ls")
    assert "hello" in listed.stdout and "h.hello" in listed.stdout and "1/1 READY" in listed.stdout
    described = invoke("function", "describe", "hello")
    assert "Handler:" in described.stdout and '"tier":""' in described.stdout

    result = invoke("function", "update", "hello", "--timeout", "30", "--env", "K=W")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((project.root / "hello.yaml").read_text())
    assert written["spec"]["timeout"] == "30" and written["metadata"]["annotations"] == {
        "local.kubeless.io/source": "h.py",
        "local.kubeless.io/deps": "requirements.txt",
    }
    assert written["spec"]["service"]["ports"][0]["targetPort"] == 9123
    wait_until(lambda: project.supervisor.specs["hello"].env == [("K", "W")], "the watcher reloads the manifest")
    assert project.supervisor.specs["hello"].timeout == "30"
    assert project.supervisor.specs["hello"].secrets == [("db", "/db")]  # kept by an update without --secrets

    result = invoke("function", "delete", "hello")
    assert result.exit_code == 0, result.output
    assert not (project.root / "hello.yaml").exists() and not (project.root / "hello.cronjobtrigger.yaml").exists()
    assert "hello" not in project.supervisor.instances
    assert invoke("function", "delete", "hello").exit_code == 2


def test_triggers_are_written_listed_and_deleted(project):
    result = invoke("trigger", "http", "create", "web", "--function-name", "hello", "--path", "greet")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((project.root / "web.httptrigger.yaml").read_text())
    assert (doc["kind"], doc["spec"]["function-name"], doc["spec"]["path"]) == ("HTTPTrigger", "hello", "greet")
    assert invoke("trigger", "http", "create", "web", "--function-name", "hello").exit_code == 2
    result = invoke("trigger", "nats", "create", "events", "--function-selector", "app=shop", "--trigger-topic", "ev")
    assert result.exit_code == 0, result.output
    assert "web" in invoke("trigger", "http", "list").stdout
    assert "events" in invoke("trigger", "nats", "list").stdout
    result = invoke("trigger", "cronjob", "create", "tick", "--function", "hello", "--schedule", "bad")
    assert result.exit_code == 2 and "expected exactly 5 fields, found 1" in result.stderr
    # the schedules the Kubeless CLI takes (robfig/cron's ParseStandard), and only those
    for verb, schedule in (("create", "@every 5m"), ("update", "@hourly")):
        result = invoke("trigger", "cronjob", verb, "tick", "--function", "hello", "--schedule", schedule)
        assert result.exit_code == 0, result.output
    result = invoke("trigger", "cronjob", "update", "tick", "--function", "hello", "--schedule", "0 0 * * 7")
    assert result.exit_code == 2 and "end of range (7) above maximum (6): 7" in result.stderr
    result = invoke(
        "function", "deploy", "cron7", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py",
        "--schedule", "0 0 * * 7",
    )  # fmt: skip
    assert result.exit_code == 2 and "--schedule: schedule '0 0 * * 7' is not valid" in result.stderr
    assert not (project.root / "cron7.yaml").exists()
    assert invoke("trigger", "http", "delete", "web").exit_code == 0
    assert not (project.root / "web.httptrigger.yaml").exists()


def test_top_sums_the_metrics_per_method(monkeypatch):
    from http.server import BaseHTTPRequestHandler

    from kubeless_local import emulator

    metrics = (
        b'function_calls_total{method="GET"} 3.0\nfunction_calls_total{method="POST"} 1.0\n'
        b'function_failures_total{method="GET"} 1.0\nfunction_duration_seconds_sum{method="GET"} 0.3\n'
        b'function_duration_seconds_count{method="GET"} 3.0\n'
    )

    class Metrics(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(metrics)))
            self.end_headers()
            self.wfile.write(metrics)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, args=(0.005,), daemon=True).start()
    url = "http://127.0.0.1:%d" % server.server_address[1]

    class Admin:
        def functions(self):
            return [{"name": "hello", "namespace": "default", "state": "Ready", "serving": True, "url": url}]

    monkeypatch.setattr(emulator, "AdminClient", Admin, raising=False)
    try:
        rows = yaml.safe_load(invoke("function", "top", "--out", "yaml").stdout)
    finally:
        server.shutdown()
        server.server_close()
    get = next(r for r in rows if r["method"] == "GET")
    assert (get["total_calls"], get["total_failures"]) == (3, 1)
    assert get["avg_duration_seconds"] == pytest.approx(0.1)
    assert [r["method"] for r in rows] == ["GET", "POST"]


def test_deploy_of_a_name_another_file_defines_is_refused_and_writes_nothing(project):
    (project.root / "other.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {runtime: python3.11, handler: h.hello, function: 'x'}\n"
    )
    result = invoke(
        "function", "deploy", "hello", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py"
    )
    assert result.exit_code == 2 and "names must be unique" in result.stderr
    assert not (project.root / "hello.yaml").exists()


def test_function_logs_and_top_table_through_a_session(project):
    result = invoke(
        "function", "deploy", "hello", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py"
    )
    assert result.exit_code == 0, result.output
    project.supervisor.say("hello", "a line from hello")
    assert "a line from hello" in invoke("function", "logs", "hello").stdout
    table = invoke("function", "top").stdout
    assert "TOTAL_CALLS" in table and "hello" in table


def test_update_checks_the_schedule_as_deploy_does(project):
    """`function update --schedule` wrote a CronJobTrigger that no session could run; now refused as deploy
    refuses it (exit 2), the function and its files unchanged."""
    deploy = ("function", "deploy", "hello", "--runtime", "python3.11", "--handler", "h.hello", "--from-file", "h.py")
    assert invoke(*deploy).exit_code == 0
    before = (project.root / "hello.yaml").read_text()
    result = invoke("function", "update", "hello", "--timeout", "5", "--schedule", "0 0 * * 7")
    assert result.exit_code == 2 and "--schedule: schedule '0 0 * * 7' is not valid" in result.stderr
    assert (project.root / "hello.yaml").read_text() == before
    assert not (project.root / "hello.cronjobtrigger.yaml").exists()

"""The pytest plugin (kubeless_local/pytest_plugin.py), as its users run it: an inner pytest (pytester, in a
subprocess) over a project of Functions, with the tests a user would write."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest

from kubeless_local.emulator.guardian import CONTAINER_LABEL
from kubeless_local.emulator.lock import ProjectLock
from kubeless_local.emulator.supervisor import port_free
from kubeless_local.paths import STATE_DIRNAME

pytest_plugins = ["pytester"]

# The plugin is an installed pytest11 entry point; a checkout on PYTHONPATH whose installed copy predates it
# names it with -p (both at once would register it twice).
INSTALLED = any(ep.value == "kubeless_local.pytest_plugin" for ep in entry_points(group="pytest11"))
PLUGIN = () if INSTALLED else ("-p", "kubeless_local.pytest_plugin")

HANDLER = """
def hello(event, context):
    data = event["data"]
    print("processing %s" % data["name"])
    return {"hello": data["name"]}


def ship(event, context):
    print("shipping", event["data"])
    return "shipped"


def audit(event, context):
    return "audited"
"""

MANIFESTS = """
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.hello}
---
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: ship
  labels: {team: shipping}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.ship}
---
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: audit
  labels: {team: audit}
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.audit}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec:
  topic: orders
  functionSelector: {matchLabels: {team: shipping}}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: nightly}
spec: {function-name: audit, schedule: "0 3 * * *"}
"""

# Retries quick enough for a test to see a dead letter soon (the project's own settings file).
SETTINGS = "kafka:\n  retry_backoff: 0.05\n"

TESTS = """
import json
import os


def test_hello(kubeless):
    r = kubeless.call("hello", data={"name": "x"})
    assert r.status_code == 200 and r.json() == {"hello": "x"}
    assert r.event.headers["event-namespace"] == "cli.kubeless.io"
    assert "processing x" in r.logs
    again = kubeless.call("hello", data={"name": "y"})
    assert "processing y" in again.logs and "processing x" not in again.logs
    ports = os.environ.get("PORTS_FILE")
    if ports:
        with open(ports, "a") as f:
            f.write(json.dumps([kubeless.url(n) for n in ("hello", "ship", "audit")]) + "\\n")


def test_flow(kubeless_isolated):
    kubeless = kubeless_isolated
    with kubeless.deliveries("ship", count=1, timeout=10) as got:
        kubeless.emit("orders", {"id": 7})
    assert got[0].request.headers["event-topic"] == "orders"
    assert got[0].request.json() == {"id": 7}


def test_not_selected(kubeless_isolated):
    with kubeless_isolated.no_deliveries("audit", within=0.5):
        kubeless_isolated.emit("orders", {"id": 8})


def test_dead_letter(kubeless_isolated):
    kubeless = kubeless_isolated
    kubeless.fail_next("ship", status=500, times=5)
    kubeless.emit("orders", {"id": 9})
    letter = kubeless.wait_dead_letter("ship", timeout=30)
    assert letter["status"] == 500
    assert kubeless.replay_dead_letter(letter).status_code == 200


def test_cron(kubeless):
    assert kubeless.fire_cron("nightly").status == 200
    assert len(kubeless.next_fires("nightly", n=3)) == 3


def test_the_session_fixture_is_the_default_session(kubeless, kubeless_session, kubeless_backend):
    assert (kubeless_session is kubeless) == (kubeless_backend == "process")  # the first backend is the default


def test_reset_keeps_the_functions_and_forgets_the_history(kubeless, kubeless_backend):
    before = kubeless.url("hello")  # either backend's front door records the calls
    kubeless.call("hello", data={"name": "y"})
    assert [row["status"] for row in kubeless.history("hello")] == [200]
    kubeless.fail_next("hello", status=503)
    kubeless.reset()
    assert kubeless.history() == []
    assert kubeless.url("hello") == before
    assert kubeless.call("hello", data={"name": "z"}).status_code == 200
    assert [row["status"] for row in kubeless.history("hello")] == [200]
"""


def project(pytester, tests=TESTS, handler=HANDLER, ini=""):
    """The inner project: the Functions, their tests, the ini."""
    pytester.makefile(".py", handler=handler)
    pytester.makefile(".yaml", function=MANIFESTS)
    (pytester.path / ".kubeless-local.yaml").write_text(SETTINGS)
    pytester.makepyfile(test_functions=tests)
    pytester.makeini("[pytest]\n" + ini)
    return pytester.path


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    """The sessions an inner run starts register in a registry of the test's own."""
    monkeypatch.setenv("KUBELESS_LOCAL_REGISTRY", str(tmp_path / "registry"))


def run(pytester, *args):
    return pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", *args, timeout=300)


def test_an_inner_project_passes(pytester):
    project(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=7)


def test_a_syntax_error_fails_the_test_with_the_file_and_line(pytester):
    broken = HANDLER.replace("def audit(event, context):", "def audit(event, context:")
    folder = project(pytester, tests="def test_hello(kubeless):\n    kubeless.call('hello')\n", handler=broken)
    line = (folder / "handler.py").read_text().splitlines().index("def audit(event, context:") + 1
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*function hello is CompileError: *handler.py:%d: '(' was never closed*" % line])


def test_deliveries_timing_out_names_what_arrived(pytester):
    tests = """
def test_wrong_function(kubeless):
    with kubeless.deliveries("audit", count=1, timeout=2):
        kubeless.emit("orders", {"id": 7})
"""
    project(pytester, tests=tests)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(['*0 of 1 deliveries to audit arrived within 2s*ship ← kafka orders*{"id": 7}*'])


def test_a_failing_test_reports_the_functions_logs_and_its_last_call(pytester):
    tests = """
def test_wrong(kubeless):
    assert kubeless.call("hello", data={"name": "w"}).json() == {"hello": "nobody"}
"""
    project(pytester, tests=tests)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kubeless: logs of hello*", "processing w", "*kubeless: last request/response*"])


def test_a_project_whose_dev_holds_its_lock_still_runs(pytester):
    """The user's `dev` holds .kubeless-local/lock: the tests run beside it, in a state folder of their own."""
    folder = project(pytester)
    (folder / STATE_DIRNAME).mkdir()
    lock = ProjectLock(folder / STATE_DIRNAME)
    lock.acquire()
    try:
        run(pytester, "-k", "hello").assert_outcomes(passed=1, deselected=6)
    finally:
        lock.release()


def test_teardown_leaves_no_process_port_or_lock(pytester, tmp_path):
    folder = project(pytester)
    ports_file, basetemp = tmp_path / "ports", tmp_path / "inner"
    os.environ["PORTS_FILE"] = str(ports_file)
    try:
        run(pytester, "-k", "hello", "--basetemp", str(basetemp)).assert_outcomes(passed=1, deselected=6)
    finally:
        del os.environ["PORTS_FILE"]
    urls = json.loads(ports_file.read_text())
    assert all(port_free(int(url.rsplit(":", 1)[1].strip("/"))) for url in urls), urls
    assert not list(basetemp.rglob("lock")), list(basetemp.rglob("lock"))
    marker = ("KUBELESS_LOCAL_PROJECT=%s" % basetemp.resolve()).encode()
    assert not [pid for pid in _pids() if _environ_has(pid, marker)]
    assert not (folder / STATE_DIRNAME / "lock").exists()


def _pids():
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _environ_has(pid, prefix):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return any(item.startswith(prefix) for item in f.read().split(b"\0"))
    except OSError:
        return False


def test_importing_the_plugin_loads_nothing_of_the_engine():
    """A project whose tests use no kubeless fixture pays for this module only (bench/bench_pytest_plugin.py
    measures the milliseconds)."""
    code = textwrap.dedent(
        """
        import sys, pytest
        before = set(sys.modules)
        import kubeless_local.pytest_plugin
        print(sorted(name for name in set(sys.modules) - before if name.startswith("kubeless_local")))
        print(sorted(n for n in ("requests", "watchdog", "docker", "yaml", "kubernetes") if n in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['kubeless_local', 'kubeless_local.pytest_plugin']", "[]"]


def test_the_entry_point_is_declared():
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert "[project.entry-points.pytest11]\n" in text
    assert 'kubeless = "kubeless_local.pytest_plugin"' in text


def test_an_ad_hoc_function_from_a_string_in_any_runtime(pytester):
    tests = """
def test_python(kubeless_fn):
    echo = kubeless_fn("def echo(event, context):\\n    return event['data']\\n",
                       runtime="python3.11", handler="handler.echo")
    assert echo.call(data="hi").text == "hi"


def test_node(kubeless_fn):
    echo = kubeless_fn("module.exports = { echo: (event, context) => 'node ' + event.data };\\n",
                       runtime="nodejs20", handler="handler.echo")
    assert echo.call(data="hi").text == "node hi"


def test_the_logs_of_each_call_on_both_streams(kubeless_fn):
    fn = kubeless_fn("import sys\\ndef both(event, context):\\n    print('out', event['data'])\\n"
                     "    print('err', event['data'], file=sys.stderr)\\n    return 'ok'\\n",
                     handler="handler.both")
    for n in range(3):
        logs = fn.call(data={"n": n}).logs.splitlines()
        assert sorted(logs) == ["err {'n': %d}" % n, "out {'n': %d}" % n]


def test_output_left_without_a_newline(kubeless_fn):
    fn = kubeless_fn("import sys\\ndef part(event, context):\\n    sys.stdout.write('no newline ' + event['data']['n'])\\n"
                     "    sys.stdout.flush()\\n    return 'ok'\\n", handler="handler.part")
    for n in range(2):
        assert fn.call(data={"n": "n%d" % n}).logs == "no newline n%d" % n


def test_go_whose_access_log_has_its_own_format(kubeless_fn):
    fn = kubeless_fn(
        'package kubeless\\n\\nimport (\\n\\t"fmt"\\n\\t"github.com/kubeless/kubeless/pkg/functions"\\n)\\n\\n'
        'func Echo(event functions.Event, context functions.Context) (string, error) {\\n'
        '\\tfmt.Println("printed", event.Data)\\n\\treturn event.Data, nil\\n}\\n',
        runtime="go1.26", handler="handler.Echo",
    )
    for n in range(2):
        r = fn.call(data="hi%d" % n)
        assert r.text == "hi%d" % n and r.logs == "printed hi%d" % n


def test_env(kubeless_fn):
    fn = kubeless_fn("import os\\ndef env(event, context):\\n    return os.environ['GREETING']\\n",
                     handler="handler.env", env={"GREETING": "hello"})
    assert fn.call().text == "hello"
"""
    pytester.makepyfile(test_inline=tests)
    run(pytester).assert_outcomes(passed=6)


def test_the_marker_picks_the_project_and_the_ini_the_default_one(pytester):
    for folder, name in (("a", "alpha"), ("b", "beta")):
        (pytester.path / folder).mkdir()
        (pytester.path / folder / "handler.py").write_text("def %s(event, context):\n    return %r\n" % (name, name))
        (pytester.path / folder / "function.yaml").write_text(
            "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: %s\n"
            "  annotations: {local.kubeless.io/source: handler.py}\n"
            "spec: {runtime: python3.11, handler: handler.%s}\n" % (name, name)
        )
    pytester.makeini("[pytest]\nkubeless_project = a\n")
    pytester.makepyfile(
        test_projects="""
import pytest


def test_default(kubeless):
    assert kubeless.call("alpha").text == "alpha"
    assert [row["name"] for row in kubeless.functions()] == ["alpha"]


@pytest.mark.kubeless(project="b")
def test_marked(kubeless):
    assert kubeless.call("beta").text == "beta"
"""
    )
    run(pytester).assert_outcomes(passed=2)


def test_the_same_file_passes_on_process_and_docker(pytester):
    tests = (
        TESTS
        + """

def test_the_backend_is_the_parameter(kubeless, kubeless_backend):
    assert {row["backend"] for row in kubeless.functions()} == {kubeless_backend}
"""
    )
    project(pytester, tests=tests, ini="kubeless_backends = process,docker\n")
    basetemp = pytester.path.parent / (pytester.path.name + "-inner")
    result = run(pytester, "-v", "--basetemp", str(basetemp))
    result.assert_outcomes(passed=16)
    result.stdout.fnmatch_lines(["*test_hello?process? PASSED*", "*test_hello?docker? PASSED*"])
    labels = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "%s"}}' % CONTAINER_LABEL],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [label for label in labels if label.startswith(str(basetemp.resolve()))]  # every container removed


def test_docker_variants_skip_with_the_reason_where_no_engine_answers(pytester, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix://%s" % (pytester.path / "no-engine.sock"))
    project(pytester, ini="kubeless_backends = process,docker\n")
    result = run(pytester, "-k", "hello", "-rs")
    result.assert_outcomes(passed=1, skipped=1, deselected=12)
    result.stdout.fnmatch_lines(["*SKIPPED*backend docker: no Docker engine answers*"])


def test_the_backend_option_and_the_marker_choose_one_backend(pytester):
    project(
        pytester,
        tests="""
import pytest


def test_option(kubeless, kubeless_backend):
    assert kubeless_backend == "process"


@pytest.mark.kubeless(backend="docker")
def test_marked(kubeless):
    assert {row["backend"] for row in kubeless.functions()} == {"docker"}
""",
        ini="kubeless_backends = docker\n",
    )
    run(pytester, "--kubeless-backend", "process", "-v").assert_outcomes(passed=2)


SNAPSHOT_TESTS = """
def test_event(kubeless_fn, kubeless_snapshot):
    fn = kubeless_fn(
        "def event(event, context):\\n"
        "    return {'id': event['event-id'], 'time': event['event-time'], 'ns': event['event-namespace'],"
        " 'data': event['data'], 'duration_ms': 1.5}\\n",
        handler="handler.event",
    )
    kubeless_snapshot.match("event", fn.call(data={"n": %d}))
"""


def test_snapshots_are_written_then_matched_with_ids_times_and_durations_redacted(pytester):
    pytester.makepyfile(test_snap=SNAPSHOT_TESTS % 1)
    run(pytester).assert_outcomes(passed=1)
    golden = pytester.path / "__snapshots__" / "test_snap" / "event.json"
    saved = json.loads(golden.read_text())
    assert saved["status"] == 200 and saved["body"] == {
        "id": "<event-id>",
        "time": "<event-time>",
        "ns": "cli.kubeless.io",
        "data": {"n": 1},
        "duration_ms": "<duration>",
    }
    run(pytester).assert_outcomes(passed=1)  # a new event id and time: still the same snapshot
    pytester.makepyfile(test_snap=SNAPSHOT_TESTS % 2)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*snapshot event differs (--kubeless-snapshot-update rewrites it)*"])
    run(pytester, "--kubeless-snapshot-update").assert_outcomes(passed=1)
    assert json.loads(golden.read_text())["body"]["data"] == {"n": 2}
    run(pytester).assert_outcomes(passed=1)


def test_the_markers_env_reaches_the_functions_on_both_backends(pytester):
    pytester.makefile(
        ".py", handler="import os\n\ndef env(event, context):\n    return os.environ.get('GREETING', '-')\n"
    )
    pytester.makefile(
        ".yaml",
        function="apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: env\n"
        "  annotations: {local.kubeless.io/source: handler.py}\n"
        "spec: {runtime: python3.11, handler: handler.env}\n",
    )
    pytester.makeini("[pytest]\nkubeless_backends = process,docker\n")
    pytester.makepyfile(
        test_env="""
import pytest


@pytest.mark.kubeless(env={"GREETING": "hello"})
def test_marked(kubeless):
    assert kubeless.call("env").text == "hello"


def test_unmarked(kubeless):
    assert kubeless.call("env").text == "-"
"""
    )
    run(pytester).assert_outcomes(passed=4)


WHERE = """

def test_where(kubeless):
    with open(os.environ["WHERE_FILE"], "a") as f:
        f.write("%s %s %s\\n" % (os.environ["PYTEST_XDIST_WORKER"], kubeless.state_dir, kubeless.url("hello")))
"""


def test_with_xdist_each_worker_runs_its_own_session(pytester, tmp_path, monkeypatch):
    folder = project(pytester, tests=TESTS + WHERE)
    (folder / "test_more.py").write_text((TESTS + WHERE).replace("def test_", "def test_more_"))
    monkeypatch.setenv("WHERE_FILE", str(tmp_path / "where"))
    result = run(pytester, "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=16)
    rows = [line.split() for line in (tmp_path / "where").read_text().splitlines()]
    assert sorted(row[0] for row in rows) == ["gw0", "gw1"]
    assert len({row[1] for row in rows}) == 2 and len({row[2] for row in rows}) == 2  # own state folders, own ports


SHARED_TESTS = (
    """
import os


def test_hello(kubeless):
    r = kubeless.call("hello", data={"name": "x"})
    assert r.json() == {"hello": "x"} and "processing x" in r.logs
    assert r.event.headers["event-namespace"] == "cli.kubeless.io"


def test_cron(kubeless):
    assert kubeless.fire_cron("nightly").status == 200
    assert len(kubeless.next_fires("nightly", n=3)) == 3
"""
    + WHERE
)


def test_the_shared_option_starts_one_session_for_every_worker(pytester, tmp_path, monkeypatch):
    folder = project(pytester, tests=SHARED_TESTS)
    (folder / "test_more.py").write_text(SHARED_TESTS.replace("def test_", "def test_more_"))
    monkeypatch.setenv("WHERE_FILE", str(tmp_path / "where"))
    basetemp = tmp_path / "inner"
    result = run(pytester, "-n", "2", "--dist", "loadfile", "--kubeless-shared", "--basetemp", str(basetemp))
    result.assert_outcomes(passed=6)
    rows = [line.split() for line in (tmp_path / "where").read_text().splitlines()]
    assert sorted(row[0] for row in rows) == ["gw0", "gw1"]
    assert len({row[1] for row in rows}) == 1 and len({row[2] for row in rows}) == 1  # one session, one port
    assert len(list(basetemp.glob("kubeless-shared-*-state"))) == 1  # started exactly once
    assert not list(basetemp.glob("*/kubeless-*"))  # no worker started one of its own
    assert not list(basetemp.rglob("admin.json"))  # and it was stopped


CALLS_AT_ONCE = """
import os


def test_own_lines(kubeless):
    me = os.environ["PYTEST_XDIST_WORKER"]
    for i in range(4):
        r = kubeless.call("hello", data={"name": "%s-%d" % (me, i), "pause": 0.4})
        assert r.logs == "processing %s-%d" % (me, i)
"""


def test_workers_calling_one_function_at_once_each_get_their_own_lines(pytester):
    # A call took the lines from its start to the first access line: with another worker's call to the same
    # function in flight, those mixed both calls' lines (CI: "processing x" missing, 1 run in ~20).
    pausing = "import time\n" + HANDLER.replace("    return {", "    time.sleep(data.get('pause', 0))\n    return {")
    folder = project(pytester, tests=CALLS_AT_ONCE, handler=pausing)
    (folder / "test_more.py").write_text(CALLS_AT_ONCE.replace("def test_", "def test_more_"))
    run(pytester, "-n", "2", "--dist", "loadfile", "--kubeless-shared").assert_outcomes(passed=2)


def test_deliveries_from_a_real_kafka_broker_are_observed_too(pytester, kafka_broker):
    """A project whose settings name a broker: its KafkaTriggers run on it, through the same taps."""
    tests = """
def test_flow(kubeless):
    with kubeless.deliveries("ship", count=1, timeout=60) as got:
        kubeless.emit("orders", {"id": 7})
    assert got[0].request.headers["event-topic"] == "orders" and got[0].request.json() == {"id": 7}
    assert kubeless.emit("orders", {"id": 8})["broker"]  # produced to the broker, not stored here
"""
    folder = project(pytester, tests=tests)
    (folder / ".kubeless-local.yaml").write_text("kafka:\n  brokers: %s\n" % kafka_broker.address)
    run(pytester).assert_outcomes(passed=1)


def test_the_packages_version_is_the_installed_one():
    """Written once, in kubeless_local/__init__.py; the build takes it from there (pyproject.toml)."""
    import kubeless_local

    assert kubeless_local.__version__ == version("kubeless-local") and kubeless_local.__version__[0].isdigit()

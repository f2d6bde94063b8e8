"""CronJobTriggers: the schedule driven by an injected clock (no waiting for minutes), the envelope
against its golden file, deadline, concurrency Allow, history 3/1, bad expressions, the admin API."""

import dataclasses
import datetime
import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import Looks, function
from waiting import wait_until

from kubeless_local.client import SessionClient
from kubeless_local.emulator.admin import AdminServer
from kubeless_local.emulator.base import State
from kubeless_local.emulator.triggers.cron import Cron, check, payload_body, schedule_error
from kubeless_local.errors import UserError
from kubeless_local.schedules import parse as parse_schedule
from kubeless_local.spec import CronJobTrigger, Manifests

GOLDEN = json.loads((Path(__file__).parent / "golden" / "cron.json").read_text())
UTC = datetime.timezone.utc


def at(hour, minute, second=0, day=1):
    return datetime.datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Recorder:
    """The injected HTTP sender: records each request, answers `status` (or raises `error`)."""

    def __init__(self, status=200):
        self.status, self.error = status, None
        self.requests = []
        self.gate = None  # an Event: requests wait for it (concurrency tests)
        self.lock = threading.Lock()

    def __call__(self, method, url, headers, body, timeout):
        with self.lock:
            self.requests.append({"method": method, "url": url, "headers": headers, "body": body, "timeout": timeout})
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.status


def trigger(name="nightly", schedule="*/5 * * * *", fn="hello", payload=None):
    return CronJobTrigger(
        name=name,
        function_name=fn,
        schedule=schedule,
        origin="triggers.yaml: CronJobTrigger %s" % name,
        payload=payload,
    )


@pytest.fixture
def setup(supervisor):
    """(cron, manifests, clock, sender) around a supervisor serving `hello` (fake backend)."""
    supervisor.start(function())
    manifests = Manifests(functions=[function()], cron_triggers=[trigger()])
    clock, sender = Clock(at(0, 1)), Recorder()
    cron = Cron(lambda: manifests, supervisor, supervisor.logs, clock=clock, send=sender)
    yield cron, manifests, clock, sender
    cron.stop()


def tick(cron):
    threads = cron.tick()
    for thread in threads:
        thread.join(10)
    return len(threads)


def test_fires_when_the_schedule_says_and_only_then(setup):
    cron, _, clock, sender = setup
    assert tick(cron) == 0  # 00:01: the next run is 00:05
    for now, fired in [(at(0, 4, 59), 0), (at(0, 5), 1), (at(0, 5, 30), 0), (at(0, 9, 59), 0), (at(0, 10), 1)]:
        clock.now = now
        assert tick(cron) == fired, now
    assert len(sender.requests) == 2
    runs = cron.for_function("hello")[0]["succeeded"]
    assert [r["scheduled"] for r in runs] == ["2026-01-01T00:10:00Z", "2026-01-01T00:05:00Z"]  # newest first
    assert cron.status()[0]["next"] == "2026-01-01T00:15:00Z"


def test_missed_runs_fire_once_for_the_latest(setup):
    """The machine slept from 00:01 to 01:02: one run, for 01:00, as the CronJob controller starts only the last."""
    cron, _, clock, sender = setup
    tick(cron)
    clock.now = at(1, 2)
    assert tick(cron) == 1
    assert cron.status()[0]["succeeded"][0]["scheduled"] == "2026-01-01T01:00:00Z"
    assert tick(cron) == 0 and len(sender.requests) == 1


def test_an_edited_schedule_counts_from_the_edit_and_a_removed_trigger_stops(setup):
    cron, manifests, clock, sender = setup
    tick(cron)
    manifests.cron_triggers[:] = [trigger(schedule="0 3 * * *")]
    clock.now = at(0, 5)
    assert tick(cron) == 0  # the old */5 no longer applies
    assert cron.status()[0]["next"] == "2026-01-01T03:00:00Z"
    manifests.cron_triggers[:] = []
    clock.now = at(3, 0)
    assert tick(cron) == 0 and cron.status() == [] and not sender.requests


@pytest.mark.parametrize("case", ["with payload", "without payload"])
def test_the_request_is_the_cronjobs_curl(setup, case):  # vector 19, golden file
    cron, manifests, clock, sender = setup
    golden = GOLDEN[case]
    manifests.cron_triggers[:] = [trigger(payload=golden["payload"])]
    clock.now = datetime.datetime(2021, 1, 29, 11, 18, 3, 123456, tzinfo=UTC)
    run = cron.fire("nightly")
    assert run.ok and run.manual and run.scheduled is None
    sent = sender.requests[0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sent["headers"]["event-id"])
    assert run.event_id == sent["headers"]["event-id"]
    assert sent["method"] == golden["method"]
    assert {**sent["headers"], "event-id": "<uuid>"} == golden["headers"]
    assert sent["body"].decode() == golden["body"]
    assert sent["url"] == cron.supervisor.instances["hello"].url


def test_payload_is_written_as_go_json_marshal_writes_it():
    assert payload_body(None) is None
    assert payload_body("text") == '"text"'  # a string payload is a JSON string, as curl -d receives it
    assert payload_body([1.0, 1.5, {"b": True, "a": None}]) == '[1,1.5,{"a":null,"b":true}]'
    assert payload_body({"k": "é\u2028"}) == '{"k":"é\\u2028"}'


def test_the_deadline_is_the_functions_timeout(supervisor):
    supervisor.start(dataclasses.replace(function(), timeout="7"))
    sender = Recorder()
    sender.error = requests.Timeout()
    cron = Cron(lambda: Manifests(cron_triggers=[trigger()]), supervisor, supervisor.logs, send=sender)
    run = cron.fire("nightly")
    assert 6 < sender.requests[0]["timeout"] <= 7
    assert not run.ok and run.status is None and "timeout of 7s" in run.error
    assert cron.status()[0]["failed"][0]["error"] == run.error


def test_history_keeps_the_last_three_successful_and_one_failed_run(setup, supervisor):
    cron, _, _, sender = setup
    statuses = [200, 500, 201, 204, 200, 404, 200]
    for status in statuses:
        sender.status = status
        cron.fire("nightly")
    row = cron.for_function("hello")[0]
    assert [r["status"] for r in row["succeeded"]] == [200, 200, 204]
    assert [(r["status"], r["ok"]) for r in row["failed"]] == [(404, False)]
    logged = [line.text for line in supervisor.logs.tail("hello") if line.text.startswith("cron nightly")]
    assert len(logged) == len(statuses)
    assert logged[0].startswith("cron nightly: GET → 200 in ") and logged[-2].endswith(": a failed run")


def test_concurrency_allow_runs_overlap(setup):
    cron, _, clock, sender = setup
    sender.gate = threading.Event()
    tick(cron)
    clock.now = at(0, 5)
    first = cron.tick()
    clock.now = at(0, 10)
    second = cron.tick()
    wait_until(lambda: len(sender.requests) >= 2, "both runs sending", timeout=10, interval=0.01)
    assert len(sender.requests) == 2 and cron.status()[0]["active"] == 2  # the second did not wait for the first
    sender.gate.set()
    for thread in first + second:
        thread.join(10)
    assert cron.status()[0]["active"] == 0 and len(cron.status()[0]["succeeded"]) == 2


def test_a_function_that_is_not_ready_is_waited_for_until_it_is(setup, supervisor):
    cron, _, _, sender = setup
    instance = supervisor.instances["hello"]
    instance.set_state(State.STARTING)
    looks = Looks().watch(supervisor)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run=cron.fire("nightly")))
    thread.start()
    looks.wait("hello")  # the run asks whether hello serves
    assert thread.is_alive() and not sender.requests  # held while Starting
    instance.set_state(State.READY)
    thread.join(10)
    assert result["run"].ok and len(sender.requests) == 1


def test_a_function_in_config_error_fails_the_run_at_once(setup, supervisor):
    cron, _, _, sender = setup
    supervisor.instances["hello"].set_state(State.CONFIG_ERROR, "port 80 is in use")
    run = cron.fire("nightly")
    assert not run.ok and run.error == "function hello is ConfigError: port 80 is in use" and not sender.requests


def test_a_trigger_naming_no_function_fails_its_run(setup):
    cron, manifests, _, sender = setup
    manifests.cron_triggers[:] = [trigger(fn="nothing")]
    run = cron.fire("nightly")
    assert not run.ok and "spec.function-name 'nothing' names no Function" in run.error and not sender.requests


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("61 * * * *", "end of range (61) above maximum (59): 61"),
        ("* * * *", "expected exactly 5 fields, found 4"),
        ("0 0 * * 7", "end of range (7) above maximum (6): 7"),  # robfig/cron: Sunday is 0 only
        ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("*/0 * * * *", "step of range should be a positive number"),
        ("1-2-3 * * * *", "too many hyphens"),
        ("1/2/3 * * * *", "too many slashes"),
        ("a b c d e", "failed to parse int from a"),
        ("0 0 L * *", "failed to parse int from L"),
        ("@every", "unrecognized descriptor: @every"),
        ("@every 5", "failed to parse duration @every 5"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
        ("TZ=UTC 0 * * * *", "expected exactly 5 fields, found 6"),
        ("", "empty spec string"),
    ],
)
def test_a_bad_expression_is_one_line_naming_file_and_field(schedule, expected):
    """What Kubeless' cron library (robfig/cron ParseStandard) rejects, with its reason."""
    error = schedule_error(trigger(schedule=schedule))
    assert error is not None and error.startswith(
        "triggers.yaml: CronJobTrigger nightly: spec.schedule: schedule %r " % schedule
    )
    assert expected in error and "\n" not in error
    with pytest.raises(UserError, match=re.escape(error)):
        check(trigger(schedule=schedule))


@pytest.mark.parametrize(
    "schedule",
    [
        "*/5 * * * *",
        "0 3 * * MON",
        "0 0 ? * mon-fri",
        "5/15 * * * *",
        "0 0 * * 0",
        "0 0 31 2 *",  # accepted, never fires
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@every 5m",
        "@every 1h30m",
        "@every 1.5s",
    ],
)
def test_what_kubeless_accepts_is_accepted_and_fires(schedule):
    assert schedule_error(trigger(schedule=schedule)) is None
    parse_schedule(schedule)  # what the check accepts, the scheduler can fire


UTC_AT = datetime.datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("@every 5m", UTC_AT, UTC_AT + datetime.timedelta(minutes=5)),  # from now, to the second
        ("@every 500ms", UTC_AT, UTC_AT + datetime.timedelta(seconds=1)),  # at least a second
        ("@hourly", UTC_AT, datetime.datetime(2026, 1, 1, 11, 0, tzinfo=UTC)),
        ("0 0 * * 0", UTC_AT, datetime.datetime(2026, 1, 4, 0, 0, tzinfo=UTC)),  # Sunday
        ("0 0 1 * 1", UTC_AT, datetime.datetime(2026, 1, 5, 0, 0, tzinfo=UTC)),  # the 1st OR a Monday
        ("0 0 * 2 *", UTC_AT, datetime.datetime(2026, 2, 1, 0, 0, tzinfo=UTC)),
        ("30 9 29 2 *", UTC_AT, datetime.datetime(2028, 2, 29, 9, 30, tzinfo=UTC)),  # a leap day
        ("0 0 31 2 *", UTC_AT, None),  # never
    ],
)
def test_next_time_as_robfig_cron_computes_it(schedule, after, expected):
    assert parse_schedule(schedule).next(after) == expected


def test_under_dev_a_bad_expression_is_reported_once_and_the_others_fire(setup, supervisor):
    cron, manifests, clock, sender = setup
    manifests.cron_triggers[:] = [trigger(), trigger(name="broken", schedule="61 * * * *", fn="other")]
    for now in (at(0, 1), at(0, 5), at(0, 6)):
        clock.now = now
        tick(cron)
    said = [line.text for line in supervisor.logs.tail("broken")]
    assert len(said) == 1 and "spec.schedule: schedule '61 * * * *' is not valid" in said[0]
    assert len(sender.requests) == 1
    broken = next(row for row in cron.status() if row["name"] == "broken")
    assert broken["next"] is None and "is not valid" in broken["error"]
    with pytest.raises(UserError, match="spec.schedule: schedule '61"):
        cron.fire("broken")


def test_unknown_trigger(setup):
    cron, _, _, _ = setup
    with pytest.raises(UserError, match=r"no CronJobTrigger 'other' in this project \(CronJobTriggers: nightly\)"):
        cron.fire("other")


def test_the_admin_api_fires_and_lists_runs(setup, supervisor, tmp_path):
    cron, _, _, sender = setup
    admin = AdminServer(supervisor, supervisor.state_dir, tmp_path)
    admin.cron = cron
    admin.start()
    try:
        client = SessionClient(supervisor.state_dir)
        run = client.fire_cron("nightly")
        assert run["ok"] and run["status"] == 200 and run["manual"] and len(sender.requests) == 1
        (row,) = client.functions()
        assert row["cron"][0]["name"] == "nightly" and row["cron"][0]["succeeded"][0]["event_id"] == run["event_id"]
        assert client.cron_triggers()[0]["schedule"] == "*/5 * * * *"
        with pytest.raises(UserError, match="no CronJobTrigger 'x/y'"):
            client.fire_cron("x/y")
        client.headers = {"Authorization": "Bearer wrong"}
        with pytest.raises(UserError, match="needs the token"):
            client.fire_cron("nightly")
        assert len(sender.requests) == 1
    finally:
        admin.stop()


def test_the_scheduler_thread_fires_in_real_time(setup):
    """The loop itself, on a clock that runs in real time from 0.15 s before a scheduled minute."""
    cron, _, _, sender = setup
    started, offset = time.monotonic(), at(0, 4, 59) + datetime.timedelta(seconds=0.85)
    cron.clock = lambda: offset + datetime.timedelta(seconds=time.monotonic() - started)
    cron.start()
    wait_until(lambda: cron.status()[0]["succeeded"], "the scheduled run", timeout=10, interval=0.02)
    cron.stop()
    assert not cron.thread.is_alive()
    (run,) = cron.status()[0]["succeeded"]
    assert run["scheduled"] == "2026-01-01T00:05:00Z" and len(sender.requests) == 1


def test_each_finished_run_is_told_to_on_run(supervisor):
    supervisor.start(function())
    runs = []
    cron = Cron(
        lambda: Manifests(functions=[function()], cron_triggers=[trigger()]),
        supervisor,
        supervisor.logs,
        send=Recorder(),
        on_run=runs.append,
    )
    try:
        run = cron.fire("nightly")
    finally:
        cron.stop()
    assert runs == [run] and run.ok

"""CronJobTriggers under `dev`: each one fires in real time, as the Kubeless cronjob-trigger's CronJob would.

The controller turns a trigger into a Kubernetes CronJob whose pod runs `curl -Lv` to the function
(contract §6): GET without `payload`, POST with the payload as JSON (Go's json.Marshal), the cron
envelope of events.py, `activeDeadlineSeconds` = the function's timeout, concurrency policy Allow (a
run never waits for the previous one), a history of 3 successful and 1 failed jobs. Here:

- schedules are what Kubeless accepts (robfig/cron's ParseStandard: 5 fields, `@hourly` and the other
  descriptors, `@every 5m`), evaluated as that library does, in UTC, the time zone of a cluster's
  controller manager; runs missed while the machine slept fire once on waking (the CronJob controller
  starts only the latest missed run); the time `dev` was not running is not caught up;
- a function that is not Ready (installing, reloading, restarting) is waited for until the deadline,
  as the Job's pod would be retried until its deadline;
- a non-2xx answer is a failed run (curl without -f would call the job a success; the failure is what
  someone watching their function wants to see).

The clock and the HTTP sender are injectable: tests drive `tick()` with a clock they set.
"""

import collections
import datetime
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional

from kubeless_local import events, schedules
from kubeless_local import spec as specs
from kubeless_local.emulator.base import State
from kubeless_local.emulator.recorder import marked
from kubeless_local.emulator.triggers import delivery
from kubeless_local.errors import NotFound, UserError

HISTORY = {"succeeded": 3, "failed": 1}  # the CronJob's successfulJobsHistoryLimit / failedJobsHistoryLimit
MAX_SLEEP = 1.0  # the loop looks at the manifests at least this often, so an edited schedule applies at once
GO_ESCAPED = "<>&\u2028\u2029"  # json.Marshal writes these as \\u escapes (HTML-safe JSON)
GIVE_UP = (State.CONFIG_ERROR, State.STOPPED)  # states only an edit ends: no point waiting for the deadline


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def schedule_error(trigger) -> Optional[str]:
    """None when the trigger's schedule is one Kubeless accepts (spec.validate_schedule, the one check of
    every place that takes a schedule), else the one-line error."""
    try:
        check(trigger)
    except UserError as exc:
        return str(exc)
    return None


def check(trigger):
    """UserError (one line naming the file and field) when the trigger's schedule is invalid."""
    specs.validate_schedule("%s: spec.schedule" % trigger.origin, trigger.schedule)


def next_time(schedule, after):
    """The first time after `after` the schedule fires; None when it never does."""
    return schedules.parse(schedule).next(after)


def latest_due(schedule, due, now):
    """The latest time at or before `now` the schedule fired, `due` being the first one missed (one run
    for all the runs missed before it, as the CronJob controller starts only the latest)."""
    parsed = schedules.parse(schedule)
    latest = due
    for _ in range(1_000_000):  # a year of minutes and more: bounded however long the machine slept
        following = parsed.next(latest)
        if following is None or following > now:
            break
        latest = following
    return latest


def _go_numbers(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # Go writes float64(1) as 1
    if isinstance(value, dict):
        return {str(k): _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


def payload_body(payload) -> Optional[str]:
    """The body curl sends: the payload as Go's json.Marshal writes it (compact, keys sorted, <>& escaped);
    None (a GET) without one."""
    if payload is None:
        return None
    text = json.dumps(_go_numbers(payload), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char in GO_ESCAPED:
        text = text.replace(char, "\\u%04x" % ord(char))
    return text


def http_send(method, url, headers, body, timeout):
    """One request as the CronJob's curl makes it (following redirects); returns the HTTP status. The
    headers are curl's (the envelope's User-Agent and Accept): requests' own extras are left out."""
    import requests  # ~50 ms to import, at the first run rather than at every `dev`/`run` start

    only_curls = {**headers, "Accept-Encoding": None, "Connection": None}
    return requests.request(method, url + "/", headers=only_curls, data=body, timeout=timeout).status_code


def rfc3339(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Run:
    """One firing of a trigger: what `ls -o json` shows under the function's `cron`."""

    trigger: str
    function: str
    started: str  # RFC 3339, UTC
    scheduled: Optional[str]  # the schedule time it stands for; None when fired by `emit cron`
    manual: bool
    method: str
    event_id: str
    status: Optional[int] = None  # the function's HTTP status; None when it never answered
    error: str = ""
    duration_ms: Optional[float] = None

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300


class Cron:
    """Fires the CronJobTriggers of `manifests()` (a callable: the project's manifests, reloaded on save)
    at the functions the `supervisor` runs; every run is logged under its function's name."""

    def __init__(self, manifests, supervisor, logs, *, clock=utcnow, send=http_send, on_run=None) -> None:
        self.manifests, self.supervisor, self.logs = manifests, supervisor, logs
        self.clock, self.send = clock, send
        self.on_run = on_run  # told each finished Run (the session's event bus)
        self.next: dict = {}  # trigger name → (schedule, the next time it fires)
        self.history: dict = collections.defaultdict(
            lambda: {kind: collections.deque(maxlen=n) for kind, n in HISTORY.items()}
        )
        self.active: collections.Counter = collections.Counter()  # runs in flight per trigger (Allow: any number)
        self.reported: dict = {}  # trigger name → the error last reported, so each is said once
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def triggers(self):
        return {trigger.name: trigger for trigger in self.manifests().cron_triggers}

    # ------------------------------------------------------------ schedule

    def tick(self):
        """Start a run (each in its own thread) for every trigger due at `clock()`; returns the threads."""
        now = self.clock()
        triggers = self.triggers()
        due = []
        with self.lock:
            for name in set(self.next) - set(triggers):
                del self.next[name]  # removed from the manifests
            for name, trigger in triggers.items():
                error = schedule_error(trigger)
                if error:
                    self.next.pop(name, None)
                    self._report(name, error)
                    continue
                self.reported.pop(name, None)
                known = self.next.get(name)
                if known is None or known[0] != trigger.schedule:  # new or edited: from now on
                    self.next[name] = (trigger.schedule, next_time(trigger.schedule, now))
                elif known[1] is not None and now >= known[1]:
                    due.append((trigger, latest_due(trigger.schedule, known[1], now)))
                    self.next[name] = (trigger.schedule, next_time(trigger.schedule, now))
        threads = []
        for trigger, scheduled in due:
            thread = threading.Thread(target=self.run, args=(trigger, scheduled), name="cron " + trigger.name)
            thread.daemon = True
            thread.start()
            threads.append(thread)
        return threads

    def _report(self, name, error):
        if self.reported.get(name) != error:
            self.reported[name] = error
            self.logs.emit(name, "%s (the trigger does not fire; the functions keep running)" % error, "system")

    def seconds_to_next(self):
        with self.lock:
            times = [when for _, when in self.next.values() if when is not None]
        if not times:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, (min(times) - self.clock()).total_seconds()))

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="cron", daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end every trigger of the session
                self.logs.emit("dev", "cron scheduler error: %r" % exc, "system")
            self.stopping.wait(max(self.seconds_to_next(), 0.01))

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    # ------------------------------------------------------------ runs

    def fire(self, name):
        """`emit cron NAME`: one run now, waited for; UserError for an unknown or invalid trigger."""
        trigger = self.triggers().get(name)
        if trigger is None:
            known = ", ".join(sorted(self.triggers())) or "none"
            raise NotFound(
                "no CronJobTrigger %r in this project (CronJobTriggers: %s)" % (name, known), "CronJobTrigger", name
            )
        check(trigger)
        return self.run(trigger, None)

    def run(self, trigger, scheduled):
        """Send the cron event to the trigger's function, record and log the outcome; returns the Run."""
        started = self.clock()
        method, headers, body = events.envelope("cron", payload_body(trigger.payload), now=started)
        run = Run(
            trigger=trigger.name,
            function=trigger.function_name,
            started=rfc3339(started),
            scheduled=None if scheduled is None else rfc3339(scheduled),
            manual=scheduled is None,
            method=method,
            event_id=headers["event-id"],
        )
        with self.lock:
            self.active[trigger.name] += 1
        began = time.monotonic()
        try:
            run.status, run.error = self._deliver(trigger.function_name, method, headers, body, trigger.name)
        finally:
            run.duration_ms = round((time.monotonic() - began) * 1000, 1)
            with self.lock:
                self.active[trigger.name] -= 1
                self.history[trigger.name]["succeeded" if run.ok else "failed"].appendleft(run)
        self._log(run)
        if self.on_run is not None:
            self.on_run(run)
        return run

    def _deliver(self, function, method, headers, body, trigger=None):
        """(status, error): the function's answer within its timeout (the Job's activeDeadlineSeconds)."""
        spec = self.supervisor.specs.get(function)
        if spec is None:
            return None, "spec.function-name %r names no Function in this project" % function
        limit = float(spec.timeout)
        deadline = time.monotonic() + limit

        def send(instance, _spec):
            import requests  # its errors (see http_send)

            sent = {**headers, **marked(instance, "cron", trigger)}  # who sends, for the recorder

            def answer():
                return self.send(method, instance.url, sent, body, deadline - time.monotonic()), ""

            try:
                status, _ = self.supervisor.taps.exchange(function, "cron", method, instance.url, headers, body, answer)
                return status
            except requests.Timeout:
                return None
            except requests.ConnectionError:
                raise delivery.NotAnswering("nothing took the request") from None  # restarting: sent again

        try:  # installing, starting, reloading, crashed: waited for until the deadline
            status = delivery.send_when_ready(self.supervisor, function, send, self.stopping, deadline, self._hopeless)
        except delivery.NotServing as exc:
            return None, str(exc)
        if status is not None:
            return status, ""
        if self.stopping.is_set():
            return None, "dev stopped before the function answered"
        instance = self.supervisor.instances.get(function)
        return None, "no answer within the function's timeout of %gs (the job's deadline; function %s)" % (
            limit,
            instance.state.value if instance is not None else "unknown",
        )

    def _hopeless(self, function):
        """Why waiting for `function` until the deadline is pointless (it was removed, or only an edit ends
        its state), else None."""
        instance = self.supervisor.instances.get(function)
        if instance is None:
            return "function %s was removed" % function
        if instance.state in GIVE_UP and not instance.serves:
            return "function %s is %s: %s" % (function, instance.state.value, (instance.error or "-").splitlines()[0])
        return None

    def _log(self, run):
        if run.ok:
            text = "cron %s: %s → %d in %.0f ms" % (run.trigger, run.method, run.status, run.duration_ms)
        elif run.status is not None:
            text = "cron %s: %s → %d in %.0f ms: a failed run" % (run.trigger, run.method, run.status, run.duration_ms)
        else:
            text = "cron %s: %s failed: %s" % (run.trigger, run.method, run.error)
        known = run.function in self.supervisor.instances
        self.logs.emit(run.function if known else run.trigger, text, "system")

    # ------------------------------------------------------------ status

    def status(self):
        """One entry per trigger: schedule, next time, error, runs in flight, the last runs (newest first)."""
        triggers = self.triggers()
        with self.lock:
            rows = []
            for name, trigger in sorted(triggers.items()):
                known = self.next.get(name)
                history = self.history.get(name) or dict.fromkeys(HISTORY, ())
                rows.append(
                    {
                        "name": name,
                        "function": trigger.function_name,
                        "schedule": trigger.schedule,
                        "payload": trigger.payload,
                        "next": rfc3339(known[1]) if known and known[0] == trigger.schedule and known[1] else None,
                        "error": schedule_error(trigger) or "",
                        "active": self.active[name],
                        **{kind: [run_row(run) for run in history[kind]] for kind in HISTORY},
                    }
                )
        return rows

    def for_function(self, function):
        """The triggers that fire `function` (its `cron` entry in `ls -o json`)."""
        return [row for row in self.status() if row["function"] == function]


def run_row(run):
    """A Run as JSON-ready data."""
    return {**asdict(run), "ok": run.ok}

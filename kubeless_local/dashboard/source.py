"""What the dashboard shows and does, read from a running session: the dashboard's one seam to the engine.

`Source` is the interface the server and the Feed use (and nothing else of the engine); `SessionSource`
answers it from a DevSession in the same process: the supervisor's instances, the log hub, the project's
manifests, and the admin API's own route handlers for every action (emit, fire, replay), so an action
from the page is checked and answered exactly as the same action from the CLI. Rows are plain JSON data.
"""

from __future__ import annotations

import abc
import math
import queue
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeless_local.dashboard import saved_test
from kubeless_local.emulator import admin as routes
from kubeless_local.emulator.triggers.cron import next_time, rfc3339, utcnow
from kubeless_local.emulator.triggers.subscriptions import selects
from kubeless_local.errors import Conflict, Failed, NotFound, UserError

if TYPE_CHECKING:
    from kubeless_local.emulator.session import DevSession

NEXT_FIRES = 5
# a matchExpression as kubectl writes it in a selector
SELECTOR_FORMS = {
    "In": "{key} in ({values})",
    "NotIn": "{key} notin ({values})",
    "Exists": "{key}",
    "DoesNotExist": "!{key}",
}
ERROR_LOG_LINES = 20  # the last lines shown beside a CompileError
MAX_CALL_BODY = 256 * 1024  # of a function's answer to a call from the page, shown as text
TESTS_FOLDER = "tests"  # in the project's folder: where a call saved as a pytest test goes
STORED_WITHIN = 5.0  # seconds a call the page has seen end may take to be stored
# "File "/…/handler.py", line 3" (Python), "handler.js:3" (Node, Go, Ruby, PHP): where a load error points
TRACE_LOCATION = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)|(?P<path>[\w./-]+\.\w+):(?P<num>\d+)')


def error_location(error: str) -> str | None:
    """`file:line` of the last place a load error names (the file's name only: the user's own file)."""
    found = None
    for match in TRACE_LOCATION.finditer(error or ""):
        path, line = (match["file"], match["line"]) if match["file"] else (match["path"], match["num"])
        found = "%s:%s" % (Path(path).name, line)
    return found


class Source(abc.ABC):
    """The dashboard's view of one session. Reads return JSON-ready rows keyed by `name`; actions return
    the engine's answer or raise its UserError (the server answers its status)."""

    @abc.abstractmethod
    def states(self) -> list[dict[str, Any]]:
        """One row per function: name, state, runtime, backend, generation, url, triggers, error, location…"""

    @abc.abstractmethod
    def logs(self, name: str | None, tail: int) -> list[dict[str, Any]]:
        """The last `tail` lines of one function, or of all (merged by time) when `name` is None."""

    @abc.abstractmethod
    def subscribe_logs(self) -> queue.Queue:
        """A queue receiving every new log line as a row (function, text, stream, time)."""

    @abc.abstractmethod
    def unsubscribe_logs(self, subscription: queue.Queue) -> None: ...

    @abc.abstractmethod
    def cron(self) -> list[dict[str, Any]]:
        """One row per CronJobTrigger: schedule, the next NEXT_FIRES times, last runs."""

    @abc.abstractmethod
    def topics(self) -> list[dict[str, Any]]:
        """One row per topic: subscribers with position and lag, dead letters ([] without embedded topics)."""

    @abc.abstractmethod
    def emit(self, topic: str, body: dict[str, Any]) -> Any: ...

    @abc.abstractmethod
    def outcome(self, topic: str, source: str, first: int, last: int) -> Any: ...

    @abc.abstractmethod
    def fire_cron(self, trigger: str) -> Any: ...

    @abc.abstractmethod
    def replay(self, topic: str, trigger: str | None, letter_id: int | None) -> Any: ...

    @abc.abstractmethod
    def call(self, name: str, method: str, path: str, data: str, headers: dict[str, str]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def graph(self) -> list[dict[str, Any]]:
        """One row per trigger: its kind (http, cron, kafka, nats), what fires it (`from`: host and path, schedule,
        topic), its selector, the functions it calls (`missing`: those it names that do not exist) and the calls
        of it the recorder keeps."""

    @abc.abstractmethod
    def metrics(self) -> list[dict[str, Any]]:
        """One row per function: calls and errors as its runtime server counts them (/metrics, as `ls` shows
        them; None: not known), and p50/p95 duration (ms) of the calls the recorder kept (None: none kept)."""

    @abc.abstractmethod
    def invocations(
        self, function: str | None, outcome: str | None, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """Recorded invocations' summaries, newest first (the recorder's `list`); [] when none are recorded."""

    @abc.abstractmethod
    def invocation(self, ident: str) -> dict[str, Any]:
        """One recorded invocation whole, its secret headers REDACTED (the recorder's `export`)."""

    @abc.abstractmethod
    def replay_invocation(self, ident: str, request: dict[str, Any] | None) -> dict[str, Any]:
        """Send invocation `ident` again, as recorded or `request` (an edited export): {original, replay, diff}."""

    @abc.abstractmethod
    def save_test(self, ident: str) -> dict[str, Any]:
        """Write invocation `ident` as a pytest test (saved_test.py) into the project's tests/ folder, never over
        a file: {path, source}; Conflict when the file exists."""


def selector_text(trigger: Any) -> str:
    """A functionSelector as kubectl writes one: `app=shop,tier in (web,api)`."""
    labels = ["%s=%s" % pair for pair in sorted(trigger.selector.items())]
    expressions = [
        SELECTOR_FORMS.get(e["operator"], "{key} {operator} ({values})").format(
            key=e["key"], operator=e["operator"], values=",".join(e.get("values") or [])
        )
        for e in trigger.expressions
    ]
    return ",".join(labels + expressions)


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` of 1) of `values`; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def metrics_row(status: dict[str, Any], durations: list[float]) -> dict[str, Any]:
    """A function's metrics: its `ls` row's counts and the percentiles of its recorded durations (ms)."""
    calls, errors = status.get("calls"), status.get("errors")
    return {
        "name": status["name"],
        "calls": calls,
        "errors": errors,
        "error_rate": round(100.0 * errors / calls, 1) if calls and errors is not None else None,
        "recorded": len(durations),
        "p50_ms": percentile(durations, 0.50),
        "p95_ms": percentile(durations, 0.95),
    }


def _laid_out(prepared: Any) -> float | None:
    """When the generation that serves was written (its reload began then)."""
    try:
        return prepared.code_dir.stat().st_mtime
    except OSError:
        return None  # pruned meanwhile


def _log_row(line: Any) -> dict[str, Any]:
    return {"function": line.function, "text": line.text, "stream": line.stream, "time": line.time}


class SessionSource(Source):
    def __init__(self, session: DevSession) -> None:
        self.session = session

    @property
    def _admin(self) -> routes.AdminServer:
        assert self.session.admin is not None, "the session is started before its dashboard"
        return self.session.admin

    def _route(self, handler: routes.Handler, params: dict[str, str], body: Any = None, query=None) -> Any:
        return handler(self._admin, routes.Call(params, query or {}, body or {}))

    def states(self) -> list[dict[str, Any]]:
        supervisor = self.session.supervisor
        if supervisor is None:
            return []
        with supervisor.lock:
            instances = sorted(supervisor.instances.items())
            serving = dict(supervisor.serving)
        manifests = self.session.project.manifests if self.session.project is not None else None
        rows = []
        for name, instance in instances:
            prepared = serving.get(name)
            generation = prepared.generation if prepared is not None else None
            state = instance.state.value
            rows.append(
                {
                    "name": name,
                    "state": state,
                    "runtime": instance.runtime,
                    "backend": supervisor.backend.name,
                    "generation": generation,
                    "reloads": instance.reloads,
                    "restarts": instance.restarts,
                    "last_reload": _laid_out(prepared) if instance.reloads else None,
                    "url": instance.url,
                    "error": instance.error,
                    "location": error_location(instance.error) if instance.error else None,
                    "triggers": self._triggers(name, manifests),
                }
            )
        return rows

    @staticmethod
    def _triggers(name: str, manifests: Any) -> list[str]:
        if manifests is None:
            return []
        function = manifests.function(name)
        found = ["http %s" % (t.path or "/") for t in manifests.http_triggers if t.function_name == name]
        found += ["cron %s (%s)" % (t.name, t.schedule) for t in manifests.cron_triggers if t.function_name == name]
        for trigger in [*manifests.kafka_triggers, *manifests.nats_triggers]:
            if function is not None and selects(trigger, function):
                found.append("%s %s" % (trigger.source, trigger.topic))
        return found

    def logs(self, name: str | None, tail: int) -> list[dict[str, Any]]:
        hub = self.session.logs
        if name is not None:
            if self.session.supervisor is None or name not in self.session.supervisor.instances:
                raise NotFound("no function %r" % name, "function", name)
            return [_log_row(line) for line in hub.tail(name, tail)]
        with hub.lock:
            names = list(hub.lines)
        merged = sorted((line for n in names for line in hub.tail(n, tail)), key=lambda line: line.time)
        return [_log_row(line) for line in merged[-tail:]]

    def subscribe_logs(self) -> queue.Queue:
        hub_queue = self.session.logs.subscribe()
        rows: queue.Queue = _Rows(hub_queue)
        return rows

    def unsubscribe_logs(self, subscription: queue.Queue) -> None:
        if isinstance(subscription, _Rows):
            self.session.logs.unsubscribe(subscription.hub_queue)

    def cron(self) -> list[dict[str, Any]]:
        if self.session.cron is None:
            return []
        now, rows = utcnow(), []
        for row in self.session.cron.status():
            fires: list[str] = []
            after = now
            while not row["error"] and len(fires) < NEXT_FIRES:
                after = next_time(row["schedule"], after)
                if after is None:
                    break
                fires.append(rfc3339(after))
            rows.append({**row, "next_fires": fires})
        return rows

    def topics(self) -> list[dict[str, Any]]:
        if self._admin.topics is None:
            return []
        try:
            return self._route(routes.list_topics, {})
        except UserError:
            return []  # a broker that does not answer now: nothing to show until it does

    def emit(self, topic: str, body: dict[str, Any]) -> Any:
        return self._route(routes.emit, {"topic": topic}, body)

    def outcome(self, topic: str, source: str, first: int, last: int) -> Any:
        query = {"from": [str(first)], "to": [str(last)], "source": [source]}
        return self._route(routes.emit_outcome, {"topic": topic}, query=query)

    def fire_cron(self, trigger: str) -> Any:
        return self._route(routes.fire_cron, {"name": trigger})

    def replay(self, topic: str, trigger: str | None, letter_id: int | None) -> Any:
        return self._route(routes.replay, {"topic": topic}, {"trigger": trigger, "id": letter_id})

    def call(self, name: str, method: str, path: str, data: str, headers: dict[str, str]) -> dict[str, Any]:
        from kubeless_local.client import call as call_function

        supervisor = self.session.supervisor
        instance = supervisor.instances.get(name) if supervisor is not None else None
        if instance is None or not instance.url:
            raise NotFound("no function %r serving" % name, "function", name)
        started = time.monotonic()
        answer = call_function(instance.url, data or None, path=path or "/", method=method or None, headers=headers)
        content = answer.content[:MAX_CALL_BODY]
        return {
            "status": answer.status_code,
            "headers": dict(answer.headers),
            "body": content.decode("utf-8", "replace"),
            "truncated": len(answer.content) > MAX_CALL_BODY,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }

    def graph(self) -> list[dict[str, Any]]:
        manifests = self.session.project.manifests if self.session.project is not None else None
        if manifests is None:
            return []
        try:
            counted = self.session.recorder.by_trigger() if self.session.recorder is not None else {}
        except UserError:
            counted = {}
        gateway = getattr(self.session, "gateway", None)  # an HTTPTrigger's URL, once the gateway listens
        examples: dict[str, str] = {}
        if gateway is not None and gateway.server is not None and gateway.table is not None:
            examples = {route.trigger: gateway.example(route) for route in gateway.table.routes}
        defined = {function.name: function for function in manifests.functions}
        edges = [
            ("http", t.name, "%s/%s" % (t.host_name or "*", t.path.lstrip("/")), "", [t.function_name], "gateway")
            for t in manifests.http_triggers
        ]
        edges += [("cron", t.name, t.schedule, "", [t.function_name], "cron") for t in manifests.cron_triggers]
        for trigger in [*manifests.kafka_triggers, *manifests.nats_triggers]:
            chosen = [name for name, function in sorted(defined.items()) if selects(trigger, function)]
            edges.append((trigger.source, trigger.name, trigger.topic, selector_text(trigger), chosen, trigger.source))
        return [
            {
                "name": "%s/%s" % (kind, name),
                "kind": kind,
                "trigger": name,
                "from": fired_by,
                "url": examples.get(name) if kind == "http" else None,
                "selector": selector,
                "functions": [function for function in functions if function in defined],
                "missing": [function for function in functions if function not in defined],
                "recorded": counted.get((source, name), 0),
            }
            for kind, name, fired_by, selector, functions, source in edges
        ]

    def metrics(self) -> list[dict[str, Any]]:
        supervisor, recorder = self.session.supervisor, self.session.recorder
        if supervisor is None:
            return []
        try:
            durations = recorder.durations() if recorder is not None else {}
        except UserError:
            durations = {}  # a history database that cannot be read now
        return [metrics_row(row, durations.get(row["name"], [])) for row in supervisor.status()]

    def invocations(
        self, function: str | None, outcome: str | None, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        recorder = self.session.recorder
        return recorder.list(function, limit, before, outcome) if recorder is not None else []

    def invocation(self, ident: str) -> dict[str, Any]:
        try:
            return self._route(routes.invocation, {"id": ident})
        except NotFound:
            # a call is on the bus as it ends and stored a moment later (its log lines travel through a pipe)
            if self.session.recorder is None or not self.session.recorder.flush(STORED_WITHIN):
                raise
            return self._route(routes.invocation, {"id": ident})

    def save_test(self, ident: str) -> dict[str, Any]:
        record = self.invocation(ident)
        path = self.session.root / TESTS_FOLDER / saved_test.file_name(record)
        text = saved_test.pytest_source(record)
        try:
            path.parent.mkdir(exist_ok=True)
            with open(path, "x") as written:  # never over a file the user has
                written.write(text)
        except FileExistsError:
            raise Conflict("%s exists already; it is left as it is" % path, "test file", str(path)) from None
        except OSError as exc:
            raise Failed("%s cannot be written (%s)" % (path, exc.strerror), "test file", str(path)) from None
        return {"path": str(path), "source": text}

    def replay_invocation(self, ident: str, request: dict[str, Any] | None) -> dict[str, Any]:
        return self._route(routes.replay_invocation, {"id": ident}, {} if request is None else {"request": request})


class _Rows(queue.Queue):
    """The hub's queue of LogLines read as rows: `get` turns each into a JSON-ready dict."""

    def __init__(self, hub_queue: queue.Queue) -> None:
        super().__init__()
        self.hub_queue = hub_queue

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        line = self.hub_queue.get(block, timeout)
        return None if line is None else _log_row(line)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.hub_queue.put(item, block, timeout)

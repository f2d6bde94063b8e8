"""Functions under test, in-process: a DevSession on a project, driven the way its triggers drive it.

`Emulator` is what the pytest plugin's `kubeless` fixture hands a test (kubeless_local/pytest_plugin.py);
it needs no pytest and works in any script. It runs the engine's own session (emulator.DevSession) with
its state in a folder of its own, never the project's `.kubeless-local/`: it never takes the lock of a
`dev` the user runs on the same project, and its ports are chosen by the kernel.

What a function received is seen by the session's taps (emulator/taps.py): every request a trigger or
`call` sends passes there, and a fault set there answers in the function's place.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import fcntl
import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from kubeless_local import events
from kubeless_local import spec as specs
from kubeless_local.emulator import DevSession, LogHub, backends, call_function, images
from kubeless_local.emulator.base import State
from kubeless_local.emulator.logs import closes_the_call, printed_by_the_function
from kubeless_local.emulator.taps import Exchange
from kubeless_local.errors import NotFound, UserError

START_TIMEOUT = 120.0  # seconds every function has to become Ready (a first dependency install included)
LOG_TAIL = 20  # lines of a function's log a start failure shows
ACCESS_WAIT = 2.0  # seconds a call waits for the runtime's access-log line, which closes its output
QUIET = 0.05  # seconds without a line after which a call's late stderr output is taken as complete
SETTLED = (State.READY, State.COMPILE_ERROR, State.CONFIG_ERROR, State.CRASHED, State.SETUP_ERROR, State.INSTALL_ERROR)


class StartFailed(UserError):
    """A function of the project did not become Ready: its error and the last lines of its log."""


def engine_answers() -> bool:
    """True when a Docker engine answers (the docker backend can run here)."""
    return images.docker_client(required=False) is not None


def as_bytes(data: Any) -> bytes | None:
    """An event's data as the CLI's --data sends it: text as is, anything else as JSON."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


def cli_request(data: Any, method: str | None, headers: dict[str, str] | None) -> tuple[bytes | None, str, dict]:
    """(body, method, headers) of the event `kubeless function call --data` sends, `method` and `headers`
    overriding the envelope's as `call -X`/`-H` do."""
    body = as_bytes(data)
    envelope_method, envelope_headers, _ = events.envelope("cli", body)
    return body, (method or envelope_method).upper(), {**envelope_headers, **(headers or {})}


class Headers(dict):
    """Header names looked up in any case (`headers["Event-Namespace"]`), as HTTP means them."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__()
        for name, value in dict(items).items():
            self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name.lower(), value)

    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class Request:
    """What a function received: method, path, headers (with `event-id`, `event-namespace`…) and body."""

    def __init__(self, method: str, path: str, headers: Any, body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, Headers(headers), body or b""

    @property
    def data(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return "<Request %s %s %s %r>" % (
            self.method,
            self.path,
            self.headers.get("event-namespace", ""),
            self.data[:60],
        )


class Answer:
    """A function's answer (or the one a fault gave in its place)."""

    def __init__(self, status_code: int, text: str, headers: Any = ()) -> None:
        self.status_code, self.text, self.headers = status_code, text, Headers(headers)

    @property
    def content(self) -> bytes:
        return self.text.encode()

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return "<Answer %d %r>" % (self.status_code, self.text[:60])


class Response(Answer):
    """`call`'s answer: the function's status, headers and body, the event it received (`.event`) and what
    it printed while it answered (`.logs`, its lines joined)."""

    def __init__(
        self, status_code: int, text: str, headers: Any, event: Request, logs: str | CallOutput, injected: bool = False
    ):
        super().__init__(status_code, text, headers)
        self.event, self.injected, self._logs = event, injected, logs
        self.reason = ""

    @property
    def logs(self) -> str:
        return self._logs if isinstance(self._logs, str) else self._logs.text()

    def __repr__(self) -> str:
        return "<Response %d %r>" % (self.status_code, self.text[:60])


@contextlib.contextmanager
def one_call_at_a_time(state_dir: Path, function: str) -> Iterator[None]:
    """Calls to one function from the workers sharing a session take turns: its log is one stream, and a
    call's lines are those from its start to its access line, which another call at once would mix."""
    with open(state_dir / ("calls-%s.lock" % function), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        yield


class CallOutput:
    """What a function printed during one call (Response.logs). Its stdout up to the runtime's access-log line
    of the call is complete when the call returns: that line is written once the answer is sent, on the same
    stream. Its stderr travels on another pipe, read by another thread: lines still on their way are waited
    for when `.logs` is first read (until none came for QUIET seconds), and taken as they are when the next
    call starts."""

    def __init__(self, hub: LogHub, function: str) -> None:
        self.hub = hub
        self.lines = hub.subscribe(function, bounded=False)  # one call's output, read whole once it answered
        self.printed: list[str] = []
        self.done = False

    def until_access(self, method: str, path: str, agent: str) -> None:
        """Take the lines until the access-log line of the call (at most ACCESS_WAIT seconds)."""
        deadline = time.monotonic() + ACCESS_WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            text = printed_by_the_function(line.text, line.stream)
            if text is not None:
                self.printed.append(text)
            if closes_the_call(line.text, line.stream, method, path, agent):
                return

    def finish(self, quiet: float = 0.0) -> None:
        """Take the stderr lines that arrived (waiting `quiet` seconds for each next one), then stop listening."""
        if self.done:
            return
        try:
            while True:
                line = self.lines.get(timeout=quiet) if quiet else self.lines.get_nowait()
                if line.stream == "stderr":  # stdout after the access line belongs to what came next
                    self.printed.append(line.text)
        except queue.Empty:
            pass
        finally:
            self.hub.unsubscribe(self.lines)
            self.done = True

    def text(self) -> str:
        self.finish(QUIET)
        return "\n".join(self.printed)


class Delivery:
    """One request a function was sent by a trigger (or `call`): `.request`, `.response`, `.source`."""

    def __init__(self, exchange: Exchange) -> None:
        self.function, self.source, self.injected, self.time = (
            exchange.function,
            exchange.source,
            exchange.injected,
            exchange.time,
        )
        self.request = Request(exchange.method, "/", exchange.headers, exchange.body)
        self.response = Answer(exchange.status, exchange.answer)

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def __repr__(self) -> str:
        injected = " (injected)" if self.injected else ""
        return "%s ← %s %s%s → %s%s" % (
            self.function,
            self.source,
            self.request.headers.get("event-topic", ""),
            " %r" % self.request.data[:60] if self.request.data else "",
            self.status_code,
            injected,
        )


class Observed:
    """The exchanges the taps saw while it is attached (a `deliveries` block, a test)."""

    def __init__(self) -> None:
        self.seen: list[Delivery] = []
        self.changed = threading.Condition()

    def __call__(self, exchange: Exchange) -> None:
        with self.changed:
            self.seen.append(Delivery(exchange))
            self.changed.notify_all()

    def of(self, function: str) -> list[Delivery]:
        with self.changed:
            return [d for d in self.seen if d.function == function]

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


class Emulator:
    """A running session over `project` (see the module docstring). `start()` returns once every function
    is Ready, or raises StartFailed with the error and the end of the log of each that is not."""

    def __init__(
        self,
        project: Path,
        state_dir: Path,
        backend: str = "process",
        env: dict[str, str] | None = None,
    ) -> None:
        self.project, self.state_dir, self.backend = Path(project).resolve(), Path(state_dir), backend
        self.env = dict(env or {})
        self.logs = LogHub()
        self.said: list[str] = []  # what the session said while starting (which backend, notices)
        self.session = DevSession(
            self.project,
            backend,
            with_env(self.project, self.env) if self.env else None,
            say=self.said.append,
            logs=self.logs,
            state_dir=self.state_dir,
            ephemeral_ports=True,
        )
        self.observed = Observed()  # every exchange, for the failure report's last request
        self.last: tuple[Request, Answer] | None = None
        self.output: CallOutput | None = None  # the last call's, listening for its late stderr lines

    # ------------------------------------------------------------ life

    def start(self, timeout: float = START_TIMEOUT) -> Emulator:
        self.session.start()
        supervisor = self.session.supervisor
        assert supervisor is not None, "DevSession.start() makes the supervisor"
        supervisor.taps.observers.append(self.observed)  # for the session's life
        deadline = time.monotonic() + timeout
        for instance in list(supervisor.instances.values()):
            instance.wait_for(lambda i: i.state in SETTLED, max(0.0, deadline - time.monotonic()))
        broken = [i for i in supervisor.instances.values() if i.state != State.READY]
        if broken:
            raise StartFailed("\n\n".join(self._why(i) for i in broken))
        self._wait_consuming(deadline)
        return self

    def _wait_consuming(self, deadline: float) -> None:
        """With a real Kafka broker: until every consumer group has its partitions (a new group starts at the
        newest message, as Kubeless' does: an event emitted before would never reach it)."""
        kafka = self.session.kafka
        while kafka is not None:
            joining = [row["group"] for row in kafka.status() if row.get("state", "joining") == "joining"]
            if not joining:
                return
            if time.monotonic() > deadline:
                raise StartFailed("kafka consumer groups still joining the broker: %s" % ", ".join(joining))
            time.sleep(0.05)

    def _why(self, instance: Any) -> str:
        said = set((instance.error or "").splitlines())  # the error's own lines are shown once, above
        tail = [
            line.text for line in self.logs.tail(instance.name, LOG_TAIL) if line.text.split(": ", 1)[-1] not in said
        ]
        return "function %s is %s: %s\n--- its last log lines ---\n%s" % (
            instance.name,
            instance.state.value,
            instance.error or "(no error)",
            "\n".join(tail),
        )

    def stop(self) -> None:
        if self.output is not None:
            self.output.finish()
        self.session.stop()
        for leftover in ("lock", "admin.json"):
            (self.state_dir / leftover).unlink(missing_ok=True)

    def reset(self) -> None:
        """Empty the topics, their dead letters, the recorded invocations and what was observed; clear faults.
        Functions keep running."""
        supervisor = self.session.supervisor
        assert supervisor is not None and self.session.events is not None, "start() first"
        supervisor.taps.clear()
        self.session.events.clear()
        if self.session.recorder is not None:
            self.session.recorder.clear()
        with self.observed.changed:
            self.observed.seen.clear()
        self.last = None

    # ------------------------------------------------------------ functions

    def _serving(self, name: str) -> Any:
        supervisor = self.session.supervisor
        assert supervisor is not None, "start() first"
        ready = supervisor.wait_ready(name, 0)
        if ready is None:
            if name not in supervisor.instances:
                known = ", ".join(sorted(supervisor.instances)) or "none"
                raise NotFound("no function %r in %s (functions: %s)" % (name, self.project, known), "function", name)
            raise StartFailed(self._why(supervisor.instances[name]))
        return ready[0]

    def url(self, name: str) -> str:
        return self._serving(name).url

    def functions(self) -> list[dict[str, Any]]:
        return self.session.status()

    def log(self, name: str) -> list[str]:
        """Every line of `name`'s log kept so far (its output and what the engine said about it)."""
        return [line.text for line in self.logs.tail(name)]

    def call(
        self,
        name: str,
        data: Any = None,
        *,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        path: str = "/",
        timeout: float | None = 60,
    ) -> Response:
        """Send `name` the event `kubeless function call --data` sends (data: text, bytes, or JSON-able);
        `method` and `headers` override the envelope's, as `call -X`/`-H` do."""
        instance = self._serving(name)
        body, method, headers = cli_request(data, method, headers)
        with one_call_at_a_time(self.state_dir, name):
            response = self._call(instance, body, method, path, headers, timeout)
        self.last = (response.event, response)
        return response

    def _call(
        self, instance: Any, body: bytes | None, method: str, path: str, headers: dict[str, str], timeout: float | None
    ) -> Response:
        name, supervisor = instance.name, self.session.supervisor
        assert supervisor is not None
        if self.output is not None:
            self.output.finish()  # the last call's output is what arrived by now
        output = self.output = CallOutput(self.logs, name)
        sent: dict[str, Any] = {}

        def send() -> tuple[int, str]:
            answer = call_function(instance.url, body, path=path, method=method, headers=headers, timeout=timeout)
            sent["answer"] = answer
            return answer.status_code, answer.text

        try:
            status, text = supervisor.taps.exchange(name, "cli", method, instance.url, headers, body or b"", send)
        except BaseException:
            output.finish()
            raise
        answer = sent.get("answer")
        if answer is None:  # a fault answered in the function's place
            output.finish()
            event = Request(method, path, headers, body or b"")
            response = Response(status, text, {}, event, "", injected=True)
        else:
            event = Request(method, path, answer.request.headers, body or b"")
            output.until_access(method, path, event.headers.get("user-agent", ""))
            response = Response(status, text, answer.headers, event, output)
            response.reason = answer.reason
        return response

    # ------------------------------------------------------------ events

    def emit(self, topic: str, data: Any, *, source: str = "kafka", count: int = 1) -> dict[str, Any]:
        """Store `count` events of `data` on `topic` (created when new), as `emit kafka` does; every
        KafkaTrigger on it delivers them. Returns the engine's answer (subscribers, positions)."""
        topics = self.session.admin.topics if self.session.admin is not None else None
        assert topics is not None, "start() first"
        topics.create(topic)
        return topics.emit(topic, source, as_bytes(data) or b"", count)

    @contextlib.contextmanager
    def deliveries(self, name: str, count: int = 1, timeout: float = 10.0) -> Iterator[list[Delivery]]:
        """`with deliveries("ship", count=2) as got:` — after the block, `got` holds the first `count` requests
        `name` received from the start of the block (waited for up to `timeout` seconds); AssertionError
        naming what did arrive, to any function, when fewer came."""
        watch = Observed()
        got: list[Delivery] = []
        with self._taps().watching(watch):
            yield got
            arrived = watch.wait(lambda: len(watch.of(name)) >= count, timeout)
        got.extend(watch.of(name)[:count])
        if not arrived:
            raise AssertionError(
                "%d of %d deliveries to %s arrived within %gs; what arrived meanwhile: %s"
                % (len(got), count, name, timeout, "; ".join(map(repr, watch.seen)) or "nothing")
            )

    @contextlib.contextmanager
    def no_deliveries(self, name: str, within: float = 1.0) -> Iterator[None]:
        """AssertionError when `name` receives anything from the start of the block until `within` seconds
        after its end."""
        watch = Observed()
        with self._taps().watching(watch):
            yield
            watch.wait(lambda: bool(watch.of(name)), within)
        if watch.of(name):
            raise AssertionError("%s received %s" % (name, "; ".join(map(repr, watch.of(name)))))

    def fail_next(self, name: str, status: int = 500, times: int = 1) -> None:
        """Answer `name`'s next `times` requests with `status`, in its place (it never sees them)."""
        self._serving(name)
        self._taps().fail(name, status, times)

    def _taps(self) -> Any:
        assert self.session.supervisor is not None, "start() first"
        return self.session.supervisor.taps

    def dead_letters(self, name: str | None = None) -> list[dict[str, Any]]:
        """The dead letters waiting (of function `name`): id, topic, seq, attempts, status, body, event_id…"""
        events_ = self.session.events
        assert events_ is not None, "start() first"
        rows = [letter for topic in events_.topics() for letter in topic["dead_letters"]]
        return [row for row in rows if name is None or row["function"] == name]

    def wait_dead_letter(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first dead letter of function `name`, once there is one; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            letters = [row for row in self.dead_letters(name) if not row["replay"]]
            if letters:
                return letters[0]
            if time.monotonic() > deadline:
                arrived = "; ".join(map(repr, self.observed.of(name))) or "nothing"
                raise AssertionError("no dead letter for %s within %gs; it received: %s" % (name, timeout, arrived))
            time.sleep(0.02)

    def replay_dead_letter(self, letter: dict[str, Any], timeout: float = 10.0) -> Delivery:
        """Send dead letter `letter` (from wait_dead_letter) again; its delivery once the function answered
        a 2xx, or its last attempt (the letter is dead again)."""
        events_ = self.session.events
        assert events_ is not None, "start() first"
        watch = Observed()

        def mine() -> list[Delivery]:
            return [
                d
                for d in watch.of(letter["function"])
                if d.request.headers.get("event-id") == letter["event_id"]
                and (200 <= d.status_code < 300 or not self._replaying(letter["id"]))
            ]

        with self._taps().watching(watch):
            events_.replay(letter["topic"], letter_id=letter["id"])
            if not watch.wait(lambda: bool(mine()), timeout):
                raise AssertionError("dead letter %s was not delivered again within %gs" % (letter["id"], timeout))
        return mine()[-1]

    def _replaying(self, letter_id: int) -> bool:
        return any(row["id"] == letter_id and row["replay"] for row in self.dead_letters())

    # ------------------------------------------------------------ history

    def history(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The recorded invocations (of function `name`, or all), newest first, as `kubeless-local history`."""
        recorder = self.session.recorder
        assert recorder is not None, "start() first"
        recorder.flush()
        return recorder.list(name, limit)

    # ------------------------------------------------------------ cron

    def fire_cron(self, trigger: str) -> Any:
        """Fire CronJobTrigger `trigger` now; its Run (`.status`, `.ok`, `.error`) once the function answered."""
        assert self.session.cron is not None, "start() first"
        return self.session.cron.fire(trigger)

    def next_fires(self, trigger: str, n: int = 3, after: datetime.datetime | None = None) -> list:
        """The next `n` times (UTC) CronJobTrigger `trigger` fires after `after` (now)."""
        from kubeless_local import schedules

        assert self.session.cron is not None, "start() first"
        found = self.session.cron.triggers().get(trigger)
        if found is None:
            raise NotFound("no CronJobTrigger %r in %s" % (trigger, self.project), "CronJobTrigger", trigger)
        return upcoming(schedules.parse(found.schedule), n, after)

    # ------------------------------------------------------------ reports

    def lines_since(self, since: float) -> dict[str, list[str]]:
        """{function: its log lines since `since` (time.time())}, for a failing test's report."""
        with self.logs.lock:
            names = list(self.logs.lines)
        found = {}
        for name in names:
            lines = [line.text for line in self.logs.tail(name) if line.time >= since]
            if lines:
                found[name] = lines
        return found


def with_env(project: Path, env: dict[str, str]) -> specs.Manifests:
    """The project's manifests with `env` added to every Function's container env (a variable it sets already
    is replaced), as `kubeless function update --env` would. A manifest that does not load: UserError. The
    session then runs these (as `run` does): a code edit reloads, a manifest edit is not read."""
    manifests = specs.Loader(project).collect()
    manifests.raise_first()
    functions = []
    for fn in manifests.functions:
        deployment = copy.deepcopy(fn.deployment) or {}
        node = deployment
        for key in specs.FunctionSpec.POD_PATH:  # spec.template.spec, made where the manifest has none
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if not node.get("containers"):
            node["containers"] = [{}]
        container = node["containers"][0]
        kept = [e for e in container.get("env") or [] if e.get("name") not in env]
        container["env"] = kept + [{"name": name, "value": value} for name, value in env.items()]
        functions.append(dataclasses.replace(fn, deployment=deployment))
    manifests.functions = functions
    return manifests


def backend_available(name: str) -> str | None:
    """None when backend `name` can run here, else why not (the docker backend: no engine answers)."""
    if name == "docker" and not engine_answers():
        return "no Docker engine answers (start Docker, or set DOCKER_HOST)"
    if name not in backends.BACKENDS:
        return "unknown backend %r (known: %s)" % (name, ", ".join(sorted(backends.BACKENDS)))
    return None


# ---------------------------------------------------------------- ad-hoc functions


def write_function(
    folder: Path,
    source: str,
    *,
    runtime: str = "python3.11",
    handler: str = "handler.handler",
    deps: str | None = None,
    name: str | None = None,
    timeout: str | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """A project in `folder` holding one Function made of `source` (the code as text), as `kubeless function
    deploy --from-file` would describe it; returns the folder. Its name: `name`, else the handler's function."""
    import yaml

    from kubeless_local import kubeless_objects
    from kubeless_local.runtimes import RUNTIME_RE, Catalog

    catalog = Catalog()
    match = RUNTIME_RE.match(runtime)
    entry = catalog.entries.get(match.group(1)) if match else None
    if entry is None:
        known = ", ".join(catalog.ids())
        raise NotFound("unknown runtime %r; the catalog has %s (with a version)" % (runtime, known), "runtime", runtime)
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / (handler.split(".", 1)[0] + entry.suffix)  # the file names are the runtime ID's (no probe)
    code.write_text(source)
    deps_file = None
    if deps is not None:
        deps_file = folder / entry.dep_name
        deps_file.write_text(deps)
    fn = kubeless_objects.function_from_files(
        (name or handler.rsplit(".", 1)[-1]).lower().replace("_", "-"),
        code,
        runtime,
        handler,
        deps_file=deps_file,
        timeout=timeout or "180",
        env=sorted((env or {}).items()),
        origin=str(folder / "function.yaml"),
    )
    (folder / "function.yaml").write_text(yaml.safe_dump(fn.document, sort_keys=False))
    return folder


class OneFunction:
    """The one function of a `kubeless_fn` project: `call(data=…)` as Emulator.call, and the emulator."""

    def __init__(self, emulator: Emulator, project: str) -> None:
        self.emulator = emulator
        (self.name,) = [row["name"] for row in emulator.functions()]

    def call(self, data: Any = None, **options: Any) -> Response:
        return self.emulator.call(self.name, data, **options)

    @property
    def url(self) -> str:
        return self.emulator.url(self.name)

    @property
    def logs(self) -> list[str]:
        return self.emulator.log(self.name)


# ---------------------------------------------------------------- golden answers

REDACTED = {"event-id": "<event-id>", "event-time": "<event-time>"}
DURATION_KEYS = re.compile(r"(duration|elapsed|_ms$|took)", re.IGNORECASE)


def snapshot_of(answer: Any) -> dict[str, Any]:
    """What a snapshot keeps of a Response, Delivery or cron Run: status, content type and body, with the
    event's id and time (wherever they appear in the body) and durations redacted."""
    event: Request | None
    if isinstance(answer, Delivery):
        event, answer = answer.request, answer.response
    else:
        event = getattr(answer, "event", None)
    if not isinstance(answer, Answer):  # a cron Run
        from dataclasses import asdict

        return _redact_fields(
            {k: v for k, v in asdict(answer).items() if k not in ("started", "scheduled", "event_id")}
        )
    text = answer.text
    if event is not None:
        for header, mark in REDACTED.items():
            value = event.headers.get(header)
            if value:
                text = text.replace(value, mark)
    try:
        body: Any = _redact_fields(json.loads(text))
    except ValueError:
        body = text
    return {"status": answer.status_code, "content-type": answer.headers.get("content-type"), "body": body}


def _redact_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<duration>" if isinstance(k, str) and DURATION_KEYS.search(k) else _redact_fields(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_fields(v) for v in value]
    return value


class Snapshots:
    """Golden answers in `folder` (one JSON file per name); `update`: rewrite them."""

    def __init__(self, folder: Path, update: bool = False) -> None:
        self.folder, self.update = folder, update

    def match(self, name: str, answer: Any) -> None:
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError("a snapshot name is letters, digits, '.', '_' or '-': %r" % name)
        path = self.folder / (name + ".json")
        now = snapshot_of(answer)
        if self.update or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
            return
        golden = json.loads(path.read_text())
        if golden != now:
            raise AssertionError(
                "snapshot %s differs (--kubeless-snapshot-update rewrites it):\n--- %s\n%s\n+++ now\n%s"
                % (name, path, json.dumps(golden, indent=2, sort_keys=True), json.dumps(now, indent=2, sort_keys=True))
            )


# ---------------------------------------------------------------- failure reports


def report_sections(used: list[tuple[Emulator, float]]) -> list[tuple[str, str]]:
    """(title, text) sections of a failing test's report: each function's log lines since the test took the
    emulator, and the last request and response of `call`."""
    sections = []
    for emulator, since in used:
        for name, lines in sorted(emulator.lines_since(since).items()):
            sections.append(("logs of %s" % name, "\n".join(lines)))
        if emulator.last is not None:
            request, response = emulator.last
            head = "\n".join("%s: %s" % item for item in request.headers.items())
            sections.append(
                (
                    "last request/response",
                    "%s %s\n%s\n\n%s\n--> %s\n%s"
                    % (request.method, request.path, head, request.data, response.status_code, response.text),
                )
            )
    return sections


# ---------------------------------------------------------------- a session another process runs


class Attached:
    """A session another pytest process runs (pytest-xdist with --kubeless-shared), reached through its admin
    API: `call`, `emit`, cron, dead letters, logs. What needs the taps in this process (`deliveries`,
    `no_deliveries`, `fail_next`, `replay_dead_letter`, `reset`) raises a UserError saying so."""

    def __init__(self, state_dir: Path) -> None:
        from kubeless_local.client import SessionClient

        self.state_dir = Path(state_dir)
        self.client = SessionClient(self.state_dir)
        self.last: tuple[Request, Answer] | None = None

    def stop(self) -> None:
        """Nothing: the process that started the session stops it."""

    def functions(self) -> list[dict[str, Any]]:
        return self.client.functions()

    def url(self, name: str) -> str:
        row = self.client.function(name)
        if not row.get("serving") or not row.get("url"):
            raise StartFailed("function %s is %s: %s" % (name, row["state"], row.get("error") or "not serving"))
        return row["url"]

    def log(self, name: str) -> list[str]:
        return [row["text"] for row in self.client.logs(name)]

    def call(
        self,
        name: str,
        data: Any = None,
        *,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        path: str = "/",
        timeout: float | None = 60,
    ) -> Response:
        """As Emulator.call; `.logs` are the function's lines from the call's start to its access-log line."""
        url = self.url(name)
        body, method, headers = cli_request(data, method, headers)
        with one_call_at_a_time(self.state_dir, name):
            started = time.time()
            answer = call_function(url, body, path=path, method=method, headers=headers, timeout=timeout)
            event = Request(method, path, answer.request.headers, body or b"")
            printed = self._printed(name, started, method, path, event.headers.get("user-agent", ""))
        response = Response(answer.status_code, answer.text, answer.headers, event, printed)
        self.last = (event, response)
        return response

    def _printed(self, name: str, since: float, method: str, path: str, agent: str) -> str:
        deadline = time.monotonic() + ACCESS_WAIT
        while True:
            rows = [row for row in self.client.logs(name, tail=200) if row["time"] >= since]
            printed: list[str] = []
            for row in rows:
                text = printed_by_the_function(row["text"], row["stream"])
                if text is not None:
                    printed.append(text)
                if closes_the_call(row["text"], row["stream"], method, path, agent):
                    return "\n".join(printed)
            if time.monotonic() > deadline:
                return "\n".join(printed)
            time.sleep(0.01)

    def emit(self, topic: str, data: Any, *, source: str = "kafka", count: int = 1) -> dict[str, Any]:
        self.client.create_topic(topic)
        return self.client.emit(topic, as_bytes(data) or b"", source=source, count=count)

    def dead_letters(self, name: str | None = None) -> list[dict[str, Any]]:
        rows = [letter for topic in self.client.topics() for letter in topic["dead_letters"]]
        return [row for row in rows if name is None or row["function"] == name]

    def wait_dead_letter(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            letters = [row for row in self.dead_letters(name) if not row["replay"]]
            if letters:
                return letters[0]
            if time.monotonic() > deadline:
                raise AssertionError("no dead letter for %s within %gs" % (name, timeout))
            time.sleep(0.02)

    def history(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self.client.invocations(name, limit)

    def fire_cron(self, trigger: str) -> Any:
        import types

        return types.SimpleNamespace(**self.client.fire_cron(trigger))

    def next_fires(self, trigger: str, n: int = 3, after: datetime.datetime | None = None) -> list:
        from kubeless_local import schedules

        rows = {row["name"]: row for row in self.client.cron_triggers()}
        if trigger not in rows:
            raise NotFound("no CronJobTrigger %r in the shared session" % trigger, "CronJobTrigger", trigger)
        return upcoming(schedules.parse(rows[trigger]["schedule"]), n, after)

    def lines_since(self, since: float) -> dict[str, list[str]]:
        found = {}
        for row in self.functions():
            lines = [line["text"] for line in self.client.logs(row["name"]) if line["time"] >= since]
            if lines:
                found[row["name"]] = lines
        return found

    def _in_process_only(self, what: str) -> Any:
        raise UserError(
            "%s needs the session in this pytest process; with --kubeless-shared it runs in another worker "
            "(without that option each worker runs its own)" % what
        )

    def deliveries(self, name: str, count: int = 1, timeout: float = 10.0) -> Any:
        return self._in_process_only("deliveries()")

    def no_deliveries(self, name: str, within: float = 1.0) -> Any:
        return self._in_process_only("no_deliveries()")

    def fail_next(self, name: str, status: int = 500, times: int = 1) -> None:
        self._in_process_only("fail_next()")

    def replay_dead_letter(self, letter: dict[str, Any], timeout: float = 10.0) -> Any:
        return self._in_process_only("replay_dead_letter()")

    def reset(self) -> None:
        self._in_process_only("reset() (and kubeless_isolated)")


def upcoming(schedule: Any, n: int, after: datetime.datetime | None = None) -> list:
    """The next `n` times (UTC) `schedule` (schedules.parse) fires after `after` (now)."""
    moment = after or datetime.datetime.now(datetime.timezone.utc)
    fires = []
    for _ in range(n):
        moment = schedule.next(moment)
        if moment is None:
            break
        fires.append(moment)
    return fires

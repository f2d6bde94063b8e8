"""Talks to a running `dev`/`run` (admin API) and to functions; used by the CLI, tests and benchmarks."""

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import quote

import requests

from kubeless_local.emulator import registry
from kubeless_local.errors import UserError
from kubeless_local.events import envelope
from kubeless_local.paths import find_state_dir


class AdminClient:
    """The running sessions' functions, as one: a name resolves in the session of the current folder
    first, else in whichever running session (`dev`, `run`, `up`) of this user has it; `state_dir`:
    that one session only."""

    def __init__(self, state_dir=None):
        if state_dir:
            self.sessions = [SessionClient(state_dir)]
            return
        here = Path.cwd().resolve()
        local, others = [], []
        for info in registry.sessions():
            root = Path(info["root"])
            (local if root == here or root in here.parents else others).append(Path(info["admin"]).parent)
        nearest = find_state_dir()  # a session that could not write the registry is still found from its folder
        if nearest is not None and nearest not in local:
            local.insert(0, nearest)
        self.local = [SessionClient(d) for d in local]
        self.sessions = self.local + [SessionClient(d) for d in others]
        if not self.sessions:
            raise UserError(
                "no running `kubeless-local dev` (nor run, up) found; start one, e.g. `kubeless-local dev` in the"
                " project folder"
            )

    def functions(self):
        """The rows (each with its `project` folder) of the sessions of the current folder, or, outside
        any, of every running session."""
        rows = []
        for session in getattr(self, "local", None) or self.sessions:
            try:
                rows += [dict(row, project=session.root) for row in session.functions()]
            except UserError:
                if len(self.sessions) == 1:
                    raise
        return rows

    def _owner(self, name):
        """The session that runs function `name`: the current folder's wins; several others: an error listing them."""
        found = []
        for session in self.sessions:
            try:
                rows = session.functions()
            except UserError:
                if len(self.sessions) == 1:
                    raise
                continue
            for row in rows:
                row = dict(row, project=session.root)
                if row["name"] == name:
                    if session in getattr(self, "local", self.sessions):
                        return session, row
                    found.append((session, row))
        if len(found) == 1:
            return found[0]
        if found:
            raise UserError(
                "function %r runs in several sessions: %s; run the command from that project's folder"
                % (name, ", ".join("%s (%s)" % (s.root, s.kind) for s, _ in found))
            )
        raise UserError("no function %r in any running session; `kubeless-local ls` lists them" % name)

    def function(self, name):
        return self._owner(name)[1]

    # Topics and triggers belong to one project: these go to its session.
    PROJECT_CALLS = (
        "topics",
        "create_topic",
        "delete_topic",
        "emit",
        "outcome",
        "replay",
        "cron_triggers",
        "fire_cron",
        "kafka_groups",
    )

    def project_session(self):
        """The session of the project the current folder is in (its `dev` first), else the only one running."""
        local = getattr(self, "local", None) or []
        candidates = sorted(local, key=lambda s: s.kind != "dev") if local else self.sessions
        if local or len(candidates) == 1:
            return candidates[0]
        raise UserError(
            "several sessions run (%s); run the command from the project's folder"
            % ", ".join("%s (%s)" % (s.root, s.kind) for s in candidates)
        )

    def __getattr__(self, name):
        if name in AdminClient.PROJECT_CALLS:
            return getattr(self.project_session(), name)
        raise AttributeError(name)

    def logs(self, name, follow=False, tail=None):
        return self._owner(name)[0].logs(name, follow=follow, tail=tail)


class SessionClient:
    """One running session's admin API (its .kubeless-local/ or .kubeless-local/run-NAME/ folder)."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        try:
            self.info = json.loads((self.state_dir / "admin.json").read_text())
        except (OSError, ValueError):
            raise UserError("%s/admin.json is unreadable; restart `kubeless-local dev`" % self.state_dir) from None
        self.base = "http://127.0.0.1:%d" % self.info["port"]
        self.headers = {"Authorization": "Bearer %s" % self.info.get("token", "")}
        self.root = self.info.get("root") or str(self.state_dir.parent)
        self.kind = "dev" if self.state_dir.name == ".kubeless-local" else self.state_dir.name.replace("-", " ", 1)

    def _get(self, path, stream=False, timeout=10, method="GET", body=None):
        headers = self.headers
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            return urllib.request.urlopen(
                urllib.request.Request(self.base + path, data=data, headers=headers, method=method), timeout=timeout
            )
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("error", exc.reason)
            except ValueError:
                message = "%d %s" % (exc.code, exc.reason)
            raise UserError(message) from None
        except OSError:
            raise UserError(
                "`kubeless-local dev` for %s is not running (nothing answers on port %d); start it again"
                % (self.info.get("root", self.state_dir.parent), self.info["port"])
            ) from None

    def functions(self):
        return self._json("/api/functions", timeout=10)

    def function(self, name):
        for row in self.functions():
            if row["name"] == name:
                return row
        raise UserError("no function %r in this project; `kubeless-local ls` lists them" % name)

    def cron_triggers(self):
        """The CronJobTriggers: schedule, next time, error, the last 3 successful and 1 failed runs."""
        return self._json("/api/triggers/cron", timeout=10)

    def fire_cron(self, trigger):
        """Fire a CronJobTrigger now (`emit cron`); waits for the function's answer, returns the run."""
        path = "/api/triggers/cron/%s" % urllib.parse.quote(trigger, safe="")
        return self._json(path, method="POST", timeout=None)

    def kafka_groups(self):
        """Under `dev --kafka-brokers`: one row per consumer group (trigger, function, topic, state, counts)."""
        return self._json("/api/triggers/kafka-broker", timeout=10)

    def wait_settled(self, name, present=True, timeout=600.0):
        """The row of `name` once it is out of Installing/Starting; present=False: until it is gone (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = next((r for r in self.functions() if r["name"] == name), None)
            if not present and row is None:
                return None
            if present and row is not None and row["state"] not in ("Installing", "Starting"):
                return row
            time.sleep(0.1)
        raise UserError(
            "%s did not %s within %ds; see `kubeless-local logs %s`"
            % (name, "start" if present else "stop", timeout, name)
        )

    def __eq__(self, other):
        return isinstance(other, SessionClient) and other.state_dir == self.state_dir

    __hash__ = None  # type: ignore[assignment]

    def logs(self, name, follow=False, tail=None):
        """Yields log line dicts; with follow, until interrupted."""
        query = "?follow=%d&tail=%d" % (1 if follow else 0, -1 if tail is None else tail)
        with self._get("/api/functions/%s/logs%s" % (name, query), timeout=None) as response:
            for raw in response:
                yield json.loads(raw)

    def _json(self, path, method="GET", body=None, timeout=60):
        with self._get(path, method=method, body=body, timeout=timeout) as response:
            try:
                return json.loads(response.read())
            except (OSError, http.client.HTTPException):  # the session died while answering (kill -9)
                raise UserError(
                    "`kubeless-local dev` for %s stopped while answering; start it again" % self.root
                ) from None

    # ------------------------------------------------------------ embedded topics (emit, topic …)

    def topics(self):
        """Every topic with its subscribers (position, lag) and dead letters."""
        return self._json("/api/topics")

    def create_topic(self, name):
        return self._json("/api/topics", "POST", {"name": name})

    def delete_topic(self, name):
        return self._json("/api/topics/%s" % quote(name, safe=""), "DELETE")

    def emit(self, topic, data, *, source="kafka", count=1, content_type=None):
        """Store `count` events with `data` (text or bytes) on `topic`; returns {first, last, subscribers}
        once they are on disk."""
        body = {"source": source, "count": count, "content_type": content_type}
        if isinstance(data, bytes):
            body["data_base64"] = base64.b64encode(data).decode()
        else:
            body["data"] = data
        return self._json("/api/topics/%s/events" % quote(topic, safe=""), "POST", body, timeout=600)

    def outcome(self, topic, first, last, source="kafka"):
        """{seq: {subscriber: delivered | dead-lettered | retrying (…) | pending}}"""
        rows = self._json(
            "/api/topics/%s/events?from=%d&to=%d&source=%s" % (quote(topic, safe=""), first, last, source)
        )
        return {int(seq): subs for seq, subs in rows.items()}

    def replay(self, topic, trigger=None, letter_id=None):
        body = {"trigger": trigger, "id": letter_id}
        return self._json("/api/topics/%s/replay" % quote(topic, safe=""), "POST", body)


def call(url, data=None, *, source="cli", topic=None, path="/", timeout=None, method=None, headers=None):
    """Send one event to a function the way Kubeless' event source would; returns the response.
    `method` and `headers` (e.g. `call -X PUT -H 'K: V'`) override the envelope's."""
    envelope_method, envelope_headers, body = envelope(source, data, topic=topic)
    method = method or envelope_method
    headers = {**envelope_headers, **(headers or {})}
    try:
        return requests.request(method, url.rstrip("/") + path, headers=headers, data=body, timeout=timeout)
    except requests.RequestException as exc:
        raise UserError(
            "cannot reach the function at %s (%s); is it running? see `kubeless-local ls`" % (url, exc)
        ) from None

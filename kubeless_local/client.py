"""Talks to a running `dev`/`run` (admin API) and to functions; used by the CLI, tests and benchmarks."""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import quote

import requests

from kubeless_local.errors import UserError
from kubeless_local.events import envelope
from kubeless_local.paths import find_state_dir


class AdminClient:
    def __init__(self, state_dir=None):
        self.state_dir = Path(state_dir) if state_dir else find_state_dir()
        if self.state_dir is None:
            raise UserError("no running `kubeless-local dev` found here or above; start one in the project folder")
        try:
            self.info = json.loads((self.state_dir / "admin.json").read_text())
        except (OSError, ValueError):
            raise UserError("%s/admin.json is unreadable; restart `kubeless-local dev`" % self.state_dir) from None
        self.base = "http://127.0.0.1:%d" % self.info["port"]
        self.headers = {"Authorization": "Bearer %s" % self.info.get("token", "")}

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
        with self._get("/api/functions") as response:
            return json.loads(response.read())

    def function(self, name):
        for row in self.functions():
            if row["name"] == name:
                return row
        raise UserError("no function %r in this project; `kubeless-local ls` lists them" % name)

    def cron_triggers(self):
        """The CronJobTriggers: schedule, next time, error, the last 3 successful and 1 failed runs."""
        with self._get("/api/triggers/cron") as response:
            return json.loads(response.read())

    def fire_cron(self, trigger):
        """Fire a CronJobTrigger now (`emit cron`); waits for the function's answer, returns the run."""
        path = "/api/triggers/cron/%s" % urllib.parse.quote(trigger, safe="")
        with self._get(path, timeout=None, method="POST") as response:
            return json.loads(response.read())

    def kafka_groups(self):
        """Under `dev --kafka-brokers`: one row per consumer group (trigger, function, topic, state, counts)."""
        with self._get("/api/triggers/kafka-broker") as response:
            return json.loads(response.read())

    def logs(self, name, follow=False, tail=None):
        """Yields log line dicts; with follow, until interrupted."""
        query = "?follow=%d&tail=%d" % (1 if follow else 0, -1 if tail is None else tail)
        with self._get("/api/functions/%s/logs%s" % (name, query), timeout=None) as response:
            for raw in response:
                yield json.loads(raw)

    def _json(self, path, method="GET", body=None, timeout=60):
        with self._get(path, method=method, body=body, timeout=timeout) as response:
            return json.loads(response.read())

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

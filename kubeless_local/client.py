"""Talks to a running `dev`/`run` (admin API) and to functions; used by the CLI, tests and benchmarks."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

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

    def _get(self, path, stream=False, timeout=10):
        try:
            return urllib.request.urlopen(
                urllib.request.Request(self.base + path, headers=self.headers), timeout=timeout
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

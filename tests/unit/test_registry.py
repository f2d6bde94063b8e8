"""Which session a command speaks to: sessions register per user; inside a project folder, that project's
session only (none running: an error saying so); outside any project a name resolves across the sessions,
an ambiguous one lists them; a dead session's entry is ignored and removed; several `run`s share a folder."""

import json
import re
import subprocess
import sys

import pytest
from conftest import FakeBackend, FakeGuardian, function

from kubeless_local import spec as specs
from kubeless_local.client import AdminClient
from kubeless_local.emulator import registry
from kubeless_local.emulator.session import DevSession
from kubeless_local.errors import Conflict, NotFound, Unavailable, UserError
from kubeless_local.paths import STATE_DIRNAME


@pytest.fixture
def sessions():
    started = []

    def start(root, *names, state_dir=None, cron=()):
        root.mkdir(parents=True, exist_ok=True)
        manifests = specs.Manifests(
            functions=[function(name) for name in names],
            cron_triggers=[
                specs.CronJobTrigger(name=n, function_name=names[0], schedule="@hourly", origin=n) for n in cron
            ],
        )
        session = DevSession(
            root,
            manifests=manifests,
            say=lambda text: None,
            backend=FakeBackend,
            guardian=FakeGuardian,
            state_dir=state_dir,
        )
        started.append(session)
        session.start()
        return session

    yield start
    for session in started:
        session.stop()


def test_a_name_resolves_outside_any_project_and_inside_one_in_its_session_only(sessions, tmp_path, monkeypatch):
    a = sessions(tmp_path / "a", "hello", "only-a")
    b = sessions(tmp_path / "b", "hello")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert AdminClient().function("only-a")["project"] == str(a.root)
    with pytest.raises(Conflict, match="runs in several sessions: .*%s.*%s" % (a.root, b.root)):
        AdminClient().function("hello")
    assert {(r["name"], r["project"]) for r in AdminClient().functions()} == {
        ("hello", str(a.root)),
        ("only-a", str(a.root)),
        ("hello", str(b.root)),
    }
    monkeypatch.chdir(b.root)
    assert [(r["name"], r["project"]) for r in AdminClient().functions()] == [("hello", str(b.root))]  # this folder's
    port_b = b.supervisor.instances["hello"].port
    assert AdminClient().function("hello")["port"] == port_b
    with pytest.raises(NotFound, match="no function 'only-a' in the session of %s" % b.root):
        AdminClient().function("only-a")  # a's: from b's folder, b's session only
    monkeypatch.chdir(elsewhere)
    with pytest.raises(NotFound, match="no function 'nothing' in any running session"):
        AdminClient().function("nothing")


def test_a_dead_session_is_ignored_and_its_entry_removed(sessions, tmp_path, monkeypatch, private_registry):
    live = sessions(tmp_path / "live", "hello")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    admin = tmp_path / "gone" / STATE_DIRNAME / "admin.json"
    admin.parent.mkdir(parents=True)
    admin.write_text(json.dumps({"pid": pid, "port": 1, "token": "x", "root": str(tmp_path / "gone")}))
    entry = private_registry / ("%d-1.json" % pid)
    entry.write_text(json.dumps({"pid": pid, "root": str(tmp_path / "gone"), "admin": str(admin), "kind": "dev"}))
    monkeypatch.chdir(tmp_path)
    assert [r["name"] for r in AdminClient().functions()] == ["hello"]
    assert not entry.exists()
    live.stop()
    assert registry.sessions() == []
    with pytest.raises(Unavailable, match="no running `kubeless-local dev`"):
        AdminClient()


def test_two_runs_from_one_folder_both_serve_and_both_are_called(sessions, tmp_path, monkeypatch):
    first = sessions(tmp_path, "one", state_dir=tmp_path / STATE_DIRNAME / "run-one")
    second = sessions(tmp_path, "two", state_dir=tmp_path / STATE_DIRNAME / "run-two")
    monkeypatch.chdir(tmp_path)
    assert AdminClient().function("one")["port"] == first.supervisor.instances["one"].port
    assert AdminClient().function("two")["port"] == second.supervisor.instances["two"].port
    again = DevSession(tmp_path, manifests=specs.Manifests(functions=[function("one")]), say=lambda t: None,
                       backend=FakeBackend, guardian=FakeGuardian, state_dir=tmp_path / STATE_DIRNAME / "run-one")  # fmt: skip
    with pytest.raises(UserError, match="kubeless-local run one is already running for %s" % tmp_path):
        again.start()
    again.stop()
    assert AdminClient().function("one")["state"] == "Ready"


def test_inside_a_project_whose_session_stopped_nothing_reaches_another_project(sessions, tmp_path, monkeypatch):
    stopped = sessions(tmp_path / "stopped", "hello", cron=["nightly"])
    stopped.events.store.create("orders")
    other = sessions(tmp_path / "other", "hello", cron=["nightly"])
    other.events.store.create("orders")
    stopped.stop()
    (stopped.root / "sub").mkdir()
    for folder in (stopped.root, stopped.root / "sub"):
        monkeypatch.chdir(folder)
        with pytest.raises(
            Unavailable,
            match=re.escape("no running `kubeless-local dev` (nor run, up) for %s; start one there" % stopped.root),
        ):
            AdminClient()
    # a project folder is also one with settings but no state yet, and a running session's root
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / ".kubeless-local.yaml").write_text("backend: process\n")
    monkeypatch.chdir(tmp_path / "fresh")
    with pytest.raises(Unavailable, match=re.escape("(nor run, up) for %s;" % (tmp_path / "fresh"))):
        AdminClient()
    monkeypatch.chdir(other.root)
    client = AdminClient()
    assert not client.across and client.project == other.root
    assert client.topic_session("orders").root == str(other.root)
    assert client.cron_session("nightly").root == str(other.root)


def test_outside_any_project_topics_and_cron_triggers_resolve_by_name(sessions, tmp_path, monkeypatch):
    a = sessions(tmp_path / "a", "hello", cron=["nightly", "only-a"])
    b = sessions(tmp_path / "b", "hello", cron=["nightly"])
    a.events.store.create("orders")
    b.events.store.create("orders")
    a.events.store.create("audit")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    client = AdminClient()
    assert client.across and client.project is None
    used = client.topic_session("audit")
    assert used.root == str(a.root) and used.describe() == "the dev session of %s" % a.root
    assert client.cron_session("only-a").root == str(a.root)
    with pytest.raises(Conflict, match="topic 'orders' runs in several sessions: the dev session of %s, the dev "
                       "session of %s" % (a.root, b.root)):  # fmt: skip
        client.topic_session("orders")
    with pytest.raises(Conflict, match="CronJobTrigger 'nightly' runs in several sessions"):
        client.cron_session("nightly")
    with pytest.raises(NotFound, match="no running session has topic 'nope'"):
        client.topic_session("nope")
    with pytest.raises(Conflict, match="several sessions run .*; run the command from the project's folder"):
        client.project_session()
    assert {(row["name"], row["project"]) for row in client.topics()} == {
        ("orders", str(a.root)),
        ("audit", str(a.root)),
        ("orders", str(b.root)),
    }

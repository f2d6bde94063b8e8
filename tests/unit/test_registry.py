"""Names resolve from any folder: sessions register per user; the current folder's session wins, an
ambiguous name lists the candidates, a dead session's entry is ignored and removed; several `run`s
share a folder."""

import json
import subprocess
import sys

import pytest
from conftest import FakeBackend, function

from kubeless_local import spec as specs
from kubeless_local.client import AdminClient
from kubeless_local.emulator import registry
from kubeless_local.emulator.session import DevSession
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME


@pytest.fixture
def sessions():
    started = []

    def start(root, *names, state_dir=None):
        root.mkdir(parents=True, exist_ok=True)
        manifests = specs.Manifests(functions=[function(name) for name in names])
        session = DevSession(
            root, manifests=manifests, say=lambda text: None, backend=FakeBackend(), state_dir=state_dir
        )
        started.append(session)
        session.start()
        return session

    yield start
    for session in started:
        session.stop()


def test_a_name_resolves_from_any_folder_and_the_current_folder_wins(sessions, tmp_path, monkeypatch):
    a = sessions(tmp_path / "a", "hello", "only-a")
    b = sessions(tmp_path / "b", "hello")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert AdminClient().function("only-a")["project"] == str(a.root)
    with pytest.raises(UserError, match="runs in several sessions: .*%s.*%s" % (a.root, b.root)):
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
    with pytest.raises(UserError, match="no function 'nothing' in any running session"):
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
    with pytest.raises(UserError, match="no running `kubeless-local dev`"):
        AdminClient()


def test_two_runs_from_one_folder_both_serve_and_both_are_called(sessions, tmp_path, monkeypatch):
    first = sessions(tmp_path, "one", state_dir=tmp_path / STATE_DIRNAME / "run-one")
    second = sessions(tmp_path, "two", state_dir=tmp_path / STATE_DIRNAME / "run-two")
    monkeypatch.chdir(tmp_path)
    assert AdminClient().function("one")["port"] == first.supervisor.instances["one"].port
    assert AdminClient().function("two")["port"] == second.supervisor.instances["two"].port
    again = DevSession(tmp_path, manifests=specs.Manifests(functions=[function("one")]), say=lambda t: None,
                       backend=FakeBackend(), state_dir=tmp_path / STATE_DIRNAME / "run-one")  # fmt: skip
    with pytest.raises(UserError, match="kubeless-local run one is already running for %s" % tmp_path):
        again.start()
    again.stop()
    assert AdminClient().function("one")["state"] == "Ready"

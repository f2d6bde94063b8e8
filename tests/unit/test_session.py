"""DevSession's start-up order with a fake backend: lock first, admin API published before the
functions start, a second or nested session refused without harming the first."""

import json
import stat
import threading

import pytest
from conftest import FakeBackend, FakeGuardian, function
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.client import AdminClient
from kubeless_local.emulator.guardian import Guardian
from kubeless_local.emulator.session import DevSession
from kubeless_local.errors import UserError


def session_for(root, backend, state_dir=None, guardian=FakeGuardian):
    return DevSession(
        root,
        manifests=specs.Manifests(functions=[function()]),
        say=lambda text: None,
        backend=backend,
        state_dir=state_dir,
        guardian=guardian,
    )


@pytest.fixture
def running(tmp_path):
    """A session whose function waits at the prepare gate until the test opens it."""
    made = []

    def gated(logs, **collaborators):  # the session builds its backend: this one's prepare waits at the gate
        backend = FakeBackend(logs, **collaborators)
        backend.gate.clear()
        made.append(backend)
        return backend

    session = session_for(tmp_path, gated)
    starting = threading.Thread(target=session.start)
    starting.start()
    wait_until(lambda: made and made[0].preparing.is_set(), "the function's prepare reached the gate", timeout=10)
    # the admin API opens during an install too (session.ADMIN_PATIENCE), not only once a server starts
    wait_until(lambda: (session.state_dir / "admin.json").exists(), "the admin API opened", timeout=10)
    backend = made[0]
    yield session, backend
    backend.gate.set()
    starting.join(10)
    session.stop()


def test_functions_are_listed_while_they_install(running):
    session, backend = running
    client = AdminClient(session.state_dir)  # admin.json is there before any function started
    assert [(r["name"], r["state"]) for r in client.functions()] == [("hello", "Installing")]
    backend.gate.set()
    assert session.supervisor.instances["hello"].wait_for(lambda i: i.state.value == "Ready", 5)
    assert client.function("hello")["state"] == "Ready"


def test_a_second_session_in_the_folder_is_refused_and_harms_nothing(running, tmp_path):
    session, _ = running
    info = (session.state_dir / "admin.json").read_text()
    second = session_for(tmp_path, FakeBackend)
    with pytest.raises(UserError, match="already running for %s" % tmp_path):
        second.start()
    second.stop()  # what the CLI does after a failed start
    assert (session.state_dir / "admin.json").read_text() == info
    assert AdminClient(session.state_dir).functions()[0]["name"] == "hello"


def test_a_session_inside_a_running_project_is_refused(running, tmp_path):
    nested = tmp_path / "sub" / "fn"
    nested.mkdir(parents=True)
    inner = session_for(nested, FakeBackend)
    with pytest.raises(UserError, match="inside %s" % tmp_path):
        inner.start()
    inner.stop()
    assert not (nested / ".kubeless-local").exists()


def test_stop_unpublishes_and_releases_the_folder(tmp_path):
    first = session_for(tmp_path, FakeBackend, guardian=Guardian)  # the real one: its record goes too
    first.start()
    assert json.loads((first.state_dir / "admin.json").read_text())["pid"]
    first.stop()
    assert not (first.state_dir / "admin.json").exists()
    assert not (first.state_dir / "processes.json").exists()
    second = session_for(tmp_path, FakeBackend)
    second.start()
    second.stop()


def test_watchdogs_stop_race_is_not_printed(caplog):
    import logging

    inotify_log = logging.getLogger("watchdog.observers.inotify")

    def said():  # by this logger: another test's thread, still ending, may log meanwhile
        return [r.getMessage() for r in caplog.records if r.name == inotify_log.name]

    inotify_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
    assert said() == []
    inotify_log.error("a real watchdog error")
    assert said() == ["a real watchdog error"]


def test_a_session_above_a_running_project_is_refused(tmp_path):
    inner = session_for(tmp_path / "sub", FakeBackend)
    (tmp_path / "sub").mkdir()
    inner.start()
    try:
        outer = session_for(tmp_path, FakeBackend)
        with pytest.raises(UserError, match="%s holds %s, which kubeless-local already runs" % (tmp_path, inner.root)):
            outer.start()
        outer.stop()
        assert AdminClient(inner.state_dir).functions()[0]["name"] == "hello"
    finally:
        inner.stop()
    outer = session_for(tmp_path, FakeBackend)  # once the inner one stopped, the outer one may run
    outer.start()
    outer.stop()


def start_together(sessions):
    """Start the sessions at the same moment, one thread each; returns the texts of the refusals."""
    together = threading.Barrier(len(sessions))
    refused = []

    def start(session):
        together.wait()
        try:
            session.start()
        except UserError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return refused


def stop_together(sessions):
    """Stop the sessions at once: each stop waits for its guardian process to end, the waits overlap."""
    threads = [threading.Thread(target=session.stop) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_an_outer_and_an_inner_session_started_at_once_exactly_one_runs(tmp_path):
    # 20 races, each in a project of its own: the winners keep running until all are done, then stop
    # together (a stop waits for the session's guardian to exit; one after the other that took seconds).
    sessions = []
    try:
        for race in range(20):
            (tmp_path / str(race) / "sub").mkdir(parents=True)
            pair = [
                session_for(tmp_path / str(race), FakeBackend),
                session_for(tmp_path / str(race) / "sub", FakeBackend),
            ]
            sessions += pair
            refused = start_together(pair)
            assert len(refused) == 1, refused
            assert "which kubeless-local already runs" in refused[0]
    finally:
        stop_together(sessions)


def test_the_state_folder_is_the_users_only(tmp_path):
    """topics.db, logs and generations lie in it: other users of the machine cannot read them."""
    (tmp_path / ".kubeless-local").mkdir(mode=0o755)  # left by an earlier version
    (tmp_path / ".kubeless-local").chmod(0o755)
    session = session_for(tmp_path, FakeBackend)
    session.start()
    try:
        assert stat.S_IMODE((tmp_path / ".kubeless-local").stat().st_mode) == 0o700
        assert (tmp_path / ".kubeless-local" / "topics.db").exists()
    finally:
        session.stop()
    fresh = session_for(tmp_path / "fresh", FakeBackend, state_dir=tmp_path / "fresh" / ".kubeless-local" / "run-x")
    (tmp_path / "fresh").mkdir()
    fresh.start()
    fresh.stop()
    assert stat.S_IMODE((tmp_path / "fresh" / ".kubeless-local").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "error, said",
    [
        (PermissionError(13, "Permission denied"), "(Permission denied)"),
        (OSError(30, "Read-only file system"), "(Read-only file system)"),
    ],
)
def test_a_project_folder_that_cannot_hold_the_state_folder_is_one_line(tmp_path, monkeypatch, error, said):
    # a checkout owned by another user, or on a read-only mount: the state folder cannot be made there, which is
    # not a folder of another user's (the line said so) nor a traceback (a read-only file system)
    real = type(tmp_path).mkdir

    def mkdir(path, *args, **kwargs):
        if path == tmp_path / ".kubeless-local":
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", mkdir)
    session = session_for(tmp_path, FakeBackend)
    with pytest.raises(UserError) as refused:
        session.start()
    session.stop()
    assert str(refused.value) == (
        "cannot make %s/.kubeless-local %s: kubeless-local keeps its state beside the manifests; run it in a copy"
        " of the project that you can write to" % (tmp_path, said)
    )


def test_a_state_folder_of_another_user_is_named_so(tmp_path, monkeypatch):
    (tmp_path / ".kubeless-local").mkdir()
    monkeypatch.setattr("kubeless_local.emulator.session.os.getuid", lambda: 4321)
    real = type(tmp_path).chmod

    def chmod(path, mode, **kwargs):
        if path == tmp_path / ".kubeless-local":
            raise PermissionError(1, "Operation not permitted")
        return real(path, mode, **kwargs)

    monkeypatch.setattr(type(tmp_path), "chmod", chmod)
    with pytest.raises(UserError, match="belongs to another user; remove it"):
        session_for(tmp_path, FakeBackend).start()

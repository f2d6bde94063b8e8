"""Runtime servers die with `dev`: the guardian kills the process groups it was told about when the
pipe from `dev` closes, and a later `dev` sweeps what a dead session recorded."""

import json
import os
import signal
import subprocess
import sys

import pytest
from waiting import wait_until

from kubeless_local.emulator import guardian
from kubeless_local.emulator.guardian import PROJECT_ENV, Guardian, kill_groups, sweep_leftovers


@pytest.fixture
def groups():
    """Start `sleep` process groups (as runtime servers run); all are killed at the end."""
    started = []

    def start(project):
        env = dict(os.environ, **({PROJECT_ENV: project} if project else {}))
        proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        started.append(proc)
        # Until it has exec'd, the child carries pytest's environment, not the marker (a loaded machine
        # can delay the exec past the test's sweep).
        wait_until(lambda: exec_done(proc.pid), "sleep exec'd", timeout=30, interval=0.005)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def exec_done(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
        return cmdline.read().startswith(b"sleep\0")


def dies(proc, timeout=30):
    """`proc` was SIGKILLed, waited for with a generous bound: under load a guardian's interpreter takes
    seconds to start, and a 2 s bound failed now and then in full unit runs on a loaded machine."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == -signal.SIGKILL


def test_only_groups_carrying_the_project_marker_are_killed(tmp_path, groups):
    project = str(tmp_path)
    ours, unmarked, other = groups(project), groups(None), groups(project + "-other")
    assert guardian.group_members(ours.pid) == [ours.pid]
    assert kill_groups([ours.pid, unmarked.pid, other.pid], project) == [ours.pid]
    assert dies(ours)
    assert unmarked.poll() is None and other.poll() is None  # e.g. a pid the system reused


def test_the_guardian_kills_what_it_watches_when_the_pipe_closes(tmp_path, groups):
    state = tmp_path / ".kubeless-local"
    state.mkdir()
    project = str(state.resolve())
    watched, forgotten = groups(project), groups(project)
    keeper = Guardian(state)
    keeper.watch(watched.pid)
    keeper.watch(forgotten.pid)
    keeper.forget(forgotten.pid)
    assert json.loads((state / "processes.json").read_text())["groups"] == [watched.pid]
    keeper.proc.stdin.close()  # what the kernel does when `dev` dies, kill -9 included
    assert dies(watched)
    assert keeper.proc.wait(30) == 0
    assert dies(forgotten)  # `dev` stopped what it forgets; one that ran on carries the marker: a stray, killed too


def test_a_clean_close_removes_the_record(tmp_path):
    keeper = Guardian(tmp_path)
    keeper.watch(123456789)
    keeper.forget(123456789)
    keeper.close(timeout=60)  # a clean close waits for the guardian's interpreter, slow to start under load
    assert keeper.proc.returncode == 0 and not (tmp_path / "processes.json").exists()


def test_the_guardian_runs_nicer_than_dev(tmp_path):
    """Its start (an interpreter) yields to the functions'; it is still there to do its work at the pipe's end."""
    keeper = Guardian(tmp_path)
    try:
        expected = min(os.getpriority(os.PRIO_PROCESS, 0) + guardian.NICENESS, 19)  # 19: the nicest there is
        assert os.getpriority(os.PRIO_PROCESS, keeper.proc.pid) == expected
    finally:
        keeper.close(timeout=60)
    assert keeper.proc.returncode == 0


def test_the_guardian_process_starts_light(tmp_path):
    """It runs beside the functions' start: of the standard library it imports only what it uses itself (here
    without site, whose .pth files import what they will)."""
    script = "import sys, kubeless_local.emulator.guardian; print(' '.join(sys.modules))"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(guardian.__file__))))
    loaded = subprocess.run([sys.executable, "-S", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert {"json", "subprocess", "threading", "pathlib", "typing", "signal"}.isdisjoint(loaded.stdout.split())


def test_leftovers_of_a_dead_session_are_stopped(tmp_path, groups):
    left = groups(str(tmp_path.resolve()))
    (tmp_path / "processes.json").write_text(json.dumps({"pid": 4242, "groups": [left.pid], "containers": False}))
    said = []
    sweep_leftovers(tmp_path, said.append)
    assert dies(left)
    assert said == ["stopped what an earlier kubeless-local (pid 4242) left running: process group %d" % left.pid]
    assert not (tmp_path / "processes.json").exists()
    sweep_leftovers(tmp_path, said.append)  # nothing recorded: nothing to do
    assert len(said) == 1


def test_strays_carrying_the_marker_and_older_than_the_end_are_killed(tmp_path, groups):
    """A process a function started in a session of its own is in no watched group: the marker and its start time
    (before the session ended, not a next session's) find it."""
    project = str(tmp_path)
    stray, unmarked, other = groups(project), groups(None), groups(project + "-other")
    assert guardian.kill_strays(project, guardian.process_stat(stray.pid)[1]) == []  # as young as the end: kept
    after = guardian.process_stat(stray.pid)[1] + 1  # started before it
    assert guardian.kill_strays(project, after, groups=[stray.pid]) == []  # killed with its group, not as a stray
    assert guardian.kill_strays(project, after) == [stray.pid]
    assert dies(stray)
    assert unmarked.poll() is None and other.poll() is None


def test_the_strays_of_a_session_are_older_than_the_next_session(tmp_path, groups):
    """A guardian woken late (a loaded machine) finds the next session running: what that one started is younger
    than its process (the lock's holder), and is no stray of the session that ended."""
    ended, following = groups(None), groups(None)
    # start times are ticks (10 ms) of the kernel's, now is read from /proc/uptime: a tick apart at most
    wait_until(lambda: guardian.ticks_now() > guardian.process_stat(following.pid)[1] + 1, "two ticks later", 5, 0.005)
    (tmp_path / "lock").write_text("%d\n" % ended.pid)
    assert guardian.session_end(str(tmp_path), ended.pid) >= guardian.process_stat(following.pid)[1]
    (tmp_path / "lock").write_text("%d\n" % following.pid)
    assert guardian.session_end(str(tmp_path), ended.pid) == guardian.process_stat(following.pid)[1]
    (tmp_path / "lock").unlink()
    assert guardian.session_end(str(tmp_path), ended.pid) >= guardian.process_stat(following.pid)[1]


def test_a_dead_sessions_strays_are_stopped_and_said(tmp_path, groups):
    """By the next session's process: what is older than it (this test's process is older than the stray)."""
    left = groups(str(tmp_path.resolve()))
    # a start time is counted in ticks (10 ms): the next session's process starts in a later one
    wait_until(lambda: guardian.ticks_now() > guardian.process_stat(left.pid)[1], "a tick later", 5, 0.005)
    (tmp_path / "processes.json").write_text(json.dumps({"pid": 4242, "groups": [], "containers": False}))
    sweep = (
        "import sys; from kubeless_local.emulator.guardian import sweep_leftovers; sweep_leftovers(sys.argv[1], print)"
    )
    said = subprocess.run([sys.executable, "-c", sweep, str(tmp_path)], capture_output=True, text=True, check=True)
    assert dies(left)
    assert said.stdout == "stopped what an earlier kubeless-local (pid 4242) left running: process %d\n" % left.pid


def test_the_projects_containers_are_removed(monkeypatch):
    docker = pytest.importorskip("docker")

    class Container:
        def __init__(self, name):
            self.attrs, self.removed = {"Names": ["/" + name]}, False  # a sparse listing's attributes

        def remove(self, force):
            self.removed = force

    found = [Container("kubeless-local-hello"), Container("kubeless-local-bye")]
    asked = []

    class Containers:
        def list(self, all, sparse, filters):
            asked.append((all, sparse, filters))
            return found

    class Client:
        containers = Containers()

    monkeypatch.setattr(docker, "from_env", lambda timeout: Client())
    assert guardian.remove_containers("/p/.kubeless-local") == ["kubeless-local-hello", "kubeless-local-bye"]
    assert asked == [(True, True, {"label": "kubeless-local.project=/p/.kubeless-local"})]
    assert all(container.removed for container in found)


def test_containers_made_since_a_time_are_a_next_sessions_and_stay(monkeypatch):
    """kill -9 of a `run`, then `run` again: the new one's first step sends its relay at once (relaystart.py), before
    the old session's guardian (or the new one's sweep of leftovers) lists the project's containers."""
    docker = pytest.importorskip("docker")
    since = 1_700_000_000.5

    class Container:
        def __init__(self, name, created, stamp=None):
            self.id, self.stamp, self.removed = name, stamp, False
            self.attrs = {"Names": ["/" + name], "Created": created}  # a listing's: whole seconds

        def remove(self, force):
            if self.id == "busy":  # the other one removes it
                response = type("Response", (), {"status_code": 409, "reason": "Conflict", "url": "/containers/busy"})
                raise docker.errors.APIError("409", response(), "removal of container busy is already in progress")
            self.removed = force

    found = [
        Container("old", 1_699_999_999),
        Container("same-second-before", 1_700_000_000, "2023-11-14T22:13:20.25Z"),
        Container("same-second-after", 1_700_000_000, "2023-11-14T22:13:20.750000001Z"),
        Container("new", 1_700_000_001),
        Container("busy", 1_699_999_990),
    ]

    class API:
        def inspect_container(self, id):
            return {"Created": next(c.stamp for c in found if c.id == id)}

    class Containers:
        def list(self, all, sparse, filters):
            return found

    class Client:
        containers, api = Containers(), API()

    monkeypatch.setattr(docker, "from_env", lambda timeout: Client())
    removed = guardian.remove_containers("/p/.kubeless-local", before=since)
    assert removed == ["old", "same-second-before", "busy"]
    assert [c.id for c in found if c.removed] == ["old", "same-second-before"]


def test_no_docker_engine_is_said_not_raised(monkeypatch, capsys):
    docker = pytest.importorskip("docker")

    def no_engine(timeout):
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", no_engine)
    assert guardian.remove_containers("/p/.kubeless-local") == []
    assert "cannot remove the containers of /p/.kubeless-local" in capsys.readouterr().err

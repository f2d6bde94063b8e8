"""`up -d`: the background session runs what the command line chose (backend, ignore patterns), as `dev` would."""

import json
import os
import shutil
import signal
import uuid

import pytest
from conftest import cli
from waiting import wait_until

from kubeless_local.paths import cache_dir


def rows(cwd):
    return {row["name"]: row for row in json.loads(cli("ls", "-o", "json", cwd=cwd, check=True).stdout)}


def hello_row(cwd):
    """The row of `hello` once the background session has loaded it (`up -d` returns once it answers)."""
    wait_until(lambda: "hello" in rows(cwd), "hello listed by ls", timeout=60)
    return rows(cwd)["hello"]


def test_up_detached_passes_its_backend_and_ignore_patterns_to_the_background_session(tmp_path):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "broken.yaml").write_text("kind: Function\n: not yaml\n")  # only read if not ignored
    try:
        up = cli("up", "-d", "--backend", "docker", "--ignore", "scratch/", ".", cwd=tmp_path, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        row = hello_row(tmp_path)
        assert row["backend"] == "docker", row
        assert set(rows(tmp_path)) == {"hello"}  # no ConfigError row for the ignored folder's file
    finally:
        cli("down", ".", cwd=tmp_path, timeout=120)


def test_up_reads_the_backend_from_the_environment_as_dev_does(tmp_path, monkeypatch):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    monkeypatch.setenv("KUBELESS_LOCAL_BACKEND", "docker")
    try:
        up = cli("up", "-d", ".", cwd=tmp_path, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        assert hello_row(tmp_path)["backend"] == "docker"
    finally:
        cli("down", ".", cwd=tmp_path, timeout=120)


def test_a_call_right_after_up_waits_for_the_function_installing_and_starting(tmp_path):
    """`up -d && call`: the background session answers before its functions serve; `call` said `hello is
    Installing: not serving` (exit 1). It now waits for a function on its way (one line on stderr says so)."""
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    # a deps file of its own: a real install (the function is Installing for a while)
    deps = "six\n# %s\n" % uuid.uuid4()
    (project / "requirements.txt").write_text(deps)
    try:
        up = cli("up", "-d", cwd=project, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        called = cli("call", "hello", cwd=project, timeout=180)
        assert (called.returncode, called.stdout.strip()) == (0, "hello world"), called.stdout + called.stderr
    finally:
        cli("down", cwd=project, timeout=120)
        for installed in (cache_dir() / "deps" / "python3.11").glob("*/requirements.txt"):
            if installed.read_text() == deps:  # the cached install of a deps file no other test has
                shutil.rmtree(installed.parent)
                installed.parent.with_name(installed.parent.name + ".lock").unlink(missing_ok=True)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_down_stops_a_background_session_whose_folder_was_moved_or_deleted(tmp_path, how):
    """`up -d` in a folder renamed or deleted since (a temporary checkout): `down` said no session runs it, or that
    the folder does not exist, and the session kept its ports until killed by hand."""
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    up = cli("up", "-d", cwd=project, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    pid = json.loads((project / ".kubeless-local" / "admin.json").read_text())["pid"]
    try:
        if how == "moved":
            moved = project.rename(tmp_path / "renamed")
            down = cli("down", cwd=moved, timeout=120)
        else:
            shutil.rmtree(project)
            down = cli("down", str(project), cwd=tmp_path, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped kubeless-local" in down.stdout
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)

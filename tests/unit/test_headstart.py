"""`run`'s head start (emulator/headstart.py): what its runtime last started is started before the engine knows
what it needs, and claimed only when it is the very process the backend would start; it never outlives `run`.
The template's libraries are empty modules here; a held server is the real held.js (Node), running a small
script that says what it was started with."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_for, wait_until

from kubeless_local.emulator import headstart, prestart
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.emulator.prestart import CONTROL_FD
from kubeless_local.runtimes import RUNTIMES_DIR

NODE = shutil.which("node")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The user's cache (its hints) in tmp_path; what the module started is forgotten before and after."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    headstart.close_unclaimed()
    yield tmp_path / "cache"
    headstart.close_unclaimed()


def template_argv(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for name in ("bottle", "httptools", "prometheus_client"):
        (lib / (name + ".py")).write_text("")
    return [sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), CONTROL_FD, str(lib)]


def assert_forks_a_server(template, env, tmp_path):
    script = tmp_path / "server.py"
    script.write_text("print('served', flush=True)")
    child = template.spawn([sys.executable, "-S", "-u", str(script)], env, str(tmp_path))
    assert child is not None and child.stdout.read() == b"served\n" and child.wait(timeout=30) == 0


class Watched(list):
    """A guardian's two verbs, noted."""

    def watch(self, pgid):
        self.append(pgid)

    def forget(self, pgid):
        self.remove(pgid)


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_template_its_runtime_last_used_is_started_ahead_and_claimed_only_if_it_is_the_one(tmp_path, cache):
    argv, project = template_argv(tmp_path), str(tmp_path / "state")
    env = {**machine_env(), "KUBELESS_LOCAL_PROJECT": project}
    assert headstart.claim_template("python3.11", argv, env) is None  # no head start (dev, tests): nothing kept
    assert not os.path.exists(prestart.hint_path("python3.11"))
    headstart.head_start("python3.11", project)  # no guess yet: nothing started; the claim remembers
    assert headstart.claim_template("python3.11", argv, env) is None
    assert prestart.read_hint("python3.11") == (headstart.TEMPLATE, argv)

    headstart.head_start("python3.11", project)
    guardian = Watched()
    claimed = headstart.claim_template("python3.11", argv, env, guardian)
    assert claimed is not None and claimed.proc is not None and guardian == [claimed.proc.pid]
    try:
        assert_forks_a_server(claimed, env, tmp_path)
    finally:
        claimed.close()

    headstart.head_start("python3.11", str(tmp_path / "another-state"))  # another project's env: not claimed
    other, _ = headstart._unclaimed["python3.11"]
    assert headstart.claim_template("python3.11", argv, env) is None
    assert other.proc.wait(timeout=30) is not None  # closed
    moved = [*argv[:-1], str(tmp_path / "lib2")]  # another template now (a new runtime library)
    headstart.head_start("python3.11", project)
    assert headstart.claim_template("python3.11", moved, env) is None
    headstart.head_start("python3.11", project)
    assert headstart._unclaimed == {}  # lib2 does not exist: no start on a guess whose files are gone
    assert headstart._asked == {"python3.11": moved}


def test_a_runtime_is_head_started_once_until_claimed(tmp_path, cache):
    """The console script head-starts a plain `run` line (commands/entry.py), then the command asks again: the
    second ask starts nothing (one process, claimed once); after a claim, the next ask starts again."""
    argv, project = template_argv(tmp_path), str(tmp_path / "state")
    env = {**machine_env(), "KUBELESS_LOCAL_PROJECT": project}
    headstart._remember("python3.11", headstart.TEMPLATE, argv)
    headstart.head_start("python3.11", project)
    first, _ = headstart._unclaimed["python3.11"]
    headstart.head_start("python3.11", project)
    assert headstart._unclaimed["python3.11"][0] is first
    claimed = headstart.claim_template("python3.11", argv, env)
    try:
        assert claimed is first and headstart._unclaimed == {}
        headstart.head_start("python3.11", project)
        assert headstart._unclaimed["python3.11"][0] is not first
    finally:
        claimed.close()


def test_a_head_start_ends_with_its_run_unclaimed_and_on_kill_9(tmp_path, cache):
    """Nothing watches it before the backend claims it: it ends because `run`'s end of its socket closes."""
    argv, project = template_argv(tmp_path), str(tmp_path / "state")
    headstart.head_start("python3.11", project)
    headstart.claim_template("python3.11", argv, {**machine_env(), "KUBELESS_LOCAL_PROJECT": project})  # the hint
    code = (
        "import sys; from kubeless_local.emulator import headstart\n"
        "headstart.head_start('python3.11', sys.argv[1])\n"
        "print(headstart._unclaimed['python3.11'][0].proc.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    # `run` imports the installation this test imports (its hints are per installation): the checkout's, or under
    # tox the installed one, which `-c` in the checkout's folder would not import first
    imported = str(Path(headstart.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": imported}
    run = subprocess.Popen([sys.executable, "-c", code, project], stdout=subprocess.PIPE, cwd=tmp_path, env=env)
    try:
        pid = int(run.stdout.readline())
        assert not gone(pid)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    wait_until(lambda: gone(pid), "the head-started template gone with its run", 30)


@pytest.mark.skipif(NODE is None, reason="no node on this machine")
def test_a_held_server_runs_with_the_env_and_folder_it_is_released_with(tmp_path, cache):
    """Node's head start is the server itself, held until the engine knows its env (port, handler…): released,
    it runs as a fresh start with that env would; started with other variables than those its interpreter reads
    at start (NODE_OPTIONS), it is not claimed; unclaimed, it ends with `run`."""
    server = tmp_path / "server.js"
    server.write_text(
        "console.log(JSON.stringify({argv: process.argv.slice(1), cwd: process.cwd(), greeting: process.env.GREETING,"
        " home: process.env.HOME === undefined, project: process.env.KUBELESS_LOCAL_PROJECT, dep: require('greet')}));\n"
    )
    (tmp_path / "deps" / "greet").mkdir(parents=True)
    (tmp_path / "deps" / "greet" / "index.js").write_text("module.exports = 'found on NODE_PATH';\n")
    argv = [NODE, str(RUNTIMES_DIR / "nodejs" / "held.js"), str(server)]
    project = str(tmp_path / "state")
    headstart._remember("nodejs20", headstart.HELD, argv)
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    env.update(GREETING="hi", NODE_PATH=str(tmp_path / "deps"), KUBELESS_LOCAL_PROJECT=project)

    headstart.head_start("nodejs20", project)
    proc = headstart.claim_held("nodejs20", argv, env, str(tmp_path))
    assert proc is not None
    said = json.loads(proc.stdout.read())
    assert proc.wait(timeout=30) == 0
    assert said == {
        "argv": [str(server)],
        "cwd": str(tmp_path),
        "greeting": "hi",
        "home": True,  # a variable the release does not give is gone
        "project": project,
        "dep": "found on NODE_PATH",  # read again on release: the function's deps are found
    }

    headstart.head_start("nodejs20", project)
    held, _ = headstart._unclaimed["nodejs20"]
    assert headstart.claim_held("nodejs20", argv, {**env, "NODE_OPTIONS": "--no-warnings"}, str(tmp_path)) is None
    assert held.wait(timeout=30) == 0  # closed: the end of its stdin


def test_a_held_server_whose_stdin_does_not_block_waits_without_spinning(tmp_path):
    """A held server reads its release from stdin; given a pipe that is non-blocking (a parent's choice), its read
    says EAGAIN until the line comes: it waits between reads instead of retrying at once, a core at 100 %."""
    server = tmp_path / "server.js"
    server.write_text("console.log(JSON.stringify({cwd: process.cwd()}));\n")
    reading, writing = os.pipe()
    os.set_blocking(reading, False)
    held = subprocess.Popen(
        [NODE, str(RUNTIMES_DIR / "nodejs" / "held.js"), str(server)], stdin=reading, stdout=subprocess.PIPE
    )
    os.close(reading)
    try:
        wait_until(lambda: cpu_seconds(held.pid) > 0, "node started", timeout=30)
        started = cpu_seconds(held.pid)
        # spinning on EAGAIN takes a whole core: 0.5 s of CPU well within 2 s; waiting takes none (what is left
        # of node's own start, a tenth of that)
        assert not wait_for(lambda: cpu_seconds(held.pid) - started > 0.5, seconds=2)
        os.write(writing, (json.dumps({"env": dict(os.environ), "cwd": str(tmp_path)}) + "\n").encode())
        assert json.loads(held.stdout.read()) == {"cwd": str(tmp_path)}
        assert held.wait(timeout=30) == 0
    finally:
        os.close(writing)
        held.kill()
        held.wait()


def cpu_seconds(pid):
    """User and system CPU time of a process so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

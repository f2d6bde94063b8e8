"""Servers forked from the Python runtime's template process (emulator/forkserver.py, runtimes/python/template.py):
what the fork sees is what a fresh `python -S -u script` would, and what a fresh one would see differently is
refused. The template's libraries are empty modules here (its fork mechanics are what is tested; the conformance
suite runs the real server through it)."""

import os
import signal
import subprocess
import sys

import pytest
from waiting import wait_until

from kubeless_local.emulator.forkserver import CONTROL_FD, Template
from kubeless_local.runtimes import RUNTIMES_DIR

SCRIPT = """\
import os, sys
print("argv", sys.argv, "cwd", os.getcwd(), "group", os.getpgid(0) == os.getpid(), flush=True)
print("env", os.environ.get("GREETING"), os.environ.get("KUBELESS_LOCAL_TEMPLATE_ROOM"), flush=True)
print("path", sys.path[1], file=sys.stderr, flush=True)
print("main", __name__, __file__, flush=True)
import shadowing_check
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture
def template(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("bottle", "httptools", "prometheus_client"):
        (lib / (name + ".py")).write_text("")
    argv = [sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), CONTROL_FD, str(lib)]
    made = Template(argv, {"PATH": os.environ.get("PATH", ""), "KUBELESS_LOCAL_PROJECT": str(tmp_path)})
    yield made
    made.close()
    assert made.proc is None or made.proc.poll() is not None


def server(tmp_path, **env):
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "shadowing_check.py").write_text("")
    script = tmp_path / "server.py"
    script.write_text(SCRIPT)
    argv = [sys.executable, "-S", "-u", str(script)]
    full = {"PATH": os.environ.get("PATH", ""), "KUBELESS_LOCAL_PROJECT": str(tmp_path), "PYTHONPATH": str(code)}
    return argv, {**full, **env}, str(code)


def test_a_fork_runs_the_script_as_a_fresh_interpreter_would(tmp_path, template):
    argv, env, cwd = server(tmp_path, GREETING="hi", EXIT="4")
    child = template.spawn(argv, env, cwd)
    assert child is not None
    out, err = child.stdout.read().decode(), child.stderr.read().decode()
    assert child.wait(timeout=30) == 4
    assert "argv ['%s'] cwd %s group True" % (argv[-1], cwd) in out
    assert "env hi None" in out  # its own env, not the template's
    assert "main __main__ %s" % argv[-1] in out
    assert err == "path %s\n" % env["PYTHONPATH"]


def test_its_proc_cmdline_and_environ_tell_what_it_runs(tmp_path, template):
    argv, env, cwd = server(tmp_path, GREETING="hi")
    (tmp_path / "server.py").write_text("import time; print('up', flush=True); time.sleep(60)")
    child = template.spawn(argv, env, cwd)
    assert child is not None
    assert child.stdout.readline() == b"up\n"
    with open("/proc/%d/cmdline" % child.pid, "rb") as cmdline:
        assert [a for a in cmdline.read().split(b"\0") if a] == [a.encode() for a in argv]
    with open("/proc/%d/environ" % child.pid, "rb") as environ:
        assert {v for v in environ.read().split(b"\0") if v} == {("%s=%s" % kv).encode() for kv in env.items()}
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize(
    "change",
    [
        {"env": {"PYTHONWARNINGS": "error"}},  # read when an interpreter starts
        {"argv": ["-S"]},  # other flags
        {"shadow": "bottle.py"},  # the function's deps bring their own copy of a preloaded library
        {"env": {"BIG": "x" * (64 << 10)}},  # more env than the template has room for in /proc
    ],
)
def test_what_a_fork_would_run_differently_is_refused(tmp_path, template, change):
    argv, env, cwd = server(tmp_path, **change.get("env", {}))
    if "argv" in change:
        argv = [argv[0], *change["argv"], argv[-1]]
    if "shadow" in change:
        (tmp_path / "code" / change["shadow"]).write_text("")
    assert template.spawn(argv, env, cwd) is None
    assert not template.broken  # the next one is forked again
    (tmp_path / "code" / "bottle.py").unlink(missing_ok=True)
    child = template.spawn(*server(tmp_path))
    assert child is not None and child.wait(timeout=30) == 0


def test_servers_of_a_template_that_died_are_killed_and_reported(tmp_path, template):
    argv, env, cwd = server(tmp_path)
    (tmp_path / "server.py").write_text("import time; print('up', flush=True); time.sleep(60)")
    child = template.spawn(argv, env, cwd)
    assert child is not None and child.stdout.readline() == b"up\n"
    assert template.proc is not None
    os.killpg(template.proc.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    wait_until(lambda: not os.path.exists("/proc/%d" % child.pid) or _zombie(child.pid), "the server gone")
    assert template.broken and template.spawn(argv, env, cwd) is None  # the backend makes a new one


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_template_that_does_not_answer_is_killed_and_not_asked_again(tmp_path, monkeypatch):
    """A late answer would be taken for the next request's: a stuck template is given up (the caller then
    starts its server as a fresh process)."""
    from kubeless_local.emulator import forkserver

    monkeypatch.setattr(forkserver, "START_TIMEOUT", 0.5)
    silent = Template([sys.executable, "-c", "import time; time.sleep(60)", CONTROL_FD], dict(os.environ))
    try:
        assert silent.spawn(*server(tmp_path)) is None
        assert silent.broken and silent.proc is not None
        assert silent.proc.wait(timeout=30) == -signal.SIGKILL
        assert silent.spawn(*server(tmp_path)) is None
    finally:
        silent.close()


@pytest.fixture
def head_start_cache(tmp_path, monkeypatch):
    """The user's cache (its hints) in tmp_path; head starts of the module forgotten before and after."""
    from kubeless_local.emulator import forkserver

    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    forkserver.close_unclaimed()
    yield forkserver
    forkserver.close_unclaimed()


def empty_lib(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for name in ("bottle", "httptools", "prometheus_client"):
        (lib / (name + ".py")).write_text("")
    return [sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), CONTROL_FD, str(lib)]


class Watched(list):
    """A guardian's two verbs, noted."""

    def watch(self, pgid):
        self.append(pgid)

    def forget(self, pgid):
        self.remove(pgid)


def test_run_head_starts_the_template_its_runtime_last_used_and_the_backend_claims_it(tmp_path, head_start_cache):
    """`run` starts the template before the engine has worked out which one it needs (its imports then overlap
    the engine's): the guess is the template the runtime last ran from, claimed only if it is the very one (argv
    and env); a wrong one is closed and the guess corrected. Only a head start's runtime is remembered."""
    forkserver = head_start_cache
    argv, project = empty_lib(tmp_path), str(tmp_path / "state")
    env = {**os.environ, "KUBELESS_LOCAL_PROJECT": project}
    assert forkserver.claim("python3.11", argv, env) is None  # no head start (dev, tests): nothing remembered
    assert not (tmp_path / "cache" / forkserver.HINTS).exists()
    forkserver.head_start("python3.11", project)  # no guess yet: nothing started, the claim remembers
    assert forkserver.claim("python3.11", argv, env) is None
    assert (tmp_path / "cache" / forkserver.HINTS).exists()

    forkserver.head_start("python3.11", project)
    guardian = Watched()
    claimed = forkserver.claim("python3.11", argv, env, guardian)
    assert claimed is not None and claimed.proc is not None and guardian == [claimed.proc.pid]
    try:
        argv_, env_, cwd = server(tmp_path)
        child = claimed.spawn(argv_, env_, cwd)
        assert child is not None and child.wait(timeout=30) == 0  # it forks servers as any template does
    finally:
        claimed.close()

    forkserver.head_start("python3.11", str(tmp_path / "another-state"))  # another project's env: not claimed
    other = forkserver._unclaimed["python3.11"]
    assert forkserver.claim("python3.11", argv, env) is None
    assert other.proc is not None and other.proc.wait(timeout=30) is not None  # closed
    moved = [*argv[:-1], str(tmp_path / "lib2")]  # another template now (a new runtime library)
    forkserver.head_start("python3.11", project)
    assert forkserver.claim("python3.11", moved, env) is None
    forkserver.head_start("python3.11", project)
    assert forkserver._unclaimed == {}  # lib2 does not exist: no start on a guess whose files are gone
    assert forkserver._asked == {"python3.11": moved}


def test_a_head_started_template_ends_with_its_run_even_unclaimed_and_on_kill_9(tmp_path, head_start_cache):
    """Nothing watches it before the backend claims it: it ends because `run`'s end of its socket closes."""
    forkserver = head_start_cache
    argv, project = empty_lib(tmp_path), str(tmp_path / "state")
    forkserver.head_start("python3.11", project)
    forkserver.claim("python3.11", argv, {**os.environ, "KUBELESS_LOCAL_PROJECT": project})  # the hint
    code = (
        "import sys; from kubeless_local.emulator import forkserver\n"
        "forkserver.head_start('python3.11', sys.argv[1])\n"
        "print(forkserver._unclaimed['python3.11'].proc.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    env = {**os.environ, "KUBELESS_LOCAL_CACHE": str(tmp_path / "cache")}
    run = subprocess.Popen([sys.executable, "-c", code, project], stdout=subprocess.PIPE, env=env)
    try:
        pid = int(run.stdout.readline())
        assert not _zombie(pid)
    finally:
        run.kill()
        run.wait()
    wait_until(lambda: _zombie(pid), "the head-started template gone with its run", 30)

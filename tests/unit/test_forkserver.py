"""Servers forked from the Python runtime's template process (emulator/forkserver.py, runtimes/python/template.py):
what the fork sees is what a fresh `python -S -u script` would, and what a fresh one would see differently is
refused. The template's libraries are empty modules here (its fork mechanics are what is tested; the conformance
suite runs the real server through it)."""

import os
import signal
import sys
from pathlib import Path

import pytest
from waiting import wait_until

from kubeless_local.emulator.forkserver import Template
from kubeless_local.emulator.prestart import CONTROL_FD
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


def test_a_template_runs_a_script_from_its_cached_bytecode_while_that_is_current(tmp_path):
    """The template compiles its server once and keeps the bytecode beside it (as an import does), so the next
    template need not; a script changed since is compiled again."""
    script = tmp_path / "server.py"
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("bottle", "httptools", "prometheus_client"):
        (lib / (name + ".py")).write_text("")
    argv = [sys.executable, "-S", "-u", str(RUNTIMES_DIR / "python" / "template.py"), CONTROL_FD, str(lib)]
    env = {"PATH": os.environ.get("PATH", ""), "KUBELESS_LOCAL_PROJECT": str(tmp_path)}
    said = []
    for version in ("one", "two"):
        script.write_text("print(%r, flush=True)\n" % version)
        os.utime(script, (0, len(said)))  # another mtime for each version, however fast this runs
        made = Template(argv, env)
        try:
            child = made.spawn([sys.executable, "-S", "-u", str(script)], env, str(tmp_path))
            assert child is not None
            said.append(child.stdout.read().decode().strip())
            assert child.wait(timeout=30) == 0
        finally:
            made.close()
        assert [p.name for p in (tmp_path / "__pycache__").iterdir()] == [
            "server.%s.pyc" % sys.implementation.cache_tag
        ]
    assert said == ["one", "two"]


def test_the_first_server_is_forked_before_prometheus_client_is_loaded_and_the_next_ones_after(tmp_path, template):
    """The first server (`run`'s) is not kept waiting for prometheus_client (it loads it at its first /metrics); the
    template loads it then, for the servers it forks next, and refuses from then on a function that brings its own."""
    script = tmp_path / "server.py"
    script.write_text("import sys\nprint('prometheus_client' in sys.modules, flush=True)\n")
    env = {"PATH": os.environ.get("PATH", ""), "KUBELESS_LOCAL_PROJECT": str(tmp_path)}
    argv = [sys.executable, "-S", "-u", str(script)]
    loaded = []
    for _ in range(2):
        child = template.spawn(argv, env, str(tmp_path))
        assert child is not None
        loaded.append(child.stdout.read().decode().strip())
        assert child.wait(timeout=30) == 0
    assert loaded == ["False", "True"]
    own = tmp_path / "deps"
    own.mkdir()
    (own / "prometheus_client.py").write_text("")
    assert template.spawn(argv, {**env, "PYTHONPATH": str(own)}, str(tmp_path)) is None


def test_the_template_loads_prometheus_client_once_idle_after_its_first_fork(tmp_path, template):
    """Not beside the first server's start (`run`'s first answer), but once nothing has asked for LATER_IDLE."""
    lib = Path(template.argv[-1])
    (lib / "prometheus_client.py").write_text(
        "import os\nopen(os.path.join(os.path.dirname(__file__), 'loaded-by-%d' % os.getpid()), 'w').close()\n"
    )
    script = tmp_path / "server.py"
    script.write_text("import sys\nprint('prometheus_client' in sys.modules, flush=True)\n")
    env = {"PATH": os.environ.get("PATH", ""), "KUBELESS_LOCAL_PROJECT": str(tmp_path)}
    child = template.spawn([sys.executable, "-S", "-u", str(script)], env, str(tmp_path))
    assert child is not None and child.stdout.read() == b"False\n" and child.wait(timeout=30) == 0
    assert template.proc is not None
    marker = lib / ("loaded-by-%d" % template.proc.pid)
    wait_until(marker.exists, "the template's own import of prometheus_client, with no request since", 30)

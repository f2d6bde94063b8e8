"""A plain `run`'s first step (emulator/prestart.py): the template its runtime last started is spawned before anything
heavier than os is imported, and it is the very process the head start then takes; its hints, its function name and
its spawn (no descriptor of ours leaks, a session of its own) as subprocess's were."""

import json
import os
import re
import subprocess
import sys

import pytest
from test_headstart import assert_forks_a_server, cache, template_argv  # noqa: F401 - the fixture: hints in tmp_path, nothing left started

from kubeless_local.emulator import headstart, prestart
from kubeless_local.emulator.machineenv import machine_env


@pytest.mark.parametrize(
    "handler",
    ["handler.hello", "My_Module.f", "__init__.x", "a--b.c", "-a_.x", "über.x", "İx.y", "___.z", "a_-_b.c", "x"],
)
def test_the_function_name_is_the_one_the_regular_expression_made(handler):
    by_regex = re.sub(r"[^a-z0-9-]+", "-", handler.split(".")[0].lower()).strip("-") or "function"
    assert prestart.function_name(handler) == by_regex
    assert prestart.function_name(handler, "given") == "given"


def test_the_early_template_is_the_one_the_head_start_takes(tmp_path, cache):  # noqa: F811
    argv, project = template_argv(tmp_path), str(tmp_path / "state")
    env = {**machine_env(), "KUBELESS_LOCAL_PROJECT": project}
    prestart.start("python3.11", project)
    assert prestart._spawned == {}  # no hint: nothing spawned
    prestart.write_hint("python3.11", prestart.TEMPLATE, argv)
    prestart.start("python3.11", project)
    early = prestart._spawned["python3.11"][2]
    headstart.head_start("python3.11", project)
    assert prestart._spawned == {}
    claimed = headstart.claim_template("python3.11", argv, env)
    try:
        assert claimed is not None and claimed.proc is early
        assert_forks_a_server(claimed, env, tmp_path)
    finally:
        claimed.close()
    assert early.poll() == 0  # the template exits when its socket closes; reaped


def test_an_early_template_for_another_env_is_closed_not_taken(tmp_path, cache):  # noqa: F811
    argv = template_argv(tmp_path)
    prestart.write_hint("python3.11", prestart.TEMPLATE, argv)
    prestart.start("python3.11", str(tmp_path / "one-state"))
    early = prestart._spawned["python3.11"][2]
    headstart.head_start("python3.11", str(tmp_path / "another-state"))
    started, _ = headstart._unclaimed["python3.11"]
    assert started.proc is not early
    assert early.wait(timeout=30) is not None  # closed
    headstart.close_unclaimed()
    assert started.proc.wait(timeout=30) is not None


def test_a_hint_is_for_its_runtime_installation_and_path(tmp_path, cache, monkeypatch):  # noqa: F811
    prestart.write_hint("python3.11", prestart.TEMPLATE, ["/bin/python3", "template.py"])
    assert prestart.read_hint("python3.11") == ("template", ["/bin/python3", "template.py"])
    assert prestart.read_hint("python3.12") is None
    with open(prestart.hint_path("python3.11"), "wb") as hint:
        hint.write(b"garbage")
    assert prestart.read_hint("python3.11") is None
    prestart.write_hint("python3.11", prestart.TEMPLATE, ["/bin/python3", "template.py"])
    prestart.write_hint("python3.11", prestart.TEMPLATE, ["with\0nul"])  # no process can be given it: not kept
    assert prestart.read_hint("python3.11") == ("template", ["/bin/python3", "template.py"])
    monkeypatch.setenv("PATH", "/elsewhere")
    assert prestart.read_hint("python3.11") is None


def test_a_template_gets_no_descriptor_of_ours_and_a_session_of_its_own(tmp_path):
    """As subprocess's close_fds and start_new_session: a descriptor this process was given (here an inheritable
    pipe) is not passed on; the template has its end of its socket, and /dev/null as its stdio."""
    listing = tmp_path / "fds"
    code = (
        "import json, os, sys\n"
        "fds = {}\n"
        "for n in os.listdir('/proc/self/fd'):\n"
        "    try: fds[n] = os.readlink('/proc/self/fd/' + n)\n"
        "    except OSError: pass  # the listing's own\n"
        "open(sys.argv[1], 'w').write(json.dumps([os.getpid(), os.getsid(0), int(sys.argv[2]), fds]))\n"
    )
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    pipe = "pipe:[%d]" % os.fstat(write_end).st_ino
    try:
        proc, ours = prestart.spawn_template([sys.executable, "-S", "-c", code, str(listing), "{control_fd}"], {})
    finally:
        os.close(read_end)
        os.close(write_end)
    try:
        assert proc.wait(timeout=30) == 0
        pid, sid, control, fds = json.loads(listing.read_text())
        assert pid == proc.pid == sid
        assert [fds[n] for n in "012"] == [os.devnull] * 3
        assert fds[str(control)].startswith("socket:") and pipe not in fds.values()
    finally:
        os.close(ours)
    with pytest.raises(OSError):
        prestart.spawn_template(["/nonexistent/python", "{control_fd}"], {})


@pytest.mark.parametrize("module", ["prestart", "relaystart"])
def test_the_first_steps_modules_import_nothing_heavier_than_os(module):
    """Their imports are what the template waits for (relaystart.py is read at the same step): json, re, subprocess,
    pathlib and typing (and enum, which each loads) took ~20 ms of a fresh interpreter."""
    script = "import sys; import kubeless_local.emulator.%s; print(' '.join(sys.modules))" % module
    root = os.path.dirname(os.path.dirname(os.path.dirname(prestart.__file__)))
    loaded = subprocess.run(
        [sys.executable, "-S", "-c", script], env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    heavy = {"json", "re", "enum", "subprocess", "pathlib", "typing", "socket", "threading", "signal", "selectors"}
    assert not (heavy | {"shutil", "tempfile"}) & set(loaded.stdout.split())


def test_an_early_held_server_is_the_one_claimed_and_released(tmp_path, cache):  # noqa: F811
    """Node's head start is its server, held until released with its env and folder (held.js); this one says what
    it was released with. Spawned by prestart first thing, taken by the head start, claimed by the backend."""
    code = "import json, sys; m = json.loads(sys.stdin.readline()); print(m['cwd'], m['env']['GREETING'], flush=True)"
    argv, project = [sys.executable, "-S", "-c", code], str(tmp_path / "state")
    prestart.write_hint("nodejs20", prestart.HELD, argv)
    prestart.start("nodejs20", project)
    early = prestart._spawned["nodejs20"][2]
    headstart.head_start("nodejs20", project)
    env = {**machine_env(), "KUBELESS_LOCAL_PROJECT": project, "GREETING": "hi"}
    held = headstart.claim_held("nodejs20", argv, env, str(tmp_path))
    assert held is early
    assert held.stdout.read() == ("%s hi\n" % tmp_path).encode() and held.wait(timeout=30) == 0
    held.stdout.close()
    held.stderr.close()


def test_one_thread_waits_for_a_spawned_process_while_others_poll(tmp_path):
    """As subprocess.Popen: the process backend's watcher waits while a stop polls and waits with a timeout."""
    import threading

    proc = prestart.spawn_held([sys.executable, "-S", "-c", "import sys; sys.stdin.read(); sys.exit(3)"], {})
    codes = []
    waiter = threading.Thread(target=lambda: codes.append(proc.wait()))
    waiter.start()
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    proc.stdin.close()  # it reads the end of its stdin and exits 3
    waiter.join(timeout=30)
    assert codes == [3] and proc.poll() == 3 and proc.wait(timeout=1) == 3
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def test_with_a_standard_stream_closed_it_refuses_rather_than_clobber_a_descriptor(tmp_path):
    """`run` started with its stdin closed (`<&-`): the socket's ends take descriptor 0, which the template's
    /dev/null stdin would replace; it is refused (OSError: the servers start as fresh processes then)."""
    code = (
        "import sys\nfrom kubeless_local.emulator import prestart\n"
        "try:\n    prestart.spawn_template([sys.executable, '-c', 'pass', '{control_fd}'], {})\n"
        "except OSError as exc:\n    print('refused:', exc)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(prestart.__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(0),
        timeout=60,
    )
    assert done.stdout.startswith("refused: a standard stream of this process is closed"), done.stderr

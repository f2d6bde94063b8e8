"""`dev` stops on every SIGHUP, SIGTERM and closed terminal, also while events flow and the cores are busy.

A stop signal that the kernel hands to one of `dev`'s many threads must still wake the main thread,
which runs the Python handler: repeated trials under event load, each a fresh `dev` on one project.
"""

import contextlib
import fcntl
import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import pytest
import requests
from conftest import Dev
from processes import child_processes
from sockets import free_port
from test_events_e2e import project as events_project
from waiting import wait_until

from kubeless_local.client import AdminClient
from kubeless_local.errors import UserError

STOP_WITHIN = 2.0  # seconds from the signal to `dev`'s exit (the issue's bound)
BUSY_LOOP = """
import os, time
parent, end = os.getppid(), time.monotonic() + 900
while os.getppid() == parent and time.monotonic() < end:
    pass
"""


@pytest.fixture
def busy_cores():
    """One busy loop per core for the test's duration (each also ends when the test process is gone)."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


class EventLoad:
    """Two threads emitting batches to the KafkaTrigger's topic until stopped or `dev` is gone."""

    def __init__(self, state_dir):
        self.client = AdminClient(state_dir)
        self.stopping = threading.Event()
        self.emitted = 0
        self.threads = [threading.Thread(target=self.emit) for _ in range(2)]
        for thread in self.threads:
            thread.start()

    def wait_flowing(self):
        wait_until(lambda: self.emitted >= 10, what="events flowing", timeout=60)

    def emit(self):
        while not self.stopping.is_set():
            try:
                self.client.emit("orders", "load", count=5)
            except UserError:
                return  # `dev` stopped
            self.emitted += 5

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def own_lines(output):
    """`dev`'s own output, without its functions' log lines (`NAME | …`)."""
    return "\n".join(line for line in output.splitlines() if not re.match(r"[\w.-]+ +\| ", line))


def exit_code_within(proc, seconds):
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()  # ignored: the next trial needs the project's lock
        proc.wait()
        return None


@pytest.mark.timeout(900)
def test_sighup_and_sigterm_stop_dev_every_time_under_event_load(tmp_path, busy_cores):
    events_project(tmp_path)
    missed = []
    for trial in range(50):
        signum = (signal.SIGHUP, signal.SIGTERM)[trial % 2]
        dev = Dev(["dev"], cwd=tmp_path)
        try:
            dev.wait_for_output("Watching", timeout=120)
            load = EventLoad(tmp_path / ".kubeless-local")
            try:
                load.wait_flowing()
                time.sleep(random.uniform(0, 0.5))  # a varying moment of the delivery: not a wait
                dev.proc.send_signal(signum)
                code = exit_code_within(dev.proc, STOP_WITHIN)
            finally:
                load.stop()
            if code != 128 + signum:
                missed.append((trial, signum.name, code, dev.output()[-800:]))
            else:
                assert "Traceback" not in own_lines(dev.output()), dev.output()[-3000:]
        finally:
            dev.stop()
    assert not missed, "%d of 50 stop signals missed (trial, signal, exit code):\n%s" % (
        len(missed),
        "\n".join("%s %s %s\n%s" % m for m in missed[:3]),
    )


class TerminalDev:
    """`dev` in a terminal of its own (a pty it has as controlling terminal); output read as it comes."""

    def __init__(self, cwd):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeless_local", "dev"],
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes its terminal
            env=dict(os.environ, NO_COLOR="1"),
        )
        os.close(slave)
        self.text = b""
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self.read)
        self.reader.start()

    def read(self):
        while not self.closing.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: no process holds the terminal any more
                    return
                if not chunk:
                    return
                self.text += chunk

    def output(self):
        return self.text.decode("utf-8", "replace")

    def wait_started(self):
        wait_until(lambda: "Watching" in self.output() or self.proc.poll() is not None, "dev started", timeout=120)
        assert self.proc.poll() is None, self.output()

    def close_terminal(self):
        """As closing the terminal window does: the master side goes away."""
        self.closing.set()
        self.reader.join(timeout=10)
        os.close(self.master)
        self.master = None

    def stop(self):
        if self.master is not None:
            self.close_terminal()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.timeout(600)
def test_a_closed_terminal_stops_dev_every_time_under_event_load(tmp_path, busy_cores):
    events_project(tmp_path)
    missed = []
    for trial in range(20):
        dev = TerminalDev(tmp_path)
        try:
            dev.wait_started()
            load = EventLoad(tmp_path / ".kubeless-local")
            try:
                load.wait_flowing()
                time.sleep(random.uniform(0, 0.5))  # a varying moment of the delivery: not a wait
                dev.close_terminal()
                code = exit_code_within(dev.proc, STOP_WITHIN)
            finally:
                load.stop()
            if code != 128 + signal.SIGHUP:
                missed.append((trial, code, dev.output()[-800:]))
            else:
                assert not (tmp_path / ".kubeless-local" / "admin.json").exists(), dev.output()
        finally:
            dev.stop()
    assert not missed, "%d of 20 closed terminals missed (trial, exit code):\n%s" % (
        len(missed),
        "\n".join("%s %s\n%s" % m for m in missed[:3]),
    )


NOISY = "def hello(event, context):\n    for i in range(5000):\n        print('a line of a noisy call', i)\n    return 'ok'\n"


@pytest.mark.parametrize("paused", ["from-the-start", "after-calls"])
@pytest.mark.parametrize("command", ["run", "dev"])
def test_a_stop_signal_stops_a_session_whose_output_nobody_reads(tmp_path, command, paused):
    # A terminal paused with Ctrl-S (or a pager that stopped reading, a full pipe) blocks every write to it: `dev`
    # then stopped nothing at Ctrl-C, its main thread waiting forever to print "stopping…" (or, paused before the
    # table, waiting for the stream's lock the log printer held, where no signal's handler runs), and every later
    # Ctrl-C ignored. The functions kept serving.
    (tmp_path / "handler.py").write_text(NOISY)
    port = free_port()
    if command == "run":
        args = ["run", "handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--port", str(port)]
    else:
        (tmp_path / "function.yaml").write_text(NOISY_MANIFEST % port)
        args = ["dev", "--no-dashboard"]
    read_end, write_end = os.pipe()  # the session's output: never read
    if paused == "from-the-start":  # full before the first line
        os.set_blocking(write_end, False)
        with contextlib.suppress(BlockingIOError):
            while os.write(write_end, b"x" * 4096):
                pass
        os.set_blocking(write_end, True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeless_local", *args], cwd=tmp_path, stdout=write_end, stderr=write_end
    )
    os.close(write_end)
    try:
        url = "http://127.0.0.1:%d/" % port
        wait_until(lambda: answered(url), "the first answer", timeout=60)
        for _ in range(5):  # ~150 KB of log lines: more than the pipe holds
            assert requests.get(url, timeout=30).text == "ok"
        server = [pid for pid in child_processes(proc.pid) if "kubeless" in cmdline(pid) or "template" in cmdline(pid)]
        proc.send_signal(signal.SIGINT)
        assert exit_code_within(proc, 10) == 130
        wait_until(lambda: not any(alive(pid) for pid in server), "the function's server gone", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)


NOISY_MANIFEST = """apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: noisy
  annotations:
    local.kubeless.io/source: handler.py
    local.kubeless.io/port: "%d"
spec:
  runtime: python3.11
  handler: handler.hello
"""


def answered(url):
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"

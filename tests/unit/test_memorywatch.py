"""The process backend's memory limit: what a process group holds, and the watch that stops it past its limit."""

import os
import subprocess
import sys
import threading

import pytest

from kubeless_local.emulator import memorywatch

HOLDER = """
import sys
held = bytearray(b"x" * (int(sys.argv[1]) << 20))  # touched: resident
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holding():
    """holding(mib) -> a process (its own process group) that holds `mib` MiB until the test ends."""
    started = []

    def start(mib):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(mib)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("found", ["from children", "from every process's group"])
def test_what_a_process_tree_holds_is_counted(holding, monkeypatch, found):
    proc = holding(64)
    if found != "from children":  # a kernel that does not list a process's children
        monkeypatch.setattr(memorywatch.os.path, "exists", lambda path: "children" not in path)
    trees = memorywatch.process_trees({proc.pid, os.getpid()})
    assert trees[proc.pid] == [proc.pid]
    if found == "from children":
        assert trees[os.getpid()][0] == os.getpid() and proc.pid in trees[os.getpid()]  # its child: in its tree
    assert 64 << 20 <= memorywatch.resident_bytes(proc.pid) < 128 << 20
    assert memorywatch.most_bytes(proc.pid) >= memorywatch.resident_bytes(proc.pid)  # the cheap look: a bound
    assert memorywatch.resident_bytes(proc.pid) < memorywatch.resident_bytes(proc.pid) + (1 << 20)
    proc.kill()
    proc.wait(timeout=10)
    assert memorywatch.resident_bytes(proc.pid) == 0  # ended: nothing


def test_the_watch_calls_once_for_a_group_past_its_limit_and_never_under_it(holding, monkeypatch):
    monkeypatch.setattr(memorywatch, "LOOK_EVERY", 0.02)
    over, under = holding(64), holding(8)
    called = {over.pid: [], under.pid: []}
    past = threading.Event()

    def told(pid):
        return lambda used: (called[pid].append(used), past.set())

    watch = memorywatch.MemoryWatch()
    try:
        watch.watch(over.pid, 32 << 20, told(over.pid))
        watch.watch(under.pid, 64 << 20, told(under.pid))
        assert past.wait(10)
        for _ in range(10):  # more looks: the one past its limit is not told again, the other never
            threading.Event().wait(0.02)
        assert len(called[over.pid]) == 1 and called[over.pid][0] > 32 << 20 and called[under.pid] == []
    finally:
        watch.close()
    assert not watch.thread.is_alive()


def test_a_forgotten_group_is_not_looked_at(holding, monkeypatch):
    monkeypatch.setattr(memorywatch, "LOOK_EVERY", 0.5)  # the first look comes long after the forget
    proc = holding(64)
    called = []
    watch = memorywatch.MemoryWatch()
    try:
        watch.watch(proc.pid, 1 << 20, called.append)
        watch.forget(proc.pid)
        threading.Event().wait(1.2)  # two looks
        assert called == []
    finally:
        watch.close()

"""Processes of a runtime server as the host sees them (process backend), and stopping the tests' own."""

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys

import requests
from waiting import wait_until


def interrupt(proc, timeout=15):
    """Stop `proc` as Ctrl-C does (SIGINT); killed when it has not ended within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Waits for its stdin to close (the test process ended, however: teardown, SIGTERM, kill -9), then runs its argv.
WATCHER = "import subprocess, sys; sys.stdin.buffer.read(); subprocess.run(sys.argv[1:], timeout=120)"


@contextlib.contextmanager
def undone_at_exit(argv):
    """Runs `argv` (what stops daemons a script started in the background) when the block ends, or when this
    process dies without ending it: a watcher in a session of its own (a Ctrl-C of the terminal does not
    reach it) holds a pipe from us and runs `argv` once the pipe closes."""
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, *argv], stdin=subprocess.PIPE, start_new_session=True)
    try:
        yield
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=150)


def alive(pid):
    """A process that runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running_with(argument):
    """Pids of the running processes (any user's, a container's too) one of whose arguments is `argument`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if argument.encode() in f.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def child_processes(pid):
    """Pids whose parent is `pid` (the server's workers)."""
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry))
        except (OSError, ValueError):
            continue
    return children


def tree_rss_mb(pid):
    """Resident memory (MiB) of `pid` and every process below it: a server and its workers (the
    container's processes for the docker backend, `pid` being its init)."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/status" % entry) as f:
                rss[int(entry)] = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
    tree, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return sum(rss.get(p, 0) for p in tree) // 1024


def busy_pool_peak(fn, calls=120, at_once=40):
    """Send `calls` POSTs of "0.2" (the `sleep` scenario waits that long), `at_once` at a time; (their
    answers, the most worker processes the server had meanwhile)."""
    peak = 0

    def all_answered():  # samples the workers each time it is asked
        nonlocal peak
        peak = max(peak, len(child_processes(fn.instance.pid)))
        return all(call.done() for call in sent)

    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        sent = [pool.submit(requests.post, fn.url, data="0.2", timeout=60) for _ in range(calls)]
        wait_until(all_answered, "%d calls answered" % calls, timeout=120, interval=0.01)
    return [call.result().text for call in sent], peak

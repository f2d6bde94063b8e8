"""The daemons the tests start in the background (etcd and the API server of scripts/k8s-up.sh) are stopped
however pytest ends: its teardown, or a kill -9 that skips it (tests/support/processes.undone_at_exit)."""

import signal
import subprocess
import sys
from pathlib import Path

from waiting import wait_until

SUPPORT = Path(__file__).resolve().parents[1] / "support"
HOLDER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from processes import undone_at_exit
with undone_at_exit(["touch", sys.argv[2]]):
    print("holding", flush=True)
    if sys.argv[3] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def run_holder(marker, end):
    return subprocess.run(
        [sys.executable, "-c", HOLDER, str(SUPPORT), str(marker), end], capture_output=True, text=True, timeout=60
    )


def test_the_stop_command_runs_when_the_block_ends(tmp_path):
    marker = tmp_path / "stopped"
    held = run_holder(marker, "ended")
    assert held.returncode == 0 and held.stdout == "holding\n", held.stderr
    assert marker.exists()  # the block waits for the watcher: it has run by now


def test_the_stop_command_runs_when_the_process_is_killed(tmp_path):
    marker = tmp_path / "stopped"
    held = run_holder(marker, "killed")
    assert held.returncode == -signal.SIGKILL and held.stdout == "holding\n", held.stderr
    wait_until(marker.exists, "the watcher ran the stop command", timeout=30)

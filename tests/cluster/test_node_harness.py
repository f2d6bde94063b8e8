"""The node of the cluster tests (tests/support/k8s_node.py) leaves nothing behind, even when the process
that started it is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import k8s_node
import pytest
from waiting import wait_until

pytestmark = pytest.mark.timeout(900)
STARTER = """\
import sys, time
sys.path.insert(0, sys.argv[2])
import k8s_node
node = k8s_node.Node(sys.argv[1]).start()
print(node.cgroup, flush=True)
time.sleep(600)
"""


def node_processes(state: Path) -> list:
    """Pids of the processes whose command line names the node's folder (every process of the node)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass  # gone meanwhile
    return found


def test_a_killed_starter_leaves_no_process_and_its_cgroups_go(tmp_path):
    reason = k8s_node.missing()
    if reason:
        pytest.skip(reason)
    state = tmp_path / "node"
    support = str(Path(k8s_node.__file__).parent)
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(state), support], stdout=subprocess.PIPE, text=True)
    try:
        assert starter.stdout is not None
        cgroup = starter.stdout.readline().strip()  # containerd answered: the namespace runs
        assert cgroup.startswith(k8s_node.CGROUP_PREFIX), cgroup
        wait_until(lambda: len(node_processes(state)) >= 6, "the node's processes started", timeout=60)
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(30)
        wait_until(lambda: not node_processes(state), "every process of the node gone", timeout=60)
        assert any((h / cgroup).exists() for h in k8s_node.hierarchies())  # left by the killed run
        k8s_node.remove_stale_cgroups()  # what the next start does
        assert not any((h / cgroup).exists() for h in k8s_node.hierarchies())
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(30)

"""What a function started outside its server's process group: found in the server's tree, killed only while the
pid is still the process found."""

import os
import subprocess
import sys

from waiting import wait_until

from kubeless_local.emulator import memorywatch, strays
from kubeless_local.emulator.guardian import process_stat

SERVER = """\
import subprocess, sys, time
subprocess.Popen(['sleep', '60'])  # its own group's
print(subprocess.Popen(['sleep', '60'], start_new_session=True).pid, flush=True)  # a session of its own
time.sleep(60)
"""


def test_only_what_left_the_servers_group_is_found_and_killed_while_it_is_the_one_found():
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, start_new_session=True)
    detached = 0
    try:
        detached = int(server.stdout.readline())
        wait_until(lambda: len(memorywatch.children(server.pid) or []) == 2, "both children started", 30, 0.01)
        [(pid, start)] = strays.outside_group(server.pid, server.pid)
        assert pid == detached and start == process_stat(detached)[1]
        strays.kill([(pid, start + 1)])  # a pid the system gave another process since: left alone
        assert process_stat(detached) is not None
        strays.kill([(pid, start)], started_before=start)  # started since: left alone
        assert process_stat(detached) is not None
        strays.kill([(pid, start)])
        wait_until(lambda: process_stat(detached) is None, "the detached process killed", 30, 0.01)
    finally:
        os.killpg(server.pid, 9)
        server.wait()
        if detached and process_stat(detached) is not None:
            os.kill(detached, 9)


def test_a_process_of_this_machine_is_no_containers():
    assert not strays.container_init(os.getpid(), "c0ffee" * 10)
    assert not strays.container_init(2**22 + 1, "c0ffee" * 10)  # above any pid: none


def test_a_clean_up_after_a_reload_walks_no_tree_of_a_pid_given_to_another_process(monkeypatch):
    """The server died before its new code said ready: its pid, free again, may be another process's by then."""
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, start_new_session=True)
    detached = int(server.stdout.readline())
    try:
        wait_until(lambda: len(memorywatch.children(server.pid) or []) == 2, "both children started", 30, 0.01)
        clean_up = strays.replaced(server.pid, server.pid)
        group, start = process_stat(server.pid)
        walked, stat = [], strays.process_stat
        monkeypatch.setattr(strays, "outside_group", lambda root, group: walked.append(root) or [])
        monkeypatch.setattr(strays, "process_stat", lambda pid: (group, start + 1) if pid == server.pid else stat(pid))
        clean_up()  # another process has the server's pid now: only what was found at the reload is killed
        assert walked == []
        monkeypatch.undo()
        wait_until(lambda: process_stat(detached) is None, "what was found at the reload killed", 30, 0.01)
    finally:
        os.killpg(server.pid, 9)
        server.wait()
        if process_stat(detached) is not None:
            os.kill(detached, 9)

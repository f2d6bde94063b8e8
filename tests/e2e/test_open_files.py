"""`run` and `dev` started with a low soft limit of open files (macOS: 256, Linux desktops: 1024) serve a load test's
hundreds of connections: the limit is raised to the hard one before anything is spawned (emulator/openfiles.py)."""

import os
import resource
import socket
import subprocess
import sys

import requests
from processes import child_processes, interrupt
from sockets import free_port
from waiting import wait_until

LOW = 128
HELD = 300  # idle connections held open to the function's URL: more than LOW descriptors in `run`


def low_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def soft_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        return next(int(line.split()[3]) for line in f if line.startswith("Max open files"))


def test_a_run_started_with_a_low_open_files_limit_serves_hundreds_of_connections(tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard > 2 * HELD + 100, "the machine's hard limit is too low to test this"
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'hello'\n")
    port = free_port()
    url = "http://127.0.0.1:%d/" % port
    args = ["run", "handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeless_local", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=low_limit,
    )
    held = []
    try:
        wait_until(lambda: answers(url), "run's first answer", timeout=60)
        assert soft_limit(proc.pid) > LOW
        assert all(soft_limit(child) > LOW for child in child_processes(proc.pid))  # spawned after it was raised
        for _ in range(HELD):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        response = requests.get(url, timeout=15)  # with the limit left at LOW, `run` accepted nothing more
        assert (response.status_code, response.text) == (200, "hello")
    finally:
        for sock in held:
            sock.close()
        interrupt(proc)


def answers(url):
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_limit_is_raised_only_as_far_as_the_hard_limit():
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 200))\n"
        "from kubeless_local.emulator import openfiles\n"
        "print(openfiles.raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.split(None, 1) == ["200", "(200, 200)\n"]

"""The harness of the bridge mode's tests (tests/support/private_engine.py): a Docker engine with a bridge
network in a network namespace of the test's own. A container published at 127.0.0.1:P answers there
inside the namespace and not on the host; the bridge's addresses exist only inside; nothing is left after
a stop, nor after a run killed before its stop."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
from private_engine import NETNS_DIR, PREFIX, clean_leftovers, private_engine
from sockets import free_port
from waiting import wait_for

IMAGE = "kubeless-local/python:3.11"


@pytest.fixture(scope="module")
def engine():
    with private_engine([IMAGE]) as started:
        yield started


def get(url):
    try:
        answer = requests.get(url, timeout=5)
        return answer.status_code, answer.text
    except requests.RequestException as exc:
        return None, str(exc)


def host_addresses():
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout


def test_a_published_container_answers_at_127_0_0_1_inside_the_namespace_only(engine):
    client = engine.client()
    assert client.networks.get("bridge").attrs["Driver"] == "bridge"
    port = free_port()  # free on the host now: the host must not answer there afterwards
    container = client.containers.run(
        IMAGE,
        ["python3", "-m", "http.server", "8080"],
        detach=True,
        ports={"8080/tcp": ("127.0.0.1", port)},
        auto_remove=False,
    )
    try:
        url = "http://127.0.0.1:%d/" % port
        assert wait_for(lambda: engine.inside(get, url)[0] == 200, 60), container.logs().decode()
        status, text = engine.inside(get, url)
        assert status == 200 and "Directory listing" in text
        assert get(url)[0] is None  # the host's 127.0.0.1 is another one
        container.reload()
        network = container.attrs["NetworkSettings"]["Networks"]["bridge"]
        gateway = network["Gateway"]
        assert network["IPAddress"] and gateway
        inside = engine.run(["ip", "-o", "addr"], timeout=30).stdout
        assert " %s/" % gateway in inside  # docker0 is there...
        assert " %s/" % gateway not in host_addresses()  # ...and only there
    finally:
        container.remove(force=True)
    client.close()


def test_a_stopped_engine_leaves_nothing():
    with private_engine() as engine:
        netns, folder = engine.netns, engine.folder
        daemons = [p.pid for p in engine.daemons.values()]
        assert engine.run(["docker", "info", "--format", "{{.Name}}"]).returncode == 0
    assert not netns.exists() and not folder.exists()
    assert not any(Path("/proc/%d" % pid).exists() for pid in daemons)
    assert engine.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_what_a_killed_run_left_is_cleaned_at_the_next_start():
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now: the run that made the namespace is gone
    name = "%s%d-1" % (PREFIX, dead.pid)
    folder = Path(tempfile.gettempdir()) / name
    folder.mkdir()
    (folder / "left.txt").write_text("x")
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    left = subprocess.Popen(["nsenter", "--net=%s" % (NETNS_DIR / name), "sleep", "600"], start_new_session=True)
    try:
        wait_for(lambda: os.path.exists("/proc/%d" % left.pid), 5)
        clean_leftovers()
        assert left.wait(20) is not None  # killed
        assert not (NETNS_DIR / name).exists() and not folder.exists()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)

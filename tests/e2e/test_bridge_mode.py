"""The docker backend's bridge mode (issue L, item 4): on an engine with a `bridge` network each function
container has a network namespace of its own, listens on 8080 there (FUNC_PORT=8080) and is published at
127.0.0.1:P (`-p 127.0.0.1:P:8080`), the URL `ls` shows. Tested against a Docker engine started inside a
network namespace of the test's own (tests/support/private_engine.py): the bridge's private addresses exist
and are used only there, so `dev`, `ls` and the calls run inside it too."""

import json
import os
import signal
import subprocess
import sys

import pytest
import requests
from private_engine import private_engine
from waiting import wait_until

IMAGE = "kubeless-local/python:3.11"
HANDLER = "def hello(event, context):\n    return 'hello from the bridge'\n"
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations:
    local.kubeless.io/source: handler.py
spec:
  runtime: python3.11
  handler: handler.hello
"""


@pytest.fixture(scope="module")
def engine():
    with private_engine([IMAGE]) as started:
        yield started


@pytest.fixture
def dev_inside(engine, tmp_path):
    """`kubeless-local dev --backend docker` inside the namespace, against the private engine."""
    started = []

    def start(cwd):
        out = open(cwd / ".dev-output.log", "w+")
        proc = subprocess.Popen(
            [*engine.prefix, sys.executable, "-m", "kubeless_local", "dev", "--backend", "docker"],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=engine.env(NO_COLOR="1"),
        )
        started.append((proc, out))
        return proc, lambda: (cwd / ".dev-output.log").read_text()

    yield start
    for proc, out in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


def post(url):
    try:
        return requests.post(url, data="x", timeout=5).text
    except requests.RequestException as exc:
        return str(exc)


def test_a_function_is_published_at_its_127_0_0_1_port_on_the_bridge(engine, dev_inside, tmp_path):
    assert engine.client().networks.get("bridge").attrs["Driver"] == "bridge"  # an engine with a bridge
    (tmp_path / "handler.py").write_text(HANDLER)
    (tmp_path / "function.yaml").write_text(MANIFEST)
    proc, output = dev_inside(tmp_path)

    def watching():
        assert proc.poll() is None, "dev exited:\n" + output()
        return "Watching" in output()

    wait_until(watching, lambda: "dev watching:\n" + output(), timeout=180)
    listed = engine.run([sys.executable, "-m", "kubeless_local", "ls", "-o", "json"], cwd=tmp_path, timeout=60)
    assert listed.returncode == 0, listed.stderr
    row = {r["name"]: r for r in json.loads(listed.stdout)}["hello"]
    assert row["state"] == "Ready", output()
    port = row["port"]
    assert row["url"] == "http://127.0.0.1:%d" % port
    assert engine.inside(post, row["url"] + "/") == "hello from the bridge"

    (container,) = engine.client().containers.list(filters={"label": "kubeless-local.function=hello"})
    settings = container.attrs["NetworkSettings"]
    assert container.attrs["HostConfig"]["NetworkMode"] != "host"
    assert "bridge" in settings["Networks"]  # a namespace of its own, on the engine's bridge
    assert settings["Ports"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert "FUNC_PORT=8080" in container.attrs["Config"]["Env"]
    assert os.environ.get("DOCKER_HOST") != engine.docker_host  # the host's engine was not used

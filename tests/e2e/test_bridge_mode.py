"""The docker backend's bridge mode (issue L, item 4): on an engine with a `bridge` network each function
container has a network namespace of its own, listens on 8080 there (FUNC_PORT=8080) and is published at
127.0.0.1:P (`-p 127.0.0.1:P:8080`), the URL `ls` shows. Tested against a Docker engine started inside a
network namespace of the test's own (tests/support/private_engine.py): the bridge's private addresses exist
and are used only there, so `dev`, `ls` and the calls run inside it too. `dev --debug` (issue S): each runtime's
debugger binds the container's own addresses, its port published on 127.0.0.1 and reached through the debug door."""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import requests
from cdp import CdpClient
from dap import DapClient
from private_engine import private_engine
from processes import interrupt
from sockets import free_port
from upstream_python import MANIFEST, build_upstream_python
from upstream_python import TAG as UPSTREAM_TAG
from waiting import wait_until

IMAGE = "kubeless-local/python:3.11"
NODE_IMAGE = "kubeless-local/nodejs:20"
GO_IMAGE = "kubeless-local/go:1.26"
HANDLER = "def hello(event, context):\n    return 'hello from the bridge'\n"


@pytest.fixture(scope="module")
def engine():
    with private_engine([IMAGE, NODE_IMAGE, GO_IMAGE, build_upstream_python()]) as started:  # the host's engine's
        yield started


@pytest.fixture
def dev_inside(engine, tmp_path):
    """`kubeless-local dev --backend docker` inside the namespace, against the private engine."""
    started = []

    def start(cwd, *args, **env):
        out = open(cwd / ".dev-output.log", "w+")
        proc = subprocess.Popen(
            [*engine.prefix, sys.executable, "-m", "kubeless_local", "dev", "--backend", "docker", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=engine.env(NO_COLOR="1", **env),
        )
        started.append((proc, out))
        return proc, lambda: (cwd / ".dev-output.log").read_text()

    yield start
    for proc, out in started:
        interrupt(proc, timeout=30)
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
    # published on 127.0.0.1 only, at a port of its own: the function's port is its front door's, which a
    # blue/green reload switches from one generation's container to the next
    [published] = settings["Ports"]["8080/tcp"]
    assert published["HostIp"] == "127.0.0.1" and published["HostPort"] != str(port)
    assert engine.inside(post, "http://127.0.0.1:%s/" % published["HostPort"]) == "hello from the bridge"
    assert "FUNC_PORT=8080" in container.attrs["Config"]["Env"]
    assert os.environ.get("DOCKER_HOST") != engine.docker_host  # the host's engine was not used


def listed(engine, cwd):
    done = engine.run([sys.executable, "-m", "kubeless_local", "ls", "-o", "json"], cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    return {r["name"]: r for r in json.loads(done.stdout)}["hello"]


def test_saves_of_an_image_that_cannot_reload_in_place_switch_blue_green_on_the_bridge(engine, dev_inside, tmp_path):
    """Each save a new container, published at a port of its own beside the old one; the front door on the
    function's port switches once it is ready: a client calling without pause sees no failed call, and the
    new code from the save's reload on."""
    (tmp_path / "handler.py").write_text(HANDLER.replace("hello from the bridge", "v0"))
    (tmp_path / "function.yaml").write_text(MANIFEST)
    proc, output = dev_inside(tmp_path, PYTHON3_11_RUNTIME=UPSTREAM_TAG)

    def watching():
        assert proc.poll() is None, "dev exited:\n" + output()
        return "Watching" in output()

    wait_until(watching, lambda: "dev watching:\n" + output(), timeout=180)
    url = listed(engine, tmp_path)["url"] + "/"
    calls, stopping = [], threading.Event()

    def call_on():
        while not stopping.is_set():
            started = time.monotonic()
            calls.append((started, post(url)))

    caller = threading.Thread(target=engine.inside, args=(call_on,), kwargs={"timeout": 600}, daemon=True)
    caller.start()
    reloaded = []
    try:
        for version in range(1, 6):
            (tmp_path / "handler.py").write_text(HANDLER.replace("hello from the bridge", "v%d" % version))
            wait_until(lambda n=version: output().count("reloaded in") >= n, lambda: "reloaded:\n" + output(), 120)
            reloaded.append(time.monotonic())
            wait_until(lambda: any(t > reloaded[-1] for t, _ in calls), "a call after the reload", 60)
    finally:
        stopping.set()
        caller.join(60)
    failed = [answer for _, answer in calls if not answer.startswith("v")]
    assert failed == [], "%d of %d calls failed: %s" % (len(failed), len(calls), failed[:5])
    for started, answer in calls:
        newest = sum(1 for moment in reloaded if moment < started)
        assert int(answer[1:]) >= newest, "a call begun after save %d answered %s" % (newest, answer)
    client = engine.client()
    label = {"label": "kubeless-local.function=hello"}  # sparse: no inspect, which a container being removed fails
    wait_until(
        lambda: len(client.containers.list(all=True, sparse=True, filters=label)) == 1,
        "the old generations' containers gone",
        60,
    )


DEBUGGED = """\
def hello(event, context):
    total = 40 + %d
    return "total=%%d" %% total
"""
DEBUGGED_LINE = 3  # `return …`: `total` is set


def stopped_call(engine, dap, config, folder, url):
    """Attach with the editor's entry, break on DEBUGGED_LINE of the user's file, call: the call stops there
    and answers once continued. The local `total` it read, and the call's answer."""
    dap.initialize()
    attach = dap.send("attach", {"pathMappings": config["pathMappings"], "justMyCode": True})
    dap.wait_event("initialized")
    assert [b["verified"] for b in dap.set_breakpoints(str(folder / "handler.py"), [DEBUGGED_LINE])] == [True]
    dap.request("configurationDone")
    dap.response(attach)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(engine.inside(post, url, timeout=120)), daemon=True)
    caller.start()
    stopped = dap.wait_event("stopped", timeout=60)
    assert dap.stack(stopped["threadId"])[0]["source"]["path"] == str(folder / "handler.py")
    total = dap.top_locals(stopped["threadId"])["total"]
    assert caller.is_alive()  # held at the breakpoint
    dap.request("continue", {"threadId": stopped["threadId"]})
    caller.join(60)
    assert answers, "the call did not answer once continued"
    return total, answers[0]


def swap_container(manifest):
    """A manifest change: the next generation needs a new container (blue/green)."""
    manifest.write_text(
        manifest.read_text() + "  deployment:\n    spec:\n      template:\n        spec:\n"
        "          containers:\n          - env:\n            - name: GREETING\n              value: hi\n"
    )


def debugger_made_by_the_hosts_engine(folder, files):
    """The debugger's files for a function's image (debugpy, dlv), made as `dev --debug` makes them (once per
    image, in the cache the private engine's `dev` shares): by the host's engine, since the private engine's
    namespace has no way to the package index or the Go module proxy. The same image id there (docker save |
    load), so found made."""
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    out = open(folder / ".dev-output.log", "w+")
    argv = [sys.executable, "-m", "kubeless_local", "dev", "--backend", "docker", "--debug", "hello"]
    proc = subprocess.Popen([*argv, "--debug-port", str(free_port())], cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        output = (folder / ".dev-output.log").read_text
        wait_until(lambda: proc.poll() is not None or "Watching" in output(), lambda: output(), timeout=600)
        assert proc.poll() is None and "Crashed" not in output(), output()
    finally:
        interrupt(proc, timeout=30)
        out.close()


def debugged_on_the_bridge(engine, dev_inside, folder, files, timeout=180):
    """`files` in `folder` under `dev --debug hello` inside the namespace: (the debug port, its `ls` row, its
    vscode debug-config, dev's output so far as a function)."""
    for name, text in files.items():
        (folder / name).write_text(text)
    port = engine.inside(free_port)
    proc, output = dev_inside(folder, "--debug", "hello", "--debug-port", str(port))

    def watching():
        assert proc.poll() is None, "dev exited:\n" + output()
        return "Watching" in output()

    wait_until(watching, lambda: "dev watching:\n" + output(), timeout=timeout)
    row = listed(engine, folder)
    assert row["state"] == "Debugging" and row["debug"]["port"] == port, output()
    done = engine.run(
        [sys.executable, "-m", "kubeless_local", "debug-config", "hello", "--editor", "vscode"], cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return port, row, json.loads(done.stdout), output


def test_a_python_function_is_debugged_through_its_debug_door_on_the_bridge(engine, dev_inside, tmp_path):
    """debugpy binds the container's own addresses, its port is published on 127.0.0.1 beside the server's,
    and the debug door on the debug port forwards there; again after a save (the server reloads in place) and
    after a manifest change (blue/green: a new container, published at ports of its own, the door follows)."""
    files = {"handler.py": DEBUGGED % 2, "function.yaml": MANIFEST}
    debugger_made_by_the_hosts_engine(tmp_path / "on-the-host", files)
    project = tmp_path / "project"
    project.mkdir()
    port, row, config, output = debugged_on_the_bridge(engine, dev_inside, project, files)
    assert config["connect"] == {"host": "127.0.0.1", "port": port}
    (container,) = engine.client().containers.list(filters={"label": "kubeless-local.function=hello"})
    [published] = container.attrs["NetworkSettings"]["Ports"]["%d/tcp" % port]
    assert published["HostIp"] == "127.0.0.1" and published["HostPort"] != str(port)  # the door's port is its own

    with engine.inside(DapClient.connect, port) as dap:
        assert stopped_call(engine, dap, config, project, row["url"] + "/") == ("42", "total=42")

    (project / "handler.py").write_text(DEBUGGED % 3)
    wait_until(lambda: "reloaded in" in output(), lambda: "reloaded:\n" + output(), 120)
    with engine.inside(DapClient.connect, port) as dap:  # the same port, the new server's debugger
        assert stopped_call(engine, dap, config, project, row["url"] + "/") == ("43", "total=43")

    swap_container(project / "function.yaml")
    wait_until(lambda: output().count("reloaded in") >= 2, lambda: "reloaded:\n" + output(), 120)
    assert listed(engine, project)["pid"] != row["pid"]  # a new container
    with engine.inside(DapClient.connect, port) as dap:  # the same port, the new container's debugger
        assert stopped_call(engine, dap, config, project, row["url"] + "/") == ("43", "total=43")


NODE_HANDLER = """\
module.exports = {
  hello(event, context) {
    const total = 40 + %d;
    return `total=${total}`;
  },
};
"""
NODE_LINE = 4  # `return …`: `total` is set


def paused_call(engine, cdp, url, served):
    """Break on NODE_LINE of the file the server loads, call: the call pauses there and answers once resumed.
    The local `total` it read, and the call's answer."""
    cdp.set_breakpoints("^(file://)?%s$" % re.escape(served), [NODE_LINE])
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(engine.inside(post, url, timeout=120)), daemon=True)
    caller.start()
    paused = cdp.wait_paused()
    total = cdp.locals(paused)["total"]
    assert caller.is_alive()  # held at the breakpoint
    cdp.resume(paused)
    caller.join(60)
    assert answers, "the call did not answer once resumed"
    return total, answers[0]


def test_a_node_function_is_debugged_through_its_debug_door_on_the_bridge(engine, dev_inside, tmp_path):
    """The V8 inspector binds the container's own addresses and is reached through the debug door as debugpy
    is; a save reloads in place (the inspector stays connected), a blue/green reload is attached to again."""
    manifest = MANIFEST.replace("handler.py", "handler.js").replace("python3.11", "nodejs20")
    files = {"handler.js": NODE_HANDLER % 2, "function.yaml": manifest}
    port, row, config, output = debugged_on_the_bridge(engine, dev_inside, tmp_path, files)
    assert config["port"] == port
    served = str(tmp_path / "handler.js").replace(config["localRoot"], config["remoteRoot"], 1)
    url = row["url"] + "/"

    with engine.inside(CdpClient.connect, port) as cdp:
        assert paused_call(engine, cdp, url, served) == (42, "total=42")
        (tmp_path / "handler.js").write_text(NODE_HANDLER % 3)  # reloaded in place: the same connection goes on
        wait_until(lambda: "reloaded in" in output(), lambda: "reloaded:\n" + output(), 120)
        assert paused_call(engine, cdp, url, served) == (43, "total=43")

    swap_container(tmp_path / "function.yaml")
    wait_until(lambda: output().count("reloaded in") >= 2, lambda: "reloaded:\n" + output(), 120)
    assert listed(engine, tmp_path)["pid"] != row["pid"]  # a new container
    with engine.inside(CdpClient.connect, port) as cdp:  # the same port, the new container's inspector
        assert paused_call(engine, cdp, url, served) == (43, "total=43")


GO_MANIFEST = MANIFEST.replace("handler.py", "handler.go").replace("python3.11", "go1.26").replace(".hello", ".Hello")
GO_HANDLER = """\
package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

func Hello(event functions.Event, context functions.Context) (string, error) {
	greeting := "hello " + event.Data
	return greeting, nil
}
"""
GO_LINE = 7  # `return greeting, nil`


def test_a_go_function_is_debugged_through_its_debug_door_on_the_bridge(engine, dev_inside, tmp_path):
    """Delve binds the container's own addresses and is reached through the debug door as debugpy is."""
    files = {"handler.go": GO_HANDLER, "function.yaml": GO_MANIFEST}
    debugger_made_by_the_hosts_engine(tmp_path / "on-the-host", files)
    project = tmp_path / "project"
    project.mkdir()
    port, row, config, _ = debugged_on_the_bridge(engine, dev_inside, project, files, timeout=600)
    assert config["port"] == port

    with engine.inside(DapClient.connect, port, timeout=60) as dap:
        dap.initialize()
        dap.request("attach", {"mode": "remote", "substitutePath": config["substitutePath"]})
        dap.wait_event("initialized")
        [bp] = dap.set_breakpoints(str(project / "handler.go"), [GO_LINE])
        assert bp["verified"], bp
        dap.request("configurationDone")
        answers: list = []
        url = row["url"] + "/"
        caller = threading.Thread(target=lambda: answers.append(engine.inside(post, url, timeout=120)), daemon=True)
        caller.start()
        stopped = dap.wait_event("stopped", timeout=60)
        frame = dap.stack(stopped["threadId"])[0]
        assert (frame["source"]["path"], frame["line"]) == (str(project / "handler.go"), GO_LINE)
        assert dap.top_locals(stopped["threadId"])["greeting"] == '"hello x"'
        assert caller.is_alive()  # held at the breakpoint
        dap.set_breakpoints(str(project / "handler.go"), [])
        dap.request("continue", {"threadId": stopped["threadId"]})
        caller.join(60)
        assert answers == ["hello x"]
        dap.request("disconnect", {"terminateDebuggee": False})

"""Blue/green reloads in the docker backend (issue L, item 5), end to end with the CI engine (relay mode):
an image that cannot reload in place (upstream-like: not ours, no control lines, ready when /healthz answers)
gets a new container per save, started beside the old one; the front door switches once the new one is
ready and the old one goes after its calls. Broken code leaves the old one serving, in CompileError with
the new container's last lines; the next good save recovers. No container of an old generation is left.
Such a function has a spare relay started ahead (by design: a save then starts its container only), taken by
the next save and gone with the function."""

import json
import signal
import threading
import time

import pytest
import requests
from conftest import cli
from sockets import free_port
from upstream_python import FIXTURE, MANIFEST, build_upstream_python
from waiting import wait_until

from kubeless_local.emulator import images

SAVES = 20


@pytest.fixture(scope="module")
def upstream_python():
    return build_upstream_python()


def handler(version):
    return "def hello(event, context):\n    return 'v%d'\n" % version


def containers_of(project):
    """{container name: its role} of the project's containers (sparse: no inspect): "function", "relay" (a
    function's container joins its namespace) or "spare" (a relay none joins: started ahead for the next save)."""
    state = str((project / ".kubeless-local").resolve())
    found = images.docker_client().containers.list(
        all=True, sparse=True, filters={"label": "kubeless-local.project=%s" % state}
    )
    modes = [(c.attrs.get("HostConfig") or {}).get("NetworkMode", "") for c in found]
    joined = {mode.split(":", 1)[1] for mode in modes if mode.startswith("container:")}
    roles = {}
    for c in found:
        role = (c.attrs.get("Labels") or {}).get("kubeless-local.role", "function")
        roles[c.attrs["Names"][0].lstrip("/")] = "spare" if role == "relay" and c.id not in joined else role
    return roles


def in_use(project):
    """containers_of without the spare relay."""
    return {name: role for name, role in containers_of(project).items() if role != "spare"}


SERVING = ["function", "relay", "spare"]  # a function of an image that cannot reload in place, between saves


def row(project):
    return {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=project, check=True).stdout)}["hello"]


class Caller:
    """Calls the function without pause in a thread: one client on a new connection per call and one on a
    kept-alive connection (requests.Session), taking turns. Each call: (started, finished, answer or error)."""

    def __init__(self, url, headers=None):
        self.url, self.headers, self.calls, self.stopping = url, headers, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        session = requests.Session()
        while not self.stopping.is_set():
            for get in (requests.get, session.get):
                started = time.monotonic()
                try:
                    answer = get(self.url, timeout=30, headers=self.headers).text
                except requests.RequestException as exc:
                    answer = "failed: %r" % exc
                self.calls.append((started, time.monotonic(), answer))
        session.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(60)
        return self.calls

    def answered_since(self, moment):
        return any(started > moment for started, _, _ in self.calls)


def dev_on_upstream(tmp_path, start_dev, monkeypatch, image, version):
    """`dev --backend docker` serving handler(version) in the upstream-like `image`, watching."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHON3_11_RUNTIME", image)  # the shells' spelling of PYTHON3.11_RUNTIME
    (tmp_path / "handler.py").write_text(handler(version))
    (tmp_path / "function.yaml").write_text(MANIFEST)
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=180)
    return dev


def test_saves_of_an_image_that_cannot_reload_in_place_refuse_no_call(
    tmp_path, start_dev, upstream_python, monkeypatch
):
    dev = dev_on_upstream(tmp_path, start_dev, monkeypatch, upstream_python, 0)
    assert "python3.11 runs in %s" % upstream_python in dev.output()
    url = row(tmp_path)["url"] + "/"
    assert requests.get(url, timeout=10).text == "v0"
    caller = Caller(url)
    reloaded = []  # when each save's reload was seen done
    try:
        for version in range(1, SAVES + 1):
            (tmp_path / "handler.py").write_text(handler(version))
            dev.wait_until(lambda n=version: dev.output().count("reloaded in") >= n, "save %d reloaded" % version, 120)
            reloaded.append(time.monotonic())
            wait_until(lambda: caller.answered_since(reloaded[-1]), "a call after the save's reload", 60)
    finally:
        calls = caller.stop()
    failed = [answer for _, _, answer in calls if not answer.startswith("v")]
    assert failed == [], "%d of %d calls failed: %s" % (len(failed), len(calls), failed[:5])
    for started, _, answer in calls:  # a call begun after a save's reload answers that save's code (or newer)
        newest = sum(1 for moment in reloaded if moment < started)
        assert int(answer[1:]) >= newest, "a call begun after save %d answered %s" % (newest, answer)
    assert "restarting" not in dev.output() and row(tmp_path)["restarts"] == 0
    wait_until(lambda: sorted(containers_of(tmp_path).values()) == SERVING, "old ones gone", 60)


GATEWAY_SAVES = 4
TRIGGER = """\
apiVersion: kubeless.io/v1beta1
kind: HTTPTrigger
metadata:
  name: hello
spec:
  function-name: hello
  host-name: hello.test
"""


def slow_handler(version):  # a call is in flight whenever a save switches containers
    return "import time\n\ndef hello(event, context):\n    time.sleep(1.5)\n    return 'v%d'\n" % version


def test_gateway_calls_in_flight_when_a_save_switches_containers_are_answered_and_recorded_once(
    tmp_path, start_dev, upstream_python, monkeypatch
):
    """The gateway reaches the container past its door (one relay, base.Reach): a blue/green save's old
    container goes only once the gateway's calls on it are answered too, and each call is recorded once, by the
    gateway, with the code that answered it."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHON3_11_RUNTIME", upstream_python)
    (tmp_path / "handler.py").write_text(slow_handler(0))
    (tmp_path / "function.yaml").write_text(MANIFEST + "---\n" + TRIGGER)
    port = free_port()
    dev = start_dev("dev", "--backend", "docker", "--gateway-port", str(port), cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=180)
    caller = Caller("http://127.0.0.1:%d/" % port, headers={"Host": "hello.test"})
    try:
        for version in range(1, GATEWAY_SAVES + 1):
            (tmp_path / "handler.py").write_text(slow_handler(version))
            dev.wait_until(lambda n=version: dev.output().count("reloaded in") >= n, "save %d reloaded" % version, 120)
            moment = time.monotonic()
            wait_until(lambda m=moment: caller.answered_since(m), "a call after the save's reload", 60)
    finally:
        calls = caller.stop()
    failed = [answer for _, _, answer in calls if not answer.startswith("v")]
    assert failed == [], "%d of %d calls failed: %s" % (len(failed), len(calls), failed[:5])

    def records():
        return json.loads(cli("history", "hello", "-o", "json", "--limit", "1000", cwd=tmp_path, check=True).stdout)

    wait_until(lambda: len(records()) >= len(calls), "every call recorded", 30)
    found = records()
    assert len(found) == len(calls)  # once each: by the gateway, not by the door as well
    assert {(r["source"], r["trigger"]) for r in found} == {("gateway", "hello")}
    answered = {r["generation"] for r in found}
    assert len(answered) > 1  # the records name the code that answered, across the saves


def test_a_save_starts_its_container_in_the_spare_relay_and_the_spare_goes_with_the_function(
    tmp_path, start_dev, upstream_python, monkeypatch
):
    dev = dev_on_upstream(tmp_path, start_dev, monkeypatch, upstream_python, 1)
    wait_until(lambda: sorted(containers_of(tmp_path).values()) == SERVING, "a spare relay started ahead", 60)
    (spare,) = [name for name, role in containers_of(tmp_path).items() if role == "spare"]
    (tmp_path / "handler.py").write_text(handler(2))
    dev.wait_until(lambda: "reloaded in" in dev.output(), "the save reloaded", 120)
    assert requests.get(row(tmp_path)["url"] + "/", timeout=10).text == "v2"
    wait_until(lambda: sorted(containers_of(tmp_path).values()) == SERVING, "the old ones gone, a new spare", 60)
    assert containers_of(tmp_path)[spare] == "relay"  # the new generation's container joined the spare
    (tmp_path / "function.yaml").write_text("")  # the function goes: its spare with it, dev running on
    wait_until(lambda: containers_of(tmp_path) == {}, "every container of the function removed", 60)
    assert dev.proc.poll() is None, dev.output()


def test_broken_code_leaves_the_old_container_serving_then_a_good_save_recovers(
    tmp_path, start_dev, upstream_python, monkeypatch
):
    dev = dev_on_upstream(tmp_path, start_dev, monkeypatch, upstream_python, 1)
    url = row(tmp_path)["url"] + "/"
    wait_until(lambda: sorted(containers_of(tmp_path).values()) == SERVING, "a spare relay started ahead", 60)
    serving = in_use(tmp_path)
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'v2' +\n")  # a SyntaxError
    dev.wait_until(lambda: row(tmp_path)["state"] == "CompileError", "CompileError shown", 120)
    found = row(tmp_path)
    assert "SyntaxError" in found["error"] and "exited with code" in found["error"], found["error"]
    assert "still serving the last good code" in dev.output()
    assert requests.get(url, timeout=10).text == "v1"  # the old container answers
    wait_until(
        lambda: sorted(containers_of(tmp_path).values()) == SERVING and in_use(tmp_path) == serving,
        "the new container removed (its relay too), the old one kept, a new spare",
        60,
    )
    (tmp_path / "handler.py").write_text(handler(3))
    dev.wait_until(lambda: row(tmp_path)["state"] == "Ready", "Ready again", 120)
    assert requests.get(url, timeout=10).text == "v3"
    wait_until(
        lambda: sorted(containers_of(tmp_path).values()) == SERVING and not set(containers_of(tmp_path)) & set(serving),
        "only the new generation's containers",
        60,
    )


@pytest.mark.parametrize("ending", ["ctrl-c", "kill -9"])
def test_dev_ending_while_a_new_generation_starts_leaves_no_container(
    tmp_path, start_dev, upstream_python, monkeypatch, ending
):
    """A save whose new container is still starting (its code sleeps while loading) when dev ends: Ctrl-C
    ends dev without waiting for it, and no container of either generation is left, kill -9 included (the
    guardian removes the project's by label)."""
    dev = dev_on_upstream(tmp_path, start_dev, monkeypatch, upstream_python, 1)
    (tmp_path / "handler.py").write_text("import time\ntime.sleep(120)\n" + handler(2))
    wait_until(
        lambda: sorted(containers_of(tmp_path).values()) == ["function", "function", "relay", "relay", "spare"],
        "the new generation's containers beside the old, and the next save's spare",
        120,
    )
    if ending == "kill -9":
        dev.proc.kill()
        dev.proc.wait(timeout=10)
    else:
        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(timeout=30) == 130, dev.output()  # it does not wait for the new server to load
    wait_until(lambda: containers_of(tmp_path) == {}, "every container removed", 60)


def test_node_code_that_throws_while_loading_in_an_upstream_like_image_is_a_compile_error(
    tmp_path, start_dev, monkeypatch
):
    """The stand-in of the official Node image (tests/fixtures/upstream-nodejs, named by a runtime-images
    file): code that throws while loading was reported "reloaded" and Ready while every call answered 500;
    now its new container never becomes ready, the old one serves on, and the next good save recovers."""
    client = images.docker_client()
    folder = FIXTURE.parent / "upstream-nodejs"
    client.images.build(path=str(folder), tag="kubeless-local-test/upstream-nodejs:20", network_mode="none", rm=True)
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(folder / "runtime-images.json"))
    code = tmp_path / "handler.js"
    code.write_text("module.exports = { hello: () => 'n1' };\n")
    (tmp_path / "function.yaml").write_text(
        MANIFEST.replace("handler.py", "handler.js").replace("python3.11", "nodejs20")
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=180)
    url = row(tmp_path)["url"] + "/"
    assert requests.get(url, timeout=10).text == "n1"
    code.write_text("throw new Error('broken at load');\n")
    dev.wait_until(lambda: row(tmp_path)["state"] == "CompileError", "CompileError shown", 120)
    assert "broken at load" in row(tmp_path)["error"]
    assert requests.get(url, timeout=10).text == "n1"  # the old container answers, not a 500
    code.write_text("module.exports = { hello: () => 'n2' };\n")
    dev.wait_until(lambda: row(tmp_path)["state"] == "Ready", "Ready again", 120)
    assert requests.get(url, timeout=10).text == "n2"

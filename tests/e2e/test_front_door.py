"""Each function container in a network namespace of its own (docker/network.py), end to end with the CI
engine, which has no bridge network: the relay mode. Images that listen on the fixed port 8080 on every
address, as a pod's do; two at once; reached on 127.0.0.1 only; readiness only from the function's own
container; and the bad images, each one line in `dev` while the other functions keep answering."""

import json
import os
import signal
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from built_images import python_server_image
from conftest import cli
from sockets import free_port
from waiting import wait_until

from kubeless_local import kubeless_objects as objects
from kubeless_local.emulator import images
from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN, Instance, State
from kubeless_local.emulator.docker import DockerBackend
from kubeless_local.emulator.logs import LogHub
from kubeless_local.runtimes import Catalog

POD_SERVER = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = %(healthz)s if self.path == "/healthz" else 200
        self.send_response(status); self.end_headers(); self.wfile.write(("I am " + os.environ["WHO"]).encode())
http.server.ThreadingHTTPServer(("0.0.0.0", %(port)d), H).serve_forever()
"""


@pytest.fixture(scope="module")
def client():
    return images.docker_client()  # fails (not skips) without an engine: CI runs .ci/docker-setup.sh


@pytest.fixture(scope="module")
def pod_image(client):
    """A custom image as the seed's rule has it: a web server on 0.0.0.0:8080, whatever FUNC_PORT says."""
    return python_server_image(client, "pod8080", POD_SERVER % {"healthz": 200, "port": 8080})


def image_function(name, image, who):
    """A Function that is only an image (no code, handler or runtime), with WHO in its env."""
    return (
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: %s}\nspec:\n"
        "  deployment: {spec: {template: {spec: {containers: [{image: '%s', env: [{name: WHO, value: %s}]}]}}}}\n"
        % (name, image, who)
    )


def python_function(name):
    return (
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: %s\n"
        "  annotations: {local.kubeless.io/source: %s.py}\nspec: {runtime: python3.11, handler: %s.hello}\n"
        % (name, name, name)
    )


def answers(url):
    if not url:
        return "no URL yet"
    try:
        return requests.get(url, timeout=5).text
    except requests.RequestException as exc:
        return str(exc)


def url_of(project, name):
    """The function's URL from the ports dev gave out ("" until it has one)."""
    try:
        port = json.loads((project / ".kubeless-local" / "ports.json").read_text()).get(name)
    except (OSError, ValueError):
        return ""
    return "http://127.0.0.1:%d/" % port if port else ""


def rows(project):
    return {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=project, check=True).stdout)}


def host_addresses():
    """This machine's own non-loopback IPv4 addresses (connecting to them is local traffic)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True)
    return [line.split()[3].split("/")[0] for line in out.stdout.splitlines()]


def refused(address, port):
    try:
        socket.create_connection((address, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def test_two_fixed_8080_images_at_once_each_on_its_own_loopback_port_only(tmp_path, start_dev, pod_image):
    (tmp_path / "functions.yaml").write_text(
        image_function("first", pod_image, "first") + "---\n" + image_function("second", pod_image, "second")
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    assert "docker network: relay (the engine has no bridge network;" in dev.output()
    found = rows(tmp_path)
    assert (found["first"]["state"], found["second"]["state"]) == ("Ready", "Ready"), dev.output()
    for name in ("first", "second"):
        url = found[name]["url"]
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url, timeout=5).text == "I am " + name
    addresses = host_addresses()
    assert addresses, "this machine has no non-loopback IPv4 address to check"
    for address in addresses:
        for port in [8080] + [int(found[name]["url"].rsplit(":", 1)[1]) for name in ("first", "second")]:
            assert refused(address, port), "%s:%d answers: a function leaks to the machine's address" % (address, port)


def containers_of(client, project):
    """{container id: its role} of the project's containers (sparse: no inspect, which a container being
    removed meanwhile would fail): "function", "relay" (a function's container joins its namespace) or "spare"
    (a relay none joins: started ahead for the next save of an image that cannot reload in place, by design)."""
    state = str((project / ".kubeless-local").resolve())
    found = client.containers.list(all=True, sparse=True, filters={"label": "kubeless-local.project=%s" % state})
    modes = [(c.attrs.get("HostConfig") or {}).get("NetworkMode", "") for c in found]
    joined = {mode.split(":", 1)[1] for mode in modes if mode.startswith("container:")}
    roles = {}
    for c in found:
        role = (c.attrs.get("Labels") or {}).get("kubeless-local.role", "function")
        roles[c.id] = "spare" if role == "relay" and c.id not in joined else role
    return roles


SERVING = ["function", "relay", "spare"]  # a function of an image that cannot reload in place (pod_image's)


@pytest.mark.parametrize("ending", ["ctrl-c", "kill -9"])
def test_the_relay_container_goes_with_its_function_however_dev_ends(tmp_path, start_dev, client, pod_image, ending):
    (tmp_path / "functions.yaml").write_text(image_function("only", pod_image, "only"))
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    assert requests.get(rows(tmp_path)["only"]["url"], timeout=5).text == "I am only"
    wait_until(lambda: sorted(containers_of(client, tmp_path).values()) == SERVING, "a spare relay", timeout=60)
    found = {role: client.containers.get(cid) for cid, role in containers_of(client, tmp_path).items()}
    assert found["spare"].attrs["HostConfig"]["NetworkMode"] == "none"
    assert found["relay"].attrs["HostConfig"]["NetworkMode"] == "none"  # loopback only
    assert found["function"].attrs["HostConfig"]["NetworkMode"] == "container:" + found["relay"].id
    doors = tmp_path / ".kubeless-local" / "doors"
    assert doors.stat().st_mode & 0o777 == 0o700
    if ending == "kill -9":
        dev.proc.send_signal(signal.SIGKILL)
        dev.proc.wait(timeout=10)
    else:
        dev.stop()
    wait_until(lambda: containers_of(client, tmp_path) == {}, "the containers removed", timeout=60)


class Stale(BaseHTTPRequestHandler):
    """A stale server on the function's port: /healthz answers 200 to anyone."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"stale")

    def log_message(self, *args):
        pass


@pytest.fixture
def stale_server():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Stale)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_stale_server_on_the_port_cannot_make_a_function_ready(tmp_path, client, stale_server, monkeypatch):
    """An image without control lines is Ready when /healthz answers 200 at its URL: a stale server on that
    port answering 200 must not make it Ready (it did on the host's network: the probe reached the stale one).
    The function's image here never listens on 8080; the port is the stale server's."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    never = python_server_image(client, "other-port", POD_SERVER % {"healthz": 200, "port": 9090})
    (tmp_path / "fn.txt").write_text("x")
    fn = objects.function_from_files("stale", tmp_path / "fn.txt", "custom1", "fn.main", image=never)
    backend = DockerBackend(LogHub(), client=client, catalog=Catalog())
    assert backend.network == "relay"
    runtime, _ = backend.resolve(fn, Catalog())
    prepared = backend.prepare(fn, runtime, tmp_path / "state")
    instance = Instance(name="stale", runtime=runtime.name, port=stale_server)
    try:
        backend.start(instance, prepared)
        assert instance.state == State.CRASHED and instance.exit_code == EXIT_CANNOT_LISTEN  # the supervisor moves on
        held = "127.0.0.1:%d is in use by `" % stale_server, "` (pid %d)" % os.getpid()  # this test: named
        assert instance.error.startswith(held[0]) and instance.error.endswith(held[1]), instance.error
        assert requests.get("http://127.0.0.1:%d/healthz" % stale_server, timeout=5).text == "stale"  # still there
    finally:
        backend.stop(instance)
    assert client.containers.list(all=True, filters={"label": "kubeless-local.function=stale"}) == []


# ---------------------------------------------------------------- bad input: one line each, the others answer


def bad_image(client, kind):
    """The image of one bad input (None: one that is not there)."""
    if kind == "absent":
        return "kubeless-local-test/absent:1"
    if kind == "exits":
        return python_server_image(client, "exits", 'print("boot line", flush=True)\nraise SystemExit(3)\n')
    if kind == "no-healthz":
        return python_server_image(client, "no-healthz", POD_SERVER % {"healthz": 404, "port": 8080})
    return python_server_image(client, "other-port", POD_SERVER % {"healthz": 200, "port": 9090})


BAD = {  # kind: what dev's line about the bad function says (after "bad")
    "absent": "image kubeless-local-test/absent:1 is not present",
    "exits": "the container exited with code 3",
    "no-healthz": "not ready after 5 s: /healthz answered 404 (Kubeless probes it: it must answer 200)",
    "other-port": "not ready after 5 s: nothing listens on port 8080 in the container",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_image_is_one_line_naming_the_function_and_the_others_answer(tmp_path, start_dev, client, kind):
    (tmp_path / "good.py").write_text("def hello(event, context):\n    return 'good'\n")
    (tmp_path / "functions.yaml").write_text(
        python_function("good") + "---\n" + image_function("bad", bad_image(client, kind), "bad")
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_until(lambda: BAD[kind] in dev.output(), "dev saying why bad fails", timeout=180)
    said = [line for line in dev.output().splitlines() if BAD[kind] in line]
    assert said[0].split("|")[0].strip() == "bad", said  # the line names the function, then the cause
    assert "taken meanwhile" not in dev.output()  # its own front door holds its port: it is not moved
    wait_until(lambda: answers(url_of(tmp_path, "good")) == "good", "good answering", timeout=120)


def guardian_of(project):
    """The pid of the guardian process watching `project`'s `dev`."""
    wanted = b"kubeless_local.emulator.guardian\0" + str(project / ".kubeless-local").encode() + b"\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as cmdline:
                    if cmdline.read().endswith(wanted):
                        return int(entry)
            except OSError:
                continue
    return None


def test_a_relay_does_not_outlive_dev_even_without_the_guardian(tmp_path, start_dev, client, pod_image):
    """The guardian killed too (nothing cleans up): the relay's connector loses dev's lifeline and the
    relay container goes by itself (the function's container waits for the next dev's sweep)."""
    (tmp_path / "functions.yaml").write_text(image_function("only", pod_image, "only"))
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    wait_until(lambda: sorted(containers_of(client, tmp_path).values()) == SERVING, "a spare relay", timeout=60)
    doors = tmp_path / ".kubeless-local" / "doors"  # dev holds a connector's lifeline once its socket is there
    wait_until(lambda: len(list(doors.glob("*/connector.sock"))) == 2, "the spare's connector listening", 60)
    try:
        os.kill(guardian_of(tmp_path), signal.SIGKILL)
        dev.proc.send_signal(signal.SIGKILL)
        dev.proc.wait(timeout=10)
        wait_until(
            lambda: not {"relay", "spare"} & set(containers_of(client, tmp_path).values()),
            "the relay containers gone (the spare too)",
            timeout=60,
        )
    finally:
        for cid in containers_of(client, tmp_path):
            client.containers.get(cid).remove(force=True)

"""`dev --debug` on the docker backend (docker/debugger.py), against a fake engine: what a debugged function's
container gets, the relay's connector handing the debug port, and what is refused. The real thing (a DAP or CDP
client through the debug door): tests/e2e/test_debugging_e2e.py."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_docker_backend import CATALOG, FakeClient, FakeImage, prepared_for, python_function
from waiting import wait_until

from kubeless_local.emulator import debugging, delve
from kubeless_local.emulator import docker as dk
from kubeless_local.emulator.base import Instance
from kubeless_local.emulator.docker import connector, containers, debugger
from kubeless_local.emulator.frontdoor import open_to
from kubeless_local.emulator.images import host
from kubeless_local.emulator.logs import LogHub
from kubeless_local.errors import UserError


@pytest.fixture
def relay_backend(backend_in):
    return backend_in("relay")


@pytest.fixture
def backend_in(tmp_path, monkeypatch):
    """A docker backend in a network mode (network.py) whose one-shot steps only make the tool's folder."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host, "registry", lambda name: "")
    for name in ("PYTHON3.11_RUNTIME", "KUBELESS_LOCAL_RUNTIME_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def make(network):
        backend = dk.DockerBackend(LogHub(), client=FakeClient(), catalog=CATALOG, network=network)
        backend.steps_run = []

        def run_step(step, image, argv, mounts, env, workdir, labels, on_line):  # pip, as far as the engine sees it
            backend.steps_run.append((step, image, argv, env, mounts))
            [folder] = [f for f, mount in mounts.items() if mount == {"bind": debugger.TOOL_MOUNT, "mode": "rw"}]
            (Path(folder) / "made").touch()

        backend.run_step = run_step
        return backend

    return make


def test_a_debugged_python_container_gets_the_debug_port_a_timeout_no_call_reaches_and_debugpy(tmp_path, relay_backend):
    prepared = prepared_for(relay_backend, tmp_path, python_function(tmp_path))
    instance = Instance(
        name="hello", runtime="python3.11", port=18123, debug=debugging.Target("hello", "debugpy", 5678)
    )
    additions = debugger.container_additions(relay_backend, instance.debug, prepared, lambda line: None)
    options = debugger.merged(relay_backend.container_options(instance, prepared, relay_id="r" * 64), additions)
    env = options["environment"]
    assert env["KUBELESS_LOCAL_DEBUG_PORT"] == "5678" and env["FUNC_TIMEOUT"] == debugging.UNREACHED_TIMEOUT
    # after the function's deps and code: a debugpy of the user's own wins, as it would on the process backend
    assert env["PYTHONPATH"].endswith(":/kubeless:" + debugger.TOOL_MOUNT)
    [(folder, mount)] = [(f, m) for f, m in options["volumes"].items() if m["bind"] == debugger.TOOL_MOUNT]
    assert mount["mode"] == "ro" and (tmp_path / "cache") in Path(folder).parents
    # installed by the image's own pip (its Python's ABI), at the version requirements.txt pins
    [(step, image, argv, step_env, _)] = relay_backend.steps_run
    assert (step, image) == (debugger.STEP, "kubeless-local/python:3.11")
    assert argv[:4] == ["python3", "-m", "pip", "install"]
    assert argv[-1] == "debugpy==" + debugger.debugpy_version() and step_env["HOME"] == "/tmp"
    # once per image: a second debugged start finds it made
    debugger.container_additions(relay_backend, instance.debug, prepared, lambda line: None)
    assert len(relay_backend.steps_run) == 1
    assert relay_backend.served_root(prepared) == "/kubeless"  # what debug-config maps the user's folder to


def test_a_debugged_go_container_gets_a_static_dlv_and_builds_its_debug_binary_as_the_owner_of_its_files(
    tmp_path, relay_backend
):
    prepared = prepared_for(relay_backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="go1.26", port=18123, debug=debugging.Target("hello", "delve", 2345))
    additions = debugger.container_additions(relay_backend, instance.debug, prepared, lambda line: None)
    options = debugger.merged(relay_backend.container_options(instance, prepared, relay_id="r" * 64), additions)
    # Delve built by the image's Go with cgo off, and the standard library built for debugging into the cache
    # the containers use, in the same step (once per image)
    [(_, _, argv, step_env, step_mounts)] = relay_backend.steps_run
    assert step_env["CGO_ENABLED"] == "0" and step_env["GOCACHE"] == debugger.GO_CACHE_MOUNT
    assert "github.com/go-delve/delve/cmd/dlv@" + delve.DELVE_VERSION in argv and "-gcflags=all=-N -l" in argv
    env, volumes = options["environment"], options["volumes"]
    assert env["KUBELESS_LOCAL_DLV"] == debugger.TOOL_MOUNT + "/dlv" and env["GOCACHE"] == debugger.GO_CACHE_MOUNT
    cache = [f for f, m in step_mounts.items() if m["bind"] == debugger.GO_CACHE_MOUNT]
    assert [f for f, m in volumes.items() if m == {"bind": debugger.GO_CACHE_MOUNT, "mode": "rw"}] == cache
    # the server writes server.debug next to its build, with the module cache the compile step filled
    assert volumes[str(prepared.root.resolve())] == {"bind": containers.FUNCTION_MOUNT, "mode": "rw"}
    assert volumes[str(prepared.runtime_lib.resolve())] == {"bind": containers.LIB_MOUNT, "mode": "ro"}
    assert options["user"] == "%d:%d" % (os.getuid(), os.getgid())


def test_the_inspector_needs_nothing_brought_in(tmp_path, relay_backend):
    prepared = prepared_for(relay_backend, tmp_path, python_function(tmp_path))
    additions = debugger.container_additions(
        relay_backend, debugging.Target("hello", "inspector", 9229), prepared, lambda line: None
    )
    assert additions["mounts"] == {} and additions["env"]["KUBELESS_LOCAL_DEBUG_PORT"] == "9229"
    assert relay_backend.steps_run == []


def test_an_image_that_is_not_ours_has_no_debugger_to_start(tmp_path, relay_backend, monkeypatch):
    relay_backend.client.images.present["example/python:3.11"] = FakeImage("example/python:3.11")
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "example/python:3.11")
    prepared = prepared_for(relay_backend, tmp_path, python_function(tmp_path))
    assert not prepared.own
    with pytest.raises(UserError, match="runs in example/python:3.11 .*whose server has no debugger"):
        debugger.container_additions(
            relay_backend, debugging.Target("hello", "debugpy", 5678), prepared, lambda line: None
        )


def test_the_relay_of_a_debugged_function_hands_over_its_debug_port_too(tmp_path, relay_backend):
    prepared = prepared_for(relay_backend, tmp_path, python_function(tmp_path))
    relay = containers.relay_config(prepared, "kubeless-local/python:3.11", tmp_path / "door", debug_port=5678)
    assert relay["Cmd"][3:] == [
        "/kubeless-local/door/connector.sock",
        "8080",
        "/kubeless-local/door/connector-5678.sock",
        "5678",
    ]
    assert containers.connector_socket(8080) == containers.CONNECTOR_SOCKET


def test_the_connector_hands_each_socket_connections_to_its_own_port(tmp_path):
    servers = []
    for tag in (b"server", b"debugger"):
        listener = socket.create_server(("127.0.0.1", 0))
        servers.append(listener)

        def answer(listener=listener, tag=tag):
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(tag)

        threading.Thread(target=answer, daemon=True).start()
    main, debug = tmp_path / "c.sock", tmp_path / "c-debug.sock"
    ports = [str(s.getsockname()[1]) for s in servers]
    proc = subprocess.Popen([sys.executable, connector.__file__, str(main), ports[0], str(debug), ports[1]])
    life = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # dev's lifeline, held before any socket listens
    try:
        wait_until(lambda: life.connect_ex(str(main) + ".life") == 0, "the connector's lifeline socket", timeout=10)
        wait_until(main.exists, "the connector listening", timeout=10)
        assert debug.exists()  # the first socket appears last: every other one listens by then
        for path, tag in ((main, b"server"), (debug, b"debugger")):
            with open_to(str(path), 10.0) as conn:
                assert conn.recv(64) == tag
    finally:
        life.close()
        proc.kill()
        proc.wait()
        for listener in servers:
            listener.close()


def test_in_bridge_mode_debugpy_binds_the_containers_own_addresses_and_its_port_is_published_on_127_0_0_1(
    tmp_path, backend_in
):
    bridge = backend_in("bridge")
    prepared = prepared_for(bridge, tmp_path, python_function(tmp_path))
    instance = Instance(
        name="hello", runtime="python3.11", port=18123, debug=debugging.Target("hello", "debugpy", 5678)
    )
    additions = debugger.container_additions(bridge, instance.debug, prepared, lambda line: None)
    options = debugger.merged(bridge.container_options(instance, prepared), additions)
    assert options["environment"][debugging.DEBUG_HOST_ENV] == "0.0.0.0"
    # beside the server's: each at a port the engine chooses, on the host's 127.0.0.1 only (the doors' ports
    # are the function's and the debug port: two generations' containers run at once during a reload)
    assert options["ports"] == {"8080/tcp": ("127.0.0.1", None), "5678/tcp": ("127.0.0.1", None)}


@pytest.mark.parametrize("mode", ["relay", "host"])
def test_outside_bridge_mode_the_debugger_keeps_to_the_loopback(tmp_path, backend_in, monkeypatch, mode):
    backend = backend_in(mode)
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    target = debugging.Target("hello", "debugpy", 5678)
    additions = debugger.container_additions(backend, target, prepared, lambda line: None)
    assert additions["env"][debugging.DEBUG_HOST_ENV] == "127.0.0.1" and "ports" not in additions
    monkeypatch.setenv(debugging.DEBUG_HOST_ENV, "0.0.0.0")  # this machine's env (the process backend's start)
    assert target.env()[debugging.DEBUG_HOST_ENV] == "127.0.0.1"  # never wider on the process backend


@pytest.mark.parametrize("mode", ["relay", "host", "bridge"])
def test_every_debugger_runs_in_every_network_mode(backend_in, mode):
    for name in debugging.DEBUGGERS:  # each runtime's server binds KUBELESS_LOCAL_DEBUG_HOST
        backend_in(mode).check_debug(debugging.Target("fn", name, 5678))  # no error

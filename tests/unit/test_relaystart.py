"""A docker `run`'s relay container sent to the engine at its first step (emulator/relaystart.py), against an engine
stand-in on a unix socket: what is sent, what the backend takes, what is removed; its hints. With the real engine:
tests/e2e/test_docker_cli.py."""

import http.server
import json
import os
import socketserver
import threading
from pathlib import Path

import pytest
from test_docker_backend import CATALOG, FakeClient, FakeContainer, prepared_for, python_function

from kubeless_local.emulator import docker as dk
from kubeless_local.emulator import images, relaystart
from kubeless_local.emulator.base import Instance
from kubeless_local.emulator.logs import LogHub

PREFIX = "kubeless-local-hello-0123abcd-relay-"
CONFIG = json.dumps({"HostConfig": {"Binds": [relaystart.FOLDER + ":/kubeless-local/door:rw"]}, "Image": "img"})
ID = "ab" * 32


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """What relaystart asks of a Docker engine, answered as dockerd does; `asked`: (method, path, JSON body)."""

    daemon_threads = True

    def __init__(self, path):
        self.asked, self.create_status = [], 201
        super().__init__(path, _Answer)
        self.url = "unix://" + path


class _Answer(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.asked.append((self.command, self.path, json.loads(body) if body else None))
        if self.path.startswith("/containers/create"):
            status = self.server.create_status
            text = json.dumps({"Id": ID, "Warnings": []} if status == 201 else {"message": "Conflict. In use."})
        else:
            status, text = 204, ""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def engine(tmp_path):
    server = Engine(str(tmp_path / "docker.sock"))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Hints in tmp_path; DOCKER_HOST as a user without one; nothing left sent."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    yield
    relaystart._early = None


def run_start(state, engine=None):
    """`run`'s first step, then its session once its guardian runs; what the engine was asked when the guardian was
    told to remove the project's containers."""
    relaystart.expect(state)
    asked_then = []
    relaystart.send(state, lambda: asked_then.append(list(engine.asked) if engine else []))
    return asked_then


def run_state(tmp_path, name="run-hello"):
    folder = tmp_path / 'my "project"' / ".kubeless-local" / name  # a path JSON must escape
    folder.mkdir(parents=True)
    return str(folder.resolve())


def test_a_run_sends_the_relay_its_last_run_created_and_it_is_taken_once(tmp_path, engine):
    state = run_state(tmp_path)
    assert run_start(state, engine) == [] and relaystart._early is None  # no hint: nothing sent, no guardian told
    relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
    relaystart.expect(state)
    assert relaystart.take(state) is None  # not sent yet: the session sends it
    told = []
    relaystart.send(str(tmp_path / "another"), lambda: told.append(1))  # another session's folder: not its relay
    assert told == [] and engine.asked == []
    assert run_start(state, engine) == [[]]  # the guardian was told before anything was sent
    assert relaystart.take(str(tmp_path / "another")) is None  # another function's start does not take it
    early = relaystart.take(state)
    assert early is not None and early.error == "" and early.id == ID
    assert early.name.startswith(PREFIX) and len(early.name) == len(PREFIX) + 8  # a random part, as a spare's
    folder = Path(early.folder)
    assert (
        folder.parent == Path(state) / relaystart.DOORS and folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    )
    [create, start] = engine.asked
    assert create[:2] == ("POST", "/containers/create?name=" + early.name)
    assert create[2] == {"HostConfig": {"Binds": [early.folder + ":/kubeless-local/door:rw"]}, "Image": "img"}
    assert start[:2] == ("POST", "/containers/%s/start" % ID)
    assert relaystart.take(state) is None  # once
    early.remove()
    assert engine.asked[-1][:2] == ("DELETE", "/containers/%s?force=1" % ID) and not folder.exists()


def test_a_relay_no_one_took_is_removed_when_run_ends(tmp_path, engine):
    state = run_state(tmp_path)
    relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
    run_start(state, engine)
    assert relaystart.sent(state).id == ID  # the backend's sweep sees it, without taking it
    folder = relaystart.sent(state).folder
    relaystart.drop()  # atexit's
    assert [(method, path) for method, path, _ in engine.asked][1:] == [
        ("POST", "/containers/%s/start" % ID),
        ("DELETE", "/containers/%s?force=1" % ID),
    ]
    assert not os.path.exists(folder) and relaystart._early is None


def test_a_refused_create_is_said_and_nothing_is_started(tmp_path, engine):
    engine.create_status = 409  # a leftover of that name
    state = run_state(tmp_path)
    relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
    run_start(state, engine)
    early = relaystart.take(state)
    assert early.id == "" and early.error.startswith("create: 409") and "Conflict" in early.error
    assert len(engine.asked) == 1
    early.remove()
    assert len(engine.asked) == 1 and not os.path.exists(early.folder)


def test_no_engine_is_an_error_not_a_failure(tmp_path):
    state = run_state(tmp_path)
    relaystart.write_hint(state, "unix://" + str(tmp_path / "nothing.sock"), PREFIX, CONFIG)
    run_start(state)
    early = relaystart.take(state)
    assert early.id == "" and early.error  # the backend then starts one itself, and says what is wrong
    early.remove()


def test_a_hint_is_per_state_folder_installation_and_docker_host(tmp_path, monkeypatch, engine):
    state = run_state(tmp_path)
    relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
    assert relaystart.read_hint(state) == (engine.url, PREFIX, CONFIG)
    assert relaystart.read_hint(run_state(tmp_path, "run-other")) is None
    monkeypatch.setenv("DOCKER_HOST", engine.url)  # another engine may answer now
    assert relaystart.read_hint(state) is None
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(relaystart, "installation", lambda: "/another/checkout")
    assert relaystart.read_hint(state) is None


def test_no_hint_for_a_dev_session_or_an_engine_not_on_a_unix_socket(tmp_path, engine):
    dev_state = str(tmp_path / ".kubeless-local")
    relaystart.write_hint(dev_state, engine.url, PREFIX, CONFIG)  # dev's state folder: its first step sends nothing
    relaystart.write_hint(run_state(tmp_path), "tcp://127.0.0.1:2375", PREFIX, CONFIG)
    assert (
        not os.path.exists(tmp_path / "cache" / "head-starts") or os.listdir(tmp_path / "cache" / "head-starts") == []
    )


def test_a_hint_someone_else_could_have_written_is_not_read(tmp_path, engine):
    """What a hint holds is sent to the engine (root, in effect): only the user's own, private file is read."""
    state = run_state(tmp_path)
    relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
    path = relaystart.hint_path(state)
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, 0o620)
    assert relaystart.read_hint(state) is None


@pytest.mark.parametrize("prefix", ["", "name with spaces", "a/../b", "x?all=1"])
def test_a_hint_with_a_name_the_engine_url_cannot_carry_is_not_read(tmp_path, engine, prefix):
    state = run_state(tmp_path)
    relaystart.write_hint(state, engine.url, prefix, CONFIG)
    assert relaystart.read_hint(state) is None


def test_relay_hints_are_kept_for_the_newest_folders_only(tmp_path, engine, monkeypatch):
    monkeypatch.setattr(relaystart, "HINTS_KEPT", 3)
    hints = tmp_path / "cache" / "head-starts"
    hints.mkdir(parents=True)
    (hints / "0123abcd").write_text("a runtime's hint (prestart.py)")
    states = [run_state(tmp_path, "run-f%d" % n) for n in range(5)]
    for n, state in enumerate(states):
        relaystart.write_hint(state, engine.url, PREFIX, CONFIG)
        os.utime(relaystart.hint_path(state), (1000 + n, 1000 + n))
    relaystart.write_hint(states[-1], engine.url, PREFIX, CONFIG)
    assert sorted(os.listdir(hints)) == sorted(
        ["0123abcd"] + [os.path.basename(relaystart.hint_path(s)) for s in states[2:]]
    )


# ---- the backend's side (a fake engine client: the relay `run` sent is taken if it is the one it would create)


def relay_start(tmp_path, engine, monkeypatch, config=None):
    """A relay-mode backend, a prepared function, its instance, and the Early `run`'s first step sent for it (its
    hint as the backend writes it, unless `config`)."""
    client = FakeClient()
    client.containers.prepare_model = lambda attrs: _model(client, attrs)
    monkeypatch.setattr(images, "engine_url", lambda c: engine.url if c is client else None)
    backend = dk.DockerBackend(LogHub(), client=client, catalog=CATALOG, network="relay")
    prepared = prepared_for(backend, tmp_path, python_function(tmp_path))
    instance = Instance(name="hello", runtime="python3.11", port=18123)
    state = dk.containers.project_label(prepared.root.parent.parent)
    prefix, wanted = backend._relay_wanted(instance, prepared)
    Path(state).mkdir(parents=True, exist_ok=True)
    relaystart._early = relaystart.Early(state, engine.url, prefix, config or wanted)
    relaystart._early.sending = True  # as `send` does, without its thread
    relaystart._early.send()
    return backend, prepared, instance


def _model(client, attrs):
    container = FakeContainer(client, {"name": attrs["Name"].lstrip("/")})
    container.id = attrs["Id"]
    return container


def test_the_backend_takes_the_relay_run_sent_when_it_is_the_one_it_would_create(tmp_path, engine, monkeypatch):
    backend, prepared, instance = relay_start(tmp_path, engine, monkeypatch)
    early = relaystart._early
    relay = backend._start_relay(instance, prepared)
    assert relay is not None and relay.container.id == ID and relay.container.name == early.name
    assert relay.started.is_set() and str(relay.folder) == early.folder
    assert backend.client.containers.created == []  # none created by the backend itself
    assert [method for method, _, _ in engine.asked] == ["POST", "POST"]  # nothing removed
    relay.close()


def test_a_relay_run_sent_for_another_config_is_removed_and_one_created(tmp_path, engine, monkeypatch):
    other = CONFIG  # e.g. the relay image changed since, or --debug given this time
    backend, prepared, instance = relay_start(tmp_path, engine, monkeypatch, config=other)
    folder = relaystart._early.folder
    backend.client.api = type(
        "API", (), {"create_container_from_config": lambda self, config, name: {"Id": "cd" * 32}}
    )()
    relay = backend._start_relay(instance, prepared)
    assert engine.asked[-1][:2] == ("DELETE", "/containers/%s?force=1" % ID) and not os.path.exists(folder)
    assert relay is not None and relay.container.id == "cd" * 32  # the backend's own
    relay.close()


def test_the_sweep_of_leftovers_spares_the_relay_run_sent(tmp_path, engine, monkeypatch):
    backend, prepared, _ = relay_start(tmp_path, engine, monkeypatch)
    backend.swept.clear()  # prepare swept once; as a start of this run would, with the relay sent meanwhile
    state = prepared.root.parent.parent
    labels = {dk.LABEL_PROJECT: dk.containers.project_label(state)}
    client = backend.client
    sent = client.containers.create("img", name=relaystart._early.name, labels=labels)
    sent.id = ID
    leftover = client.containers.create("img", name="kubeless-local-hello-0123abcd-g3-relay", labels=labels)
    leftover.id = "ef" * 32
    stale = state / relaystart.DOORS / "hello.stale"
    stale.mkdir()
    backend.sweep(state)
    assert leftover.removed and not sent.removed
    assert not stale.exists() and os.path.isdir(relaystart._early.folder)

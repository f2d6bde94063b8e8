"""Fixtures of the conformance suite: every runtime × backend behind one `function` factory."""

import os
import shutil
import socket
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sockets import status_of
from waiting import wait_for, wait_until

from kubeless_local import kubeless_objects as objects
from kubeless_local.emulator import backends
from kubeless_local.emulator.base import State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.recorder import Recorder
from kubeless_local.emulator.supervisor import Supervisor
from kubeless_local.runtimes import Catalog

SCENARIOS = Path(__file__).parent / "scenarios"
FUNCTION_NAMES = {"go": "Handler"}  # exported Go functions start with a capital
UNLABELLED_METRICS = {"java"}  # Kubeless' Java runtime: function_* families without the `method` label
CATALOG = Catalog()


def conformance_runtimes(backend):
    """Per runtime ID with scenario files: for the process backend its versions this machine can run
    (or the first one, so a missing toolchain fails loudly instead of silently dropping the runtime);
    for docker every version that has an image (CI builds them)."""
    chosen = []
    for runtime_id in CATALOG.ids():
        versions = CATALOG.versions(runtime_id)
        if not versions or not (SCENARIOS / "hello" / ("handler" + versions[0].suffix)).exists():
            continue
        available = (
            [rt for rt in versions if rt.image] if backend != "process" else [rt for rt in versions if rt.available()]
        )
        chosen.extend(available or versions[:1])
    return chosen


def backends_under_test():
    return [b for b in os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(",") if b]


def pytest_generate_tests(metafunc):
    if "runtime" not in metafunc.fixturenames:
        return
    language = metafunc.definition.get_closest_marker("language")
    only_backend = metafunc.definition.get_closest_marker("backend")
    cases = [
        (rt, backend)
        for backend in backends_under_test()
        for rt in conformance_runtimes(backend)
        if (language is None or rt.server in language.args)
        and (only_backend is None or backend == only_backend.args[0])
    ]
    metafunc.parametrize(("runtime", "backend_name"), cases, ids=["%s-%s" % (rt.name, b) for rt, b in cases])


def server_receive_queues(server_port, proc="/proc/net"):
    """{client port: bytes the server has not read yet} of the connections to `server_port` in the network
    namespace whose tables `proc` holds (/proc/net: the host's; /proc/<pid>/net: that process's)."""
    queues = {}
    for table in ("tcp", "tcp6"):
        try:
            with open("%s/%s" % (proc, table)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, queue = fields[1], fields[2], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) != 0:
                queues[int(remote.rsplit(":", 1)[1], 16)] = int(queue.split(":")[1], 16)
    return queues


def server_receive_queue(server_port, client_port):
    """Bytes the server has not read yet on its end of the connection from `client_port` (None while
    the kernel shows no such connection): a server on the host's network (process backend, docker host mode)."""
    return server_receive_queues(server_port).get(client_port)


class RunningFunction:
    def __init__(self, instance, hub, runtime, spec, supervisor):
        self.instance, self.hub, self.runtime_info, self.spec = instance, hub, runtime, spec
        self.supervisor = supervisor
        self.url = instance.url
        self.runtime = runtime.name
        self.language = runtime.server
        self.session = requests.Session()

    def request(self, method, path="/", **kwargs):
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path="/", **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path="/", **kwargs):
        return self.request("POST", path, **kwargs)

    def method_label(self, method):
        if self.language in UNLABELLED_METRICS:
            return None
        return "%s-%s" % (self.spec.module, method) if self.language == "nodejs" else method

    def metrics(self):
        """{(sample name, method label): value} from /metrics."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("function_"):
                    values[(sample.name, sample.labels.get("method"))] = sample.value
        return values

    @property
    def code_file(self):
        """The handler file (the source itself, or handler.<ext> in a source folder)."""
        source = self.spec.source
        return source / ("handler" + self.runtime_info.suffix) if source.is_dir() else source

    def replace_code(self, text):
        """Rewrite the (editable) source and reload, as the file watcher does on save."""
        return self.replace_file(self.code_file, text)

    def replace_file(self, path, text):
        """Rewrite a file of the (editable) source, e.g. `fn.spec.source / "data.txt"`, and reload."""
        Path(path).write_text(text)
        self.supervisor.reload(self.spec)
        return self.instance.state

    def scenario_code(self, scenario):
        return (SCENARIOS / scenario / self.code_file.name).read_text()

    def open_call(self, method="POST", path="/", body=b"", headers=None, seconds=10):
        """Send one request on a raw connection and return the socket once the server has read it:
        the call is in flight. Read the answer with `.status_of(sock)`."""
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n" % (
            method,
            path,
            len(body),
        )
        head += "".join("%s: %s\r\n" % item for item in (headers or {}).items())
        isolated = self.supervisor.backend.name == "docker" and self.supervisor.backend.network != "host"
        if isolated:  # the server listens on 8080 in the container's namespace, reached through the docker door
            inside = "/proc/%d/net" % self.instance.pid
            earlier = set(server_receive_queues(8080, inside))
        door = self.supervisor.doors.get(self.instance.name)  # the process backend's front door, if any
        forwarded = door.forwarded if door is not None else 0
        sock = socket.create_connection(("127.0.0.1", self.instance.port), timeout=30)
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        client_port = sock.getsockname()[1]

        def read():
            if isolated:  # the connection the docker door made for this one: the new one in there
                fresh = [q for port, q in server_receive_queues(8080, inside).items() if port not in earlier]
                return len(fresh) == 1 and fresh[0] == 0
            if server_receive_queue(self.instance.port, client_port) != 0:
                return False
            if door is None:
                return True
            # through the front door: it handed the request on, and the server read all it was sent
            return door.forwarded > forwarded and not any(server_receive_queues(self.instance.server_port).values())

        wait_until(read, "the server reading the request", timeout=seconds, interval=0.01)
        return sock

    status_of = staticmethod(status_of)

    def logs(self):
        return "\n".join(line.text for line in self.hub.tail(self.instance.name))

    def wait_for_log(self, text, seconds=5):
        """The logs once they contain `text` (lines travel through the engine's log reader), or as
        they are after `seconds`."""
        wait_for(lambda: text in self.logs(), seconds)
        return self.logs()


@pytest.fixture
def function(runtime, backend_name, tmp_path):
    """function(scenario, timeout=None, env=None, memory=None, isolation=None, editable=False, folder=False,
    deps=None, files=None, module="handler") -> RunningFunction; stopped after the test. `folder=True`: the source is a private
    copy of the scenario's handler and data.txt in a folder (`.folder`), editable, with `files` ({relative path:
    text}) beside them. `deps`: the deps file's text. `module`: spec.handler's (the file, in /kubeless)."""
    hub = LogHub()
    (tmp_path / "state").mkdir()
    recorder = Recorder(tmp_path / "state", logs=hub)  # as in `dev`: every call passes a door that records it
    supervisor = Supervisor(
        tmp_path / "state", backends.factory(backend_name), hub, CATALOG, ephemeral_ports=True, recorder=recorder
    )
    started = []

    def start(
        scenario,
        *,
        timeout=None,
        env=None,
        memory=None,
        isolation=None,
        editable=False,
        folder=False,
        deps=None,
        files=None,
        module="handler",
    ):
        source = SCENARIOS / scenario / ("handler" + runtime.suffix)
        assert source.exists(), "scenario %s has no %s for %s" % (scenario, source.name, runtime.name)
        if folder:  # the Function's source is a private (editable) folder: the handler and data.txt
            code = tmp_path / "code"
            code.mkdir()
            if (SCENARIOS / scenario / "data.txt").exists():
                shutil.copy(SCENARIOS / scenario / "data.txt", code)
            for rel, text in (files or {}).items():
                (code / rel).parent.mkdir(parents=True, exist_ok=True)
                (code / rel).write_text(text)
            source = Path(shutil.copy(source, code / source.name))
        elif editable:  # a private copy the test may rewrite (reload tests)
            (tmp_path / "src").mkdir(exist_ok=True)
            source = Path(shutil.copy(source, tmp_path / "src" / source.name))
        deps_file = None
        if deps is not None:  # beside the code, as `run --dependencies` names it
            deps_file = tmp_path / "deps-file" / runtime.dep_name
            deps_file.parent.mkdir()
            deps_file.write_text(deps)
        fn = objects.function_from_files(
            scenario,
            source.parent if folder else source,
            runtime.name,
            module + "." + FUNCTION_NAMES.get(runtime.id, "handler"),
            timeout=timeout or "180",
            env=sorted((env or {}).items()),
            memory=memory,
            isolation=isolation,
            deps_file=deps_file,
        )
        instance = supervisor.start(fn)
        started.append(instance)
        running = RunningFunction(instance, hub, runtime, fn, supervisor)
        assert instance.state == State.READY, "%s did not start: %s\n%s" % (scenario, instance.error, running.logs())
        return running

    yield start
    supervisor.stop_all()
    recorder.close()

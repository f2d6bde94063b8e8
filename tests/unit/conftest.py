"""A fake backend on the real Backend base class (as pip-tools fakes its repository): the supervisor,
the admin API and the session run for real against it, with no runtime server started."""

import collections
import dataclasses
import itertools
import socket
import threading
from typing import cast

import pytest

from kubeless_local.emulator import prepare as prep
from kubeless_local.emulator.base import Backend, State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.supervisor import Supervisor
from kubeless_local.runtimes import BackendBlock, Catalog, Runtime
from kubeless_local.spec import FunctionSpec

REGISTRIES = itertools.count()  # a fresh registry name per test

FAKE_RUNTIME = Runtime(
    id="fake",
    version="1",
    server="",
    dep_name="",
    suffix=".txt",
    executable="",
    probe=(),
    expect="",
    image="",
    process=BackendBlock(reload="signal"),
)


def function(name="hello", code="v1", **annotations):
    """A FunctionSpec whose `code` the fake backend serves; the manifest stays the same across code edits."""
    return FunctionSpec(
        name=name,
        runtime="fake1",
        handler="handler.hello",
        origin="functions.yaml: Function %s" % name,
        function=code,
        annotations=annotations,
        document={"kind": "Function", "name": name},
    )


class FakeGuardian:
    """A Guardian's interface without its process (one interpreter per session: seconds over the unit
    suite); tests/unit/test_guardian.py and the e2e kill -9 tests run the real one."""

    def __init__(self, state_dir):
        self.groups, self.containers, self.closed = set(), False, False

    def watch(self, pgid):
        self.groups.add(pgid)

    def forget(self, pgid):
        self.groups.discard(pgid)

    def watch_containers(self):
        self.containers = True

    def close(self, timeout=10):
        self.closed = True


class FakeBackend(Backend):
    """Scripted outcomes per function name, consumed in order (default: everything works).

    start:  "ready" | "load-failed" | "crash" | "port-taken" (another program binds the port first)
            | "cannot-listen" (the server exits 4: it could not bind, the port looks free again afterwards)
            | "stuck" (it runs and holds its port, as the docker backend's front door does, never ready)
    reload: "ready" | "load-failed" | seconds (float) until ready
    prepare: an exception to raise (e.g. prepare.StepFailed) or None; `gate` holds prepare until set.
    """

    name = "fake"

    def __init__(self, logs=None, **collaborators):
        super().__init__(logs, **collaborators)
        self.starts = collections.defaultdict(list)
        self.reloads = collections.defaultdict(list)
        self.prepares = collections.defaultdict(list)
        self.launched = []  # (name, port, code) of every start
        self.stopped = []
        self.gate = threading.Event()
        self.gate.set()
        self.preparing = threading.Event()  # set while a prepare waits at the gate
        self.blockers = []
        self.next_pid = 1000

    def resolve(self, spec, catalog):
        """fake1, or another version of it (fake2) that a save may switch to."""
        version = spec.runtime[len("fake") :] if spec.runtime.startswith("fake") else ""
        return dataclasses.replace(FAKE_RUNTIME, version=version or FAKE_RUNTIME.version), None

    def prepare(self, spec, runtime, state_dir, on_line=lambda line: None, previous=None):
        self.preparing.set()
        assert self.gate.wait(10), "the test never opened the prepare gate"
        outcome = self.prepares[spec.name].pop(0) if self.prepares[spec.name] else None
        if outcome is not None:
            raise outcome
        root, generation, code_dir = prep.new_generation(state_dir, spec.name)
        (code_dir / "handler.txt").write_text(spec.function)
        deps = root.parent.parent / "deps"
        return prep.Prepared(
            spec=spec,
            runtime=runtime,
            root=root,
            generation=generation,
            code_dir=code_dir,
            deps_dir=deps,
            runtime_lib=deps,
        )

    def start(self, instance, prepared):
        outcome = self.starts[instance.name].pop(0) if self.starts[instance.name] else "ready"
        self.launched.append((instance.name, instance.port, prepared.spec.function))
        if outcome == "port-taken":
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", instance.port))
            blocker.listen()
            self.blockers.append(blocker)
            instance.set_state(State.CRASHED, "OSError: [Errno 98] Address already in use")
            return
        if outcome == "cannot-listen":
            instance.on_control("load-failed", 0, "cannot listen: Address already in use")
            instance.exit_code = 4
            instance.set_state(State.CRASHED, "the runtime exited with code 4")
            return
        instance.pid, instance.handle = self.next_pid, prepared
        self.next_pid += 1
        if outcome == "stuck":
            holder = socket.socket()
            holder.bind(("127.0.0.1", instance.port))
            holder.listen()
            self.blockers.append(holder)
            return
        if outcome == "crash":
            self.crash(instance)
        elif outcome == "load-failed":
            instance.on_control("load-failed", 0, "SyntaxError: invalid syntax")
        else:
            instance.on_control("ready", 0)

    def crash(self, instance):
        """The server dies on its own, as the process backend's watcher reports it."""
        instance.handle = None
        instance.set_state(State.CRASHED, "the runtime exited with code 1")
        self.on_exit(instance)

    def reload(self, instance, prepared):
        outcome = self.reloads[instance.name].pop(0) if self.reloads[instance.name] else "ready"
        generation = instance.last_control[1] + 1
        if isinstance(outcome, float):  # ready after that many seconds (calls in flight finish first)
            self.reloads[instance.name].insert(0, "ready")
            timer = threading.Timer(outcome, self.reload, (instance, prepared))
            timer.daemon = True
            timer.start()
            return
        if outcome == "load-failed":
            instance.on_control("load-failed", generation, "SyntaxError: invalid syntax")
        else:
            instance.handle = prepared
            instance.on_control("ready", generation)

    def stop(self, instance):
        if instance.handle is not None:
            self.stopped.append(instance.name)
        instance.handle = None

    def alive(self, instance):
        return instance.handle is not None

    def close(self):
        for blocker in self.blockers:
            blocker.close()


class Looks:
    """How often a trigger's sender asked whether a function serves (`wait_ready`, asked before every try):
    how far a delivery got, seen without a clock."""

    def __init__(self):
        self.counts: collections.Counter[str] = collections.Counter()
        self.changed = threading.Condition()

    def saw(self, name):
        with self.changed:
            self.counts[name] += 1
            self.changed.notify_all()

    def wait(self, name, count=1, unless=lambda: False, timeout=10):
        """Until `name` was asked about `count` times, or `unless()` holds (the test then shows what went wrong)."""
        with self.changed:
            done = self.changed.wait_for(lambda: self.counts[name] >= count or unless(), timeout)
            assert done, "%s asked about %d times, not %d" % (name, self.counts[name], count)

    def watch(self, supervisor):
        """Counts the looks of a real supervisor, whose answers stay its own."""
        answer = supervisor.wait_ready

        def wait_ready(name, timeout):
            self.saw(name)
            return answer(name, timeout)

        supervisor.wait_ready = wait_ready
        return self


class NoCatalog:
    """What the supervisor asks a catalog beside resolving (the fake backend resolves every runtime itself)."""

    def serves_metrics(self, runtime, image=""):
        return False  # the fake servers have no /metrics: `ls` asks none


@pytest.fixture
def supervisor(tmp_path):
    no_catalog = cast(Catalog, NoCatalog())  # the fake backend resolves every runtime itself
    sup = Supervisor(tmp_path / ".kubeless-local", FakeBackend, LogHub(), catalog=no_catalog, ephemeral_ports=True)
    yield sup
    sup.stop_all()


@pytest.fixture
def backend(supervisor):
    """The supervisor's FakeBackend (it built it, with its restart as on_exit): script outcomes on it."""
    yield supervisor.backend
    supervisor.backend.close()


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory, monkeypatch):
    """Sessions started by a test register in a registry of their own, never in the user's. A fresh name
    under the run's temporary folder, not the test's tmp_path: most tests never start a session, and
    asking every test for a tmp_path cost ~1 s of the suite."""
    registry = tmp_path_factory.getbasetemp() / ("registry-%d" % next(REGISTRIES))
    monkeypatch.setenv("KUBELESS_LOCAL_REGISTRY", str(registry))
    return registry

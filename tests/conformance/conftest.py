"""Fixtures of the conformance suite: every runtime × backend behind one `function` factory."""
import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kubeless_local import spec as specs
from kubeless_local.emulator import backends
from kubeless_local.emulator.base import State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.supervisor import Supervisor
from kubeless_local.runtimes import Catalog

SCENARIOS = Path(__file__).parent / "scenarios"
FUNCTION_NAMES = {"go": "Handler"}  # exported Go functions start with a capital
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
        available = [rt for rt in versions if rt.image] if backend != "process" else [rt for rt in versions if rt.available()]
        chosen.extend(available or versions[:1])
    return chosen


def backends_under_test():
    return [b for b in os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(",") if b]


def pytest_generate_tests(metafunc):
    if "runtime" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("language")
    cases = [(rt, backend) for backend in backends_under_test() for rt in conformance_runtimes(backend)
             if marker is None or rt.server == marker.args[0]]
    metafunc.parametrize(("runtime", "backend_name"), cases, ids=["%s-%s" % (rt.name, b) for rt, b in cases])


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

    def replace_code(self, text):
        """Rewrite the (editable) source and reload, as the file watcher does on save."""
        self.spec.source.write_text(text)
        self.supervisor.reload(self.spec)
        return self.instance.state

    def scenario_code(self, scenario):
        return (SCENARIOS / scenario / self.spec.source.name).read_text()

    def logs(self):
        return "\n".join(line.text for line in self.hub.tail(self.instance.name))

    def wait_for_log(self, text, seconds=5):
        """The logs once they contain `text` (lines travel through the engine's log reader), or as
        they are after `seconds`."""
        deadline = time.monotonic() + seconds
        while text not in self.logs() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.logs()


@pytest.fixture
def function(runtime, backend_name, tmp_path):
    """function(scenario, timeout=None, env=None, memory=None) -> RunningFunction; stopped after the test."""
    hub = LogHub()
    supervisor = Supervisor(tmp_path / "state", backends.create(backend_name, hub), hub, CATALOG, ephemeral_ports=True)
    started = []

    def start(scenario, *, timeout=None, env=None, memory=None, isolation=None, editable=False):
        source = SCENARIOS / scenario / ("handler" + runtime.suffix)
        assert source.exists(), "scenario %s has no %s for %s" % (scenario, source.name, runtime.name)
        if editable:  # a private copy the test may rewrite (reload tests)
            (tmp_path / "src").mkdir(exist_ok=True)
            source = Path(shutil.copy(source, tmp_path / "src" / source.name))
        fn = specs.function_from_files(
            scenario, source, runtime.name, "handler." + FUNCTION_NAMES.get(runtime.id, "handler"),
            timeout=timeout or "180", env=sorted((env or {}).items()), memory=memory, isolation=isolation)
        instance = supervisor.start(fn)
        started.append(instance)
        running = RunningFunction(instance, hub, runtime, fn, supervisor)
        assert instance.state == State.READY, "%s did not start: %s\n%s" % (scenario, instance.error, running.logs())
        return running

    yield start
    supervisor.stop_all()

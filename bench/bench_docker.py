"""Docker backend vs process backend, measured in the same run (images present; run
.ci/docker-setup.sh first):

  cold start   Supervisor.start (prepare + container create/start + ready) → first 200, N starts
  reload       save new code → first answer with it (prepare + SIGHUP / recompile), N edits
  throughput   wrk against the same hello function through each backend

    python bench/bench_docker.py [--runtimes python3.11,nodejs20,ruby3.1,php8.2,go1.26] [--starts 7] [--edits 20]
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeless_local import spec as specs  # noqa: E402
from kubeless_local.emulator import backends  # noqa: E402
from kubeless_local.emulator.base import State  # noqa: E402
from kubeless_local.emulator.logs import LogHub  # noqa: E402
from kubeless_local.emulator.supervisor import Supervisor  # noqa: E402
from kubeless_local.runtimes import Catalog  # noqa: E402

SCENARIOS = ROOT / "tests" / "conformance" / "scenarios"
CATALOG = Catalog()
MARKED = {  # a hello answering a marker that changes on every edit
    "python": 'def handler(event, context):\n    return "MARK"\n',
    "nodejs": 'module.exports = { handler: (event, context) => "MARK" };\n',
    "ruby": 'def handler(event, context)\n  "MARK"\nend\n',
    "php": '<?php\nfunction handler($event, $context) {\n    return "MARK";\n}\n',
    "go": 'package kubeless\n\nimport "github.com/kubeless/kubeless/pkg/functions"\n\n'
          'func Handler(event functions.Event, context functions.Context) (string, error) {\n\treturn "MARK", nil\n}\n',
}


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except OSError:
        return None, None


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Engine:
    def __init__(self, backend):
        self.tmp = Path(tempfile.mkdtemp(prefix="kl-bench-docker-"))
        self.hub = LogHub()
        self.supervisor = Supervisor(self.tmp / "state", backends.create(backend, self.hub), self.hub, CATALOG,
                                     ephemeral_ports=True)

    def spec(self, runtime, name, text):
        source = self.tmp / name / ("handler" + runtime.suffix)
        source.parent.mkdir(exist_ok=True)
        source.write_text(text)
        handler = "handler.Handler" if runtime.id == "go" else "handler.handler"
        return specs.function_from_files(name, source, runtime.name, handler)

    def close(self):
        self.supervisor.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)


def cold_starts(backend, runtime, starts):
    engine = Engine(backend)
    times = []
    try:
        for i in range(starts + 1):  # the first start fills caches (deps, runtime lib): not counted
            spec = engine.spec(runtime, "cold%d" % i, MARKED[runtime.server].replace("MARK", "cold"))
            began = time.monotonic()
            instance = engine.supervisor.start(spec)
            assert instance.state == State.READY, instance.error
            while get(instance.url + "/")[0] != 200:
                time.sleep(0.005)
            if i:
                times.append((time.monotonic() - began) * 1000)
            engine.supervisor.stop(spec.name)
    finally:
        engine.close()
    return times


def reloads(backend, runtime, edits):
    engine = Engine(backend)
    times = []
    try:
        spec = engine.spec(runtime, "reload", MARKED[runtime.server].replace("MARK", "v0"))
        instance = engine.supervisor.start(spec)
        assert instance.state == State.READY, instance.error
        for i in range(1, edits + 1):
            marker = "v%d" % i
            began = time.monotonic()
            spec.source.write_text(MARKED[runtime.server].replace("MARK", marker))
            engine.supervisor.reload(spec)
            while get(instance.url + "/")[1] != marker:
                assert time.monotonic() - began < 60, "reload %d never answered" % i
                time.sleep(0.005)
            times.append((time.monotonic() - began) * 1000)
    finally:
        engine.close()
    return times


def throughput(backend, runtime, seconds, connections):
    engine = Engine(backend)
    try:
        spec = engine.spec(runtime, "tput", MARKED[runtime.server].replace("MARK", "hello"))
        instance = engine.supervisor.start(spec)
        assert instance.state == State.READY, instance.error
        out = subprocess.run(["wrk", "-t2", "-c%d" % connections, "-d%ds" % seconds, instance.url + "/"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        raise RuntimeError(out)
    finally:
        engine.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="python3.11,nodejs20,ruby3.1,php8.2," +
                        ",".join(rt.name for rt in CATALOG.versions("go")))
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    runtimes = [CATALOG.resolve(name, require_local=False)[0] for name in args.runtimes.split(",") if name]
    print("| runtime | backend | cold start → first 200 median ms (p95) | reload median ms | reload p95 ms "
          "| hello req/s | docker/process req/s |")
    print("|---|---|---|---|---|---|---|")
    for rt in runtimes:
        rps = {}
        for backend in ("process", "docker"):
            cold = cold_starts(backend, rt, args.starts)
            reload = reloads(backend, rt, args.edits)
            rps[backend] = throughput(backend, rt, args.seconds, args.connections)
            ratio = "%.2f" % (rps["docker"] / rps["process"]) if backend == "docker" else ""
            print("| %s | %s | %.0f (%.0f) | %.0f | %.0f | %.0f | %s |" % (
                rt.name, backend, statistics.median(cold), pct(cold, 0.95), statistics.median(reload),
                pct(reload, 0.95), rps[backend], ratio), flush=True)


if __name__ == "__main__":
    main()

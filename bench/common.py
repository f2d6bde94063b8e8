"""Shared benchmark helpers: start a function through the engine, drive wrk, summarise."""

import argparse
import dataclasses
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeless_local import config  # noqa: E402
from kubeless_local import kubeless_objects as objects  # noqa: E402
from kubeless_local.emulator import backends  # noqa: E402
from kubeless_local.emulator.logs import LogHub  # noqa: E402
from kubeless_local.emulator.recorder import Recorder  # noqa: E402
from kubeless_local.emulator.supervisor import Supervisor  # noqa: E402
from kubeless_local.runtimes import Catalog  # noqa: E402


def _stopped(signum, _frame):
    raise SystemExit(128 + signum)


# `timeout` and a closed terminal end a benchmark with SIGTERM or SIGHUP: raised as SystemExit here, so that
# the `finally` blocks stop the runtime servers it started (they outlived such a benchmark before).
for _signal in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signal, _stopped)


SCENARIOS = ROOT / "tests" / "conformance" / "scenarios"
FUNCTION_NAMES = {"go": "Handler"}
CATALOG = Catalog()
MARKED_HELLO = {  # a hello answering a marker that benchmarks change on every edit
    "python": 'def handler(event, context):\n    return "MARK"\n',
    "nodejs": 'module.exports = { handler: (event, context) => "MARK" };\n',
    "ruby": 'def handler(event, context)\n  "MARK"\nend\n',
    "php": '<?php\nfunction handler($event, $context) {\n    return "MARK";\n}\n',
    "go": 'package kubeless\n\nimport "github.com/kubeless/kubeless/pkg/functions"\n\n'
    'func Handler(event functions.Event, context functions.Context) (string, error) {\n\treturn "MARK", nil\n}\n',
}


def answer(url, timeout=5):
    """(status, body) of a GET, or (None, None) while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except OSError:
        return None, None


def bench_parser(doc, backend=True):
    """The options every benchmark shares: which runtimes (default: those this machine runs), which backend."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runtimes", default=",".join(rt.name for rt in CATALOG.all() if rt.available()))
    if backend:
        parser.add_argument("--backend", default="process", choices=["process", "docker"])
    return parser


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url, timeout=30, interval=0.02):
    """Poll until `url` answers 200 (a server starting up)."""
    deadline = time.monotonic() + timeout
    while answer(url, timeout=2)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not answer within %ss" % (url, timeout))
        time.sleep(interval)


class Engine:
    """A Supervisor on a temp state folder (the `dev` engine without the CLI)."""

    def __init__(self, backend="process", network=None, recorded=False):
        """`network`: the docker backend's docker.network (bridge, relay, host), else the settings' default;
        `recorded`: the front doors record every call (a Recorder on the state folder, as in `dev`)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="kl-bench-"))
        self.hub = LogHub()
        self.recorder = None
        if recorded:
            (self.tmp / "state").mkdir()
            self.recorder = Recorder(self.tmp / "state", logs=self.hub)
        settings = None
        if network is not None:
            defaults = config.Settings(self.tmp / config.FILE)
            settings = dataclasses.replace(defaults, docker=config.Docker(network=network))
        self.supervisor = Supervisor(
            self.tmp / "state",
            backends.factory(backend, settings),
            self.hub,
            CATALOG,
            ephemeral_ports=True,
            recorder=self.recorder,
        )

    def function(self, runtime_name, scenario="hello", editable=False, **kwargs):
        runtime, _ = CATALOG.resolve(runtime_name)
        source = SCENARIOS / scenario / ("handler" + runtime.suffix)
        if editable:
            (self.tmp / "src").mkdir(exist_ok=True)
            source = Path(shutil.copy(source, self.tmp / "src" / source.name))
        fn = objects.function_from_files(
            scenario, source, runtime.name, "handler." + FUNCTION_NAMES.get(runtime.id, "handler"), **kwargs
        )
        instance = self.supervisor.start(fn)
        if instance.state.value != "Ready":
            raise RuntimeError("%s did not start: %s" % (runtime_name, instance.error))
        return fn, instance

    def marked_spec(self, runtime, name, marker):
        """A Function whose source (under the temp folder) answers `marker`; rewrite it with `remark`."""
        source = self.tmp / name / ("handler" + runtime.suffix)
        source.parent.mkdir(exist_ok=True)
        source.write_text(MARKED_HELLO[runtime.server].replace("MARK", marker))
        return objects.function_from_files(
            name, source, runtime.name, "handler." + FUNCTION_NAMES.get(runtime.id, "handler")
        )

    @staticmethod
    def remark(spec, runtime, marker):
        spec.source.write_text(MARKED_HELLO[runtime.server].replace("MARK", marker))

    def edit_times(self, spec, runtime, url, edits, timeout):
        """Milliseconds from each of `edits` saves of `spec` (0.3 s apart, as a developer's) until `url`
        answers the saved code; RuntimeError when an edit is not answered within `timeout` seconds."""
        times = []
        for edit in range(1, edits + 1):
            marker = "v%d" % edit
            time.sleep(0.3)  # let the previous reload settle, as between a developer's saves
            started = time.monotonic()
            self.remark(spec, runtime, marker)
            while answer(url)[1] != marker:
                if time.monotonic() - started > timeout:
                    raise RuntimeError("%s: edit %d never answered" % (runtime.name, edit))
                time.sleep(0.002)
            times.append((time.monotonic() - started) * 1000)
        return times

    def close(self):
        self.supervisor.stop_all()
        if self.recorder is not None:
            self.recorder.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url, connections, seconds=5, threads=2, headers=()):
    """{'rps', 'p50_ms', 'p99_ms'} from one wrk run (Debian's wrk); `headers`: ("Name: value", …)."""
    threads = min(threads, connections)
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(pct):
        match = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, out, re.M)
        return float(match.group(1)) * UNITS[match.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError("%s answered %s non-2xx responses" % (url, errors.group(1)))
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99)}


def percentile(values, pct):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def summary(values):
    return {"median": statistics.median(values), "p95": percentile(values, 95), "min": min(values), "max": max(values)}


class Baseline:
    """A bare HTTP hello of one language, started as a subprocess on a free port."""

    def __init__(self, argv, cwd=None, env=None):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/" % self.port
        wait_http(self.url)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()

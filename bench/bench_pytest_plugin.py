"""The pytest plugin's costs (issue P): import, session start, reset(), call overhead over a bare request.

    python bench/bench_pytest_plugin.py [--runs 20] [--calls 300] [--backend process]

Each number beside its baseline, measured in the same run:
- import: `python -X importtime -c "import pytest; import kubeless_local.pytest_plugin"`, the plugin's
  cumulative microseconds (what a project whose tests use no kubeless fixture pays) beside pytest's own;
- start: Emulator.start() over a project of one Python function (a fresh state folder each run) beside
  the function's own launch → Ready (`ready_ms`, the runtime's part of it);
- reset(): with a KafkaTrigger's subscriber running, after an event and a dead letter;
- call: `kubeless.call` (the CLI's event, `.logs` of the call, the front door) beside a bare
  `requests.post` of the same body to the same URL, interleaved.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from kubeless_local.testing import Emulator  # noqa: E402

HANDLER = 'def hello(event, context):\n    print("hello", event["data"])\n    return "hi"\n'
MANIFESTS = """apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.hello}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec: {topic: orders, functionSelector: {matchLabels: {}}}
"""


def median_ms(values):
    return statistics.median(values) * 1000


def import_cost(runs):
    """(plugin cumulative µs, pytest cumulative µs) medians, byte code cached as a user's installation has it
    (a first run writes it; PYTHONDONTWRITEBYTECODE would compile the modules on every import)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    plugin, pytest_ = [], []
    for run in range(runs + 1):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pytest; import kubeless_local.pytest_plugin"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        ).stderr
        for line in err.splitlines() if run else ():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
            if match and not match.group(2):  # top-level imports only
                if match.group(3) == "kubeless_local.pytest_plugin":
                    plugin.append(int(match.group(1)))
                elif match.group(3) == "pytest":
                    pytest_.append(int(match.group(1)))
    return statistics.median(plugin), statistics.median(pytest_)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--backend", default="process", choices=["process", "docker"])
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="kl-bench-plugin-"))
    (project / "handler.py").write_text(HANDLER)
    (project / "function.yaml").write_text(MANIFESTS)
    (project / ".kubeless-local.yaml").write_text("kafka:\n  max_attempts: 1\n")

    plugin_us, pytest_us = import_cost(args.runs)
    print("| measure | baseline | baseline value | plugin | goal |")
    print("|---|---|---|---|---|")
    print(
        "| import (µs, median of %d) | `import pytest` | %d | %d (%.1f %% of pytest's) | ≤ 10,000 |"
        % (args.runs, pytest_us, plugin_us, 100.0 * plugin_us / pytest_us)
    )

    starts, ready = [], []
    for _ in range(max(3, args.runs // 4)):
        started = time.monotonic()
        emulator = Emulator(project, Path(tempfile.mkdtemp(prefix="kl-bench-state-")), args.backend)
        emulator.start()
        starts.append(time.monotonic() - started)
        ready.append(emulator.functions()[0]["ready_ms"] / 1000)
        emulator.stop()
    print(
        "| session start, one Python function (ms, median of %d) | its launch → Ready | %.0f | %.0f | ≤ 2,000 |"
        % (len(starts), median_ms(ready), median_ms(starts))
    )

    emulator = Emulator(project, Path(tempfile.mkdtemp(prefix="kl-bench-state-")), args.backend).start()
    try:
        resets = []
        for _ in range(args.runs):
            emulator.fail_next("hello", status=500)
            emulator.emit("orders", "x")
            emulator.wait_dead_letter("hello")
            started = time.monotonic()
            emulator.reset()
            resets.append(time.monotonic() - started)
        print("| reset() (ms, median of %d) | – | – | %.1f | ≤ 50 |" % (len(resets), median_ms(resets)))

        url = emulator.url("hello")
        calls, bare = [], []
        for i in range(args.calls):
            started = time.monotonic()
            requests.post(url, data=b"x%d" % i, timeout=10)
            bare.append(time.monotonic() - started)
            started = time.monotonic()
            emulator.call("hello", data="x%d" % i)
            calls.append(time.monotonic() - started)
        overhead = median_ms(calls) - median_ms(bare)
        print(
            "| call (ms, median of %d) | bare `requests.post` | %.2f | %.2f (+%.2f) | overhead ≤ 5 |"
            % (args.calls, median_ms(bare), median_ms(calls), overhead)
        )
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()

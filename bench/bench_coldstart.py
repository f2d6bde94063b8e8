"""Cold start: runtime process launch → first 200 from the function (code and deps already prepared).

    python bench/bench_coldstart.py [--runtimes python3.11,...] [--runs 10]

Baseline in the same run: launching the bare interpreter (`<exe> --version`-style no-op) to show
what the language itself costs on this machine.
"""

import subprocess
import time

from common import CATALOG, Engine, bench_parser, summary, wait_http

NOOP = {"python": ["-c", "pass"], "nodejs": ["-e", "0"], "ruby": ["-e", "0"], "php": ["-r", ";"], "go": ["version"]}


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print("| runtime | backend | runs | interpreter no-op median ms | launch → first 200 median ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        engine = Engine(args.backend)
        try:
            fn, instance = engine.function(runtime.name, "hello")
            prepared = engine.supervisor.serving[fn.name]
            backend = engine.supervisor.backend
            times, noop = [], []
            for _ in range(args.runs):
                backend.stop(instance)
                started = time.monotonic()
                backend.start(instance, prepared)
                wait_http(instance.url + "/", timeout=60, interval=0.002)
                times.append((time.monotonic() - started) * 1000)
                started = time.monotonic()
                subprocess.run([runtime.executable_path(), *NOOP[runtime.id]], capture_output=True)
                noop.append((time.monotonic() - started) * 1000)
            s, n = summary(times), summary(noop)
            print(
                "| %s | %s | %d | %.0f | %.0f | %.0f |"
                % (runtime.name, args.backend, args.runs, n["median"], s["median"], s["p95"]),
                flush=True,
            )
        finally:
            engine.close()


if __name__ == "__main__":
    main()

"""What holding a memory limit costs on the process backend (emulator/memorywatch.py): a hello's throughput with a
memory limit (the watch looks at its processes twice a second) against the same hello without one, in the
same run, rounds alternating; and the watch thread's own CPU per look per function.

    python bench/bench_memorywatch.py [--runtimes python3.11,nodejs20] [--rounds 3] [--seconds 5] [--connections 10]
"""

import threading
import time

from common import Engine, bench_parser, wrk

from kubeless_local.emulator import memorywatch

LIMIT = "512Mi"  # far above a hello's needs: the watch looks, never stops it


def watch_cpu_seconds():
    """CPU seconds the memory watch's thread of this process has run (its schedstat: nanoseconds; 0 before it runs)."""
    for thread in threading.enumerate():
        if thread.name == "memory watch" and thread.native_id is not None:
            with open("/proc/self/task/%d/schedstat" % thread.native_id) as schedstat:
                return int(schedstat.read().split()[0]) / 1e9
    return 0.0


def main():
    parser = bench_parser(__doc__, backend=False)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()
    print("| runtime | round | no limit req/s | limit held req/s | ratio | watch CPU µs per look |")
    print("|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        engines = {"none": Engine("process"), "held": Engine("process")}
        try:
            urls = {}
            for kind, engine in engines.items():
                _, instance = engine.function(name, "hello", memory=LIMIT if kind == "held" else None)
                urls[kind] = instance.url + "/"
                wrk(urls[kind], args.connections, 1)  # warm up
            for round_ in range(1, args.rounds + 1):
                rates = {}
                for kind in ("none", "held") if round_ % 2 else ("held", "none"):
                    cpu, started = watch_cpu_seconds(), time.monotonic()
                    rates[kind] = wrk(urls[kind], args.connections, args.seconds)["rps"]
                    if kind == "held":
                        looks = (time.monotonic() - started) / memorywatch.LOOK_EVERY
                        per_look = (watch_cpu_seconds() - cpu) * 1e6 / looks
                print(
                    "| %s | %d | %.0f | %.0f | %.2f | %.0f |"
                    % (name, round_, rates["none"], rates["held"], rates["held"] / rates["none"], per_look)
                )
        finally:
            for engine in engines.values():
                engine.close()


if __name__ == "__main__":
    main()

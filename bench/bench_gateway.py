"""The HTTPTrigger gateway's overhead: a function called through the gateway (Host routing, nginx rewrite,
forwarded headers, a kept-alive upstream connection) against the same function's own URL, in the same run,
alternating the two (targets, issue O: ≤ 1 ms added at p50, ≥ 0.8× the throughput at c10).

    python bench/bench_gateway.py [--runtimes python3.11,nodejs20] [--connections 1,10] [--seconds 5] [--rounds 3]
                                  [--unrecorded]

Every call is recorded, as in `dev` (the function's front door records the direct ones, the gateway its own;
`--unrecorded`: neither). Each figure is the median of `--rounds` alternating runs (direct, gateway, direct,
…): on a busy machine one run of either can be off by 2×. `dev CPU µs` is the CPU this process (`dev`: the
front doors, the gateway, the recorder) spent per request meanwhile, which depends little on how busy the
machine is.
"""

import statistics
import time
from pathlib import Path

from common import CATALOG, Engine, bench_parser, wrk

from kubeless_local import spec as specs
from kubeless_local.emulator.gateway import Gateway

TRIGGER = {
    "apiVersion": specs.API_VERSION,
    "kind": "HTTPTrigger",
    "metadata": {"name": "hello"},
    "spec": {"function-name": "hello", "host-name": "hello.test", "path": "hello"},
}


def measure(url, connections, seconds, headers=()):
    """wrk's figures, and `cpu_us`: this process's CPU per request meanwhile."""
    cpu = time.process_time()
    result = wrk(url, connections, seconds, headers=headers)
    result["cpu_us"] = (time.process_time() - cpu) * 1e6 / max(result["rps"] * seconds, 1)
    return result


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--connections", default="1,10")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unrecorded", action="store_true", help="no recorder (neither path records its calls)")
    args = parser.parse_args()
    columns = [
        "runtime",
        "backend",
        "conns",
        "direct req/s",
        "gateway req/s",
        "ratio",
        "direct p50 ms",
        "gateway p50 ms",
        "added p50 ms",
        "dev CPU µs/req direct",
        "gateway",
    ]
    print("| %s |" % " | ".join(columns))
    print("|%s" % ("---|" * len(columns)))
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        engine = Engine(args.backend, recorded=not args.unrecorded)
        gateway = None
        try:
            fn, instance = engine.function(runtime.name, "hello")
            trigger = specs.parse_http_trigger(TRIGGER, Path("bench.yaml"))
            gateway = Gateway(engine.supervisor, engine.hub, engine.tmp, port=0)
            gateway.update(specs.Manifests(functions=[fn], http_triggers=[trigger]))
            direct = instance.url + "/"
            through = "%s/hello" % gateway.url
            host = ("Host: hello.test",)
            wrk(direct, 10, 1)  # warm both up
            wrk(through, 10, 1, headers=host)
            for conns in [int(c) for c in args.connections.split(",")]:
                runs = [
                    (measure(direct, conns, args.seconds), measure(through, conns, args.seconds, headers=host))
                    for _ in range(args.rounds)
                ]
                base, via = ({key: statistics.median(r[i][key] for r in runs) for key in runs[0][i]} for i in (0, 1))
                print(
                    "| %s | %s | %d | %.0f | %.0f | %.2f× | %.2f | %.2f | %.2f | %.0f | %.0f |"
                    % (
                        runtime.name,
                        args.backend,
                        conns,
                        base["rps"],
                        via["rps"],
                        via["rps"] / base["rps"],
                        base["p50_ms"],
                        via["p50_ms"],
                        via["p50_ms"] - base["p50_ms"],
                        base["cpu_us"],
                        via["cpu_us"],
                    ),
                    flush=True,
                )
        except RuntimeError:
            print("\n".join(line.text for line in engine.hub.tail("gateway")))
            raise
        finally:
            if gateway is not None:
                gateway.stop()
            engine.close()


if __name__ == "__main__":
    main()

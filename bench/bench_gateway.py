"""The HTTPTrigger gateway's overhead: a function called through the gateway (Host routing, nginx rewrite,
forwarded headers, a kept-alive upstream connection) against the same function's own URL, in the same run,
alternating the two (targets, issue O: ≤ 1 ms added at p50, ≥ 0.8× the throughput at c10).

    python bench/bench_gateway.py [--runtimes python3.11,nodejs20] [--connections 1,10] [--seconds 5] [--rounds 3]
                                  [--unrecorded] [--ingress-headers]
    python bench/bench_gateway.py --protocols [--requests 30000]

Every call is recorded, as in `dev` (the function's front door records the direct ones, the gateway its own;
`--unrecorded`: neither). Each figure is the median of `--rounds` alternating runs (direct, gateway, direct,
…): on a busy machine one run of either can be off by 2×. `dev CPU µs` is the CPU this process (`dev`: the
front doors, the gateway, the recorder) spent per request meanwhile, which depends little on how busy the
machine is. `--ingress-headers`: the direct calls carry the headers the gateway adds (ingress-nginx's, which
the function's server and the recorder read too), so that the ratio is the relay's alone.

`--protocols`: the gateway's Python alone, without sockets, servers or wrk: its client and upstream Protocols
driven with fake transports (a hello request, a bottle-like answer), the thread's CPU per request and the
garbage collections it ran.
"""

import asyncio
import gc
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from common import CATALOG, Engine, bench_parser, wrk

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.emulator import gateway as gateways
from kubeless_local.emulator.base import Reach
from kubeless_local.emulator.gateway import Gateway
from kubeless_local.emulator.logs import LogHub

TRIGGER = {
    "apiVersion": specs.API_VERSION,
    "kind": "HTTPTrigger",
    "metadata": {"name": "hello"},
    "spec": {"function-name": "hello", "host-name": "hello.test", "path": "hello"},
}


# what the gateway adds to a request (http_routes.RouteTable.decide), with values of the same lengths
INGRESS_HEADERS = (
    "X-Request-ID: 0123456789abcdef0123456789abcdef",
    "X-Real-IP: 127.0.0.1",
    "X-Forwarded-For: 127.0.0.1",
    "X-Forwarded-Host: hello.test",
    "X-Forwarded-Port: 8480",
    "X-Forwarded-Proto: http",
    "X-Forwarded-Scheme: http",
    "X-Scheme: http",
    "X-Original-URI: /hello",
)
REQUEST = b"GET /hello HTTP/1.1\r\nHost: hello.test\r\n\r\n"  # as wrk sends it
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/html; charset=UTF-8\r\n"
    b"Date: Sun, 06 Dec 2026 05:00:00 GMT\r\nServer: WSGIServer/0.2 CPython/3.11\r\n\r\nhello world"
)


class Transport:
    """What the Protocols call of a transport; what they write is kept until cleared."""

    def __init__(self):
        self.written, self.reading = [], True

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return False

    def close(self):
        pass

    abort = close

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def is_reading(self):
        return self.reading

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 50000) if name == "peername" else default


class Recorded:
    """The recorder's calls the gateway makes, doing nothing (its writer is measured by bench_recorder)."""

    def started(self, *args):
        pass

    def submit(self, exchange):
        return ""


async def protocols(requests):
    """(thread CPU µs per request, garbage collections per generation) of the gateway's Python alone."""
    instance = SimpleNamespace(name="hello", url="http://127.0.0.1:1", server_port=1, state=None)
    spec = SimpleNamespace(timeout="30")
    supervisor = SimpleNamespace(
        wait_ready=lambda name, timeout: (instance, spec),
        recorder=Recorded(),
        server_target=lambda instance: Reach(("127.0.0.1", instance.server_port)),
    )
    gateway = Gateway(supervisor, LogHub(), Path("."), port=0)
    gateway.loop = asyncio.get_running_loop()
    fn = specs.FunctionSpec(name="hello", runtime="python3.11", handler="h.f", origin="bench.yaml", function="x")
    trigger = specs.parse_http_trigger(TRIGGER, Path("bench.yaml"))
    gateway.table = http_routes.build(specs.Manifests(functions=[fn], http_triggers=[trigger]), {}).table
    client, upstream = gateways.Client(gateway, "http"), gateways.Upstream(("127.0.0.1", 1))
    to_client, to_function = Transport(), Transport()
    client.connection_made(to_client)
    upstream.transport = to_function
    gateway.pool(upstream, "hello")

    def served(count):
        for _ in range(count):
            client.data_received(REQUEST)
            upstream.data_received(ANSWER)
        answered, to_client.written[:], to_function.written[:] = to_client.written[-1:], [], []
        if not answered or not answered[0].startswith(b"HTTP/1.1 200 OK"):
            raise RuntimeError("the gateway did not answer 200: %r" % answered)

    served(1000)  # warm up
    gc.collect()
    before = [generation["collections"] for generation in gc.get_stats()]
    cpu = time.thread_time()
    for _ in range(requests // 1000):
        served(1000)
        await asyncio.sleep(0)  # the loop turns, as it does between requests
    cpu = time.thread_time() - cpu
    collections = [g["collections"] - b for g, b in zip(gc.get_stats(), before)]
    return cpu * 1e6 / (requests // 1000 * 1000), collections


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
    parser.add_argument("--ingress-headers", action="store_true", help="direct calls carry the gateway's headers")
    parser.add_argument("--protocols", action="store_true", help="the gateway's Python alone, fake transports")
    parser.add_argument("--requests", type=int, default=30000, help="with --protocols")
    args = parser.parse_args()
    if args.protocols:
        cpu, collections = asyncio.run(protocols(args.requests))
        print("gateway Python per request: %.1f µs; garbage collections by generation: %s" % (cpu, collections))
        return
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
            alike = INGRESS_HEADERS if args.ingress_headers else ()
            wrk(direct, 10, 1)  # warm both up
            wrk(through, 10, 1, headers=host)
            for conns in [int(c) for c in args.connections.split(",")]:
                runs = [
                    (measure(direct, conns, args.seconds, alike), measure(through, conns, args.seconds, headers=host))
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

"""The invocation recorder's cost: each runtime's hello through its front door (recording every call) vs the
runtime server's own port, in the same run; and the list API with 10,000 stored invocations.

    python bench/bench_recorder.py [--runtimes python3.11,nodejs20] [--connections 1,10] [--seconds 5] [--rounds 3]

Rounds alternate direct / front door without recorder / front door with recorder, so a machine that gets
busier during the run weighs on all three. The recorder runs as in `dev`: with an event bus and the default
retention. Prints Markdown tables: req/s and p50 per path, what the recorder adds against the door without it
(the issue's comparison: throughput ratio, p50, and `dev`'s CPU per call, of it the writer thread's); then the
list API's p50/p95 (ms) over 200 calls.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import CATALOG, FUNCTION_NAMES, SCENARIOS, bench_parser, percentile, wrk

from kubeless_local import kubeless_objects as objects
from kubeless_local.client import SessionClient
from kubeless_local.emulator import backends
from kubeless_local.emulator.admin import AdminServer
from kubeless_local.emulator.bus import EventBus
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.recorder import Exchange, Recorder
from kubeless_local.emulator.supervisor import Supervisor


def thread_cpu(thread):
    """CPU seconds `thread` used so far (Linux: /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/task/%d/stat" % thread.native_id) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url, connections, seconds, writer):
    """wrk's figures, `cpu_us`: the CPU this process (the front door and the recorder's writer; `dev` in real use)
    spent per call meanwhile, which depends less on how busy the machine is; `writer_us`: the writer's share."""
    cpu, written = time.process_time(), thread_cpu(writer)
    result = wrk(url + "/", connections, seconds)
    calls = max(result["rps"] * seconds, 1)
    result["cpu_us"] = (time.process_time() - cpu) * 1e6 / calls
    result["writer_us"] = (thread_cpu(writer) - written) * 1e6 / calls
    return result


def calls(args):
    print(
        "| runtime | conns | direct req/s | door req/s | door+recorder req/s | ratio door+recorder/door | "
        "p50 ms direct / door / door+recorder | p50 added by the recorder ms | "
        "dev CPU µs/call door / door+recorder | added | of it the writer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        tmp = Path(tempfile.mkdtemp(prefix="kl-bench-"))
        (tmp / "state").mkdir()
        hub = LogHub()
        recorder = Recorder(tmp / "state", logs=hub, bus=EventBus())  # the default retention, as `dev` keeps records
        supervisor = Supervisor(
            tmp / "state", backends.factory("process"), hub, CATALOG, ephemeral_ports=True, recorder=recorder
        )
        try:
            source = SCENARIOS / "hello" / ("handler" + runtime.suffix)
            fn = objects.function_from_files(
                "hello", source, runtime.name, "handler." + FUNCTION_NAMES.get(runtime.id, "handler")
            )
            instance = supervisor.start(fn)
            door = supervisor.doors["hello"]
            for connections in [int(c) for c in args.connections.split(",")]:
                results = {"direct": [], "door": [], "recorded": []}
                writer = recorder.writer
                measure(instance.url, connections, 1, writer)  # warm both paths
                for _ in range(args.rounds):
                    results["direct"].append(measure(instance.server_url, connections, args.seconds, writer))
                    door.recorder = None
                    results["door"].append(measure(instance.url, connections, args.seconds, writer))
                    door.recorder = recorder
                    results["recorded"].append(measure(instance.url, connections, args.seconds, writer))
                rps = {k: statistics.median(r["rps"] for r in v) for k, v in results.items()}
                p50 = {k: statistics.median(r["p50_ms"] for r in v) for k, v in results.items()}
                cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in results.items()}
                writer_us = statistics.median(r["writer_us"] for r in results["recorded"])
                print(
                    "| %s | %d | %.0f | %.0f | %.0f | %.2f | %.3f / %.3f / %.3f | %.3f | %.0f / %.0f | %.0f | %.0f |"
                    % (
                        runtime.name,
                        connections,
                        rps["direct"],
                        rps["door"],
                        rps["recorded"],
                        rps["recorded"] / rps["door"],
                        p50["direct"],
                        p50["door"],
                        p50["recorded"],
                        p50["recorded"] - p50["door"],
                        cpu["door"],
                        cpu["recorded"],
                        cpu["recorded"] - cpu["door"],
                        writer_us,
                    ),
                    flush=True,
                )
            recorder.flush(30)
            print("kept %d, dropped %d" % (recorder.stats()["stored"], recorder.dropped), file=sys.stderr)
        finally:
            supervisor.stop_all()
            recorder.close()
            shutil.rmtree(tmp, ignore_errors=True)


def list_api(args):
    tmp = Path(tempfile.mkdtemp(prefix="kl-bench-"))
    hub = LogHub()
    recorder = Recorder(tmp, logs=hub, keep=100_000, max_bytes=2**40, log_grace=0)
    supervisor = Supervisor(tmp, backends.factory("process"), hub, CATALOG, ephemeral_ports=True)
    admin = AdminServer(supervisor, tmp, tmp)
    admin.recorder = recorder
    admin.start()
    try:
        body = b'{"order": 7, "items": ["a", "b"]}' * 10
        for index in range(args.stored):
            exchange = Exchange(
                "fn%d" % (index % 5),
                "POST",
                "/orders?n=%d" % index,
                [("Content-Type", "application/json"), ("User-Agent", "bench")],
                request_body=body,
                request_size=len(body),
                status=200,
                response_headers=[("Content-Type", "text/plain")],
                response_body=b"ok",
                response_size=2,
                duration=0.001,
            )
            while len(recorder.queue) >= recorder.queue_size:
                time.sleep(0.01)
            recorder.submit(exchange)
        recorder.flush(120)
        client = SessionClient(tmp)
        print("\n| list API, %d stored | calls | p50 ms | p95 ms |" % recorder.stats()["stored"])
        print("|---|---|---|---|")
        for label, call in (
            ("newest 50, all functions", lambda: client.invocations(None, 50)),
            ("newest 50 of one function", lambda: client.invocations("fn3", 50)),
            ("one record whole", lambda: client.invocation("5000")),
        ):
            times = []
            for _ in range(200):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1000)
            print("| %s | 200 | %.2f | %.2f |" % (label, statistics.median(times), percentile(times, 95)))
    finally:
        admin.stop()
        recorder.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = bench_parser(__doc__, backend=False)
    parser.set_defaults(runtimes="python3.11,nodejs20")
    parser.add_argument("--connections", default="1,10")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stored", type=int, default=10_000)
    parser.add_argument("--only", choices=["calls", "list"], default=None)
    args = parser.parse_args()
    if args.only != "list":
        calls(args)
    if args.only != "calls":
        list_api(args)


if __name__ == "__main__":
    main()

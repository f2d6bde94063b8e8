"""Throughput of each runtime's hello vs that language's bare HTTP hello, measured in the same run.

    python bench/bench_throughput.py [--runtimes python3.11,nodejs20] [--connections 1,10,50] [--seconds 5]
        [--via url,server] [--rounds 1] [--scenario hello]

Prints a Markdown table: req/s, p50/p99 latency, and the ratio function/baseline per concurrency.
`--via`: what wrk loads — `url`, the function's URL (on the process backend its front door,
emulator/proxy.py, a Python relay in front of the runtime server), and/or `server`, the runtime server's
own port (what the runtime's dispatch alone costs; the same as `url` where a backend has no front door).
`--rounds`: repeat each measurement, baseline and function alternating, one row per round. `--scenario`: the
conformance scenario the function runs (`prints`: a line of output per call), against the same bare hello.
"""

import itertools
import os
import shutil
import subprocess
import tempfile

from common import CATALOG, ROOT, Baseline, Engine, answer, bench_parser, wrk

BASE = ROOT / "bench" / "baselines"


def baseline_for(runtime, workdir):
    if runtime.id == "python":
        return Baseline([runtime.executable_path(), str(BASE / "python_http_server.py"), "{port}"])
    if runtime.id == "nodejs":
        return Baseline([runtime.executable_path(), str(BASE / "node_http.js"), "{port}"])
    if runtime.id == "ruby":
        return Baseline([runtime.executable_path(), str(BASE / "ruby_webrick.rb"), "{port}"])
    if runtime.id == "php":
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS=str(os.cpu_count() or 2))
        return Baseline([runtime.executable_path(), "-S", "127.0.0.1:{port}", str(BASE / "php_hello.php")], env=env)
    if runtime.id == "go":
        binary = os.path.join(workdir, "gohello")
        subprocess.run(
            [runtime.executable_path(), "build", "-o", binary, str(BASE / "go_http.go")],
            check=True,
            cwd=workdir,
            env=dict(os.environ, GO111MODULE="off"),
        )
        return Baseline([binary, "{port}"])
    raise SystemExit("no baseline for %s" % runtime.name)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument("--connections", default="1,10,50")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--isolation",
        choices=["warm", "per-call"],
        default="warm",
        help="per-call: every call in a freshly loaded worker (the legacy Kubeless model)",
    )
    parser.add_argument("--via", default="url", help="url, server or url,server (see above)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scenario", default="hello")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    vias = args.via.split(",")
    print("| runtime | backend/isolation | via | conns | baseline req/s | function req/s | ratio | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    workdir = tempfile.mkdtemp(prefix="kl-bench-")
    try:
        for name in args.runtimes.split(","):
            runtime, _ = CATALOG.resolve(name)
            engine = Engine(args.backend)
            baseline = baseline_for(runtime, workdir)
            try:
                _, instance = engine.function(runtime.name, args.scenario, isolation=args.isolation)
                urls = {"url": instance.url + "/", "server": instance.server_url + "/"}
                for via in vias:
                    wrk(urls[via], 10, 1)  # warm all up
                # /metrics read once, as `dev`'s table and `ls` do: a server that loads its metrics library on the
                # first read (Node's prom-client) then counts every call as it does in a session
                answer(instance.server_url + "/metrics")
                wrk(baseline.url, 10, 1)
                for conns, _, via in itertools.product(connections, range(args.rounds), vias):
                    # Alternate the two so drift on a noisy machine hits both alike.
                    base = wrk(baseline.url, conns, args.seconds)
                    fn = wrk(urls[via], conns, args.seconds)
                    print(
                        "| %s | %s | %s | %d | %.0f | %.0f | %.2f× | %.2f | %.2f |"
                        % (
                            runtime.name,
                            "%s/%s" % (args.backend, args.isolation),
                            via,
                            conns,
                            base["rps"],
                            fn["rps"],
                            fn["rps"] / base["rps"],
                            fn["p50_ms"],
                            fn["p99_ms"],
                        ),
                        flush=True,
                    )
            finally:
                baseline.close()
                engine.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

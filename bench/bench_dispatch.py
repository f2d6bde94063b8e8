"""Python hello at few connections: the runtime server vs a bare stdlib server, rounds alternated.

    python bench/bench_dispatch.py [--connections 1,10] [--seconds 2] [--rounds 5] [--before /work/main]

One connection is latency-bound: what a call costs between the socket and the user's function (the
runtime server's hand-off to the worker that runs it). Each round measures, in turn, the baseline (a bare
stdlib `http.server` hello) and each target; a target's ratio in a round is to that round's baseline, so
the machine's load hits both alike. Targets:

- **standalone**: this tree's runtime server started by hand (stdout to /dev/null), and with `--before
  TREE` the same server file of another checkout (**before**), for a before/after in the same run;
- **server**: the function's runtime server started by the engine as `dev` does (its logs read by the
  engine), on its private port;
- **url**: the function's URL: the front door in the engine's process (process backend), which records
  each call, relaying to that server;
- with `--before TREE`, **before server** and **before url**: the same through a second engine whose
  runtime server file is TREE's.

Every server here runs in its own session, as the engine starts runtime servers: with the kernel's
autogroup scheduling a session is a scheduling group, so on a loaded machine a server in the benchmark's
own session (with wrk) gets another share of the CPU than one in a session of its own.

Prints a Markdown table: median req/s and p50, the median ratio and the range over the rounds, and the
CPU the server's processes (the server and its workers; the engine's front door not included) spent per
call, user + system: that moves much less with the machine's load than req/s.
"""

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_throughput import BASE
from common import CATALOG, ROOT, SCENARIOS, Baseline, Engine, bench_parser, free_port, wait_http, wrk

from kubeless_local import runtimes

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """CPU seconds (user + system) of `pid` and its children so far."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


class OwnSessionBaseline(Baseline):
    """The bare stdlib hello of bench_throughput, in a session of its own."""

    def __init__(self, interpreter):
        self.port = free_port()
        argv = [interpreter, str(BASE / "python_http_server.py"), str(self.port)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = "http://127.0.0.1:%d/" % self.port
        wait_http(self.url)


class Standalone:
    """A runtime server file run by hand on the `hello` scenario (the engine's environment, no engine)."""

    def __init__(self, interpreter, server_file, code_dir, pythonpath, extra):
        self.port = free_port()
        env = dict(
            os.environ,
            **extra,
            PYTHONPATH=pythonpath,
            MOD_NAME="handler",
            FUNC_HANDLER="handler",
            FUNC_TIMEOUT="180",
            FUNC_PORT=str(self.port),
            KUBELESS_INSTALL_VOLUME=str(code_dir),
            KUBELESS_LOCAL_BIND="127.0.0.1",
        )
        self.proc = subprocess.Popen(
            [interpreter, "-S", "-u", str(server_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            cwd=code_dir,
            start_new_session=True,
        )
        self.url = "http://127.0.0.1:%d/" % self.port
        wait_http(self.url)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main():
    parser = bench_parser(__doc__)
    parser.set_defaults(runtimes="python3.11")
    parser.add_argument("--connections", default="1,10")
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another checkout whose runtimes/python/kubeless.py to measure too")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every server (repeatable)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    runtime, _ = CATALOG.resolve(args.runtimes.split(",")[0])
    code = Path(tempfile.mkdtemp(prefix="kl-bench-code-"))
    (code / "handler.py").write_text((SCENARIOS / "hello" / "handler.py").read_text())
    engine = Engine(args.backend)
    engines = [engine]
    baseline = OwnSessionBaseline(runtime.executable_path())
    servers = []
    try:
        _, instance = engine.function(runtime.name, "hello", env=sorted(extra.items()))
        with open("/proc/%d/environ" % instance.pid, "rb") as f:  # the server's libraries, as the engine runs it
            pythonpath = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)[b"PYTHONPATH"].decode()
        trees = {"standalone": ROOT}
        if args.before:
            trees["before (standalone)"] = Path(args.before)
        targets, pids = {}, {"baseline": baseline.proc.pid, "server": instance.pid, "url": instance.pid}
        for name, tree in trees.items():
            server_file = tree / "runtimes/python/kubeless.py"
            servers.append(Standalone(runtime.executable_path(), server_file, code, pythonpath, extra))
            targets[name] = servers[-1].url
            pids[name] = servers[-1].proc.pid
        targets["server"] = instance.server_url + "/"
        targets["url"] = instance.url + "/"
        if args.before:
            engines.append(Engine(args.backend))
            this_tree, runtimes.RUNTIMES_DIR = runtimes.RUNTIMES_DIR, Path(args.before) / "runtimes"
            try:  # the server file is found through the catalog when the function starts
                _, before = engines[-1].function(runtime.name, "hello", env=sorted(extra.items()))
            finally:
                runtimes.RUNTIMES_DIR = this_tree
            targets["before server"] = before.server_url + "/"
            targets["before url"] = before.url + "/"
            pids["before server"] = pids["before url"] = before.pid

        def measure(target, url, conns):
            """wrk's figures and the server's CPU µs per call."""
            cpu = tree_cpu(pids[target])
            result = wrk(url, conns, args.seconds)
            result["cpu_us"] = (tree_cpu(pids[target]) - cpu) * 1e6 / (result["rps"] * args.seconds)
            return result

        for url in (baseline.url, *targets.values()):
            wrk(url, 10, 1)  # warm up
        print("| conns | target | baseline req/s | req/s | p50 ms | ratio (median) | ratio range | CPU µs/call |")
        print("|---|---|---|---|---|---|---|---|")
        for conns in [int(c) for c in args.connections.split(",")]:
            rows = {target: [] for target in targets}
            bases = []
            for turn in range(args.rounds):
                # the order turns each round, so no target always follows the baseline
                order = list(targets.items())
                order = order[turn % len(order) :] + order[: turn % len(order)]
                base = measure("baseline", baseline.url, conns)
                bases.append(base)
                for target, url in order:
                    rows[target].append((measure(target, url, conns), base["rps"]))
            print(
                "| %d | baseline | | %.0f | %.3f | | | %.0f |"
                % (
                    conns,
                    statistics.median(b["rps"] for b in bases),
                    statistics.median(b["p50_ms"] for b in bases),
                    statistics.median(b["cpu_us"] for b in bases),
                )
            )
            for target, results in rows.items():
                ratios = [r["rps"] / b for r, b in results]
                print(
                    "| %d | %s | %.0f | %.0f | %.3f | %.2f× | %.2f–%.2f | %.0f |"
                    % (
                        conns,
                        target,
                        statistics.median(b["rps"] for b in bases),
                        statistics.median(r["rps"] for r, _ in results),
                        statistics.median(r["p50_ms"] for r, _ in results),
                        statistics.median(ratios),
                        min(ratios),
                        max(ratios),
                        statistics.median(r["cpu_us"] for r, _ in results),
                    ),
                    flush=True,
                )
    finally:
        for server in servers:
            server.close()
        baseline.close()
        for each in engines:
            each.close()


if __name__ == "__main__":
    sys.exit(main())

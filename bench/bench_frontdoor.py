"""The docker backend's network modes, measured in the same run: hello throughput through the relay
mode's front door (each function in its own namespace, dev relaying 127.0.0.1:<port>) vs the opt-in host
mode (the server on the host's network, no relay). Rounds alternate the modes so load drifts hit both.

    python bench/bench_frontdoor.py [--runtimes python3.11,nodejs20] [--rounds 3] [--seconds 5] [--connections 16]
"""

import argparse
import dataclasses
import statistics
import sys
import time

from common import CATALOG, Engine, wrk

from kubeless_local import config
from kubeless_local.emulator import backends
from kubeless_local.emulator.base import State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.supervisor import Supervisor


def engine_in(mode):
    """An Engine whose docker backend runs in `mode` (docker.network)."""
    engine = Engine("docker")
    engine.supervisor.stop_all()
    settings = dataclasses.replace(config.Settings(engine.tmp / config.FILE), docker=config.Docker(network=mode))
    engine.hub = LogHub()
    engine.supervisor = Supervisor(
        engine.tmp / "state", backends.factory("docker", settings), engine.hub, CATALOG, ephemeral_ports=True
    )
    return engine


def throughput(mode, runtime, seconds, connections):
    engine = engine_in(mode)
    try:
        assert engine.supervisor.backend.network == mode
        spec = engine.marked_spec(runtime, "tput", "hello")
        instance = engine.supervisor.start(spec)
        assert instance.state == State.READY, instance.error
        wrk(instance.url + "/", connections, 1)  # warm-up
        cpu = time.process_time()  # this process: in relay mode, the front door's loop (idle otherwise)
        result = wrk(instance.url + "/", connections, seconds)
        result["cpu_us"] = (time.process_time() - cpu) * 1e6 / (result["rps"] * seconds)
        return result
    finally:
        engine.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="python3.11,nodejs20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(
        "| runtime | host req/s (median) | relay req/s (median) | relay/host | host p99 ms | relay p99 ms "
        "| front door CPU µs/request |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime = CATALOG.resolve(name, require_local=False)[0]
        runs = {"host": [], "relay": []}
        for _ in range(args.rounds):
            for mode in ("host", "relay"):
                runs[mode].append(throughput(mode, runtime, args.seconds, args.connections))
        for mode, results in runs.items():
            print("  %s %s rounds: %s" % (name, mode, " ".join("%.0f" % r["rps"] for r in results)), file=sys.stderr)
        rps = {mode: statistics.median(r["rps"] for r in results) for mode, results in runs.items()}
        p99 = {mode: statistics.median(r["p99_ms"] for r in results) for mode, results in runs.items()}
        door = statistics.median(r["cpu_us"] for r in runs["relay"]) - statistics.median(
            r["cpu_us"] for r in runs["host"]
        )
        print(
            "| %s | %.0f | %.0f | %.2f | %.1f | %.1f | %.0f |"
            % (name, rps["host"], rps["relay"], rps["relay"] / rps["host"], p99["host"], p99["relay"], door),
            flush=True,
        )


if __name__ == "__main__":
    main()

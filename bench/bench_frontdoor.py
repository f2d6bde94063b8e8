"""The docker backend's network modes, measured in the same run: hello throughput through the relay
mode's front door (each function in its own namespace, dev relaying 127.0.0.1:<port>) on asyncio's loop
(what dev uses) and on uvloop's (where installed: an experiment), vs the opt-in host mode (the server on the
host's network, no relay). Rounds alternate the modes so load drifts hit all. The front door's CPU per
request is this process's CPU time during the run (relay) less the same in host mode (idle threads).
`--recorded` adds the relay mode with the invocation recorder on (as in `dev`: the door reads each exchange's
framing and hands it to the recorder, whose writer stores it) and prints what recording costs against the
plain relay of the same run.

    python bench/bench_frontdoor.py [--runtimes python3.11,nodejs20] [--rounds 3] [--seconds 5] [--connections 16]
                                    [--uvloop]   (pip install uvloop first; it is no dependency)
                                    [--recorded] [--no-host]
"""

import argparse
import statistics
import sys
import time

from common import CATALOG, Engine, wrk

from kubeless_local.emulator import frontdoor
from kubeless_local.emulator.base import State

DEFAULT_LOOP = frontdoor.new_loop


def uvloop_loop():
    import uvloop  # not a dependency: pip install uvloop to run this comparison

    return uvloop.new_event_loop()


MODES = {"host": "host", "relay": "relay", "relay-uvloop": "relay", "relay-recorded": "relay"}  # -> docker.network


def engine_in(mode):
    """An Engine whose docker backend runs in `mode` (docker.network); relay-uvloop: the doors on uvloop's loop."""
    frontdoor.new_loop = uvloop_loop if mode == "relay-uvloop" else DEFAULT_LOOP
    return Engine("docker", MODES[mode], recorded=mode == "relay-recorded")


def throughput(mode, runtime, seconds, connections):
    engine = engine_in(mode)
    try:
        assert engine.supervisor.backend.network == MODES[mode]
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
    parser.add_argument("--uvloop", action="store_true", help="also the doors on uvloop's loop")
    parser.add_argument("--recorded", action="store_true", help="also the relay with the recorder on")
    parser.add_argument("--no-host", action="store_true", help="leave out host mode (with --recorded)")
    args = parser.parse_args()
    chosen = [
        mode
        for mode in MODES
        if (mode != "relay-uvloop" or args.uvloop)
        and (mode != "relay-recorded" or args.recorded)
        and (mode != "host" or not args.no_host)
    ]
    print(
        "| runtime | host req/s | relay req/s | relay/host | relay on uvloop req/s | relay on uvloop/host "
        "| p99 ms host / relay / uvloop | front door CPU µs/request relay / uvloop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime = CATALOG.resolve(name, require_local=False)[0]
        runs = {mode: [] for mode in chosen}
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(throughput(mode, runtime, args.seconds, args.connections))
        for mode, results in runs.items():
            print("  %s %s rounds: %s" % (name, mode, " ".join("%.0f" % r["rps"] for r in results)), file=sys.stderr)

        def median(mode, key, runs=runs):
            return statistics.median(r[key] for r in runs[mode]) if mode in runs else float("nan")

        if args.recorded:
            recorded(name, median)
        if "host" not in runs:
            continue
        host = median("host", "rps")
        print(
            "| %s | %.0f | %.0f | %.2f | %.0f | %.2f | %.1f / %.1f / %.1f | %.0f / %.0f |"
            % (
                name,
                host,
                median("relay", "rps"),
                median("relay", "rps") / host,
                median("relay-uvloop", "rps"),
                median("relay-uvloop", "rps") / host,
                median("host", "p99_ms"),
                median("relay", "p99_ms"),
                median("relay-uvloop", "p99_ms"),
                median("relay", "cpu_us") - median("host", "cpu_us"),
                median("relay-uvloop", "cpu_us") - median("host", "cpu_us"),
            ),
            flush=True,
        )


def recorded(name, median):
    """The recorder's cost on the docker backend's door: relay with it vs without, same run."""
    print(
        "| runtime | relay req/s | relay+recorder req/s | ratio | p50 ms relay / +recorder | p50 added ms "
        "| dev CPU µs/request relay / +recorder |"
    )
    print("|---|---|---|---|---|---|---|")
    plain, kept = median("relay", "rps"), median("relay-recorded", "rps")
    print(
        "| %s | %.0f | %.0f | %.3f | %.3f / %.3f | %.3f | %.0f / %.0f |"
        % (
            name,
            plain,
            kept,
            kept / plain,
            median("relay", "p50_ms"),
            median("relay-recorded", "p50_ms"),
            median("relay-recorded", "p50_ms") - median("relay", "p50_ms"),
            median("relay", "cpu_us"),
            median("relay-recorded", "cpu_us"),
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

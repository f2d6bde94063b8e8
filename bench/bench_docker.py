"""Docker backend vs process backend, measured in the same run (images present; run
.ci/docker-setup.sh first):

  cold start   Supervisor.start (prepare + container create/start + ready) → first 200, N starts
  reload       save new code → first answer with it (prepare + SIGHUP / recompile), N edits
  throughput   wrk against the same hello function through each backend

    python bench/bench_docker.py [--runtimes python3.11,nodejs20,ruby3.1,php8.2,go1.26] [--starts 7] [--edits 20]
"""

import argparse
import time

from common import CATALOG, Engine, answer, summary, wrk

from kubeless_local.emulator.base import State


def cold_starts(backend, runtime, starts):
    engine = Engine(backend)
    times = []
    try:
        for i in range(starts + 1):  # the first start fills caches (deps, runtime lib, build): not counted
            spec = engine.marked_spec(runtime, "cold%d" % i, "cold")
            began = time.monotonic()
            instance = engine.supervisor.start(spec)
            assert instance.state == State.READY, instance.error
            while answer(instance.url + "/")[0] != 200:
                time.sleep(0.005)
            if i:
                times.append((time.monotonic() - began) * 1000)
            engine.supervisor.stop(spec.name)
    finally:
        engine.close()
    return times


def reloads(backend, runtime, edits):
    engine = Engine(backend)
    times = []
    try:
        spec = engine.marked_spec(runtime, "reload", "v0")
        instance = engine.supervisor.start(spec)
        assert instance.state == State.READY, instance.error
        for i in range(1, edits + 1):
            marker = "v%d" % i
            began = time.monotonic()
            engine.remark(spec, runtime, marker)
            engine.supervisor.reload(spec)
            while answer(instance.url + "/")[1] != marker:
                assert time.monotonic() - began < 60, "reload %d never answered" % i
                time.sleep(0.005)
            times.append((time.monotonic() - began) * 1000)
    finally:
        engine.close()
    return times


def throughput(backend, runtime, seconds, connections):
    engine = Engine(backend)
    try:
        spec = engine.marked_spec(runtime, "tput", "hello")
        instance = engine.supervisor.start(spec)
        assert instance.state == State.READY, instance.error
        return wrk(instance.url + "/", connections, seconds)["rps"]
    finally:
        engine.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runtimes", default="python3.11,nodejs20,ruby3.1,php8.2," + ",".join(rt.name for rt in CATALOG.versions("go"))
    )
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    runtimes = [CATALOG.resolve(name, require_local=False)[0] for name in args.runtimes.split(",") if name]
    print(
        "| runtime | backend | cold start → first 200 median ms (p95) | reload median ms | reload p95 ms "
        "| hello req/s | docker/process req/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for rt in runtimes:
        rps = {}
        for backend in ("process", "docker"):
            cold = summary(cold_starts(backend, rt, args.starts))
            reload = summary(reloads(backend, rt, args.edits))
            rps[backend] = throughput(backend, rt, args.seconds, args.connections)
            ratio = "%.2f" % (rps["docker"] / rps["process"]) if backend == "docker" else ""
            print(
                "| %s | %s | %.0f (%.0f) | %.0f | %.0f | %.0f | %s |"
                % (rt.name, backend, cold["median"], cold["p95"], reload["median"], reload["p95"], rps[backend], ratio),
                flush=True,
            )


if __name__ == "__main__":
    main()

"""A hundred Python functions under one `dev`: time until all are Ready, processes, memory (PSS) each.

    python bench/bench_many.py [--functions 100] [--runs 3] [--before /work/main]

Writes a project of N hello functions (no dependencies), starts `python -m kubeless_local dev
--no-dashboard` in it and follows the session's event bus (`/api/events`, each function's state as it
changes) until every function is Ready. (Not `/api/functions`, what `ls` shows: it scrapes every serving
function's /metrics, and read every 50 ms that was a hundred scrapes per read, a load of its own on the
starts it measured.) Then, after the pools settled (--settle seconds), counts the processes of every
function's server (the server and its workers) and sums their PSS (/proc/<pid>/smaps_rollup: shared pages
counted once across the processes that share them, so forked workers cost what they do not share) with
that of what they share (a runtime's template process; not the guardian), and
the CPU seconds spent so far by `dev` and by everything it started (servers, workers, template, guardian:
the descendants of `dev`, read from /proc before it stops). Last, with every function serving: a `call`
of one of them (the whole CLI process, median of CALLS runs) and `ls`'s rows (the admin API's
`/api/functions`, each function's /metrics scraped for its counts), as a user of such a session waits for
them. With `--before TREE` the same with TREE's
package (its CLI, engine and runtime servers), runs alternated. Prints a Markdown table per tree: median
and range over the runs.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeless_local.client import SessionClient  # noqa: E402

MANIFEST = """apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: {name}
  annotations:
    local.kubeless.io/source: handler.py
spec:
  runtime: python3.11
  handler: handler.hello
  timeout: "180"
"""
HANDLER = 'def hello(event, context):\n    return "hello world"\n'


def write_project(folder, count):
    for index in range(count):
        name = "fn%03d" % index
        (folder / name).mkdir(parents=True)
        (folder / name / "function.yaml").write_text(MANIFEST.format(name=name))
        (folder / name / "handler.py").write_text(HANDLER)


CALLS = 7


def wall_ms(action):
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def call_ms(folder, env):
    """Median wall ms of `kubeless-local call fn000`, the whole process."""

    def call():
        argv = [sys.executable, "-m", "kubeless_local", "call", "fn000"]
        subprocess.run(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL, check=True)

    return statistics.median(wall_ms(call) for _ in range(CALLS))


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError):
                continue
    return found


def cpu_seconds(pid):
    """User + system CPU of `pid` itself (threads included) and of its reaped children."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def wait_all_ready(client, count, deadline, dev):
    """time.monotonic() when all `count` functions were Ready, following the bus."""
    states, after = {}, None
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise RuntimeError("dev exited with %s" % dev.returncode)
        if after is None:  # first contact: the states so far, then what changes
            after = client.events()["last"]
            states = {row["name"]: row["state"] for row in client.functions()}
        else:
            batch = client.events(after=after, wait=1)
            if batch["reset"]:
                after = None
                continue
            for event in batch["events"]:
                if event["kind"] == "function-state":
                    states[event["data"]["function"]] = event["data"]["state"]
            after = batch["last"]
        if len(states) == count and all(state == "Ready" for state in states.values()):
            return time.monotonic()
    raise RuntimeError("not all Ready: %s" % sorted(set(states.values())))


def is_guardian(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"kubeless_local.emulator.guardian" in f.read()
    except OSError:
        return True


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def one_run(tree, count, settle):
    folder = Path(tempfile.mkdtemp(prefix="kl-bench-many-"))
    write_project(folder, count)
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.monotonic()
    dev = subprocess.Popen(
        [sys.executable, "-m", "kubeless_local", "dev", "--no-dashboard"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = None
        while client is None and time.monotonic() - started < 60:
            if dev.poll() is not None:
                raise RuntimeError("dev exited with %s" % dev.returncode)
            try:
                client = SessionClient(folder / ".kubeless-local")
                client.events()
            except Exception:  # noqa: BLE001 - not answering yet
                client = None
                time.sleep(0.05)
        ready_at = wait_all_ready(client, count, started + 300, dev) - started
        dev_cpu = cpu_seconds(dev.pid)
        started_cpu = sum(cpu_seconds(pid) for pid in descendants(dev.pid))
        time.sleep(settle)
        rows = client.functions()
        processes = pss = 0
        counted = set()
        for row in rows:
            pids = [row["pid"], *children(row["pid"])]
            processes += len(pids)
            pss += sum(pss_kb(pid) for pid in pids)
            counted.update(pids)
        # what the functions share (a runtime's template process), not the guardian: counted in their share
        shared = [pid for pid in descendants(dev.pid) if pid not in counted and not is_guardian(pid)]
        pss += sum(pss_kb(pid) for pid in shared)
        cli_env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
        return {
            "call_ms": call_ms(folder, cli_env),
            "ls_ms": statistics.median(wall_ms(client.functions) for _ in range(CALLS)),
            "ready_s": ready_at,
            "processes": processes,
            "pss_mb_each": pss / 1024 / count,
            "dev_cpu_s": dev_cpu,
            "started_cpu_s": started_cpu,
        }
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between all Ready and the count")
    parser.add_argument("--before", help="another checkout to measure in the same run")
    args = parser.parse_args()
    trees = {"this": ROOT}
    if args.before:
        trees["before"] = Path(args.before)
    results = {name: [] for name in trees}
    for run in range(args.runs):
        order = list(trees.items()) if run % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            results[name].append(one_run(tree, args.functions, args.settle))
            print("run %d %s: %s" % (run + 1, name, results[name][-1]), file=sys.stderr, flush=True)
    print(
        "| tree | functions | runs | all Ready s (median, range) | processes | PSS MB each (median, range) "
        "| CPU s at all Ready: `dev` / what it started (median) | `call` ms | `ls` rows ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        ready = [r["ready_s"] for r in rows]
        pss = [r["pss_mb_each"] for r in rows]
        print(
            "| %s | %d | %d | %.1f (%.1f–%.1f) | %d | %.1f (%.1f–%.1f) | %.1f / %.1f | %.0f | %.0f |"
            % (
                name,
                args.functions,
                len(rows),
                statistics.median(ready),
                min(ready),
                max(ready),
                statistics.median(r["processes"] for r in rows),
                statistics.median(pss),
                min(pss),
                max(pss),
                statistics.median(r["dev_cpu_s"] for r in rows),
                statistics.median(r["started_cpu_s"] for r in rows),
                statistics.median(r["call_ms"] for r in rows),
                statistics.median(r["ls_ms"] for r in rows),
            )
        )


if __name__ == "__main__":
    main()

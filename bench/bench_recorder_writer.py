"""Where the recorder's writer should run (issue N): the front door without a recorder vs the door recording
with the writer done in several ways, rounds alternating, in one run.

    python bench/bench_recorder_writer.py [--runtimes python3.11] [--connections 10] [--seconds 3] [--rounds 3]
                                          [--variants door,thread,process,...]

The question it answers: does `dev`'s GIL make the writer thread cost more than its own CPU (the door's
threads stalled behind a writer that holds the GIL while descheduled), so that the writer's work in a process
of its own would buy throughput? Variants (each a function on its own engine; the recorder as `dev` runs it,
with an event bus and the default retention):

- `door`: the front door with recording switched off (the issue's baseline);
- `thread`: the writer thread as it is (recorder.py);
- `process`: the storing half (rows, SQLite insert, retention, commit) in a child process fed pickled batches
  on a pipe; `dev`'s writer thread still matches each call's log lines (they are in `dev`'s log hub);
- `process-nolines`: the same without log lines at all: `dev`'s writer only serialises (the most any
  writer process could take off `dev`);
- `nowriter`: the door's side of recording alone (`started`, `submit`, the bus events) with no writer at all,
  nothing stored: what recording costs the door's threads when nothing else runs beside them;
- `direct`: no writer thread in `dev`: the door's thread pickles each exchange onto the child's pipe itself
  (no log lines: the least a writer process could leave in `dev`);
- `sliced`: the writer thread gives the GIL away (`time.sleep(0)`) every SLICE records and before each look;
- `switch`, `door-switch`: `thread` and `door` with the interpreter's switch interval at 0.5 ms (5 ms by
  default: how long a thread waiting for the GIL lets the holder run before asking for it).

Prints per round and then a Markdown table: req/s, the ratio to `door`, p50, and per call: the CPU of `dev`'s
door threads (of it system time) and their context switches, the CPU of its writer thread, of the whole `dev`
process and of the writer process (Linux /proc); per round also the garbage collections per 1000 calls.
The `process` and `direct` variants are measuring hacks, not the product: no flush across the pipe, no restart.
"""

import gc
import os
import pickle
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import CATALOG, FUNCTION_NAMES, SCENARIOS, bench_parser, wrk

from kubeless_local import kubeless_objects as objects
from kubeless_local.emulator import backends
from kubeless_local.emulator import recorder as rec
from kubeless_local.emulator.bus import EventBus
from kubeless_local.emulator.logs import LogHub, LogLine
from kubeless_local.emulator.supervisor import Supervisor

SLICE = 20  # records the `sliced` writer stores between two gives of the GIL
SWITCH = 0.0005  # seconds: the `switch` variants' switch interval
FIELDS = [name for name in rec.Exchange.__dataclass_fields__ if name != "logs"]


def task_cpu(path):
    """(user, system) CPU seconds of a /proc stat file; (0, 0) when it is gone."""
    try:
        with open(path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def task_switches(path):
    """Context switches (voluntary + involuntary) of a /proc status file; 0 when it is gone."""
    try:
        with open(path) as status:
            return sum(int(line.split()[1]) for line in status if "ctxt_switches:" in line)
    except OSError:
        return 0


def threads_cpu():
    """CPU seconds of this process's door threads and writer threads, user and system apart, and the door
    threads' context switches."""
    found = {"door": 0.0, "door_sys": 0.0, "writer": 0.0, "door_switches": 0}
    for thread in threading.enumerate():
        kind = "door" if thread.name == "front-door" else "writer" if thread.name == "recorder" else None
        if kind:
            user, system = task_cpu("/proc/self/task/%d/stat" % thread.native_id)
            found[kind] += user + system
        if kind == "door":
            found["door_sys"] += system
            found["door_switches"] += task_switches("/proc/self/task/%d/status" % thread.native_id)
    return found


class ProcessRecorder(rec.Recorder):
    """`process`: `_store` sends the batch (plain tuples, pickled) to a child that builds the rows and stores
    them; `written` counts what was sent."""

    def __init__(self, state_dir, **kwargs):
        self.child = subprocess.Popen([sys.executable, __file__, "--store", str(state_dir)], stdin=subprocess.PIPE)
        super().__init__(state_dir, **kwargs)

    def _store(self, batch):
        plain = [
            (tuple(getattr(exchange, name) for name in FIELDS), [(line.text, line.stream) for line in exchange.logs])
            for exchange in batch
        ]
        data = pickle.dumps(plain, protocol=5)
        self.child.stdin.write(struct.pack("!I", len(data)) + data)
        self.child.stdin.flush()

    def close(self, timeout=5.0):
        super().close(timeout)
        self.child.stdin.close()
        self.child.wait(timeout)


class DirectRecorder(ProcessRecorder):
    """`direct`: no writer thread in `dev` at all: `submit` pickles the exchange and writes it to the child's
    pipe from the door's thread (one write of less than PIPE_BUF bytes: atomic, no lock); no log lines."""

    def _write_forever(self):
        return

    def submit(self, exchange):
        exchange.id = exchange.id or rec.new_id()
        data = pickle.dumps([(tuple(getattr(exchange, name) for name in FIELDS), [])], protocol=5)
        os.write(self.child.stdin.fileno(), struct.pack("!I", len(data)) + data)
        if self.bus is not None:
            self.bus.publish("invocation-end", rec.summary_of(exchange), rec.summary_weight(exchange))
        return exchange.id


class SlicedRecorder(rec.Recorder):
    """`sliced`: the writer gives the GIL away between slices of SLICE records and before each look."""

    def _store(self, batch):
        for start in range(0, len(batch), SLICE):
            super()._store(batch[start : start + SLICE])
            time.sleep(0)

    def _settled(self):
        time.sleep(0)
        return super()._settled()


class Unwritten(rec.Recorder):
    """`nowriter`: the request side only (`started`, `submit`, the bus events); no writer runs, nothing is
    stored (a round must submit fewer than QUEUE_SIZE calls, or the rest are dropped and counted)."""

    def _write_forever(self):
        return


def store_forever(state_dir):
    """The `process` variants' child: read what the pipe holds until it closes; store what was read at most
    every WRITER_PAUSE, in one transaction, as the writer thread does (messages sent one a call, as `direct`
    sends them, are stored together)."""
    store = rec.Recorder(Path(state_dir))  # its own writer thread stays idle: batches are stored here
    pending, batch, stored = bytearray(), [], time.monotonic()
    while data := os.read(sys.stdin.fileno(), 1 << 20):
        pending += data
        while len(pending) >= 4 and len(pending) >= 4 + (size := struct.unpack("!I", pending[:4])[0]):
            for values, lines in pickle.loads(pending[4 : 4 + size]):
                exchange = rec.Exchange(**dict(zip(FIELDS, values)))
                exchange.logs = [LogLine(exchange.function, text, stream) for text, stream in lines]
                store._complete(exchange)
                batch.append(exchange)
            del pending[: 4 + size]
        if batch and time.monotonic() - stored >= rec.WRITER_PAUSE:
            store._store(batch)
            batch, stored = [], time.monotonic()
    if batch:
        store._store(batch)
    store.close()


ENGINES = {  # variant → (recorder class, log lines matched, the recorder switched on)
    "door": (rec.Recorder, True, False),
    "thread": (rec.Recorder, True, True),
    "process": (ProcessRecorder, True, True),
    "process-nolines": (ProcessRecorder, False, True),
    "sliced": (SlicedRecorder, True, True),
    "nowriter": (Unwritten, True, True),
    "direct": (DirectRecorder, False, True),
    "switch": (rec.Recorder, True, True),
    "door-switch": (rec.Recorder, True, False),
}


class Engine:
    """One function on a supervisor of its own, with a recorder of class `kind`."""

    def __init__(self, runtime, kind, lines):
        self.tmp = tmp = Path(tempfile.mkdtemp(prefix="kl-bench-"))
        (tmp / "state").mkdir()
        hub = LogHub()
        self.recorder = kind(tmp / "state", logs=hub if lines else None, bus=EventBus())
        self.supervisor = Supervisor(
            tmp / "state", backends.factory("process"), hub, CATALOG, ephemeral_ports=True, recorder=self.recorder
        )
        source = SCENARIOS / "hello" / ("handler" + runtime.suffix)
        handler = "handler." + FUNCTION_NAMES.get(runtime.id, "handler")
        self.url = self.supervisor.start(objects.function_from_files("hello", source, runtime.name, handler)).url
        self.door = self.supervisor.doors["hello"]

    def measure(self, connections, seconds, recorded, switch):
        child = getattr(self.recorder, "child", None)
        child_stat = "/proc/%d/stat" % child.pid if child else None
        self.door.recorder = self.recorder if recorded else None
        sys.setswitchinterval(switch)
        collected = [stats["collections"] for stats in gc.get_stats()]
        before, process, kid = threads_cpu(), time.process_time(), sum(task_cpu(child_stat)) if child else 0
        try:
            result = wrk(self.url + "/", connections, seconds)
        finally:
            sys.setswitchinterval(0.005)
            self.door.recorder = self.recorder
        calls = max(result["rps"] * seconds, 1)
        after = threads_cpu()
        result["door_us"] = (after["door"] - before["door"]) * 1e6 / calls
        result["writer_us"] = (after["writer"] - before["writer"]) * 1e6 / calls
        result["gc_per_1000"] = [
            (stats["collections"] - was) * 1000 / calls for stats, was in zip(gc.get_stats(), collected)
        ]
        result["door_sys_us"] = (after["door_sys"] - before["door_sys"]) * 1e6 / calls
        result["door_switches"] = (after["door_switches"] - before["door_switches"]) / calls
        result["dev_us"] = (time.process_time() - process) * 1e6 / calls
        result["child_us"] = ((sum(task_cpu(child_stat)) if child else 0) - kid) * 1e6 / calls
        return result

    def close(self):
        self.supervisor.stop_all()
        self.recorder.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(runtime, connections, args):
    variants = args.variants.split(",")
    engines = {}
    results = {variant: [] for variant in variants}
    try:
        for variant in variants:
            kind, lines, _ = ENGINES[variant]
            key = (kind, lines)
            if key not in engines:
                engines[key] = Engine(runtime, kind, lines)
                engines[key].measure(connections, 1, True, 0.005)  # warm
        for round_ in range(args.rounds):
            for variant in variants:
                kind, lines, recorded = ENGINES[variant]
                switch = SWITCH if variant.endswith("switch") else 0.005
                result = engines[(kind, lines)].measure(connections, args.seconds, recorded, switch)
                results[variant].append(result)
                print(
                    "round %d %-16s %6.0f req/s  p50 %.3f ms  CPU µs/call: door threads %.0f (system %.0f; %.1f "
                    "switches), writer %.0f, dev %.0f, writer process %.0f; collections per 1000 calls %s"
                    % (
                        round_ + 1,
                        variant,
                        *(
                            result[k]
                            for k in (
                                "rps",
                                "p50_ms",
                                "door_us",
                                "door_sys_us",
                                "door_switches",
                                "writer_us",
                                "dev_us",
                                "child_us",
                            )
                        ),
                        " / ".join("%.1f" % n for n in result["gc_per_1000"]),
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for engine in engines.values():
            engine.close()
    base = results.get("door") or next(iter(results.values()))
    base_rps, base_p50 = (statistics.median(r[k] for r in base) for k in ("rps", "p50_ms"))
    for variant, rounds in results.items():
        median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k != "gc_per_1000"}
        print(
            "| %s | %d | %s | %s | %.2f | %.3f | %+.3f | %.0f (%.0f) | %.1f | %.0f | %.0f | %.0f |"
            % (
                runtime.name,
                connections,
                variant,
                " ".join("%.0f" % r["rps"] for r in rounds),
                median["rps"] / base_rps,
                median["p50_ms"],
                median["p50_ms"] - base_p50,
                median["door_us"],
                median["door_sys_us"],
                median["door_switches"],
                median["writer_us"],
                median["dev_us"],
                median["child_us"],
            ),
            flush=True,
        )


def main():
    parser = bench_parser(__doc__, backend=False)
    parser.set_defaults(runtimes="python3.11")
    parser.add_argument("--connections", default="10")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="door,thread,process,process-nolines,sliced,switch,door-switch")
    args = parser.parse_args()
    unknown = set(args.variants.split(",")) - set(ENGINES)
    if unknown:
        parser.error("unknown variants: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(ENGINES)))
    print(
        "| runtime | conns | variant | req/s (rounds) | ratio to door | p50 ms | p50 added ms | "
        "CPU µs/call: door threads (system) | door threads' switches/call | writer thread | dev | writer process |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.runtimes.split(","):
        runtime, _ = CATALOG.resolve(name)
        for connections in [int(c) for c in args.connections.split(",")]:
            run(runtime, connections, args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--store"]:
        store_forever(sys.argv[2])
    else:
        main()

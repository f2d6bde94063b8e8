"""Reloads in the docker backend while calls keep coming (issue L, item 5): file write → first answer of the
new code, and the calls that failed meanwhile, through the real `dev` path (watchdog → prepare → reload).

Images, in the same run: `ours` (our Python image: a reload in place, SIGHUP), `upstream` (an image that
cannot reload in place: tests/fixtures/upstream-python, a new container per save; blue/green behind the
front door in relay or bridge mode), and `upstream-host` (the same image on the opt-in host network, where
the old container must go before the new one can bind the port: what every save cost before blue/green).
A client thread calls the function without pause on a new connection per call, and counts what fails. Each
row ends with the machine's load average (1 min) before and after it: other work shifts these numbers.

    python bench/bench_bluegreen.py [--edits 20] [--images ours,upstream,upstream-host]
"""

import argparse
import os
import sys
import threading
import urllib.request

from common import CATALOG, ROOT, Engine, summary

from kubeless_local import spec as specs
from kubeless_local.emulator import images
from kubeless_local.emulator.project import Project

UPSTREAM = "kubeless-local-test/upstream-python:3.11"
IMAGES = {"ours": ("", "auto"), "upstream": (UPSTREAM, "auto"), "upstream-host": (UPSTREAM, "host")}


class Caller:
    """Calls `url` without pause on a new connection per call: (calls, failed, last failure)."""

    def __init__(self, url):
        self.url, self.calls, self.failed, self.last = url, 0, 0, ""
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    response.read()
            except OSError as exc:
                self.failed, self.last = self.failed + 1, str(exc)
            self.calls += 1

    def stop(self):
        self.stopping.set()
        self.thread.join(60)


def reloads(kind, edits):
    image, network = IMAGES[kind]
    if image:
        os.environ["PYTHON3_11_RUNTIME"] = image
    else:
        os.environ.pop("PYTHON3_11_RUNTIME", None)
    runtime, _ = CATALOG.resolve("python3.11", require_local=False)
    engine = Engine("docker", network)
    fn = engine.marked_spec(runtime, "hello", "v0")
    project = Project(fn.source.parent, engine.supervisor, specs.Manifests(functions=[fn]))
    caller = None
    try:
        project.start()
        project.watch()
        url = engine.supervisor.instances["hello"].url + "/"
        caller = Caller(url)
        try:
            times = engine.edit_times(fn, runtime, url, edits, timeout=60)
        except RuntimeError:  # say what the function was doing: its state and its last lines
            instance = engine.supervisor.instances["hello"]
            print("%s: %s %s" % (kind, instance.state.value, instance.error or ""), file=sys.stderr)
            for line in engine.hub.tail("hello", 40):
                print("  %s" % (line,), file=sys.stderr)
            raise
        caller.stop()
        return engine.supervisor.backend.network, summary(times), caller
    finally:
        if caller is not None:
            caller.stop()
        project.stop()
        engine.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--images", default=",".join(IMAGES))
    args = parser.parse_args()
    client = images.docker_client()
    client.images.build(path=str(ROOT / "tests" / "fixtures" / "upstream-python"), tag=UPSTREAM, network_mode="none")
    print("| image | network | edits | median ms | p95 ms | max ms | calls during the edits | failed calls | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.images.split(","):
        load = os.getloadavg()[0]
        network, s, caller = reloads(kind, args.edits)
        print(
            "| %s | %s | %d | %.0f | %.0f | %.0f | %d | %d%s | %.1f–%.1f |"
            % (
                kind,
                network,
                args.edits,
                s["median"],
                s["p95"],
                s["max"],
                caller.calls,
                caller.failed,
                " (%s)" % caller.last if caller.failed else "",
                load,
                os.getloadavg()[0],
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

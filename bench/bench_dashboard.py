"""The dashboard's cost to `dev` and its speed, against a real `dev` (process backend, a Python function),
each figure beside its baseline from the same run:

- memory: `dev`'s own resident memory (its process, not the function's server) with the dashboard and one
  open tab, against `dev --no-dashboard` (goal: < 30 MB more);
- the stream: ~200 events/s (log lines of calls) for 10 s to one reader: `dev`'s growth (goal: < 10 MB)
  and the events the reader got;
- first paint of the page in chromium, with the log buffer full (goal: < 1 s), and the time until the
  functions table shows Ready;
- save → the page shows the next generation (median of --saves).

    python bench/bench_dashboard.py [--seconds 10] [--rate 200] [--saves 5]
"""

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("KUBELESS_LOCAL_CHROMIUM", "/usr/bin/chromium")
HANDLER = """\
def hello(event, context):
    print("called", "MARK", flush=True)
    return "MARK"
"""
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello, annotations: {local.kubeless.io/source: handler.py}}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
"""


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


class Dev:
    def __init__(self, folder, *flags):
        self.log = open(folder.parent / ("dev%s.log" % "-".join(flags)), "w+")  # noqa: SIM115  # dev's whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeless_local", "dev", "--backend", "process", *flags],
            cwd=folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, NO_COLOR="1", KUBELESS_LOCAL_REGISTRY=str(folder.parent / "registry")),
        )
        deadline = time.monotonic() + 120
        while "Watching" not in self.output():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        found = re.search(r"Dashboard: (http://127\.0\.0\.1:(\d+)/\?token=\S+)", self.output())
        self.login, self.port = (found[1], int(found[2])) if found else ("", 0)
        self.function = "http://127.0.0.1:%s/" % re.search(r"http://127\.0\.0\.1:(\d+)\s", self.output())[1]

    def output(self):
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def settle_rss(pid, seconds=2.0):
    time.sleep(seconds)  # a measurement, not a wait for a condition: memory after the work has settled
    return rss_mb(pid)


def call(url, session):
    return session.post(url, data="x", timeout=10).status_code


def drive(url, rate, seconds):
    """POST to the function `rate`/2 times a second (each call prints 2 lines: its own and the access log)."""
    import requests

    session, sent, started = requests.Session(), 0, time.monotonic()
    while time.monotonic() - started < seconds:
        due = started + sent / (rate / 2)
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        call(url, session)
        sent += 1
    return sent


def read_stream(port, cookie, counted, stop):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/api/events", headers={"Cookie": cookie})
    response = connection.getresponse()
    while not stop.is_set():
        line = response.fp.readline()
        if not line:
            return
        if line.startswith(b"id: "):
            counted.append(int(line[4:]))
    connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="events per second on the stream")
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        folder.mkdir()
        (folder / "handler.py").write_text(HANDLER.replace("MARK", "v0"))
        (folder / "function.yaml").write_text(MANIFEST)

        bare = Dev(folder, "--no-dashboard")
        time.sleep(1)
        bare_rss = settle_rss(bare.proc.pid)
        bare.stop()

        dev = Dev(folder)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page()
            page.goto(dev.login)
            page.wait_for_selector("tr[data-function=hello] .state-Ready")
            cookie = next(c for c in page.context.cookies() if c["name"].startswith("kubeless_local"))
            cookie = "%s=%s" % (cookie["name"], cookie["value"])
            with_rss = settle_rss(dev.proc.pid)

            counted, stop = [], threading.Event()
            reader = threading.Thread(target=read_stream, args=(dev.port, cookie, counted, stop), daemon=True)
            reader.start()
            before = settle_rss(dev.proc.pid, 0.5)
            sent = drive(dev.function, args.rate, args.seconds)
            after = settle_rss(dev.proc.pid)
            stop.set()

            page.goto("about:blank")
            started = time.monotonic()
            page.goto("http://127.0.0.1:%d/" % dev.port)
            page.wait_for_selector("tr[data-function=hello] .state-Ready")
            ready_ms = (time.monotonic() - started) * 1000
            paint = page.evaluate(
                "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0] || null"
            )

            shown = []
            for save in range(1, args.saves + 1):
                generation = int(page.locator("tr[data-function=hello] [data-testid=generation]").inner_text())
                started = time.monotonic()
                (folder / "handler.py").write_text(HANDLER.replace("MARK", "v%d" % save))
                page.wait_for_function(
                    "n => document.querySelector('tr[data-function=hello] [data-testid=generation]')"
                    ".textContent == String(n)",
                    arg=generation + 1,
                )
                shown.append((time.monotonic() - started) * 1000)
                time.sleep(0.3)  # as between a developer's saves
            browser.close()
        dev.stop()

    rows = [
        (
            "dev RSS (MB), one tab open",
            "%.1f (--no-dashboard)" % bare_rss,
            "%.1f (+%.1f)" % (with_rss, with_rss - bare_rss),
            "< +30",
        ),
        (
            "dev RSS (MB) over %.0f s at ~%d events/s" % (args.seconds, args.rate),
            "%.1f before" % before,
            "%.1f after (+%.1f); %d calls, %d events read" % (after, after - before, sent, len(counted)),
            "< +10",
        ),
        ("first contentful paint (ms)", "–", "%.0f" % paint if paint else "n/a", "< 1000"),
        ("navigation → functions table Ready (ms)", "–", "%.0f" % ready_ms, ""),
        (
            "save → page shows the next generation (ms), median of %d" % len(shown),
            "–",
            "%.0f (max %.0f)" % (statistics.median(shown), max(shown)),
            "",
        ),
    ]
    print("| measure | baseline | with the dashboard | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| %s |" % " | ".join(row))


if __name__ == "__main__":
    main()

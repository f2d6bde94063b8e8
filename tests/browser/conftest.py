"""Browser tests: a real `kubeless-local dev` (process backend, a Python function) and its dashboard in
Debian's chromium, driven by Playwright (its own browser download is neither reachable nor needed).
They never skip: a missing chromium or Playwright is an error (CI installs both: .ci/setup.sh, the test extra)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright
from processes import interrupt
from waiting import wait_until

CHROMIUM = os.environ.get("KUBELESS_LOCAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"  # kept by CI, gitignored

HANDLER = """\
import os

FAIL_FLAG = %r  # while this file exists, the data "fail" fails (a dead letter to replay)


def hello(event, context):
    data = event["data"]
    data = data.decode() if isinstance(data, bytes) else data
    print("hello called with", data, flush=True)
    if data == "fail" and os.path.exists(FAIL_FLAG):
        raise ValueError("failing on purpose")
    return "<b>hello</b> " + str(data)
"""
SETTINGS = "kafka: {max_attempts: 1, retry_backoff: 0}\n"  # a failing event is a dead letter at once

MANIFESTS = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello, labels: {app: shop}, annotations: {local.kubeless.io/source: handler.py}}
spec: {runtime: python3.11, handler: handler.hello, timeout: "30"}
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: nightly}
spec: {function-name: hello, schedule: "0 3 * * *"}
---
apiVersion: kubeless.io/v1beta1
kind: KafkaTrigger
metadata: {name: orders}
spec: {topic: orders, functionSelector: {matchLabels: {app: shop}}}
"""


class Session:
    """A background `kubeless-local dev` in `folder`; its output in a file, its dashboard link parsed."""

    def __init__(self, folder, *flags, wait_for="Dashboard: "):
        self.folder = Path(folder)
        self.out = open(self.folder.parent / "dev-output.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeless_local", "dev", "--backend", "process", *flags],
            cwd=self.folder,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, NO_COLOR="1"),
        )

        def printed():
            assert self.proc.poll() is None, "dev exited:\n" + self.output()
            return wait_for in self.output()

        wait_until(printed, lambda: "%r printed:\n%s" % (wait_for, self.output()), timeout=120)
        found = re.findall(r"Dashboard: (http://127\.0\.0\.1:(\d+)/\?token=\S+)", self.output())
        self.login, port = found[0] if found else ("", "0")
        self.port = int(port)
        self.base = "http://127.0.0.1:%d" % self.port

    def output(self):
        self.out.flush()
        return Path(self.out.name).read_text()

    def stop(self):
        interrupt(self.proc)
        self.out.close()


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    """The sessions a test starts register in a registry of the test's own (the commands inherit the env)."""
    monkeypatch.setenv("KUBELESS_LOCAL_REGISTRY", str(tmp_path / "registry"))


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER % str(tmp_path / "fail-flag"))
    (folder / "function.yaml").write_text(MANIFESTS)
    (folder / ".kubeless-local.yaml").write_text(SETTINGS)
    return folder


@pytest.fixture
def session(project):
    started = Session(project)
    yield started
    started.stop()


@pytest.fixture(scope="module")  # not the session: Playwright's sync API keeps an event loop running in the
def browser():  # main thread while it is open, and every later test's asyncio.run() would refuse to start
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def wait_live(tab, session, status="live"):
    """Until the page's status says its stream is open; else what the page and dev said."""
    try:
        tab.wait_for_selector("[data-testid=connection]:text-is('%s')" % status, timeout=60_000)
    except PlaywrightError as exc:
        raise AssertionError(
            "the page did not go live (%s); it shows:\n%s\ndev said:\n%s"
            % (exc, tab.inner_text("body"), session.output())
        ) from None


@pytest.fixture
def page(browser, session):
    """A tab logged in with the session's one-time link, its requests recorded in `page.requests`."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.requests = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.goto(session.login)
    wait_live(tab, session)
    yield tab
    context.close()

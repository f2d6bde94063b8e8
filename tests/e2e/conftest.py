"""End-to-end fixtures: the real `kubeless-local` command in a subprocess, in a temp project."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from processes import interrupt
from waiting import wait_for, wait_until

from kubeless_local.paths import cache_dir

INIT_HOME = Path(tempfile.gettempdir()) / "kubeless-local-tests-home"  # `init`'s ~ (its ~/.m2), not the user's


def cli(*args, cwd, timeout=60, check=False):
    """Run `kubeless-local ARGS` to completion; returns CompletedProcess (text). `init` runs with a home of the
    tests' own (it may write what an editor needs into ~/.m2), the user's cache kept."""
    env = dict(os.environ, NO_COLOR="1")
    if args[:1] == ("init",):
        env.update(HOME=str(INIT_HOME), KUBELESS_LOCAL_CACHE=str(cache_dir()))
    result = subprocess.run(
        [sys.executable, "-m", "kubeless_local", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


class Dev:
    """A background `kubeless-local dev`/`run`; reads its output into a file (`output`, in `cwd`)."""

    def __init__(self, args, cwd, output=".dev-output.log"):
        self.cwd = Path(cwd)
        self.log = self.cwd / output
        self.out = open(self.log, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeless_local", *args],
            cwd=cwd,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, NO_COLOR="1"),
        )

    def output(self):
        self.out.flush()
        return self.log.read_text()

    def wait_for_output(self, text, timeout=60):
        def printed():
            assert self.proc.poll() is None, "dev exited:\n" + self.output()
            return text in self.output()

        self.wait_until(printed, "%r printed" % text, timeout)

    def wait_until(self, predicate, what, timeout=60):
        """waiting.wait_until, failing with dev's output: why a state was not reached is in it."""
        try:
            wait_until(predicate, what, timeout)
        except AssertionError as exc:
            raise AssertionError("%s:\n%s" % (exc, self.output())) from None

    def stop(self):
        interrupt(self.proc)
        self.out.close()


@pytest.fixture
def start_dev():
    started = []

    def start(*args, cwd, output=".dev-output.log"):
        dev = Dev(args, cwd, output)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()


def wait_for_answer(url, expected, timeout=30, **kwargs):
    """Poll until the function answers `expected` (hot reload is asynchronous); returns seconds waited."""
    started = time.monotonic()
    answers: list = []

    def answered():
        try:
            answers.append(requests.post(url, timeout=5, **kwargs).text)
        except requests.RequestException as exc:
            answers.append(str(exc))
        return answers[-1] == expected

    if not wait_for(answered, timeout, interval=0.05):
        raise AssertionError("still answering %r, expected %r" % (answers[-1], expected))
    return time.monotonic() - started


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    """The sessions a test starts register in a registry of the test's own (the commands inherit the env)."""
    monkeypatch.setenv("KUBELESS_LOCAL_REGISTRY", str(tmp_path / "registry"))
    return tmp_path / "registry"

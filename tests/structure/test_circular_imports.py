"""Every module of the package imports on its own, in a fresh interpreter: an import circle (as cli.py and
kubeless_cli.py once were) fails here for the module that starts it, whatever the tests imported before.
The idea of pip-tools' tests/test_circular_imports.py (after pytest's and aiohttp's)."""

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubeless_local

MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(kubeless_local.__path__, prefix="kubeless_local.")
    if module.name != "kubeless_local.__main__"  # runs the command: `python -m kubeless_local` is tested by e2e
)
ROOT = Path(kubeless_local.__file__).resolve().parents[1]


# One interpreter loads the third-party libraries once, then forks a child per module: each child imports
# the package afresh (no kubeless_local module is loaded before the fork), at the cost of a fork, not of
# an interpreter start and the libraries' imports (54 interpreters took 7 s, the fork way well under 1 s);
# a child per core at a time.
ZYGOTE = """
import importlib, json, os, sys, traceback
for library in ("click", "yaml", "requests", "docker", "kubernetes.client", "rich.console", "watchdog.observers",
                "aiokafka", "prometheus_client"):
    try:
        importlib.import_module(library)
    except ImportError:
        pass  # the child imports it as the module does, and reports any failure
assert not [name for name in sys.modules if name.startswith("kubeless_local")]


def spawn(module):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            importlib.import_module(module)
            message = ""
        except BaseException:
            message = traceback.format_exc()
        with os.fdopen(write_end, "wb") as writer:
            writer.write(message.encode())
        os._exit(0)
    os.close(write_end)
    return pid, read_end


failures = {}
modules, at_once = sys.argv[1:], os.cpu_count() or 2
for start in range(0, len(modules), at_once):  # a child per core at a time: the imports are CPU-bound
    batch = [(module, *spawn(module)) for module in modules[start : start + at_once]]
    for module, pid, read_end in batch:
        with os.fdopen(read_end, "rb") as reader:
            failures[module] = reader.read().decode()
        os.waitpid(pid, 0)
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def imports():
    """{module: the traceback of importing it alone, or ""}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", ZYGOTE, *MODULES], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_module_is_checked():
    assert "kubeless_local.commands.root" in MODULES and "kubeless_local.emulator.supervisor" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_in_a_fresh_interpreter(module, imports):
    assert imports[module] == ""

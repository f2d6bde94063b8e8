"""Every module of the package imports on its own, in a fresh interpreter: an import circle (as cli.py and
kubeless_cli.py once were) fails here for the module that starts it, whatever the tests imported before.
The idea of pip-tools' tests/test_circular_imports.py (after pytest's and aiohttp's)."""

import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import kubeless_local

MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(kubeless_local.__path__, prefix="kubeless_local.")
    if module.name != "kubeless_local.__main__"  # runs the command: `python -m kubeless_local` is tested by e2e
)
ROOT = Path(kubeless_local.__file__).resolve().parents[1]


def import_alone(module):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", "import %s" % module], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def imports():
    """The interpreters start together, one per core: the whole check costs the time of a few imports."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield {module: pool.submit(import_alone, module) for module in MODULES}


def test_every_module_is_checked():
    assert "kubeless_local.commands.root" in MODULES and "kubeless_local.emulator.supervisor" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_in_a_fresh_interpreter(module, imports):
    result = imports[module].result()
    assert result.returncode == 0, result.stderr

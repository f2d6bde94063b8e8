"""The process backend with the Python a Debian or Ubuntu machine has (/usr/bin/python3.11, its own pip): a
`pip install --prefix` there puts packages under local/lib/python3.11/dist-packages, not lib/…/site-packages,
and every function with a deps file failed with `No module named …` (the tests ran a pyenv Python only)."""

import shutil
import subprocess
import uuid
from pathlib import Path

import requests
from test_cli import read_ls

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
HANDLER = "import six\n\n\ndef hello(event, context):\n    return six.__file__\n"


def test_a_function_with_deps_runs_on_the_machines_debian_python(tmp_path, start_dev, monkeypatch):
    assert DEBIAN_PYTHON.is_file(), "this test needs Debian's python3.11 and its pip (.ci/setup.sh installs them)"
    scheme = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", "import sysconfig; print(sysconfig.get_preferred_scheme('prefix'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert scheme == "posix_local", "not a Debian-patched Python (scheme %s): the case is not here" % scheme
    monkeypatch.setenv("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")  # python3.11 is Debian's (kubeless-local: ours)
    (tmp_path / "handler.py").write_text(HANDLER)
    # a deps file of its own: installed by Debian's pip now, not found in the cache from another Python's install
    (tmp_path / "requirements.txt").write_text("six\n# %s\n" % uuid.uuid4())
    dev = start_dev(
        "run", "handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "-d", "requirements.txt",
        cwd=tmp_path,
    )  # fmt: skip
    dev.wait_for_output("Watching", timeout=300)
    answer = requests.get(read_ls(tmp_path)["handler"]["url"], timeout=30).text
    try:
        assert "/local/lib/python3.11/dist-packages/six.py" in answer, answer + "\n" + dev.output()
    finally:  # the cached install of a deps file no other test has
        deps = Path(answer.partition("/local/lib/")[0])
        if deps.name and (deps / "local").is_dir():
            shutil.rmtree(deps)
            deps.with_name(deps.name + ".lock").unlink(missing_ok=True)

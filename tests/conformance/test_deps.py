"""A function's deps file is installed whole into its deps folder, whatever the installing interpreter
already has (issue J.1): the function runs isolated from the machine's packages, as in the pod."""

import importlib.util
import shutil
import uuid
from pathlib import Path

import pytest

# Their closure overlaps what this machine's Python has (requests, typing_extensions) and the image's
# (decorator).
PYTHON_DEPS = "requests\nbeautifulsoup4\ndecorator\n"


@pytest.mark.language("python")
def test_python_deps_the_installing_interpreter_already_has_are_installed(function):
    # The case of the bug: the installing Python has them (kubeless-local itself needs requests, and
    # typing_extensions through aiokafka and kubernetes).
    for name in ("requests", "typing_extensions"):
        assert importlib.util.find_spec(name) is not None, "this test needs %s in the host's Python" % name
    fn = function("deps", deps=PYTHON_DEPS)
    response = fn.get("/")
    assert response.status_code == 200, fn.logs()
    deps = fn.supervisor.serving[fn.instance.name].placeholders["deps"]
    for module, path in response.json().items():
        assert path.startswith(deps + "/"), "%s: imported from %s, not from %s" % (module, path, deps)


@pytest.mark.language("python")
@pytest.mark.backend("process")  # the machine's Python installs there; in an image, the image's own
def test_python_deps_install_says_nothing_of_the_installing_pythons_own_conflicts(function, tmp_path, monkeypatch):
    """Packages of the installing Python that conflict with the deps or with each other (common on a
    developer's machine) made pip print `ERROR: pip's dependency resolver … incompatible` in the install's
    output, which reads as a failed install: the function never sees them (it runs with -S)."""
    installed = tmp_path / "machine" / "needs_old_requests-1.0.dist-info"  # as pip records an installed package
    installed.mkdir(parents=True)
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: needs-old-requests\nVersion: 1.0\n"
                                        "Requires-Dist: requests<1.0\n")  # fmt: skip
    (installed / "RECORD").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(installed.parent))  # seen by the install step's pip (process backend)
    fn = function("deps", deps=PYTHON_DEPS + "# %s: a deps file of its own, so it is installed\n" % uuid.uuid4())
    try:
        assert fn.get("/").status_code == 200, fn.logs()
        assert "Successfully installed" in fn.logs()  # the install ran and its output is shown
        assert "incompatible" not in fn.logs() and "dependency conflicts" not in fn.logs(), fn.logs()
    finally:  # the cached install of a deps file no other test has, and its lock
        installed_deps = Path(fn.supervisor.serving[fn.instance.name].placeholders["deps"])
        shutil.rmtree(installed_deps)
        installed_deps.with_name(installed_deps.name + ".lock").unlink(missing_ok=True)

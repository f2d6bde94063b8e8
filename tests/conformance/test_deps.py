"""A function's deps file is installed whole into its deps folder, whatever the installing interpreter
already has (issue J.1): the function runs isolated from the machine's packages, as in the pod."""

import importlib.util

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

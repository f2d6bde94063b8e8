"""A function sees its own deps and the runtime's libraries, nothing of the tool or the machine
(in the cluster an undeclared import is an ImportError): issue E.5."""

import pytest


@pytest.mark.language("python")
def test_python_function_cannot_import_the_tools_own_packages(function):
    fn = function("imports")
    response = fn.get("/")
    assert response.status_code == 200, response.text
    assert response.json() == [], "the function imported the tool's packages %s" % response.text

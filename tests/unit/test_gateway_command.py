"""`kubeless-local gateway explain` on a project folder (no server: the same table `dev` routes by)."""

import json

from click.testing import CliRunner

from kubeless_local.commands.root import main

PROJECT = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: echo}
spec: {runtime: python3.11, handler: h.f, function: "def f(e, c): return 1"}
---
apiVersion: kubeless.io/v1beta1
kind: HTTPTrigger
metadata: {name: echo}
spec: {function-name: echo, host-name: a.test, path: echo, cors-enable: true}
---
apiVersion: kubeless.io/v1beta1
kind: HTTPTrigger
metadata: {name: other}
spec: {function-name: echo, host-name: b.test}
"""


def run(tmp_path, *args):
    (tmp_path / "project.yaml").write_text(PROJECT)
    return CliRunner().invoke(main, ["gateway", "explain", "-p", str(tmp_path), *args])


def test_explain_names_the_route_the_rewrite_and_the_request(tmp_path):
    result = run(tmp_path, "http://a.test.localhost/Echo/x?q=1", "-H", "Proxy: x", "--port", "9000")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "GET http://a.test.localhost/Echo/x?q=1 (Host: a.test.localhost)"
    assert "✓ a.test/echo → echo (echo, nginx, rewrite root) cors: path /Echo/x matches /echo" in result.output
    assert "✗ b.test/ → echo (other, nginx, rewrite none): host b.test is not a.test.localhost" in result.output
    assert "  GET /?q=1 HTTP/1.1" in lines and "  X-Forwarded-Port: 9000" in lines and "  Proxy: x" not in lines
    assert "  Access-Control-Allow-Origin: *" in lines


def test_explain_in_json_and_the_default_backend(tmp_path):
    result = run(tmp_path, "-o", "json", "http://c.test/")
    assert result.exit_code == 0, result.output
    (found,) = json.loads(result.output)
    assert (found["status"], found["reason"], found["trigger"]) == (404, "no route matches: default backend", None)


def test_a_malformed_header_is_one_line(tmp_path):
    result = run(tmp_path, "http://a.test/", "-H", "no colon")
    assert result.exit_code == 2
    assert (
        result.output.strip().splitlines()[-1]
        == "error: -H 'no colon': a header is NAME: VALUE, e.g. -H 'Host: a.example.com'"
    )

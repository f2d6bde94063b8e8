"""The Kubeless Java examples end to end, with the real command: `function deploy` (hello, data echo,
joda-time from a pom.xml), `run` (a compile error shows Foo.java:<line> and keeps the last good code; a
call past the timeout answers 408 and the next call succeeds) and `init` + `dev`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import INIT_HOME, cli, wait_for_answer
from sockets import free_port

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "java"

DEPLOY = """
set -e
kubeless() { "$PYTHON" -m kubeless_local "$@"; }
kubeless function deploy get-java --runtime java1.8 --handler Foo.foo --from-file HelloGet.java
kubeless function call get-java
kubeless function deploy post-java --runtime java11 --handler Foo.foo --from-file HelloWithData.java
kubeless function call post-java --data 'hello java'
kubeless function deploy get-java-deps --runtime java11 --handler Hello.sayHello --from-file HelloWithDeps.java \\
    --dependencies pom.xml
kubeless function call get-java-deps --data deps
"""

BROKEN = """package io.kubeless;

public class Foo {
    public String foo(io.kubeless.Event event, io.kubeless.Context context) {
        return "no semicolon"
    }
}
"""

SLEEPY = """package io.kubeless;

public class Foo {
    public String foo(io.kubeless.Event event, io.kubeless.Context context) throws InterruptedException {
        if (event.Data.equals("sleep")) {
            Thread.sleep(30000);
        }
        return "awake: " + event.Data;
    }
}
"""


def read_ls(cwd):
    return {row["name"]: row for row in json.loads(cli("ls", "-o", "json", cwd=cwd, check=True).stdout)}


def test_the_kubeless_java_examples_through_function_deploy(tmp_path):
    project = tmp_path / "java"
    shutil.copytree(EXAMPLES, project)
    try:
        result = subprocess.run(
            ["bash", "-c", DEPLOY], cwd=project, env={**os.environ, "PYTHON": sys.executable, "NO_COLOR": "1"},
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert "Hello world!" in lines and "hello java" in lines, result.stdout
        assert any(line.startswith("Hello world! Current local time is: ") for line in lines), result.stdout
        rows = read_ls(project)
        assert sorted((name, row["state"], row["runtime"]) for name, row in rows.items()) == [
            ("get-java", "Ready", "java11"),
            ("get-java-deps", "Ready", "java11"),
            ("post-java", "Ready", "java11"),
        ]
        assert "deps" in cli("logs", "get-java-deps", cwd=project, check=True).stdout  # System.out.println
    finally:
        cli("down", cwd=project)


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_run_shows_compile_errors_keeps_the_last_good_code_and_stops_runaway_calls(tmp_path, start_dev, backend):
    shutil.copy(EXAMPLES / "HelloGet.java", tmp_path / "Foo.java")
    port = free_port()
    url = "http://127.0.0.1:%d/" % port
    run = start_dev(
        *("run", "Foo.java", "--runtime", "java11", "--handler", "Foo.foo", "--timeout", "2", "--port", str(port)),
        *("--backend", backend),
        cwd=tmp_path,
    )
    run.wait_for_output("Watching", timeout=180)
    assert requests.get(url, timeout=10).text == "Hello world!"

    (tmp_path / "Foo.java").write_text(BROKEN)
    run.wait_for_output("%s:5: error: ';' expected" % (tmp_path / "Foo.java"), timeout=120)
    run.wait_until(lambda: read_ls(tmp_path)["foo"]["state"] == "CompileError", "foo in CompileError")
    assert requests.get(url, timeout=10).text == "Hello world!"  # the last good code serves

    (tmp_path / "Foo.java").write_text(SLEEPY)
    wait_for_answer(url, "awake: x", data="x", timeout=120)
    runaway = requests.post(url, data="sleep", timeout=30)
    assert runaway.status_code == 408
    after = requests.post(url, data="again", timeout=10)
    assert (after.status_code, after.text) == (200, "awake: again")


def test_init_and_dev_serve_the_java_template(tmp_path, start_dev):
    params = INIT_HOME / ".m2/repository/io/kubeless/params/1.0-SNAPSHOT/params-1.0-SNAPSHOT.jar"
    params.unlink(missing_ok=True)
    cli("init", "hello", "--runtime", "java11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    assert sorted(p.name for p in project.iterdir()) == ["Hello.java", "function.yaml", "pom.xml"]
    # an editor resolves the pom's parent and Event/Context from the local Maven repository
    assert (INIT_HOME / ".m2/repository/io/kubeless/kubeless/1.0-SNAPSHOT/kubeless-1.0-SNAPSHOT.pom").is_file()
    javac = subprocess.run(
        ["javac", "-d", str(tmp_path / "classes"), "-cp", str(params), str(project / "Hello.java")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert javac.returncode == 0, javac.stderr
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching", timeout=300)
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "Hello world!"
    assert cli("call", "hello", "--data", "java", cwd=project, check=True).stdout.strip() == "Hello, you sent: java"
    assert read_ls(project)["hello"]["state"] == "Ready"

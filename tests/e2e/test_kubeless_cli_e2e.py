"""A Kubeless user's script, unchanged but for `alias kubeless=kubeless-local`: five functions deployed
from one folder with `function deploy` (no second terminal: the first deploy starts the session in the
background), called from another folder, one updated, one deleted; and two `run`s from one folder."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

NAMES = ["alpha", "bravo", "charlie", "delta", "echo"]
SHADOWING = ["uuid", "platform"]  # not imported by the Python runtime: only kubeless-local's own process would

SCRIPT = """
set -e
kubeless() { "$PYTHON" -m kubeless_local "$@"; }
cd "$PROJECT"
for name in $NAMES; do
  kubeless function deploy "$name" --runtime python3.11 --from-file "$name.py" --handler "$name.hello" \\
      --label app=shop,tier --env GREETING=hi
done
cd "$ELSEWHERE"
for name in $NAMES; do echo "$name: $(kubeless function call "$name" --data "$name-data")"; done
cd "$PROJECT"
kubeless function update bravo --from-file bravo2.py --handler bravo2.hello
kubeless function delete echo
cd "$ELSEWHERE"
echo "bravo: $(kubeless function call bravo)"
if kubeless function call echo 2>/dev/null; then echo "echo still answers"; exit 1; fi
kubeless function ls
"""


@pytest.fixture
def folders(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    for name in NAMES:
        (project / (name + ".py")).write_text(
            "import os\n\ndef hello(event, context):\n"
            "    data = event['data']\n"
            "    return '%s ' + os.environ['GREETING'] + ' ' + (data.decode() if isinstance(data, bytes) else data)\n"
            % name
        )
    (project / "bravo2.py").write_text("def hello(event, context):\n    return 'bravo v2'\n")
    for name in SHADOWING:  # a user's helpers named like standard modules that kubeless-local imports
        (project / (name + ".py")).write_text("raise RuntimeError('the user\\'s %s.py was imported')\n" % name)
    yield project, elsewhere
    cli("down", cwd=project)


def test_a_kubeless_script_deploys_calls_updates_and_deletes(folders):
    project, elsewhere = folders
    env = {
        "PYTHON": sys.executable,
        "PROJECT": str(project),
        "ELSEWHERE": str(elsewhere),
        "NAMES": " ".join(NAMES),
    }
    result = subprocess.run(
        ["bash", "-c", SCRIPT], env={**os.environ, **env, "NO_COLOR": "1"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in NAMES:
        assert "%s: %s hi %s-data" % (name, name, name) in lines, result.stdout
    assert "bravo: bravo v2" in lines
    listing = result.stdout.split("bravo: bravo v2", 1)[1]
    assert all(name in listing for name in NAMES[:4]) and "echo" not in listing and "1/1 READY" in listing
    assert sorted(p.name for p in project.glob("*.yaml")) == ["%s.yaml" % n for n in NAMES[:4]]
    assert "submitted for deployment" in result.stderr
    stopped = cli("down", cwd=project, check=True)
    assert "stopped" in stopped.stdout
    assert "no running" in cli("call", "alpha", cwd=elsewhere).stderr


def test_two_runs_from_one_folder_both_answer_from_another_folder(tmp_path, start_dev):
    project, elsewhere = tmp_path / "p", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    runs = []
    for name in ("one", "two"):
        (project / (name + ".py")).write_text("def hello(event, context):\n    return %r\n" % name)
        run = start_dev(*shlex.split("run %s.py --runtime python3.11 --handler %s.hello" % (name, name)), cwd=project)
        run.wait_for_output("Watching", timeout=120)
        runs.append(run)
    for name in ("one", "two"):
        assert cli("call", name, cwd=elsewhere, check=True).stdout.strip() == name
    rows = cli("ls", "-o", "json", cwd=elsewhere, check=True).stdout
    assert '"one"' in rows and '"two"' in rows


EXAMPLES = Path(__file__).parent.parent / "fixtures" / "kubeless-examples"

EXAMPLES_SCRIPT = """
set -e
kubeless() { "$PYTHON" -m kubeless_local "$@"; }
kubeless function deploy get-python --runtime python3.7 --handler helloget.foo --from-file python/helloget.py
kubeless function call get-python | grep -E hello.world
kubeless function deploy get-nodejs --runtime nodejs12 --handler helloget.foo --from-file nodejs/helloget.js
kubeless function call get-nodejs | grep -E hello.world
kubeless function ls
"""


def test_function_deploy_works_in_the_kubeless_examples_folder(tmp_path):
    """Its old manifests (apiVersion k8s.io/v1), Helm chart and Makefile are not what `function deploy`
    put in the session: the session it starts runs the deployed functions only."""
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES, examples)
    try:
        result = subprocess.run(
            ["bash", "-c", EXAMPLES_SCRIPT], cwd=examples, env={**os.environ, "PYTHON": sys.executable, "NO_COLOR": "1"},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("hello world") == 2
        rows = json.loads(cli("ls", "-o", "json", cwd=examples, check=True).stdout)
        assert sorted((r["name"], r["state"]) for r in rows) == [("get-nodejs", "Ready"), ("get-python", "Ready")]
    finally:
        cli("down", cwd=examples)

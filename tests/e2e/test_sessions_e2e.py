"""Two real projects, each with its `dev`: a command run inside a project speaks to that project's session
only (none running: exit 2, saying so); outside any project a name resolves across the sessions, the
session used is named, and a name two sessions have is an ambiguity listing both."""

import json

from conftest import cli
from test_events_e2e import calls
from test_events_e2e import project as events_project

CRON = """\
---
apiVersion: kubeless.io/v1beta1
kind: CronJobTrigger
metadata: {name: yearly}
spec: {function-name: sink, schedule: "0 0 1 1 *"}
"""


def two_projects(tmp_path):
    """Projects a and b (the same functions and triggers: sink, topic orders, CronJobTrigger yearly) and a
    folder outside both."""
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        events_project(root)
        with open(root / "function.yaml", "a") as manifest:
            manifest.write(CRON)
        roots.append(root)
    (tmp_path / "elsewhere").mkdir()
    return roots[0], roots[1], tmp_path / "elsewhere"


def one_line_error(result, text):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert text in lines[0], lines[0]
    return lines[0]


def test_a_stopped_project_reaches_no_other_session(tmp_path, start_dev):
    a, b, _ = two_projects(tmp_path)
    dev_a = start_dev("dev", cwd=a)
    start_dev("dev", cwd=b).wait_for_output("Watching")
    dev_a.wait_for_output("Watching")
    cli("emit", "kafka", "--topic", "orders", "--data", "to-a", "--wait", cwd=a, check=True)
    assert [c["data"] for c in calls(a)] == ["to-a"]
    dev_a.stop()

    stopped = "no running `kubeless-local dev` (nor run, up) for %s; start one there" % a
    for command in (
        ("emit", "kafka", "--topic", "orders", "--data", "lost"),
        ("topic", "publish", "--topic", "orders", "--data", "lost"),
        ("topic", "ls"),
        ("topic", "create", "spare"),
        ("topic", "replay", "orders"),
        ("emit", "cron", "yearly"),
        ("call", "sink"),
        ("logs", "sink"),
        ("ls",),
    ):
        one_line_error(cli(*command, cwd=a), stopped)
    (a / "sub").mkdir()
    one_line_error(cli("emit", "kafka", "--topic", "orders", "--data", "lost", cwd=a / "sub"), stopped)
    assert calls(b) == []  # nothing reached b's session
    topics = {row["name"]: row for row in json.loads(cli("topic", "ls", "-o", "json", cwd=b, check=True).stdout)}
    assert topics["orders"]["events"] == 0 and "spare" not in topics


def test_outside_any_project_a_name_resolves_in_the_one_session_that_has_it(tmp_path, start_dev):
    a, b, elsewhere = two_projects(tmp_path)
    (b / "function.yaml").write_text((b / "function.yaml").read_text().replace("topic: orders", "topic: b-orders"))
    dev_a = start_dev("dev", cwd=a)
    start_dev("dev", cwd=b).wait_for_output("Watching")
    dev_a.wait_for_output("Watching")

    # the same names in both: an ambiguity listing both sessions
    for command, what in (
        (("call", "sink"), "function 'sink'"),
        (("emit", "cron", "yearly"), "CronJobTrigger 'yearly'"),
        (("emit", "nats", "--topic", "news", "--data", "x"), "topic 'news'"),
    ):
        line = one_line_error(cli(*command, cwd=elsewhere), "%s runs in several sessions" % what)
        assert "the dev session of %s" % a in line and "the dev session of %s" % b in line
    one_line_error(cli("topic", "create", "spare", cwd=elsewhere), "several sessions run")

    # a name only one session has: used, and named
    result = cli("emit", "kafka", "--topic", "b-orders", "--data", "to-b", "--wait", cwd=elsewhere, check=True)
    assert "(the dev session of %s)" % b in result.stderr
    assert [c["data"] for c in calls(b)] == ["to-b"] and calls(a) == []

    listing = cli("ls", cwd=elsewhere, check=True).stdout
    assert listing.splitlines()[0].split()[-1] == "PROJECT" and str(a) in listing and str(b) in listing
    wide = cli("ls", "-o", "wide", cwd=a, check=True).stdout.splitlines()
    ready_ms = wide[1].split()[wide[0].split().index("READY_MS")]
    assert ready_ms.isdigit(), wide

    dev_a.stop()
    result = cli("call", "sink", "--data", "direct", cwd=elsewhere, check=True)
    assert result.stdout.strip() == "ok" and result.stderr == "(the dev session of %s)\n" % b

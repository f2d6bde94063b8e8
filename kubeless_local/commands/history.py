"""The recorded invocations: `history [NAME]` and `replay ID [--edit]` (emulator/recorder.py records every
call a function's front door sees)."""

import datetime
import json

import click

from kubeless_local.commands.common import json_option, picked_session
from kubeless_local.commands.output import user_errors
from kubeless_local.commands.serving import print_table
from kubeless_local.errors import UserError


def _when(started):
    return datetime.datetime.fromtimestamp(started).strftime("%H:%M:%S.%f")[:-3]


def _source(row):
    return row["source"] + (":%s" % row["trigger"] if row.get("trigger") else "")


def _status(row):
    if row["timeout"]:
        return "%d timeout" % row["status"]
    return str(row["status"] or "no answer")


HISTORY_COLUMNS = [
    ("ID", lambda r: r["id"]),
    ("TIME", lambda r: _when(r["started"])),
    ("FUNCTION", lambda r: r["function"]),
    ("SOURCE", _source),
    ("REQUEST", lambda r: "%s %s" % (r["method"], r["path"])),
    ("STATUS", _status),
    ("MS", lambda r: "%.1f" % r["duration_ms"]),
]


@click.command()
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="at most this many")
@json_option
@user_errors
def history(name, limit, output):
    """The calls the functions answered (every source: call, http, kafka, nats, cron, replay), newest first."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.project_session)
    if name:
        session.function(name)  # an unknown function is an error, not an empty list
    rows = session.invocations(name, limit)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        print_table(rows, HISTORY_COLUMNS)
    else:
        click.echo("no recorded invocations%s" % (" of %s" % name if name else ""))


@click.command()
@click.argument("ident", metavar="ID")
@click.option("--edit", is_flag=True, help="edit the request (JSON) in $EDITOR before it is sent")
@json_option
@user_errors
def replay(ident, edit, output):
    """Send a recorded call's request to its function again and show how the answer differs."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.project_session)
    request = None
    if edit:
        request = edited_request(session.invocation(ident)["request"])
    result = session.replay_invocation(ident, request)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(describe_replay(result))


def edited_request(request):
    """The request as the user left it in $EDITOR (unsaved: as it was)."""
    try:
        text = click.edit(json.dumps(request, indent=2) + "\n", extension=".json")
    except click.ClickException as exc:  # no such editor, or it failed: click's words, then the fix
        raise UserError(
            "%s; replay not sent: set EDITOR (or VISUAL) to an editor that waits until you close the file, e.g. "
            "EDITOR='code --wait'" % exc.message
        ) from None
    if text is None:
        return request
    try:
        edited = json.loads(text)
    except ValueError as exc:
        raise UserError("the edited request is not JSON (%s); replay not sent" % exc) from None
    if not isinstance(edited, dict):
        raise UserError("the edited request must be a JSON object (method, path, query, headers, body)")
    return edited


def describe_replay(result):
    """What `replay` prints: which record replayed which, and the diff of status, headers and body."""
    original, replayed, diff = result["original"], result["replay"], result["diff"]
    lines = [
        "replayed %s (%s %s%s) of %s%s"
        % (
            original["id"],
            original["request"]["method"],
            original["request"]["path"],
            "?" + original["request"]["query"] if original["request"]["query"] else "",
            original["function"],
            " as %s" % replayed["id"] if replayed.get("id") else "",
        )
    ]
    if diff["same"]:
        lines.append("same answer: %d, same headers and body" % original["response"]["status"])
        return "\n".join(lines)
    if diff["status"]:
        lines.append("status: %s -> %s" % tuple(diff["status"]))
    else:
        lines.append("status: %d (same)" % original["response"]["status"])
    for name, (before, after) in diff["headers"].items():
        lines.append("header %s: %s -> %s" % (name, before if before is not None else "(none)", after or "(none)"))
    if diff["body"]:
        lines.append("body:")
        lines.extend("  " + line for line in diff["body"])
    else:
        lines.append("body: same")
    return "\n".join(lines)

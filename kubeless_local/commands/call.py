"""`call`: one event to a running function, as `kubeless function call` sends it.

A module of its own, importing only the client (no engine, no YAML, no HTTP library beyond the standard
library's): `call` is run in loops and scripts, and its start-up is most of its time."""

from pathlib import Path

import click

from kubeless_local.commands.common import HEADER, headline, raise_exit, say_session, user_errors
from kubeless_local.errors import UserError


@click.command()
@click.argument("name")
@click.option("-d", "--data", help="Event data; a JSON object is sent as application/json. Without it (or empty): GET.")
@click.option(
    "--data-file", type=click.Path(exists=True, dir_okay=False), help="Event data read from FILE (as curl's -d @FILE)."
)
@click.option("-X", "--method", help="HTTP method instead of GET/POST (the function may answer 405).")
@click.option("-H", "--header", "headers", multiple=True, type=HEADER, help="Extra header 'Name: value' (repeatable).")
@click.option(
    "--path", default="/", show_default=True, help="Request path on the function (a leading / is added if missing)."
)
@user_errors
def call(name, data, data_file, method, headers, path):
    """Call a running function like `kubeless function call`."""
    from kubeless_local.client import send
    from kubeless_local.emulator import AdminClient

    if data is not None and data_file:
        raise UserError("--data and --data-file are exclusive: give one")
    if data_file:
        data = Path(data_file).read_bytes()
    client = AdminClient()
    session, row = client.owner(name)
    say_session(client, session)
    if not row.get("serving", True) or not row["port"] or not row.get("url"):
        # Nothing of ours answers on its port: whatever does must not pass for the function.
        raise_exit("%s is %s: %s" % (name, row["state"], headline(row["error"] or "not serving")), 1)
    if row["state"] != "Ready" and row["error"]:
        click.echo(
            "warning: %s is %s (%s); the last good code answers" % (name, row["state"], headline(row["error"])),
            err=True,
        )
    response = send(
        row["url"],
        data,
        path=path,
        method=method.upper() if method else None,
        headers=dict(headers),
        mark="call" if row.get("recorded") else None,
    )
    if response.status_code == 408:
        raise_exit("Request timeout exceeded", 1)
    click.echo(response.text, nl=not response.text.endswith("\n"))
    if response.status_code >= 400:
        raise_exit("the function answered %d %s" % (response.status_code, response.reason), 1)

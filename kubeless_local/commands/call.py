"""`call`: one event to a running function, as `kubeless function call` sends it.

The click command parses the options; what it does is `entry.call_function`, which the console script's entry
also runs without click for the plainest lines (`call NAME [-d DATA]`): `call` is run in loops and scripts, and
its start-up is most of its time. Neither imports the engine, YAML or an HTTP library beyond the standard
library's (tests/unit/test_cli_imports.py)."""

import click

from kubeless_local.commands.common import HEADER
from kubeless_local.commands.entry import DATA_OPTIONS, call_function
from kubeless_local.commands.output import user_errors


@click.command()
@click.argument("name")
@click.option(*DATA_OPTIONS, help="Event data; a JSON object is sent as application/json. Without it (or empty): GET.")
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
    call_function(name, data, data_file, method, headers, path)

"""`dashboard`: open the dashboard of the running `dev` session with a new one-time login link."""

import json
import urllib.error
import urllib.request
import webbrowser

import click

from kubeless_local.commands.common import picked_session
from kubeless_local.commands.output import user_errors
from kubeless_local.errors import Unavailable


@click.command()
@click.option("--no-browser", is_flag=True, help="Print the link only (it works once).")
@user_errors
def dashboard(no_browser):
    """Open the dashboard of the project's running `dev` in a browser."""
    from kubeless_local.client import AdminClient
    from kubeless_local.dashboard.server import INFO_FILE, LOGIN_LINK

    session = picked_session(AdminClient.project_session)
    try:
        port = json.loads((session.state_dir / INFO_FILE).read_text())["port"]
    except (OSError, ValueError, KeyError):
        raise Unavailable(
            "%s serves no dashboard (started with --no-dashboard, or not by `dev`); start `kubeless-local dev`"
            % session.describe()
        ) from None
    request = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, LOGIN_LINK),
        data=b"",
        method="POST",
        headers={**session.headers, "Host": "127.0.0.1:%d" % port},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            url = json.loads(answer.read())["url"]
    except (OSError, ValueError, KeyError):
        raise Unavailable(
            "the dashboard of %s does not answer; start `kubeless-local dev` again" % session.describe()
        ) from None
    click.echo(url)
    if not no_browser:
        webbrowser.open(url)

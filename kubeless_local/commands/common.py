"""What the command families share: options defined once, their value types, the running session a command
picks. What serves functions and prints their table (`serve`, the log printer) is commands/serving.py's, and what
the CLI says (hints, one-line errors, the error decorator) commands/output.py's: both without click, for the
console script's plain lines (commands/entry.py)."""

import datetime
import os
import re

import click

from kubeless_local.commands.output import say_session
from kubeless_local.errors import UserError


class Checked(click.ParamType):
    """An option value checked by `convert(text) → value`; a bad one is a one-line UserError naming the flag."""

    def __init__(self, name, convert, expected):
        self.name, self._convert, self.expected = name, convert, expected

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self._convert(value)
        except ValueError:
            raise UserError(
                "%s %r must be %s" % (param.opts[-1] if param else self.name, value, self.expected)
            ) from None


def _quantity(text):
    from kubeless_local import spec as specs  # the manifests' model: not for every command (`call`)

    if not specs.QUANTITY_RE.match(text):
        raise ValueError(text)
    return text


DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text):
    """Seconds in `1h30m`, `10m`, `30s` (as kubectl's --since)."""
    if not re.fullmatch(r"(\d+[hms])+", text):
        raise ValueError(text)
    return sum(int(n) * DURATION_UNITS[unit] for n, unit in re.findall(r"(\d+)([hms])", text))


def parse_header(text):
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(text)
    return name.strip(), value.strip()


QUANTITY = Checked("quantity", _quantity, "a Kubernetes quantity, e.g. 128Mi or 1Gi")
DURATION = Checked("duration", parse_duration, "a duration such as 30s, 10m or 1h")
HEADER = Checked("header", parse_header, "'Name: value'")


# Options shared by several commands: defined once; a command may change a setting (`up` words its help "As for dev.").
def backend_option(**changes):
    from kubeless_local import config  # the settings model: not for every command (`call`)

    settings = {
        "default": lambda: os.environ.get("KUBELESS_LOCAL_BACKEND"),
        "show_default": "$KUBELESS_LOCAL_BACKEND, else `backend:` in %s, else %s"
        % (config.FILE, config.Settings.backend),
        "help": "Where functions run: process (local processes), docker (runtime images, one "
        "container per function), auto (docker when an engine answers and the images "
        "exist, else process).",
    }
    return click.option("--backend", type=click.Choice(config.BACKENDS), **{**settings, **changes})


def ignore_option(**changes):
    settings = {
        "help": "Files and folders that are not the project's (gitignore-style, e.g. build/ or "
        "*.log; repeatable): not loaded, not watched, no reload."
    }
    return click.option("--ignore", "ignore", multiple=True, metavar="PATTERN", **{**settings, **changes})


def env_option():
    return click.option(
        "-e",
        "--env",
        multiple=True,
        help="""K=V or K:V (repeat or comma-separate; a value with commas in double quotes: '"K=a,b"').""",
    )


def label_option():
    return click.option("-l", "--label", multiple=True, help='k=v or k:v; a bare k is k="" (repeat or comma-separate).')


runtime_option = click.option(
    "-r", "--runtime", required=True, help="Runtime, e.g. python3.11 (see get-server-config)."
)


def debug_option(names=True):
    """`--debug`: the functions to run under their runtime's debugger — NAME[,NAME…] (dev), or a flag for the
    one function of `run`."""
    if not names:
        return click.option(
            "--debug",
            is_flag=True,
            help="Run the function under its runtime's debugger (debugpy, V8 inspector, Delve) on 127.0.0.1.",
        )
    return click.option(
        "--debug",
        multiple=True,
        metavar="NAME[,NAME…]",
        help="Run these functions under their runtime's debugger (debugpy, the V8 inspector, Delve) on 127.0.0.1, "
        "one port each (see --debug-port, docs/debugging.md); repeat or comma-separate.",
    )


debug_port_option = click.option(
    "--debug-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="The first debug port; each further debugged function takes the next one (default: the debugger's "
    "own, 5678 for debugpy, 9229 for the V8 inspector, 2345 for Delve).",
)


def debug_names(values):
    """The names of `--debug NAME[,NAME…]` (repeated or comma-separated), in order, each once."""
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def output_option(*formats, flag="--output", help="How to print it."):
    """-o: the first of `formats` by default (`flag`: the Kubeless CLI's `--out` on its listings)."""
    return click.option(
        "-o", flag, "output", type=click.Choice(formats), default=formats[0], show_default=True, help=help
    )


json_option = output_option("table", "json")


def picked_session(pick, *args):
    """The running session `pick` (an AdminClient method: topic_session, cron_session, project_session)
    finds for `args`, said when it was found across sessions."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session = pick(client, *args)
    say_session(client, session)
    return session


def timestamp(seconds):
    """RFC 3339 in UTC with milliseconds, as `kubectl logs --timestamps` prints them."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)

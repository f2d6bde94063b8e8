"""The `kubeless-local` group: the families' commands under one root. No command module imports this one.

A command's module is imported only when that command runs (or the root's help lists them all), so
`--version` imports no command and `call` only commands/call.py and what it needs
(tests/unit/test_cli_imports.py pins it). To add a command: its row in COMMANDS."""

import importlib
import os
import sys

import click

from kubeless_local.errors import UserError

# command name → "module:attribute" under kubeless_local.commands; the help lists them by name
COMMANDS = {
    "init": "local:init",
    "dev": "local:dev",
    "run": "local:run",
    "call": "call:call",
    "ls": "local:list_functions",
    "logs": "local:logs",
    "debug-config": "local:debug_config",
    "history": "history:history",
    "replay": "history:replay",
    "dashboard": "dashboard:dashboard",
    "get-server-config": "kubeless:get_server_config",
    "runtime": "runtime:runtime",
    "push": "cluster:push",
    "emit": "events:emit",
    "topic": "events:topic",
    "cluster": "cluster:cluster",
    "gateway": "gateway:gateway",
    "function": "kubeless:function",
    "trigger": "kubeless:trigger",
    "up": "kubeless:up",
    "down": "kubeless:down",
}
# Commands whose process ends at once when they are done (entry): run in loops and scripts, they hold no
# threads, files or atexit work, and the interpreter's teardown (freeing every module, ~10 ms on a slow
# machine) was a sixth of a whole `call`.
ENDS_AT_ONCE = {"call"}


class Main(click.Group):
    """Loads a command's module on first use (COMMANDS); every sub-command's UserError → `exit_with`, also
    those raised while its options are parsed."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module("kubeless_local.commands." + module), attribute))
        return self.commands.get(cmd_name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)  # parses the sub-command's options too, so their types may raise UserError
        except UserError as exc:
            from kubeless_local.commands.common import exit_with

            exit_with(exc)


def print_version(ctx, _param, value):
    """`--version`, as click's version_option prints it; the version is read only when asked (metadata)."""
    if not value or ctx.resilient_parsing:
        return
    from kubeless_local import __version__

    click.echo("kubeless-local, version %s" % __version__)
    ctx.exit()


@click.group(cls=Main, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Show the version and exit.",
)
@click.pass_context
def main(ctx):
    """Run Kubeless functions locally, in the real runtime contract, with hot reload."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())  # no command: the help, and success


def entry(argv=None):
    """The console script and `python -m kubeless_local`: `main`; after a command of ENDS_AT_ONCE, its output
    flushed, the process ends without the interpreter's teardown."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ENDS_AT_ONCE:
        main(args, prog_name="kubeless-local")
        return
    try:
        main(args, prog_name="kubeless-local")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)  # as the interpreter says a SystemExit's message
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # its reader went away (a closed pipe): nothing more can reach it
    os._exit(code)

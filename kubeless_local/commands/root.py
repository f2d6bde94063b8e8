"""The `kubeless-local` group: the families' commands under one root. No command module imports this one.

A command's module is imported only when that command runs (or the root's help lists them all). The console
script's entry (commands/entry.py) answers `--version` and the plainest `call`s without this group, and without
click; every other line comes here. To add a command: its row in COMMANDS."""

import importlib

import click

from kubeless_local.commands.entry import version_line
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
            from kubeless_local.commands.output import exit_with

            exit_with(exc)


def print_version(ctx, _param, value):
    """`--version`, as click's version_option prints it (entry.version_line: the entry prints it without click)."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_line())
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
    """The console script of an install made before its entry moved to commands/entry.py: that entry."""
    from kubeless_local.commands import entry as console

    console.entry(argv)

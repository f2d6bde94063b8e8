"""The `kubeless-local` group: the families' commands under one root. No command module imports this one."""

import click

from kubeless_local import __version__
from kubeless_local.commands import cluster, dashboard, events, gateway, history, kubeless, local, runtime
from kubeless_local.commands.common import exit_with
from kubeless_local.errors import UserError


class Main(click.Group):
    """Every sub-command's UserError → `exit_with`, also those raised while its options are parsed."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)  # parses the sub-command's options too, so their types may raise UserError
        except UserError as exc:
            exit_with(exc)


@click.group(cls=Main, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubeless-local")
@click.pass_context
def main(ctx):
    """Run Kubeless functions locally, in the real runtime contract, with hot reload."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())  # no command: the help, and success


for _command in (
    local.init,
    local.dev,
    local.run,
    local.call,
    local.list_functions,
    local.logs,
    local.debug_config,
    history.history,
    history.replay,
    dashboard.dashboard,
    kubeless.get_server_config,
    runtime.runtime,
    cluster.push,
    events.emit,
    events.topic,
    cluster.cluster,
    gateway.gateway,
    kubeless.function,
    kubeless.trigger,
    kubeless.up,
    kubeless.down,
):
    main.add_command(_command)

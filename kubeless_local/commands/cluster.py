"""A real cluster: `push` and `cluster up|down|status` (kind)."""

import json
import sys
from pathlib import Path

import click

from kubeless_local.commands.common import ignore_option, json_option
from kubeless_local.commands.output import user_errors
from kubeless_local.errors import UserError
from kubeless_local.paths import project_folder


def interactive():
    return sys.stdin.isatty()


class DryRunCommand(click.Command):
    """`--dry-run` alone is a flag (so `push --dry-run PATH` keeps PATH); `--dry-run=server` names the mode,
    as kubectl spells them."""

    def parse_args(self, ctx, args):
        args = ["--dry-run-mode=" + a.split("=", 1)[1] if a.startswith("--dry-run=") else a for a in args]
        return super().parse_args(ctx, args)


@click.command(cls=DryRunCommand)
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--context", help="Kubeconfig context (default: the current one).")
@click.option("-n", "--namespace", help="Namespace (default: the manifests', else the context's, else default).")
@click.option(
    "--dry-run",
    "dry_run_flag",
    is_flag=True,
    help="Print what would be applied, contact no server (= --dry-run=client); --dry-run=server: the API "
    "server validates it and stores nothing.",
)
@click.option("--dry-run-mode", "dry_run", type=click.Choice(["none", "client", "server"]), default="none", hidden=True)
@click.option("--prune", is_flag=True, help="Delete what push applied earlier for this project and is gone locally.")
@click.option("--wait", is_flag=True, help="Wait for each function's Deployment, call it once, print the answer.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), help="Print the objects as stored, not a summary.")
@click.option("-y", "--yes", is_flag=True, help="Push to a context that is not a local cluster without asking.")
@click.option("--force-conflicts", is_flag=True, help="Take over fields another field manager owns.")
@ignore_option()
@user_errors
def push(path, context, namespace, dry_run_flag, dry_run, prune, wait, output, yes, force_conflicts, ignore):
    """Apply the project's Functions and triggers to a Kubernetes cluster running Kubeless (server-side apply)."""
    if dry_run_flag and dry_run == "none":
        dry_run = "client"
    from kubeless_local.cluster import push as pusher
    from kubeless_local.cluster.render import to_yaml

    def show(objects):
        if output == "json":
            click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            click.echo(to_yaml(objects), nl=False)

    if dry_run == "client":
        show(pusher.client_dry_run(path, namespace, context, ignore))
        return
    target = pusher.target(context)
    if not target.is_local and not yes:
        where = "context %s (%s) is not a local cluster" % (target.context, target.server)
        if not interactive():
            raise UserError("%s; pass --yes to push there" % where)
        click.confirm("%s. Push there?" % where.capitalize(), abort=True)
    results = pusher.push(
        target,
        path,
        namespace,
        server_dry_run=dry_run == "server",
        prune=prune,
        force_conflicts=force_conflicts,
        ignore=ignore,
    )
    if output:
        show([r.object for r in results if r.object])
    else:
        for result in results:
            click.echo(result.line())
    functions = [r for r in results if r.kind == "Function" and r.object]
    project = project_folder(Path(path).resolve())
    for line in pusher.missing_sources(target, functions, project):
        click.echo("warning: " + line, err=True)
    if wait and dry_run == "none":
        for name, answer in pusher.wait_and_call(target, functions):
            click.echo("%s: %s" % (name, answer))


@click.group()
def cluster():
    """A local kind cluster running Kubeless v1.0.8 with the runtime images built here."""


name_option = click.option("--name", default="kubeless", show_default=True, help="The kind cluster's name.")


@cluster.command(name="up")
@name_option
@click.option("--image", default=None, help="kind node image (default: kindest/node:v1.21.14, see docs/push.md).")
@user_errors
def cluster_up(name, image):
    """Create the cluster if needed, install Kubeless, load the local runtime images."""
    from kubeless_local.cluster import kind

    kind.up(name, image or kind.DEFAULT_IMAGE, say=click.echo)


@cluster.command(name="down")
@name_option
@user_errors
def cluster_down(name):
    """Delete the kind cluster."""
    from kubeless_local.cluster import kind

    kind.down(name, say=click.echo)


@cluster.command(name="status")
@name_option
@json_option
@user_errors
def cluster_status(name, output):
    """Whether the cluster exists, Kubeless is installed and its controller is available."""
    from kubeless_local.cluster import kind

    state = kind.status(name)
    if output == "json":
        click.echo(json.dumps(state, indent=2))
        return
    click.echo("cluster %s: %s" % (name, "exists (context kind-%s)" % name if state["exists"] else "not created"))
    if state["exists"]:
        click.echo("kubeless: %s" % ("installed" if state["kubeless"] else "not installed"))
        click.echo("controller: %s" % ("available" if state["controller_ready"] else "not available"))

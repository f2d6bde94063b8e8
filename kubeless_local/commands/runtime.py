"""`runtime build|ls`: the runtime images of the docker backend."""

import json

import click

from kubeless_local.commands.common import json_option
from kubeless_local.commands.output import user_errors
from kubeless_local.commands.serving import print_table

# ---------------------------------------------------------------- runtime images (docker backend)


@click.group()
def runtime():
    """Runtime images of the docker backend."""


@runtime.command(name="build")
@click.argument("runtimes", nargs=-1)
@user_errors
def runtime_build(runtimes):
    """Build the runtime images (all of the catalog's runtimes, or RUNTIMES, e.g. python3.11)."""
    from kubeless_local.emulator import images
    from kubeless_local.runtimes import Catalog

    catalog = Catalog()
    chosen = (
        [catalog.resolve(name, require_local=False)[0] for name in runtimes]
        if runtimes
        else [rt for rt in catalog.all() if rt.image]
    )
    client = images.docker_client()
    for rt, seconds in build_with_progress(chosen, client):
        click.echo("built %s (%s) in %.0f s" % (rt.image, rt.name, seconds))


def build_with_progress(runtimes, client):
    """images.build_images with a live table: one row per image (spinner, state, time, last output line)."""
    from rich.console import Console
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.table import Table

    from kubeless_local.emulator import images

    console = Console()
    status = {rt.name: ("waiting", "", None) for rt in runtimes}

    def render():
        table = Table(box=None, show_header=False)
        for rt in runtimes:
            state, last, seconds = status[rt.name]
            icon = Spinner("dots") if state == "building" else {"done": "[green]✓", "failed": "[red]✗"}.get(state, " ")
            table.add_row(icon, rt.image, state, "" if seconds is None else "%.0fs" % seconds, "[dim]" + last[:70])
        return table

    with Live(render(), console=console, refresh_per_second=8, transient=not console.is_terminal) as live:

        def on_progress(rt, state, line, seconds):
            status[rt.name] = (state, line.strip(), seconds)
            live.update(render())

        return images.build_images(runtimes, client, on_progress)


@runtime.command(name="ls")
@json_option
@user_errors
def runtime_ls(output):
    """The runtime images: which image each runtime uses (and why), and whether it is built."""
    from kubeless_local.emulator import images
    from kubeless_local.runtimes import Catalog

    rows = images.image_rows(Catalog(), images.docker_client(required=False))
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(
        rows,
        [
            ("RUNTIME", lambda r: r["runtime"]),
            ("IMAGE", lambda r: r["image"] or "none (process only)"),
            ("FROM", lambda r: r["source"]),
            ("PRESENT", lambda r: ("yes (stale: rebuild)" if r["stale"] else "yes") if r["present"] else "no"),
            ("ID", lambda r: r["id"]),
            ("SIZE", lambda r: "%d MB" % r["size_mb"] if r["present"] else ""),
            ("CREATED", lambda r: r["created"]),
        ],
    )

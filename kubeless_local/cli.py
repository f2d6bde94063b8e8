"""The `kubeless-local` command: parse, call the engine, print. No logic of its own."""
import functools
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import click

from kubeless_local import __version__
from kubeless_local import spec as specs
from kubeless_local.errors import UserError
from kubeless_local.paths import TEMPLATES_DIR

COLORS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green"]


def user_errors(command):
    """Errors the user can fix: one line on stderr, exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            click.echo("error: %s" % exc, err=True)
            sys.exit(exc.exit_code)

    return wrapper


# Options shared by several commands: defined once.
backend_option = click.option("--backend", default=lambda: os.environ.get("KUBELESS_LOCAL_BACKEND"),
                              show_default="$KUBELESS_LOCAL_BACKEND, else `backend:` in .kubeless-local.yaml, else process",
                              help="Where functions run: process (local processes), docker (runtime images, one "
                                   "container per function), auto (docker when an engine answers and the images "
                                   "exist, else process).",
                              type=click.Choice(["process", "docker", "auto"]))
json_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubeless-local")
def main():
    """Run Kubeless functions locally, in the real runtime contract, with hot reload."""


# ---------------------------------------------------------------- init


@main.command()
@click.argument("name")
@click.option("-r", "--runtime", required=True, help="Runtime, e.g. python3.11 (see get-server-config).")
@user_errors
def init(name, runtime):
    """Create NAME/ with a handler, a deps file and function.yaml."""
    from kubeless_local.runtimes import Catalog

    specs.validate_name("function name", name)
    rt, notice = Catalog().resolve(runtime, require_local=False)
    template = TEMPLATES_DIR / rt.server
    if not template.is_dir():
        raise UserError("no template for the %s runtime yet (looked in %s)" % (rt.id, template))
    target = Path(name)
    if target.exists() and any(target.iterdir()):
        raise UserError("%s/ already exists and is not empty; choose another name or remove it" % name)
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(template.rglob("*")):
        if any(part in specs.SKIP_DIRS for part in source.relative_to(template).parts):
            continue  # e.g. __pycache__ that pip compiled beside an installed template
        dest = target / source.relative_to(template)
        if source.is_dir():
            dest.mkdir(exist_ok=True)
            continue
        text = source.read_text().replace("{{name}}", name).replace("{{runtime}}", runtime)
        dest.write_text(text)
        click.echo("  created %s" % dest)
    if notice:
        click.echo(notice)
    click.echo("Next: cd %s && kubeless-local dev" % name)


# ---------------------------------------------------------------- dev / run


def print_table(rows, columns):
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for title, _ in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*[fmt(row) for _, fmt in columns])
    Console().print(table)


def _count(value):
    return "-" if value is None else str(value)


FUNCTION_COLUMNS = [
    ("NAME", lambda r: r["name"]), ("RUNTIME", lambda r: r["runtime"]), ("STATE", lambda r: r["state"]),
    ("URL", lambda r: r["url"] if r["port"] else "-"), ("CALLS", lambda r: _count(r["calls"])),
    ("ERRORS", lambda r: _count(r["errors"])), ("RELOADS", lambda r: str(r["reloads"])),
]


class LogPrinter(threading.Thread):
    """Prints every function's log lines with a coloured name prefix, like `docker compose up`."""

    def __init__(self, hub):
        super().__init__(daemon=True)
        self.queue = hub.subscribe()
        self.colors = {}
        self.width = 8

    def run(self):
        while True:
            line = self.queue.get()
            if line is None:
                return
            color = self.colors.setdefault(line.function, COLORS[len(self.colors) % len(COLORS)])
            self.width = max(self.width, len(line.function))
            prefix = click.style(line.function.ljust(self.width) + " |", fg=color)
            for text in line.text.splitlines() or [""]:
                click.echo("%s %s" % (prefix, click.style(text, dim=True) if line.stream == "system" else text))

    def close(self):
        self.queue.put(None)
        self.join(timeout=2)


def _interrupt(*_):
    raise KeyboardInterrupt  # SIGTERM stops `dev` the way Ctrl-C does


def serve(root, backend_name, manifests=None):
    """Start the functions, print the table, stream logs until Ctrl-C, stop everything."""
    from kubeless_local.emulator.session import DevSession

    session = DevSession(root, backend_name, manifests, say=lambda text: click.echo(text, err=True))
    printer = LogPrinter(session.logs)
    printer.start()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        session.start()
        time.sleep(0.05)  # let start-up log lines print before the table
        print_table(session.status(), FUNCTION_COLUMNS)
        click.echo(click.style("Watching %s for changes; Ctrl-C stops." % session.root, dim=True))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("\nstopping…", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        session.stop()
        printer.close()


@main.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@backend_option
@user_errors
def dev(path, backend):
    """Run every Function under PATH, watch its files and hot-reload on save."""
    root = Path(path).resolve()
    serve(root if root.is_dir() else root.parent, backend,
          manifests=specs.load(root) if root.is_file() else None)


def parse_pairs(values, flag):
    """`k=v`, `k:v` and comma lists, as the Kubeless CLI accepts them."""
    pairs = []
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            match = re.match(r"^([^=:]+)[=:](.*)$", item)
            if not match:
                raise UserError("%s %r must be KEY=VALUE (or KEY:VALUE)" % (flag, item))
            pairs.append((match.group(1).strip(), match.group(2)))
    return pairs


@main.command()
@click.argument("file", type=click.Path(exists=True))
@click.option("-r", "--runtime", required=True, help="Runtime, e.g. python3.11.")
@click.option("--handler", required=True, help="<module>.<function>, e.g. handler.hello.")
@click.option("--name", help="Function name (default: from the handler's module).")
@click.option("-d", "--dependencies", type=click.Path(exists=True, dir_okay=False), help="Deps file (requirements.txt, package.json…).")
@click.option("-e", "--env", multiple=True, help="K=V (repeat or comma-separate).")
@click.option("-l", "--label", multiple=True, help="k=v (repeat or comma-separate).")
@click.option("--timeout", default="180", show_default=True, help="Seconds before a call answers 408.")
@click.option("--port", type=click.IntRange(1, 65535), help="Local port (default: a free one from 8080).")
@click.option("--memory", help="Memory limit, e.g. 128Mi (passed as FUNC_MEMORY_LIMIT).")
@click.option("--isolation", type=click.Choice(["warm", "per-call"]), help="per-call: fresh module state per call (legacy parity).")
@click.option("--runtime-image", help="Custom runtime image (docker backend): any image serving /healthz on FUNC_PORT.")
@backend_option
@user_errors
def run(file, runtime, handler, name, dependencies, env, label, timeout, port, memory, isolation, runtime_image, backend):
    """Run one function from FILE without a manifest, with hot reload (Kubeless CLI flags)."""
    from kubeless_local.emulator import backends

    source = Path(file).resolve()
    name = name or re.sub(r"[^a-z0-9-]+", "-", handler.split(".")[0].lower()).strip("-") or "function"
    fn = specs.function_from_files(name, source, runtime, handler, deps_file=dependencies, timeout=timeout,
                                   env=parse_pairs(env, "--env"), labels=dict(parse_pairs(label, "--label")),
                                   memory=memory, port=port, isolation=isolation, image=runtime_image or "",
                                   origin="kubeless-local run %s" % file)
    if runtime_image and (backend or backends.project_default(source.parent) or "process") == "process":
        raise UserError("--runtime-image needs the docker backend: add --backend docker")
    serve(source.parent if source.is_file() else source, backend, manifests=specs.Manifests(functions=[fn]))


# ---------------------------------------------------------------- talking to a running dev


@main.command()
@click.argument("name")
@click.option("-d", "--data", help="Event data; a JSON object is sent as application/json. Without it: GET.")
@click.option("--path", default="/", show_default=True, help="Request path.")
@user_errors
def call(name, data, path):
    """Call a running function like `kubeless function call`."""
    from kubeless_local.client import AdminClient, call as call_function

    row = AdminClient().function(name)
    if not row["port"]:
        raise UserError("%s is not running (%s): %s" % (name, row["state"], row["error"]))
    response = call_function(row["url"], data, path=path)
    if response.status_code == 408:
        raise_exit("Request timeout exceeded", 1)
    click.echo(response.text, nl=not response.text.endswith("\n"))
    if response.status_code >= 400:
        raise_exit("the function answered %d %s" % (response.status_code, response.reason), 1)


def raise_exit(message, code):
    click.echo("error: %s" % message, err=True)
    sys.exit(code)


@main.command(name="ls")
@json_option
@user_errors
def list_functions(output):
    """List functions of the running dev: state, URL, calls, errors, reloads."""
    from kubeless_local.client import AdminClient

    rows = AdminClient().functions()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(rows, FUNCTION_COLUMNS)
    for row in rows:
        if row["error"]:
            click.echo("%s: %s" % (click.style(row["name"], bold=True), row["error"].strip().splitlines()[0]))


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@user_errors
def logs(name, follow, tail):
    """Print a function's logs."""
    from kubeless_local.client import AdminClient

    client = AdminClient()
    client.function(name)
    try:
        for line in client.logs(name, follow=follow, tail=tail):
            click.echo(line["text"])
    except KeyboardInterrupt:
        pass


@main.command(name="get-server-config")
@json_option
@user_errors
def get_server_config(output):
    """List the runtimes of the catalog and where they can run."""
    from kubeless_local.emulator import backends, images
    from kubeless_local.runtimes import Catalog

    client = images.docker_client(required=False)
    rows = backends.server_config(Catalog(), client)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo("Supported Runtimes are: %s" % ", ".join(r["runtime"] for r in rows if r["process"] or r["docker"]))
    click.echo("  process backend: %s" % (", ".join(r["runtime"] for r in rows if r["process"]) or "none"))
    click.echo("  docker backend:  %s" % (", ".join(r["runtime"] for r in rows if r["docker"]) or
                                          ("none (no Docker engine answers)" if client is None else "none built")))
    docker_state = (lambda r: "yes" if r["docker"] else "no (no image: process only)" if not r["image"]
                    else "no (engine not running)" if client is None else "no (not built)")
    print_table(rows, [("RUNTIME", lambda r: r["runtime"]),
                       ("PROCESS", lambda r: "yes" if r["process"] else "no (toolchain missing)"),
                       ("DOCKER", docker_state), ("IMAGE", lambda r: r["image"]),
                       ("ALSO ACCEPTS", lambda r: r["legacy"])])


# ---------------------------------------------------------------- runtime images (docker backend)


@main.group()
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
    chosen = [catalog.resolve(name, require_local=False)[0] for name in runtimes] if runtimes else \
        [rt for rt in catalog.all() if rt.image]
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
    print_table(rows, [("RUNTIME", lambda r: r["runtime"]), ("IMAGE", lambda r: r["image"] or "none (process only)"),
                       ("FROM", lambda r: r["source"]), ("PRESENT", lambda r: ("yes (stale: rebuild)" if r["stale"] else "yes") if r["present"] else "no"),
                       ("ID", lambda r: r["id"]), ("SIZE", lambda r: "%d MB" % r["size_mb"] if r["present"] else ""),
                       ("CREATED", lambda r: r["created"])])


if __name__ == "__main__":
    main()

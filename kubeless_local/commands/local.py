"""Local development: `init`, `dev`, `run`, `ls`, `logs`, `debug-config`."""

import json
import time
from pathlib import Path

import click

from kubeless_local import spec as specs
from kubeless_local.commands.common import (
    DURATION,
    QUANTITY,
    backend_option,
    debug_names,
    debug_option,
    debug_port_option,
    env_option,
    ignore_option,
    label_option,
    output_option,
    runtime_option,
    timestamp,
)
from kubeless_local.commands.output import headline, say_session, user_errors
from kubeless_local.commands.running import run_function
from kubeless_local.commands.serving import FUNCTION_COLUMNS, WIDE_COLUMNS, print_table, serve
from kubeless_local.errors import UserError
from kubeless_local.paths import project_folder

# ---------------------------------------------------------------- init


@click.command()
@click.argument("name")
@runtime_option
@click.option(
    "--force", is_flag=True, help="Write the template files into a folder that is not empty (other files are kept)."
)
@user_errors
def init(name, runtime, force):
    """Create NAME/ with a handler, a deps file and function.yaml."""
    from kubeless_local.emulator import scaffold

    result = scaffold(name, runtime, force=force, on_line=lambda line: click.echo("  " + line))
    for path in result.created:
        click.echo("  created %s" % path)
    if result.notice:
        click.echo(result.notice)
    click.echo("Next: cd %s && kubeless-local dev" % name)


@click.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@backend_option()
@ignore_option()
@click.option(
    "--kafka-brokers",
    envvar="KAFKA_BROKERS",
    metavar="HOST:PORT[,…]",
    help="A real Kafka broker: dev consumes from it for the KafkaTriggers, as the Kubeless controller does "
    "(default: $KAFKA_BROKERS, else `kafka: {brokers: …}` in .kubeless-local.yaml, else embedded topics).",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of the dashboard on 127.0.0.1 (default: a free one; its link is printed on start).",
)
@click.option("--no-dashboard", is_flag=True, help="Serve no dashboard.")
@click.option(
    "--read-only", is_flag=True, help="A dashboard that only shows (no emit, fire or replay): for screen sharing."
)
@click.option(
    "--gateway-port",
    type=click.IntRange(0, 65535),
    help="Port of the HTTPTrigger gateway on 127.0.0.1 (default 8480; 0: any free one); it listens only when the"
    " project has HTTPTriggers.",
)
@click.option(
    "--gateway-https-port",
    type=click.IntRange(0, 65535),
    help="Port of the gateway's HTTPS listener (default 8443), once an HTTPTrigger has tls or tls-secret.",
)
@debug_option()
@debug_port_option
@user_errors
def dev(
    path,
    backend,
    ignore,
    kafka_brokers,
    dashboard_port,
    no_dashboard,
    read_only,
    gateway_port,
    gateway_https_port,
    debug,
    debug_port,
):
    """Run every Function under PATH, watch its files and hot-reload on save."""
    root = Path(path).resolve()
    serve(
        project_folder(root),
        backend,
        manifests=specs.load(root, ignore) if root.is_file() else None,
        ignore=ignore,
        kafka_brokers=kafka_brokers,
        dashboard=None if no_dashboard else (dashboard_port, read_only),
        gateway_port=gateway_port,
        gateway_https_port=gateway_https_port,
        debug=debug_names(debug),
        debug_port=debug_port,
    )


@click.command()
@click.argument("file")
@runtime_option
@click.option("--handler", required=True, help="<module>.<function>, e.g. handler.hello.")
@click.option("--name", help="Function name (default: from the handler's module).")
@click.option("-d", "--dependencies", help="Deps file (requirements.txt, package.json…) or its URL.")
@env_option()
@label_option()
@click.option("--timeout", default=specs.DEFAULT_TIMEOUT, show_default=True, help="Seconds before a call answers 408.")
@click.option("--port", type=click.IntRange(1, 65535), help="Local port (default: a free one from 8080).")
@click.option(
    "--memory",
    type=QUANTITY,
    help="Memory limit, a Kubernetes quantity, e.g. 128Mi: past it the function is stopped and restarted, as an "
    "OOMKilled container (FUNC_MEMORY_LIMIT tells the function).",
)
@click.option(
    "--cpu",
    type=QUANTITY,
    help="CPU limit, a Kubernetes quantity, e.g. 500m: the docker backend's container is held to it, as the pod's "
    "(the process backend does not limit CPU).",
)
@click.option(
    "--isolation",
    type=click.Choice(specs.ISOLATIONS),
    help="per-call: fresh module state per call (legacy parity; Python, Ruby, PHP).",
)
@click.option("--runtime-image", help="Custom runtime image (docker backend): any image serving /healthz on FUNC_PORT.")
@click.option(
    "--secrets",
    multiple=True,
    help="Secret NAME (repeat or comma-separate): the files of secrets/NAME/ beside the code, at /NAME "
    "read-only in the docker backend; a local process finds the folder in $KUBELESS_LOCAL_SECRET_<NAME>.",
)
@backend_option()
@ignore_option()
@debug_option(names=False)
@debug_port_option
@user_errors
def run(
    file,
    runtime,
    handler,
    name,
    dependencies,
    env,
    label,
    timeout,
    port,
    memory,
    cpu,
    isolation,
    runtime_image,
    secrets,
    backend,
    ignore,
    debug,
    debug_port,
):
    """Run one function from FILE without a manifest, with hot reload (Kubeless CLI flags).

    FILE: a file, a folder, an archive (.zip, .tar.gz, .tgz, .tar.bz2, .tar.xz) or a URL of one."""
    run_function(**locals())  # every option, as declared above


# ---------------------------------------------------------------- talking to a running dev


@click.command(name="ls")
@output_option("table", "json", "yaml", "wide")
@user_errors
def list_functions(output):
    """List functions of the running dev: state, URL, calls, errors, reloads.

    `-o wide` adds backend, pid, restarts and ready ms."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    rows = client.functions()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(rows, sort_keys=False), nl=False)
        return
    columns = WIDE_COLUMNS if output == "wide" else FUNCTION_COLUMNS
    print_table(rows, [*columns, ("PROJECT", lambda r: r["project"])] if client.across else columns)
    for row in rows:
        if row["error"]:
            click.echo("%s: %s" % (click.style(row["name"], bold=True), headline(row["error"])))
        if row.get("dead_letters"):
            click.echo(
                "%s: %d dead-lettered event(s); `kubeless-local topic ls` shows them"
                % (click.style(row["name"], bold=True), row["dead_letters"])
            )
        for trigger in row.get("cron") or []:
            if trigger["error"]:
                click.echo("%s: %s" % (click.style(trigger["name"], bold=True), trigger["error"]))


@click.command(name="debug-config")
@click.argument("name")
@click.option(
    "--editor", type=click.Choice(["vscode"]), default="vscode", show_default=True, help="Whose configuration."
)
@user_errors
def debug_config(name, editor):
    """Print the editor's attach configuration for function NAME running under `dev --debug`.

    For VS Code: an entry of `configurations` in .vscode/launch.json, whose path mappings make breakpoints
    set in your files bind in the code the server runs."""
    from kubeless_local.emulator import AdminClient, debugging

    client = AdminClient()
    session, row = client.owner(name)
    say_session(client, session)
    if not row.get("debug"):
        raise UserError("%s runs under no debugger; start it with `kubeless-local dev --debug %s`" % (name, name))
    click.echo(json.dumps(debugging.editor_config(editor, row), indent=2))


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@click.option("--since", type=DURATION, help="Only lines newer than this, e.g. 30s, 10m, 1h (after --tail).")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with its time (UTC, RFC 3339).")
@user_errors
def logs(name, follow, tail, since, timestamps):
    """Print a function's logs."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session, _ = client.owner(name)
    say_session(client, session)
    oldest = time.time() - since if since is not None else None
    try:
        for line in session.logs(name, follow=follow, tail=tail):
            if oldest is not None and line.get("time", 0) < oldest:
                continue
            if not timestamps:
                click.echo(line["text"])
                continue
            for text in line["text"].splitlines() or [""]:  # a traceback is one entry of several lines
                click.echo("%s %s" % (timestamp(line.get("time", 0)), text))
    except KeyboardInterrupt:
        pass

"""The Kubeless CLI's verbs against the local session, so `alias kubeless=kubeless-local` runs scripts
unchanged: `function deploy|update|delete|call|ls|logs|describe|top`, `trigger cronjob|http|kafka|nats
create|update|delete|list`, and `up [-d]` / `down` (the background session `deploy` starts when none runs).

`deploy` writes the Function as `<name>.yaml` (its triggers as `<name>.<kind>.yaml`) into the current
folder, the project; the session running there picks it up (its watcher) and `deploy` waits until
the function has started. Parsing and printing only: the objects come from kubeless_objects.
"""

import functools
import json
import os
from pathlib import Path

import click
import yaml

from kubeless_local import kubeless_objects as objects
from kubeless_local import spec as specs
from kubeless_local.commands import call as call_command
from kubeless_local.commands import local
from kubeless_local.commands.common import (
    backend_option,
    env_option,
    ignore_option,
    json_option,
    label_option,
    output_option,
)
from kubeless_local.commands.output import headline, user_errors
from kubeless_local.commands.serving import names, parse_pairs, print_table, serve
from kubeless_local.emulator import backends, background
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME

SETTLED_TIMEOUT = 600.0  # a first install of dependencies can take minutes


def info(message):
    """The Kubeless CLI logs its progress on stderr (logrus): `INFO[0000] …`."""
    click.echo("INFO[0000] %s" % message, err=True)


# ---------------------------------------------------------------- the session of this folder


def session_here():
    """The state folder of the session that runs the current folder; one started in the background if none."""
    folder = Path.cwd()
    found = background.project_session(folder)
    if found is None:
        info(
            "No kubeless-local session runs for %s: starting one in the background (`kubeless-local down` stops it)"
            % folder
        )
        found = background.start(folder, deployed_only=True)  # a cluster: what the verbs deploy, not the folder's YAML
    return found


# Debugging: Ready, under a debugger (dev --debug); Reloading: the last good code serves while a save is handed over
SERVING_STATES = ("Ready", "Debugging", "Reloading")


def wait_settled(state_dir, name, present=True):
    from kubeless_local.client import SessionClient

    return SessionClient(state_dir).wait_settled(name, present, SETTLED_TIMEOUT)


# ---------------------------------------------------------------- writing manifests


def write_manifest(path: Path, document):
    """Write an object the verbs deploy; the session `function deploy` started loads it (and only such)."""
    text = objects.to_go_yaml(document)
    background.record_deployed(path)
    tmp = path.with_name(".%s.tmp" % path.name)
    tmp.write_text(text)
    os.replace(tmp, path)  # the watcher never sees a half-written file


def check_deployed(path: Path):
    """What the session will say of the object written to `path`, said here (exit 2) instead of waiting for a
    function that never comes: its own errors, and its name taken by another manifest of the folder."""
    specs.load(path)
    for error in specs.Loader(Path.cwd()).collect().errors:
        if error.path == path or str(path) in error.message:
            raise UserError(error.message)


def remove_manifest(path: Path):
    path.unlink(missing_ok=True)
    background.record_deployed(path, present=False)


def function_file(name):
    return Path.cwd() / ("%s.yaml" % name)


def trigger_file(name, kind):
    return Path.cwd() / ("%s.%s.yaml" % (name, kind.lower()))


def existing_function(name):
    path = function_file(name)
    if not path.is_file():
        raise UserError("function %s not found in %s (no %s); deploy it first" % (name, Path.cwd(), path.name))
    for doc in specs.load_documents(path):
        if isinstance(doc, dict) and doc.get("kind") == "Function" and (doc.get("metadata") or {}).get("name") == name:
            return doc
    raise UserError("%s holds no Function %s" % (path, name))


# ---------------------------------------------------------------- options the verbs share


# -n/--namespace as the Kubeless CLI takes it. A session runs a name once, whatever its namespace, so a verb on one
# object finds it by name; a manifest written here gets it; a listing keeps only those of it.
def namespace_option(role):
    default, help_ = {
        "write": ("default", "Namespace written into the manifest."),
        "list": (None, "Only those of this namespace (default: every one)."),
        "find": ("default", "As `kubeless` takes it; here a name runs once, whatever its namespace."),
    }[role]
    return click.option("-n", "--namespace", default=default, show_default=default is not None, help=help_)


dryrun_output_option = output_option("yaml", "json", help="How --dryrun prints the object.")


# ---------------------------------------------------------------- function


@click.group(name="function")
def function():
    """Functions, as `kubeless function …` (against the local session)."""


def deploy_options(command):
    options = [
        click.option("-f", "--from-file", help="Code: a file, a folder, an archive (.zip, .tar.gz…) or a URL."),
        click.option("--handler", help="<module>.<function>, e.g. handler.hello."),
        click.option("-r", "--runtime", help="Runtime, e.g. python3.11."),
        click.option("-d", "--dependencies", help="Deps file (requirements.txt, package.json…) or its URL."),
        env_option(),
        label_option(),
        click.option("--secrets", multiple=True, help="Secret NAME mounted at /NAME (locally: secrets/NAME/)."),
        click.option("--memory", help="Memory request and limit, e.g. 128Mi."),
        click.option("--cpu", help="CPU request and limit, e.g. 200m."),
        click.option("--timeout", help="Seconds before a call answers 408 (default 180)."),
        click.option("--port", type=click.IntRange(1, 65535), help="The function's port; locally used when free."),
        click.option("--servicePort", "service_port", type=click.IntRange(1, 65535), help="The Service's port."),
        click.option("--schedule", help="Cron schedule: also writes a CronJobTrigger of the function's name."),
        click.option("--runtime-image", help="Custom runtime image (docker backend)."),
        namespace_option("write"),
        click.option("--dryrun", is_flag=True, help="Print the Function, write nothing."),
        dryrun_output_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def function_flags(flags) -> objects.FunctionFlags:
    """click's values of deploy_options, parsed."""
    return objects.FunctionFlags(
        namespace=flags["namespace"],
        runtime=flags["runtime"],
        handler=flags["handler"],
        from_file=flags["from_file"],
        dependencies=flags["dependencies"],
        env=tuple(parse_pairs(flags["env"], "--env")),
        labels=tuple(parse_pairs(flags["label"], "--label", bare_keys=True)),
        secrets=tuple(names(flags["secrets"])),
        memory=flags["memory"],
        cpu=flags["cpu"],
        timeout=flags["timeout"],
        port=flags["port"],
        service_port=flags["service_port"],
        schedule=flags["schedule"],
        runtime_image=flags["runtime_image"],
    )


def print_object(document, output):
    click.echo(objects.to_json(document) if output == "json" else objects.to_go_yaml(document), nl=False)


def apply_function(name, document, flags: objects.FunctionFlags, verb):
    """Write the Function (and its CronJobTrigger), wait until the session has (re)started it."""
    objects.local_files(document, flags, Path.cwd())
    state_dir = session_here()
    info("%s function..." % ("Deploying" if verb == "deploy" else "Redeploying"))
    path = function_file(name)
    previous = path.read_bytes() if path.exists() else None
    write_manifest(path, document)
    try:
        check_deployed(path)
    except UserError:
        if previous is None:
            remove_manifest(path)
        else:
            path.write_bytes(previous)
        raise
    cron = objects.schedule_trigger(name, flags)
    if cron is not None:
        write_manifest(trigger_file(name, "CronJobTrigger"), cron)
    info("Function %s %s for deployment" % (name, "submitted" if verb == "deploy" else "updated"))
    row = wait_settled(state_dir, name)
    if row["state"] != "Ready":
        click.echo("warning: %s is %s: %s" % (name, row["state"], headline(row["error"] or "")), err=True)
    info("Check the deployment status executing 'kubeless function ls %s'" % name)


@function.command()
@click.argument("name")
@deploy_options
def deploy(name, dryrun, output, **flags):
    """Deploy function NAME: writes NAME.yaml here; the session of this folder runs it."""
    specs.validate_name("function", name)
    parsed = function_flags(flags)
    document = objects.new_function(name, parsed)
    if dryrun:
        print_object(document, output)
        return
    if function_file(name).exists():
        raise UserError("function %s already exists (%s); use `function update %s`" % (name, function_file(name), name))
    apply_function(name, document, parsed, "deploy")


@function.command()
@click.argument("name")
@deploy_options
def update(name, dryrun, output, **flags):
    """Update function NAME (NAME.yaml here): the flags given replace its values."""
    deployed = existing_function(name)
    parsed = function_flags(flags)
    document = objects.update_function(deployed, parsed)
    if dryrun:
        print_object(document, output)
        return
    apply_function(name, document, parsed, "update")


@function.command()
@click.argument("name")
@namespace_option("find")
def delete(name, namespace):
    """Delete function NAME: removes NAME.yaml (and its CronJobTrigger) here; the session stops it."""
    path = function_file(name)
    existing_function(name)
    others = [
        d for d in specs.load_documents(path) if isinstance(d, dict) and (d.get("metadata") or {}).get("name") != name
    ]
    if others:
        raise UserError("%s holds other objects too; remove Function %s there" % (path, name))
    remove_manifest(path)
    remove_manifest(trigger_file(name, "CronJobTrigger"))
    state_dir = background.project_session(Path.cwd())
    if state_dir is not None:
        wait_settled(state_dir, name, present=False)


@function.command(name="call")
@click.argument("name")
@click.option("-d", "--data", help="Event data (empty: GET).")
@namespace_option("find")
@click.pass_context
def call(ctx, name, data, namespace):
    """Call function NAME, as `kubeless function call`."""
    ctx.invoke(call_command.call, name=name, data=data)


@function.command(name="logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@namespace_option("find")
@click.pass_context
def logs(ctx, name, follow, namespace):
    """Print function NAME's logs."""
    ctx.invoke(local.logs, name=name, follow=follow)


def rows_of(names_):
    from kubeless_local.emulator import AdminClient

    rows = AdminClient().functions()
    if names_:
        missing = set(names_) - {r["name"] for r in rows}
        if missing:
            raise UserError("function %s not found" % ", ".join(sorted(missing)))
        rows = [r for r in rows if r["name"] in names_]
    return rows


@function.command(name="ls")
@click.argument("names_", metavar="[NAME]...", nargs=-1)
@namespace_option("list")
@output_option("table", "yaml", "json", flag="--out")
def list_functions(names_, namespace, output):
    """List functions, as `kubeless function ls` (NAME NAMESPACE HANDLER RUNTIME DEPENDENCIES STATUS)."""

    rows = [r for r in rows_of(names_) if namespace is None or r.get("namespace", "default") == namespace]
    if output != "table":
        click.echo(json.dumps(rows, indent=2) if output == "json" else yaml.safe_dump(rows, sort_keys=False), nl=False)
        return
    print_table(
        rows,
        [
            ("NAME", lambda r: r["name"]),
            ("NAMESPACE", lambda r: r.get("namespace", "default")),
            ("HANDLER", lambda r: r.get("handler", "")),
            ("RUNTIME", lambda r: r["runtime"]),
            ("DEPENDENCIES", lambda r: ", ".join((r.get("deps") or "").split())),
            (
                "STATUS",
                lambda r: (
                    "1/1 READY"
                    if r["state"] in ("Ready", "Debugging", "Reloading")
                    else "0/1 NOT READY (%s)" % r["state"]
                ),
            ),
        ],
    )


@function.command()
@click.argument("name")
@namespace_option("find")
@output_option("text", "yaml", "json", flag="--out")
def describe(name, namespace, output):
    """Describe function NAME, as `kubeless function describe`."""
    row = rows_of([name])[0]
    labels = {**(row.get("labels") or {})}
    fields = [
        ("Name", row["name"]),
        ("Namespace", row.get("namespace", "default")),
        ("Handler", row.get("handler", "")),
        ("Runtime", row["runtime"]),
        ("Label", json.dumps(labels, separators=(",", ":"), sort_keys=True)),
        (
            "Envvar",
            json.dumps([{"name": k, "value": v} for k, v in (row.get("env") or {}).items()], separators=(",", ":")),
        ),
        ("Memory", row.get("memory", "0")),
        ("Dependencies", row.get("deps", "")),
        ("State", row["state"]),
        ("URL", row.get("url") or "-"),
    ]
    if output != "text":
        data = {k.lower(): v for k, v in fields}
        click.echo(json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False), nl=False)
        return
    for key, value in fields:
        click.echo("%-13s\t%s" % (key + ":", value))


# `kubeless function top`'s columns
TOP_KEYS = (
    "name",
    "namespace",
    "method",
    "total_calls",
    "total_failures",
    "total_duration_seconds",
    "avg_duration_seconds",
    "message",
)


def metrics_by_method(url):
    """{method: [calls, failures, duration sum]} from a function's /metrics (Prometheus text)."""
    import urllib.request

    from kubeless_local.emulator.supervisor import SCRAPER_AGENT

    found: dict = {}
    request = urllib.request.Request(url + "/metrics", headers={"User-Agent": SCRAPER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return found
    columns = {"function_calls_total": 0, "function_failures_total": 1, "function_duration_seconds_sum": 2}
    for line in text.splitlines():
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric not in columns:
            continue
        method = line.split('method="', 1)[1].split('"', 1)[0] if 'method="' in line else ""
        try:
            found.setdefault(method, [0.0, 0.0, 0.0])[columns[metric]] += float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            pass
    return found


def why_none(row):
    """Why a function shows no metrics: its state, or its image that serves none (never asked: a call)."""
    return row["state"] if row.get("metrics", True) else "its image serves no /metrics"


@function.command()
@click.option("--function", "name", help="Only this function.")
@namespace_option("list")
@output_option("table", "yaml", "json", flag="--out")
def top(name, namespace, output):
    """Calls, failures and durations per function and method, from its metrics (`kubeless function top`)."""

    stats = []
    for row in rows_of([name] if name else []):
        counted = row.get("serving") and row.get("url") and row.get("metrics", True)
        methods = metrics_by_method(row["url"]) if counted else {}
        for method, (calls, failures, seconds) in sorted(methods.items()) or [("", (0.0, 0.0, 0.0))]:
            stats.append(
                {  # TOP_KEYS
                    "name": row["name"],
                    "namespace": row.get("namespace", "default"),
                    "method": method,
                    "total_calls": int(calls),
                    "total_failures": int(failures),
                    "total_duration_seconds": seconds,
                    "avg_duration_seconds": seconds / calls if calls else 0.0,
                    "message": "" if methods else "no metrics (%s)" % why_none(row),
                }
            )
    if output != "table":
        click.echo(
            json.dumps(stats, indent=2) if output == "json" else yaml.safe_dump(stats, sort_keys=False), nl=False
        )
        return
    print_table(stats, [(key.upper(), lambda row, key=key: str(row[key])) for key in TOP_KEYS])


# ---------------------------------------------------------------- trigger


@click.group()
def trigger():
    """Triggers, as `kubeless trigger …`: manifests written into this folder."""


def spec_field(document, key):
    return str((document.get("spec") or {}).get(key, ""))


# What the local session does with each kind (`trigger WORD --help`); every one is written and pushed.
LOCALLY = {
    "CronJobTrigger": "fired on schedule by the session",
    "HTTPTrigger": "routed by Host and path by the session's gateway (`gateway explain`); pushed with its Ingress",
    "KafkaTrigger": "the session delivers its topic's events",
    "NATSTrigger": "the session delivers its topic's events",
}


def trigger_group(word, kind, build, options):
    group = click.Group(name=word, help="%s objects (%s)." % (kind, LOCALLY[kind]))

    def create_or_update(verb):
        @click.argument("name")
        @namespace_option("write")
        @click.option("--dryrun", is_flag=True, help="Print the trigger, write nothing.")
        @dryrun_output_option
        def command(name, namespace, dryrun, output, **flags):
            specs.validate_name("trigger", name)
            path = trigger_file(name, kind)
            if verb == "create" and path.exists() and not dryrun:
                raise UserError("%s %s already exists (%s); use `trigger %s update`" % (kind, name, path, word))
            if verb == "update" and not path.exists():
                raise UserError("%s %s not found here (no %s)" % (kind, name, path.name))
            document = build(name, namespace, flags)
            if dryrun:
                print_object(document, output)
                return
            write_manifest(path, document)
            info("%s %s %s" % (kind, name, "created" if verb == "create" else "updated"))

        for option in reversed(options):
            command = option(command)
        return click.command(
            name=verb, help="%s a %s (writes %s)." % (verb.capitalize(), kind, "NAME.%s.yaml" % kind.lower())
        )(command)

    group.add_command(create_or_update("create"))
    group.add_command(create_or_update("update"))

    @group.command(name="delete", help="Delete a %s (removes %s)." % (kind, "NAME.%s.yaml" % kind.lower()))
    @click.argument("name")
    @namespace_option("find")
    def delete_trigger(name, namespace):
        path = trigger_file(name, kind)
        if not path.exists():
            raise UserError("%s %s not found here (no %s)" % (kind, name, path.name))
        remove_manifest(path)
        info("%s %s deleted" % (kind, name))

    @group.command(name="list", help="List the %ss of this folder's manifests." % kind)
    @namespace_option("list")
    def list_triggers(namespace):

        found = []
        loader = specs.Loader(Path.cwd())
        for path in loader.files():
            for doc in loader.documents(path)[0]:  # a file that does not load lists nothing
                if isinstance(doc, dict) and doc.get("kind") == kind:
                    meta = doc.get("metadata") or {}
                    if namespace is None or meta.get("namespace", "default") == namespace:
                        found.append(doc)
        columns = [
            ("NAME", lambda d: d["metadata"]["name"]),
            ("NAMESPACE", lambda d: d["metadata"].get("namespace", "default")),
        ]
        detail = {
            "CronJobTrigger": [("SCHEDULE", "schedule"), ("FUNCTION NAME", "function-name")],
            "HTTPTrigger": [("HOST", "host-name"), ("PATH", "path"), ("FUNCTION NAME", "function-name")],
        }.get(kind, [("TOPIC", "topic"), ("FUNCTION SELECTOR", "functionSelector")])
        columns += [(title, functools.partial(spec_field, key=key)) for title, key in detail]
        print_table(found, columns)

    trigger.add_command(group)


def _cronjob(name, namespace, flags):
    if not flags["function"] or not flags["schedule"]:
        raise UserError("--function and --schedule are required")
    specs.validate_schedule("--schedule", flags["schedule"])
    payload = None
    if flags["payload_from_file"]:
        payload = json.loads(Path(flags["payload_from_file"]).read_text())
    elif flags["payload"]:
        try:
            payload = json.loads(flags["payload"])
        except ValueError:
            raise UserError("--payload must be JSON") from None
    return objects.cronjob_trigger(name, flags["function"], flags["schedule"], namespace, payload)


def _http(name, namespace, flags):
    if not flags["function_name"]:
        raise UserError("--function-name is required")
    return objects.http_trigger(
        name,
        flags["function_name"],
        namespace,
        flags["path"] or "",
        flags["hostname"] or "",
        flags["cors_enable"],
        flags["gateway"],
        flags["tls_secret"] or "",
    )


def _topic(kind):
    def build(name, namespace, flags):
        if not flags["function_selector"] or not flags["trigger_topic"]:
            raise UserError("--function-selector and --trigger-topic are required")
        return objects.topic_trigger(
            kind,
            name,
            dict(parse_pairs([flags["function_selector"]], "--function-selector")),
            flags["trigger_topic"],
            namespace,
        )

    return build


trigger_group(
    "cronjob",
    "CronJobTrigger",
    _cronjob,
    [
        click.option("--function", help="The function it calls."),
        click.option("--schedule", help='Cron schedule, e.g. "*/5 * * * *".'),
        click.option("-p", "--payload", help="JSON sent as the event data."),
        click.option(
            "-f",
            "--payload-from-file",
            type=click.Path(exists=True, dir_okay=False),
            help="A file of JSON sent as the event data.",
        ),
    ],
)
trigger_group(
    "http",
    "HTTPTrigger",
    _http,
    [
        click.option("--function-name", help="The function it routes to."),
        click.option("--path", help="Ingress path."),
        click.option("--hostname", help="Host name."),
        click.option(
            "--cors-enable",
            is_flag=True,
            help="Answer CORS preflights and add CORS headers, as the Ingress' enable-cors.",
        ),
        click.option(
            "--gateway", default="nginx", show_default=True, help="The Ingress controller: nginx, traefik or kong."
        ),
        click.option("--tls-secret", help="The kubernetes.io/tls Secret whose certificate serves the host over HTTPS."),
    ],
)
for _word, _kind in (("kafka", "KafkaTrigger"), ("nats", "NATSTrigger")):
    trigger_group(
        _word,
        _kind,
        _topic(_kind),
        [
            click.option("--function-selector", help="Label selector, e.g. app=shop."),
            click.option("--trigger-topic", help="The topic whose messages call the functions."),
        ],
    )


# ---------------------------------------------------------------- up / down


def options_of(backend, ignore):
    """The `up` flags the background session needs to run as this command would have."""
    return [*(["--backend", backend] if backend else []), *(arg for pattern in ignore for arg in ("--ignore", pattern))]


@click.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("-d", "--detach", is_flag=True, help="Run in the background; `kubeless-local down` stops it.")
@backend_option(help="As for dev.")
@ignore_option(help="As for dev.")
@click.option("--deployed-only", is_flag=True, hidden=True, help="Only what the Kubeless verbs deployed here.")
def up(path, detach, backend, ignore, deployed_only):
    """Run the project's functions (= dev); -d: in the background."""
    folder = Path(path).resolve()
    if not detach:
        # functions may come later (`function deploy`); the session `function deploy` starts is --deployed-only
        serve(folder, backend, ignore=ignore, allow_empty=True, deployed_only=deployed_only)
        return
    running = background.project_session(folder)
    if running is not None:
        click.echo("kubeless-local already runs %s" % folder)
        return
    background.start(folder, options=options_of(backend, ignore))
    click.echo(
        "kubeless-local runs %s in the background (log: %s); `kubeless-local down` stops it"
        % (folder, folder / STATE_DIRNAME / "up.log")
    )


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))  # maybe gone: a session still runs it
def down(path):
    """Stop the session that runs PATH (e.g. one `up -d` or `function deploy` started), also once PATH was renamed
    or deleted."""
    folder = Path(path).resolve()
    background.stop(folder)
    click.echo("stopped kubeless-local for %s" % folder)


@click.command(name="get-server-config")
@json_option
@user_errors
def get_server_config(output):
    """List the runtimes of the catalog and where they can run."""
    from kubeless_local.emulator import images
    from kubeless_local.runtimes import Catalog

    client = images.docker_client(required=False)
    rows = backends.server_config(Catalog(), client)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo("Supported Runtimes are: %s" % ", ".join(r["runtime"] for r in rows if r["process"] or r["docker"]))
    click.echo("  process backend: %s" % (", ".join(r["runtime"] for r in rows if r["process"]) or "none"))
    click.echo(
        "  docker backend:  %s"
        % (
            ", ".join(r["runtime"] for r in rows if r["docker"])
            or ("none (no Docker engine answers)" if client is None else "none built")
        )
    )

    def docker_state(row):
        if row["docker"]:
            return "yes"
        if not row["image"]:
            return "no (no image: process only)"
        return "no (engine not running)" if client is None else "no (not built)"

    print_table(
        rows,
        [
            ("RUNTIME", lambda r: r["runtime"]),
            ("PROCESS", lambda r: "yes" if r["process"] else "no (toolchain missing)"),
            ("DOCKER", docker_state),
            ("IMAGE", lambda r: r["image"]),
            ("ALSO ACCEPTS", lambda r: r["legacy"]),
        ],
    )

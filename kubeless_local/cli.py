"""The `kubeless-local` command: parse, call the engine, print. No logic of its own."""

import datetime
import functools
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import click

from kubeless_local import __version__
from kubeless_local import spec as specs
from kubeless_local.emulator import backends
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME

COLORS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green"]


def exit_with(exc: UserError):
    """Errors the user can fix: one line on stderr, exit code 2, no traceback."""
    click.echo("error: %s" % exc, err=True)
    sys.exit(exc.exit_code)


def user_errors(command):
    """The same for a command invoked on its own rather than through `main` (e.g. `dev.main()`)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            exit_with(exc)

    return wrapper


class Main(click.Group):
    """Every sub-command's UserError → `exit_with`, also those raised while its options are parsed."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)  # parses the sub-command's options too, so their types may raise UserError
        except UserError as exc:
            exit_with(exc)


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

# Options shared by several commands: defined once.
backend_option = click.option(
    "--backend",
    default=lambda: os.environ.get("KUBELESS_LOCAL_BACKEND"),
    show_default="$KUBELESS_LOCAL_BACKEND, else `backend:` in .kubeless-local.yaml, else process",
    help="Where functions run: process (local processes), docker (runtime images, one "
    "container per function), auto (docker when an engine answers and the images "
    "exist, else process).",
    type=click.Choice(backends.CHOICES),
)
runtime_option = click.option(
    "-r", "--runtime", required=True, help="Runtime, e.g. python3.11 (see get-server-config)."
)
ignore_option = click.option(
    "--ignore",
    "ignore",
    multiple=True,
    metavar="PATTERN",
    help="Files and folders that are not the project's (gitignore-style, e.g. build/ or "
    "*.log; repeatable): not loaded, not watched, no reload.",
)


def output_option(*formats):
    return click.option("-o", "--output", type=click.Choice(formats), default=formats[0], show_default=True)


json_option = output_option("table", "json")


@click.group(cls=Main, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubeless-local")
@click.pass_context
def main(ctx):
    """Run Kubeless functions locally, in the real runtime contract, with hot reload."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())  # no command: the help, and success


# ---------------------------------------------------------------- init


@main.command()
@click.argument("name")
@runtime_option
@click.option(
    "--force", is_flag=True, help="Write the template files into a folder that is not empty (other files are kept)."
)
@user_errors
def init(name, runtime, force):
    """Create NAME/ with a handler, a deps file and function.yaml."""
    from kubeless_local.emulator import scaffold

    result = scaffold(name, runtime, force=force)
    for path in result.created:
        click.echo("  created %s" % path)
    if result.notice:
        click.echo(result.notice)
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
    console = Console()
    if not console.is_terminal:
        console = Console(width=100_000)  # piped or redirected: never cut a URL at 80 columns
    console.print(table)


def _count(value):
    return "-" if value is None else str(value)


FUNCTION_COLUMNS = [
    ("NAME", lambda r: r["name"]),
    ("RUNTIME", lambda r: r["runtime"]),
    ("STATE", lambda r: r["state"]),
    ("URL", lambda r: r["url"] if r.get("url") and r["port"] else "-"),
    ("CALLS", lambda r: _count(r["calls"])),
    ("ERRORS", lambda r: _count(r["errors"])),
    ("RELOADS", lambda r: str(r["reloads"])),
]
WIDE_COLUMNS = [
    *FUNCTION_COLUMNS,
    ("BACKEND", lambda r: r.get("backend") or "-"),
    ("PID", lambda r: _count(r.get("pid"))),
    ("RESTARTS", lambda r: _count(r.get("restarts"))),
    ("READY_MS", lambda r: _count(None if r.get("ready_ms") is None else round(r["ready_ms"]))),
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, a closed terminal


class Stop(KeyboardInterrupt):
    """A stop signal arrived: `dev` stops the way Ctrl-C stops it, then exits 128 + the signal's number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """The stop signals for `serve`'s life: the first one raises Stop in the main thread; later ones are
    ignored, so a second Ctrl-C cannot cut the clean-up short (nor end it as click's "Aborted!").

    Python runs a signal's handler in the main thread, and only when that thread wakes: the kernel may
    hand the signal to any of `dev`'s threads, and then a sleeping main thread sleeps on. So the main
    thread waits in `wait()` on the wakeup fd, which the signal writes to whichever thread takes it."""

    def __init__(self):
        self.received, self.closing = None, False
        self.reader, self.writer = socket.socketpair()
        for end in (self.reader, self.writer):
            end.setblocking(False)
        self.previous_fd = signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.handle)

    def handle(self, signum, _frame):
        if self.received is None and not self.closing:
            self.received = signum
            raise Stop(signum)

    def wait(self):
        """Until a stop signal's handler raises Stop (it runs as soon as select returns)."""
        while True:
            select.select([self.reader], [], [])
            try:
                self.reader.recv(4096)
            except BlockingIOError:
                pass

    def close(self):
        self.closing = True
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the clean-up runs to its end
        signal.set_wakeup_fd(self.previous_fd)
        self.reader.close()
        self.writer.close()


def serve(
    root,
    backend_name,
    manifests=None,
    ignore=(),
    kafka_brokers=None,
    state_dir=None,
    allow_empty=False,
    deployed_only=False,
):
    """Start the functions, print the table, stream logs until a stop signal, stop everything.
    Exits 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP (128 + the signal, as shells report)."""
    from kubeless_local.emulator import DevSession

    session = DevSession(
        root,
        backend_name,
        manifests,
        say=lambda text: click.echo(text, err=True),
        ignore=ignore,
        kafka_brokers=kafka_brokers,
        state_dir=state_dir,
        allow_empty=allow_empty,
        deployed_only=deployed_only,
    )
    printer = LogPrinter(session.logs)
    printer.start()
    signals = StopSignals()
    stopped_by = None
    try:
        session.start()
        time.sleep(0.05)  # let start-up log lines print before the table
        print_table(session.status(), FUNCTION_COLUMNS)
        click.echo(click.style("Watching %s for changes; Ctrl-C stops." % session.root, dim=True))
        signals.wait()
    except KeyboardInterrupt as exc:
        stopped_by = exc.signum if isinstance(exc, Stop) else signal.SIGINT
        try:
            click.echo("\nstopping…", err=True)
        except OSError:
            pass  # the terminal is gone (SIGHUP)
    finally:
        signals.close()
        session.stop()
        printer.close()
    exit_now(128 + stopped_by)


def exit_now(code):
    """Exit once the session is stopped, without the interpreter's teardown of modules and of the threads still
    running: on a loaded machine that took up to 1.3 s more, and a signalled `dev` must be gone within 2 s."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the terminal is gone (SIGHUP)
    os._exit(code)


@main.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@backend_option
@ignore_option
@click.option(
    "--kafka-brokers",
    envvar="KAFKA_BROKERS",
    metavar="HOST:PORT[,…]",
    help="A real Kafka broker: dev consumes from it for the KafkaTriggers, as the Kubeless controller does "
    "(default: $KAFKA_BROKERS, else `kafka: {brokers: …}` in .kubeless-local.yaml, else embedded topics).",
)
@user_errors
def dev(path, backend, ignore, kafka_brokers):
    """Run every Function under PATH, watch its files and hot-reload on save."""
    root = Path(path).resolve()
    serve(
        root if root.is_dir() else root.parent,
        backend,
        manifests=specs.load(root, ignore) if root.is_file() else None,
        ignore=ignore,
        kafka_brokers=kafka_brokers,
    )


def parse_pairs(values, flag, bare_keys=False):
    """`k=v`, `k:v` and comma lists, as the Kubeless CLI accepts them; with `bare_keys` (labels) a lone
    `k` is `k: ""`, as the Kubeless CLI writes it."""
    pairs = []
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            match = re.match(r"^([^=:]+)[=:](.*)$", item)
            if match:
                pairs.append((match.group(1).strip(), match.group(2)))
            elif bare_keys and item.strip():
                pairs.append((item.strip(), ""))
            else:
                raise UserError("%s %r must be KEY=VALUE (or KEY:VALUE)" % (flag, item))
    return pairs


@main.command()
@click.argument("file")
@runtime_option
@click.option("--handler", required=True, help="<module>.<function>, e.g. handler.hello.")
@click.option("--name", help="Function name (default: from the handler's module).")
@click.option("-d", "--dependencies", help="Deps file (requirements.txt, package.json…) or its URL.")
@click.option("-e", "--env", multiple=True, help="K=V (repeat or comma-separate).")
@click.option("-l", "--label", multiple=True, help='k=v (repeat or comma-separate; a bare k is k="").')
@click.option("--timeout", default=specs.DEFAULT_TIMEOUT, show_default=True, help="Seconds before a call answers 408.")
@click.option("--port", type=click.IntRange(1, 65535), help="Local port (default: a free one from 8080).")
@click.option(
    "--memory", type=QUANTITY, help="Memory limit, a Kubernetes quantity, e.g. 128Mi (passed as FUNC_MEMORY_LIMIT)."
)
@click.option(
    "--isolation", type=click.Choice(specs.ISOLATIONS), help="per-call: fresh module state per call (legacy parity)."
)
@click.option("--runtime-image", help="Custom runtime image (docker backend): any image serving /healthz on FUNC_PORT.")
@click.option(
    "--secrets",
    multiple=True,
    help="Secret NAME (repeat or comma-separate): the files of secrets/NAME/ beside the code, at /NAME "
    "read-only in the docker backend; a local process finds the folder in $KUBELESS_LOCAL_SECRET_<NAME>.",
)
@backend_option
@ignore_option
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
    isolation,
    runtime_image,
    secrets,
    backend,
    ignore,
):
    """Run one function from FILE without a manifest, with hot reload (Kubeless CLI flags).

    FILE: a file, a folder, an archive (.zip, .tar.gz, .tgz, .tar.bz2, .tar.xz) or a URL of one."""
    code = code_location(file, "FILE")
    deps_file, deps_text = deps_location(dependencies)
    source = code if isinstance(code, Path) else None
    root = Path.cwd() if source is None else source.parent if source.is_file() else source
    name = name or re.sub(r"[^a-z0-9-]+", "-", handler.split(".")[0].lower()).strip("-") or "function"
    fn = specs.function_from_files(
        name,
        source,
        runtime,
        handler,
        deps_file=deps_file,
        deps=deps_text,
        url=code if isinstance(code, str) else "",
        secrets=[n.strip() for value in secrets for n in value.split(",") if n.strip()],
        project=root,
        timeout=timeout,
        env=parse_pairs(env, "--env"),
        labels=dict(parse_pairs(label, "--label", bare_keys=True)),
        memory=memory,
        port=port,
        isolation=isolation,
        image=runtime_image or "",
        origin="kubeless-local run %s" % file,
    )
    if runtime_image and (backend or backends.project_default(root) or "process") == "process":
        raise UserError("--runtime-image needs the docker backend: add --backend docker")
    # Its own state folder: several `run`s (and a `dev`) from one folder each keep their lock, ports and admin API.
    state_dir = root / STATE_DIRNAME / ("run-" + name)
    serve(root, backend, manifests=specs.Manifests(functions=[fn]), ignore=ignore, state_dir=state_dir)


def code_location(text, flag):
    """A URL stays a URL (downloaded by the prepare step); a path must exist: resolved Path."""
    if specs.is_url(text):
        return text
    path = Path(text)
    if not path.exists():
        raise UserError("%s %s does not exist (a file, a folder, an archive or a URL)" % (flag, text))
    return path.resolve()


def deps_location(text):
    """(deps file, deps text): a URL --dependencies is downloaded now, as the Kubeless CLI does."""
    if not text:
        return None, ""
    if specs.is_url(text):
        from kubeless_local.emulator.layout import fetch

        return None, fetch(text).decode("utf-8", "replace")
    path = Path(text)
    if not path.is_file():
        raise UserError("--dependencies %s is not a file" % text)
    return path.resolve(), ""


# ---------------------------------------------------------------- talking to a running dev


@main.command()
@click.argument("name")
@click.option("-d", "--data", help="Event data; a JSON object is sent as application/json. Without it (or empty): GET.")
@click.option(
    "--data-file", type=click.Path(exists=True, dir_okay=False), help="Event data read from FILE (as curl's -d @FILE)."
)
@click.option("-X", "--method", help="HTTP method instead of GET/POST (the function may answer 405).")
@click.option("-H", "--header", "headers", multiple=True, type=HEADER, help="Extra header 'Name: value' (repeatable).")
@click.option(
    "--path", default="/", show_default=True, help="Request path on the function (a leading / is added if missing)."
)
@user_errors
def call(name, data, data_file, method, headers, path):
    """Call a running function like `kubeless function call`."""
    from kubeless_local.emulator import AdminClient, call_function

    if data is not None and data_file:
        raise UserError("--data and --data-file are exclusive: give one")
    if data_file:
        data = Path(data_file).read_bytes()
    client = AdminClient()
    session, row = client.owner(name)
    say_session(client, session)
    if not row.get("serving", True) or not row["port"] or not row.get("url"):
        # Nothing of ours answers on its port: whatever does must not pass for the function.
        raise_exit("%s is %s: %s" % (name, row["state"], headline(row["error"] or "not serving")), 1)
    if row["state"] != "Ready" and row["error"]:
        click.echo(
            "warning: %s is %s (%s); the last good code answers" % (name, row["state"], headline(row["error"])),
            err=True,
        )
    response = call_function(
        row["url"], data, path=path, method=method.upper() if method else None, headers=dict(headers)
    )
    if response.status_code == 408:
        raise_exit("Request timeout exceeded", 1)
    click.echo(response.text, nl=not response.text.endswith("\n"))
    if response.status_code >= 400:
        raise_exit("the function answered %d %s" % (response.status_code, response.reason), 1)


def say_session(client, session):
    """Outside a project a name resolves across the running sessions: say which one was used."""
    if client.across:
        click.echo("(%s)" % session.describe(), err=True)


def raise_exit(message, code):
    click.echo("error: %s" % message, err=True)
    sys.exit(code)


def headline(error):
    """The line of a (multi-line) error that says what went wrong: in a Python traceback the exception
    (its last line that is not indented), else the first line."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            after = [text for text in lines[index + 1 :] if not text[0].isspace()]
            if after:
                return after[-1]
    return lines[0] if lines else ""


@main.command(name="ls")
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


def timestamp(seconds):
    """RFC 3339 in UTC with milliseconds, as `kubectl logs --timestamps` prints them."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


@main.command()
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


def interactive():
    return sys.stdin.isatty()


class DryRunCommand(click.Command):
    """`--dry-run` alone is a flag (so `push --dry-run PATH` keeps PATH); `--dry-run=server` names the mode,
    as kubectl spells them."""

    def parse_args(self, ctx, args):
        args = ["--dry-run-mode=" + a.split("=", 1)[1] if a.startswith("--dry-run=") else a for a in args]
        return super().parse_args(ctx, args)


@main.command(cls=DryRunCommand)
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
@ignore_option
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
    if wait and dry_run == "none":
        functions = [r for r in results if r.kind == "Function" and r.object]
        for name, answer in pusher.wait_and_call(target, functions):
            click.echo("%s: %s" % (name, answer))


# ---------------------------------------------------------------- events: emit, topic (embedded topics)


def read_event_data(data):
    """(data, content type implied): `--data TEXT`, or `--data @FILE` (bytes; a .json file is JSON)."""
    if not data.startswith("@"):
        return data, None
    path = Path(data[1:])
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UserError("--data %s: cannot read the file (%s)" % (data, exc.strerror or exc)) from None
    return content, "application/json" if path.suffix == ".json" else None


def emit_events(source, topic, data, count=1, wait=False, wait_timeout=60.0, content_type=None):
    from kubeless_local.emulator import AdminClient

    data, implied = read_event_data(data)
    client = AdminClient()
    session = client.topic_session(topic)
    say_session(client, session)
    result = session.emit(topic, data, source=source, count=count, content_type=content_type or implied)
    if "produced" in result:  # dev runs with a real Kafka broker: produced there (acks=all)
        report_produced(topic, result, wait)
        return
    first, last = result["first"], result["last"]
    click.echo("%d event(s) stored on topic %s (#%d-#%d)" % (last - first + 1, topic, first, last))
    if not result["subscribers"]:
        click.echo("warning: no %s trigger subscribes to topic %s; stored until one does" % (source, topic), err=True)
        return
    if wait:
        wait_for_outcome(session, source, topic, first, last, wait_timeout)


def report_produced(topic, result, wait):
    """What `emit kafka` says when `dev` consumes from a real broker: where the messages went; their delivery
    is the bridge's (its consumer groups commit after a 2xx), seen in `topic ls` (lag) and the functions' logs."""
    where = ", ".join(
        "partition %s offsets %d-%d" % (partition, first, last)
        for partition, (first, last) in sorted(result["partitions"].items(), key=lambda item: int(item[0]))
    )
    click.echo("%d message(s) produced to topic %s on %s (%s)" % (result["produced"], topic, result["broker"], where))
    if not result["subscribers"]:
        click.echo("warning: no KafkaTrigger of this dev consumes topic %s; it stays on the broker" % topic, err=True)
    elif wait:
        click.echo(
            "consumed by %s; with a real broker delivery is tracked by the consumer groups: their lag in "
            "`kubeless-local topic ls`, failed answers in `kubeless-local logs FUNCTION`"
            % ", ".join(result["subscribers"])
        )


FINAL = ("delivered", "dead-lettered")


def wait_for_outcome(client, source, topic, first, last, timeout):
    """Print each event's fate per subscriber as it is settled (and each retry as it happens); exit 1 when an
    event was dead-lettered or is not settled within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    shown = {}
    while True:
        outcome = client.outcome(topic, first, last, source)
        for seq, subscribers in sorted(outcome.items()):
            for name, state in sorted(subscribers.items()):
                if state != "pending" and shown.get((seq, name)) != state:
                    shown[(seq, name)] = state
                    click.echo("#%d %s: %s" % (seq, name, state))
        states = [state for subscribers in outcome.values() for state in subscribers.values()]
        if all(state in FINAL for state in states):
            break
        if time.monotonic() > deadline:
            raise_exit("%d event(s) not settled within %.0f s" % (sum(s not in FINAL for s in states), timeout), 1)
        time.sleep(0.1)
    dead = sum(state == "dead-lettered" for state in states)
    if dead:
        raise_exit("%d event(s) dead-lettered; `kubeless-local topic ls` shows them" % dead, 1)


topic_option = click.option("--topic", required=True, help="Topic name.")
count_option = click.option(
    "--count", type=click.IntRange(1, 1_000_000), default=1, show_default=True, help="Send it N times."
)
data_option = click.option("--data", required=True, help="Event data: text (a JSON object is sent as JSON) or @FILE.")
wait_options = [
    click.option("--wait", is_flag=True, help="Print what happens to each event (delivered, retrying, dead-lettered)."),
    click.option("--wait-timeout", type=float, default=60.0, show_default=True, help="Seconds --wait waits at most."),
    click.option("--content-type", help="application/json: refuse data that is not valid JSON before storing it."),
]


def with_options(options):
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@main.group()
def emit():
    """Send events to the running dev's triggers, as Kubeless' event sources would (Kafka, NATS, cron)."""


@emit.command(name="kafka")
@topic_option
@data_option
@count_option
@with_options(wait_options)
@user_errors
def emit_kafka(topic, data, count, wait, wait_timeout, content_type):
    """Publish a Kafka message to TOPIC: every KafkaTrigger on it delivers it to its functions."""
    emit_events("kafka", topic, data, count, wait, wait_timeout, content_type)


@emit.command(name="nats")
@topic_option
@data_option
@count_option
@with_options(wait_options)
@user_errors
def emit_nats(topic, data, count, wait, wait_timeout, content_type):
    """Publish a NATS message to TOPIC: every NATSTrigger on it delivers it to its functions."""
    emit_events("nats", topic, data, count, wait, wait_timeout, content_type)


@main.group()
def topic():
    """The running dev's embedded topics (as `kubeless topic`)."""


@topic.command(name="ls")
@json_option
@user_errors
def topic_ls(output):
    """Topics, their subscribers (position, lag) and dead letters."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    rows = client.topics()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    columns = [
        ("TOPIC", lambda r: r["name"]),
        ("EVENTS", lambda r: str(r["events"])),
        ("SUBSCRIBERS", lambda r: ", ".join(s["name"] for s in r["subscribers"]) or "-"),
        ("LAG", lambda r: str(sum(s["lag"] for s in r["subscribers"]))),
        ("DEAD", lambda r: str(len(r["dead_letters"]))),
    ]
    print_table(rows, [*columns, ("PROJECT", lambda r: r["project"])] if client.across else columns)
    letters = [letter for row in rows for letter in row["dead_letters"]]
    if letters:
        click.echo("\nDead letters (`kubeless-local topic replay TOPIC [--id ID]` sends them again):")
        print_table(
            letters,
            [
                ("ID", lambda d: str(d["id"])),
                ("TOPIC", lambda d: d["topic"]),
                ("FUNCTION", lambda d: d.get("function") or "-"),
                ("EVENT-ID", lambda d: d["event_id"]),
                ("ATTEMPTS", lambda d: str(d["attempts"])),
                ("STATUS", lambda d: str(d["status"]) + (" (replaying)" if d["replay"] else "")),
                ("BODY", lambda d: headline(d["body"])[:80]),
            ],
        )


@topic.command(name="create")
@click.argument("name")
@user_errors
def topic_create(name):
    """Create topic NAME."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session = client.project_session()
    say_session(client, session)
    created = session.create_topic(name)["created"]
    click.echo("topic %s %s" % (name, "created" if created else "already exists"))


@topic.command(name="delete")
@click.argument("name")
@user_errors
def topic_delete(name):
    """Delete topic NAME with its events and dead letters."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session = client.topic_session(name)
    say_session(client, session)
    session.delete_topic(name)
    click.echo("topic %s deleted" % name)


@topic.command(name="publish")
@topic_option
@data_option
@with_options(wait_options)
@user_errors
def topic_publish(topic, data, wait, wait_timeout, content_type):
    """Publish one message to a topic (as `kubeless topic publish`)."""
    emit_events("kafka", topic, data, 1, wait, wait_timeout, content_type)


@topic.command(name="replay")
@click.argument("name")
@click.option("--trigger", help="Only the dead letters of this trigger's functions.")
@click.option("--id", "letter_id", type=int, help="Only this dead letter (see `topic ls`).")
@user_errors
def topic_replay(name, trigger, letter_id):
    """Send a topic's dead letters again (same event-id and event-time)."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session = client.topic_session(name)
    say_session(client, session)
    count = session.replay(name, trigger, letter_id)["replayed"]
    if letter_id is not None and not count:
        raise UserError(
            "no dead letter %d waiting on topic %s; `kubeless-local topic ls` lists them" % (letter_id, name)
        )
    click.echo("%d dead letter(s) of topic %s sent again" % (count, name))


def describe_run(run):
    """One line for a cron run: what was sent, to which function, and how it answered."""
    sent = "cron trigger %s → function %s: %s (event-id %s)" % (
        run["trigger"],
        run["function"],
        run["method"],
        run["event_id"],
    )
    if run["status"] is None:
        return "%s failed: %s" % (sent, run["error"])
    return "%s answered %d in %.0f ms" % (sent, run["status"], run["duration_ms"])


@emit.command(name="cron")
@click.argument("trigger")
@user_errors
def emit_cron(trigger):
    """Fire the CronJobTrigger TRIGGER now, as its CronJob would; waits for the answer."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    session = client.cron_session(trigger)
    say_session(client, session)
    run = session.fire_cron(trigger)
    click.echo(describe_run(run))
    if not run["ok"]:
        sys.exit(1)  # like `call`: the event was sent, the function failed it


@main.group()
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


# The Kubeless CLI's verbs (`alias kubeless=kubeless-local`): kubeless_cli.py.
from kubeless_local import kubeless_cli  # noqa: E402 - after `main`, whose helpers it reuses

for _command in (kubeless_cli.function, kubeless_cli.trigger, kubeless_cli.up, kubeless_cli.down):
    main.add_command(_command)


if __name__ == "__main__":
    main()

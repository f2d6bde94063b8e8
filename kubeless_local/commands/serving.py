"""What `dev` and `run` share to serve functions until a stop signal — `serve`, the log printer, the table of
functions — and what the commands print tables and pairs with, without click: the console script's entry
(commands/entry.py) runs a plain `run` line through here without importing click (~20 ms of `run`'s start);
the click commands call the same functions."""

import csv
import re
import select
import signal
import socket
import threading
import time
from typing import NoReturn

from kubeless_local.commands.output import OUTPUT_PATIENCE, echo, exit_now, in_words, style, without_waiting
from kubeless_local.errors import UserError

COLORS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green"]


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


def debug_cell(row):
    """Where a debugged function's debugger listens: `127.0.0.1:5678 (debugpy)`, else `-`."""
    debug = row.get("debug")
    return "127.0.0.1:%d (%s)" % (debug["port"], debug["debugger"]) if debug else "-"


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
    ("IMAGE", lambda r: "%s (%s)" % (r["image"], r["image_source"]) if r.get("image") else "-"),
    ("DEBUG", debug_cell),
    ("BACKEND", lambda r: r.get("backend") or "-"),
    ("PID", lambda r: _count(r.get("pid"))),
    ("RESTARTS", lambda r: _count(r.get("restarts"))),
    ("READY_MS", lambda r: _count(None if r.get("ready_ms") is None else round(r["ready_ms"]))),
]


def dev_columns(rows):
    """The table `dev` prints on start: the functions' columns, and DEBUG when one runs under a debugger."""
    return [*FUNCTION_COLUMNS, ("DEBUG", debug_cell)] if any(r.get("debug") for r in rows) else FUNCTION_COLUMNS


PRINTED_AT_ONCE = 1000  # log lines written (and flushed) in one go when they wait


class LogPrinter(threading.Thread):
    """Prints every function's log lines with a coloured name prefix, like `docker compose up`."""

    def __init__(self, hub):
        super().__init__(daemon=True)
        self.queue = hub.subscribe()
        self.colors = {}
        self.width = 8
        self.written = 0  # lines printed: whether the terminal takes them

    def run(self):
        while True:
            lines = [self.queue.get()]
            while lines[-1] is not None and len(lines) < PRINTED_AT_ONCE and not self.queue.empty():
                lines.append(self.queue.get_nowait())  # what waits goes in one write: a flush a line fell behind
            printed = [self.printed(line) for line in lines if line is not None]
            if printed:
                echo("\n".join(printed))
                self.written += len(printed)
            if lines[-1] is None:
                return

    def printed(self, line):
        color = self.colors.setdefault(line.function, COLORS[len(self.colors) % len(COLORS)])
        self.width = max(self.width, len(line.function))
        prefix = style(line.function.ljust(self.width) + " |", fg=color)
        return "\n".join(
            "%s %s" % (prefix, style(text, dim=True) if line.stream == "system" else text)
            for text in line.text.splitlines() or [""]
        )

    def close(self):
        """Print what waits, for as long as the terminal takes it (2 s at most): a terminal that does not read (paused
        with Ctrl-S) is not waited for beyond OUTPUT_PATIENCE."""
        self.queue.put(None)
        deadline, written = time.monotonic() + 2, -1
        while self.is_alive() and time.monotonic() < deadline and self.written != written:
            written = self.written
            self.join(min(OUTPUT_PATIENCE, deadline - time.monotonic()))


def say_stopping():
    try:
        echo("\nstopping…", err=True)
    except OSError:
        pass  # the terminal is gone (SIGHUP)


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

    def wait(self) -> NoReturn:
        """Until a stop signal's handler raises Stop (it runs as soon as select returns), or at once if one came and
        its Stop was lost: a handler runs at the main thread's next bytecode, which may be in a __del__ or a weakref
        callback, where Python prints what it raises and goes on (and the later signals are ignored)."""
        while True:
            if self.received is not None:
                raise Stop(self.received)
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
    dashboard=None,
    gateway_port=None,
    gateway_https_port=None,
    debug=(),
    debug_port=None,
):
    """Start the functions, print the table, stream logs until a stop signal, stop everything.
    `dashboard`: (port, read_only) of the dashboard to serve beside them (None: none).
    Exits 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP (128 + the signal, as shells report)."""
    from kubeless_local import config
    from kubeless_local.emulator import DevSession

    if kafka_brokers:  # the flag's value checked in the CLI's words (the engine's name it `kafka_brokers`)
        config.parse_brokers(kafka_brokers, "--kafka-brokers/KAFKA_BROKERS")
    session = DevSession(
        root,
        backend_name,
        manifests,
        say=lambda text: echo(text, err=True),
        ignore=ignore,
        kafka_brokers=kafka_brokers,
        state_dir=state_dir,
        allow_empty=allow_empty,
        deployed_only=deployed_only,
        word=in_words,
        gateway_port=gateway_port,
        gateway_https_port=gateway_https_port,
        debug=debug,
        debug_port=debug_port,
    )
    printer = LogPrinter(session.logs)
    printer.start()
    signals = StopSignals()
    stopped_by = signal.SIGINT  # wait() only ends by a stop signal (Stop) or Ctrl-C
    board = None
    try:
        session.start()
        if dashboard is not None:
            from kubeless_local.dashboard.server import Dashboard

            board = Dashboard.of_session(session, *dashboard)
            link = board.start()
        time.sleep(0.05)  # let start-up log lines print before the table
        rows = session.status()

        def announce():
            print_table(rows, dev_columns(rows))
            if board is not None:
                echo("Dashboard: %s%s" % (link, " (read-only)" if board.read_only else ""))
            echo(style("Watching %s for changes; Ctrl-C stops." % session.root, dim=True))

        # from a thread: a terminal that does not read holds a write (and, waiting for the printer's, the stream's
        # lock, where no signal's handler can run); the main thread must get to wait for Ctrl-C
        without_waiting(announce)
        signals.wait()
    except KeyboardInterrupt as exc:
        stopped_by = exc.signum if isinstance(exc, Stop) else signal.SIGINT
        without_waiting(say_stopping)  # a terminal that does not read (paused: Ctrl-S) must not keep `dev` going
    finally:
        signals.close()
        if board is not None:
            board.stop()
        session.stop()
        printer.close()
    exit_now(128 + stopped_by, OUTPUT_PATIENCE)


def comma_list(value):
    """The items of a flag's comma list as the Kubeless CLI reads them (pflag's string slices are CSV): an item in
    double quotes may hold commas (`--env '"HOSTS=a,b"'`)."""
    return next(csv.reader([value]), [])


def names(values):
    """The names of a repeated, comma-separated flag (`--secrets a,b --secrets c`), in order."""
    return [name.strip() for value in values for name in comma_list(value) if name.strip()]


def parse_pairs(values, flag, bare_keys=False):
    """`k=v`, `k:v` and comma lists, as the Kubeless CLI accepts them; with `bare_keys` (labels) a lone
    `k` is `k: ""`, as the Kubeless CLI writes it."""
    pairs = []
    for value in values:
        for item in comma_list(value):
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

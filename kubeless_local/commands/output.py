"""What the CLI says, without click: its hints to the engine's errors and notices, its one-line errors (exit 2),
the lines `call` prints, the end of a process that must not wait for the interpreter's teardown.

click costs ~30 ms to import, most of a `call`: the console script's entry (commands/entry.py) answers the
plainest `call` and `--version` with this module and the standard library only. `echo` writes what click.echo
writes — through click.echo itself wherever click is loaded (every click command) or where click.echo would do more
than write and flush (a stream with an ASCII encoding, escape sequences to strip off a terminal)."""

from __future__ import annotations

import codecs
import functools
import io
import os
import sys

from kubeless_local.errors import (
    BadRequest,
    Conflict,
    EngineError,
    Failed,
    NotFound,
    Notice,
    Unavailable,
    UserError,
    hinted,
)

# The engine words its errors without naming a command (a dashboard or a pytest plugin shows them too); the
# CLI adds which command helps: (typed error, what it concerns) → hint, `{name}` the thing concerned, `{NAME}`
# it upper-cased (as an environment variable spells a runtime: PYTHON3.11_RUNTIME).
HINTS: dict[tuple[type[EngineError], str], str] = {
    (NotFound, "topic"): "`kubeless-local topic ls` lists them",
    (Unavailable, "kafka bridge"): "restart `kubeless-local dev`",
    (Conflict, "gateway port"): "pass --gateway-port / --gateway-https-port PORT (0: any free port)",
    (NotFound, "function manifest"): "create one with `kubeless-local init`",
    (Conflict, "folder"): ", or add --force to overwrite its template files (other files are kept)",
    (NotFound, "runtime"): " (see `kubeless-local get-server-config`)",
    (BadRequest, "image-only function"): "use --backend docker",
    (BadRequest, "image-only runtime"): "use --backend docker",
    (Unavailable, "docker engine"): " or use --backend process",
    (NotFound, "runtime image"): "run `kubeless-local runtime build {name}` or use --backend process",
    (Unavailable, "runtime image"): "use --backend process, set {NAME}_RUNTIME, or give a runtime image",
    (NotFound, "image"): " or use --backend process",
    (NotFound, "Dockerfile"): "use --backend process",
    (NotFound, "base image"): " or use --backend process",
    (Failed, "image build"): "\n(fix the Dockerfile / network, or use --backend process)",
    (Unavailable, "image build"): "use --backend process",
    (Unavailable, "kafka broker"): " or correct --kafka-brokers / KAFKA_BROKERS / kafka.brokers in "
    ".kubeless-local.yaml",
    (NotFound, "debugged function"): "--debug takes the names of the project's Functions",
    (BadRequest, "debugger"): "run it without --debug",
    (Conflict, "debug port"): " or give another first port with --debug-port",
    (NotFound, "invocation"): "`kubeless-local history` lists the recorded ones",
    (Unavailable, "topics database"): " and start `kubeless-local dev` again: a new, empty one is created, and the old "
    "file keeps what it held",
}


# The same for what the engine tells that is no error (errors.Notice): what it concerns → hint.
NOTICE_HINTS: dict[str, str] = {
    "runtime image": "rebuild it with `kubeless-local runtime build {name}`",
    "dead letter": "`kubeless-local topic replay {name}` sends it again",
}


def in_words(said: UserError | str) -> str:
    """An engine error or notice as the CLI shows it in a function's log and `ls`: with its hint."""
    if isinstance(said, UserError):
        return str(worded(said))
    if not isinstance(said, Notice) or (said.what or "") not in NOTICE_HINTS:
        return said
    return hinted(said, NOTICE_HINTS[said.what or ""].format(name=said.name))


def worded(exc: UserError, hints: dict[tuple[type[EngineError], str], str] = HINTS) -> UserError:
    """`exc` with the CLI's hint for it, when `hints` has one (a command may pass its own: `emit` says how to
    create a missing topic)."""
    if not isinstance(exc, EngineError) or exc.what is None:
        return exc
    hint = hints.get((type(exc), exc.what))
    return exc if hint is None else exc.with_hint(hint.format(name=exc.name, NAME=str(exc.name).upper()))


def echo(text: str, err: bool = False, nl: bool = True) -> None:
    """click.echo(text, err=err, nl=nl), with click only when it is loaded or the stream needs what it adds."""
    stream = sys.stderr if err else sys.stdout
    if "click" in sys.modules or not _plain(stream):
        import click

        click.echo(text, err=err, nl=nl)
        return
    if "\x1b" in text and not stream.isatty():
        import re  # not for `--version` and `call`'s plain text (~3 ms)

        text = re.sub(ANSI_ESCAPE, "", text)  # as click.echo strips styles off a stream that is not a terminal
    stream.write(text + "\n" if nl else text)
    stream.flush()


def _plain(stream) -> bool:
    """Whether click.echo would only write to `stream` (styles stripped off a file or pipe) and flush it: a text
    stream click keeps as it is (an encoding that is not ASCII, an errors setting)."""
    if not isinstance(stream, io.TextIOWrapper) or stream.errors is None:
        return False
    try:
        if codecs.lookup(stream.encoding).name == "ascii":
            return False  # click writes UTF-8 with errors=replace instead
    except LookupError:
        pass
    return True


ANSI_ESCAPE = r"\033\[[;?0-9]*[a-zA-Z]"  # the escape sequences click.echo strips (click._compat)
COLOR_CODES = {"black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35, "cyan": 36, "white": 37}


def style(text: str, fg: str | None = None, dim: bool | None = None) -> str:
    """click.style(text, fg=fg, dim=dim) without click: the same escape sequences (a bright_ colour is 60 on)."""
    bits = []
    if fg:
        bits.append("\033[%dm" % (COLOR_CODES[fg.removeprefix("bright_")] + (60 if fg.startswith("bright_") else 0)))
    if dim is not None:
        bits.append("\033[%dm" % (2 if dim else 22))
    return "".join(bits) + text + "\033[0m"


def exit_with(exc: UserError):
    """Errors the user can fix: one line on stderr, exit code 2, no traceback."""
    echo("error: %s" % worded(exc), err=True)
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


def raise_exit(message: str, code: int):
    echo("error: %s" % message, err=True)
    sys.exit(code)


def say_session(client, session) -> None:
    """Outside a project a name resolves across the running sessions: say which one was used."""
    if client.across:
        echo("(%s)" % session.describe(), err=True)


def headline(error: str) -> str:
    """The line of a (multi-line) error that says what went wrong: in a Python traceback the exception
    (its last line that is not indented), else the first line."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            after = [text for text in lines[index + 1 :] if not text[0].isspace()]
            if after:
                return after[-1]
    return lines[0] if lines else ""


def exit_now(code: int, patience: float | None = None):
    """End the process with `code` once its output is flushed, without the interpreter's teardown (freeing every
    module, waiting for threads; atexit work is skipped too): ~10 ms of a `call`, and up to 1.3 s of a stopped `dev`
    on a loaded machine, which must be gone within 2 s of a signal. `patience`: seconds at most to wait for output
    nobody reads (a stopping `dev`'s terminal paused with Ctrl-S, a full pipe)."""

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # its reader went away (a closed pipe, a closed terminal): nothing more can reach it

    if patience is None:
        flush()
    else:
        without_waiting(flush, patience)
    os._exit(code)


OUTPUT_PATIENCE = 0.5  # seconds a stopping `dev` waits for a write its terminal does not take


def without_waiting(write, seconds: float = OUTPUT_PATIENCE) -> bool:
    """Run `write` (a write to the terminal) and wait for it `seconds` at most: a `dev` stopping must stop even when
    its output is not read (a terminal paused with Ctrl-S, a pager that stopped reading, a full pipe), where a write
    blocks until it is. Whether it was done; one not done goes on in a thread of its own, which the exit ends."""
    import threading

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()

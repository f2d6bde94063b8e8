"""The console script (`kubeless-local`, `python -m kubeless_local`): the plainest command lines of those run in
loops and scripts — `--version`, `call NAME`, `call NAME -d DATA` — and a plain `run FILE --runtime R --handler H
…` are answered here without click; every other line goes to the click group (commands/root.py).

click's import is ~20–30 ms of CPU: half of a whole `call`, a tenth of `run`'s way to its first answer. A line
answered here prints, fails and exits exactly as the click commands do: `call`'s and `run`'s click commands run
`call_function` and `running.run_function` too, `--version` prints `version_line()`, all say things through
commands/output.py, and what click's `main` does around a command (KeyboardInterrupt → "Aborted!", exit 1; a
closed pipe → exit 1) is done the same way (`as_click_main`; tests/unit/test_cli_entry.py runs both paths and
compares). Anything else on the line — another option, `--`, `-h`, a value that starts with `-` or that click
would convert, a second name, click's shell completion asking — is click's to parse, and to word its usage errors.
"""

import errno
import os
import sys
import time

from kubeless_local.commands.output import echo, exit_now, exit_with, headline, raise_exit, say_session
from kubeless_local.errors import UserError

PROG_NAME = "kubeless-local"
COMPLETION_VARIABLE = "_KUBELESS_LOCAL_COMPLETE"  # click's shell completion asks through it (from PROG_NAME)
# Commands whose process ends at once when they are done: run in loops and scripts, they hold no threads,
# files or atexit work, and the interpreter's teardown (freeing every module, ~10 ms on a slow machine) was a
# sixth of a whole `call`.
ENDS_AT_ONCE = {"call"}
DATA_OPTIONS = ("-d", "--data")  # call's option for the event's data, as commands/call.py declares it
# `run`'s options that take a value, as commands/local.py declares them (but --runtime-image and --debug-port: the
# docker backend and the debugger, which get no head start) → run_function's argument: a `run` line of these only
# is read here (to head-start its runtime), and run here when its values need no conversion of click's
RUN_VALUE_OPTIONS = {
    "-r": "runtime",
    "--runtime": "runtime",
    "--handler": "handler",
    "--name": "name",
    "--backend": "backend",
    "-d": "dependencies",
    "--dependencies": "dependencies",
    "-e": "env",
    "--env": "env",
    "-l": "label",
    "--label": "label",
    "--timeout": "timeout",
    "--port": "port",
    "--memory": "memory",
    "--isolation": "isolation",
    "--secrets": "secrets",
    "--ignore": "ignore",
}
RUN_REPEATED = {"env", "label", "secrets", "ignore"}  # options given any number of times: their values in order
RUN_CHECKED = {"memory", "isolation"}  # values click checks with the manifests' model: such a line is click's
MAX_PORT = 65535


def entry(argv=None):
    """Run the command line `argv` (default: the process's); after a line answered here or a command of ENDS_AT_ONCE,
    its output flushed, the process ends without the interpreter's teardown (a `run` ends so anyway)."""
    args = sys.argv[1:] if argv is None else list(argv)
    completing = bool(os.environ.get(COMPLETION_VARIABLE))
    if args[:1] in (["run"], ["dev"]) and not completing:
        from kubeless_local.emulator import openfiles

        openfiles.raise_soft_limit()  # before a runtime is spawned: each connection relayed takes a descriptor
    if args[:1] == ["run"] and not completing:
        early_head_start(args[1:])  # first: the runtime boots while the rest of `run` is imported
    answer = None if completing else plain(args)
    if answer is None and (not args or args[0] not in ENDS_AT_ONCE):
        click_main(args)
        return
    try:
        if answer is None:
            click_main(args)
        else:
            as_click_main(answer)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)  # as the interpreter says a SystemExit's message
    exit_now(code)


def click_main(args):
    from kubeless_local.commands.root import main

    main(args, prog_name=PROG_NAME)


def plain(args):
    """What `args` asks, as a function of no arguments, when it is one of the lines answered here; else None."""
    if args == ["--version"]:
        return lambda: echo(version_line())
    if args[:1] == ["call"]:
        called = plain_call(args[1:])
        if called is not None:
            return lambda: call_function(*called)
    if args[:1] == ["run"]:
        arguments = run_arguments(plain_run(args[1:]))
        if arguments is not None:
            return lambda: run_here(arguments)
    return None


def plain_call(args):
    """(name, data) of `call`'s arguments when they are a name and at most one `-d/--data DATA` (in either order,
    `--data=DATA` too); None for anything else."""
    name = data = None
    tokens = iter(args)
    for token in tokens:
        if token in DATA_OPTIONS and data is None:
            data = next(tokens, None)
            if data is None or data.startswith("-"):
                return None  # click tells a missing value; one that looks like an option is its to judge
        elif token.startswith("--data=") and data is None:
            data = token[len("--data=") :]
        elif token and not token.startswith("-") and name is None:
            name = token
        else:
            return None
    return None if name is None else (name, data)


def plain_run(args):
    """{"file": FILE, option's argument: its value (a list of them for RUN_REPEATED)} of `run`'s arguments when they
    are one FILE, a runtime, a handler, and options of RUN_VALUE_OPTIONS, each with its value (`--option=value`
    too); None for anything else."""
    found: dict = {"file": None}
    tokens = iter(args)
    for token in tokens:
        option, equals, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if option in RUN_VALUE_OPTIONS:
            value = value if equals else next(tokens, None)
            if value is None or value.startswith("-"):
                return None
            key = RUN_VALUE_OPTIONS[option]
            if key in RUN_REPEATED:
                found.setdefault(key, []).append(value)
            else:
                found[key] = value  # given twice, the last one counts, as in click
        elif token and not token.startswith("-") and found["file"] is None:
            found["file"] = token
        else:
            return None
    return found if found["file"] and found.get("runtime") and found.get("handler") else None


def run_arguments(found):
    """run_function's arguments for a plain `run` line read by `plain_run` (those not given keep their defaults),
    when each value is what click would pass: the port a number in range, the backend (given, or from
    $KUBELESS_LOCAL_BACKEND) one of config.BACKENDS, no --memory or --isolation. None: click's to run, and to word
    what is wrong."""
    if found is None or RUN_CHECKED & found.keys():
        return None
    arguments = {key: tuple(value) if key in RUN_REPEATED else value for key, value in found.items()}
    if "port" in found:
        port = found["port"]
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= MAX_PORT):
            return None
        arguments["port"] = int(port)
    from kubeless_local.config import BACKENDS

    backend = arguments.setdefault("backend", os.environ.get("KUBELESS_LOCAL_BACKEND"))
    if backend is not None and backend not in BACKENDS:
        return None
    return arguments


def run_here(arguments):
    """`run`, as its click command runs it (commands/running.py)."""
    from kubeless_local.commands.running import run_function

    run_function(**arguments)


def early_head_start(args):
    """`run`'s head start before click is imported, ~70 ms sooner than the command can: the runtime's server side
    boots meanwhile (the docker backend's relay container is looked up, relaystart.py). Only for a plain line
    (`plain_run`) whose FILE is here (not a URL); the command starts it itself otherwise (once: a runtime is
    head-started once a process). emulator/prestart.py spawns it, before anything heavier than os is imported."""
    found = plain_run(args)
    if found is None or "://" in found["file"] or not os.path.exists(found["file"]):
        return
    backend = found.get("backend") or os.environ.get("KUBELESS_LOCAL_BACKEND")
    from kubeless_local.emulator import prestart

    try:  # a guess: what goes wrong here the command meets again, and says
        source = os.path.realpath(found["file"])
        _, _, state_dir = prestart.run_folders(source, found["handler"], found.get("name"))
        state_dir = os.path.realpath(state_dir)
        if backend != "process":  # the docker backend's relay, if this function's last `run` had one
            from kubeless_local.emulator import relaystart

            relaystart.expect(state_dir)  # sent once the session holds the folder and its guardian runs
        if backend != "docker":
            prestart.start(found["runtime"], state_dir)
    except (OSError, RuntimeError, ValueError):  # an unreadable folder, a symlink loop, a NUL in a path
        return


def as_click_main(run):
    """`run()` as click's `main` runs a command in standalone mode, with root's and `user_errors`' handling of a
    UserError (one line, exit 2): EOFError or KeyboardInterrupt → a blank line and "Aborted!" on stderr, exit 1;
    a closed pipe (EPIPE) → exit 1 without a word; otherwise exit 0, or the SystemExit the command raised."""
    try:
        run()
    except UserError as exc:
        exit_with(exc)
    except (EOFError, KeyboardInterrupt):
        echo("", err=True)  # closes the terminal's ^C echo
        echo("Aborted!", err=True)
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.exit(1)  # click stops the streams' flush from failing; exit_now's flush ignores the closed pipe
    sys.exit(0)


def version_line():
    """What `--version` prints (as click's version_option)."""
    from kubeless_local import __version__

    return "kubeless-local, version %s" % __version__


ON_THE_WAY = ("Installing", "Starting")  # states a function that will serve passes through
CALL_WAITS = 300.0  # seconds `call` waits for one of them to end (a first-time setup and install included)


def served_soon(client, name, row):
    """`row` of function `name` once it is past installing and starting (`up -d && call`, a call right after
    a save of the manifest): a line on stderr says what it waits for; bounded by CALL_WAITS."""
    if row["state"] not in ON_THE_WAY:
        return row
    echo("waiting for %s (%s)…" % (name, row["state"]), True)
    deadline = time.monotonic() + CALL_WAITS
    while row["state"] in ON_THE_WAY and time.monotonic() < deadline:
        time.sleep(0.2)
        row = client.owner(name)[1]
    return row


def call_function(name, data=None, data_file=None, method=None, headers=(), path="/"):
    """`call`: one event to the running function `name`, its answer's body on stdout; a failing answer or a
    function that does not serve: a line on stderr and exit 1 (a 408: "Request timeout exceeded", as Kubeless')."""
    from kubeless_local.client import send
    from kubeless_local.emulator import AdminClient

    if data is not None and data_file:
        raise UserError("--data and --data-file are exclusive: give one")
    if data_file:
        with open(data_file, "rb") as file:
            data = file.read()
    client = AdminClient()
    session, row = client.owner(name)
    say_session(client, session)
    row = served_soon(client, name, row)
    if not row.get("serving", True) or not row["port"] or not row.get("url"):
        # Nothing of ours answers on its port: whatever does must not pass for the function.
        raise_exit("%s is %s: %s" % (name, row["state"], headline(row["error"] or "not serving")), 1)
    if row["state"] != "Ready" and row["error"]:
        echo("warning: %s is %s (%s); the last good code answers" % (name, row["state"], headline(row["error"])), True)
    response = send(
        row["url"],
        data,
        path=path,
        method=method.upper() if method else None,
        headers=dict(headers),
        mark="call" if row.get("recorded") else None,
    )
    if response.status_code == 408:
        raise_exit("Request timeout exceeded", 1)
    echo(response.text, nl=not response.text.endswith("\n"))
    if response.status_code >= 400:
        raise_exit("the function answered %d %s" % (response.status_code, response.reason), 1)

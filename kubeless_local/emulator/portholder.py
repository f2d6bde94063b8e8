"""Who listens on a local TCP port, to name it in a "port in use" error: most often a `dev` of the same project
left running in another terminal, or a server the user forgot.

On Linux, from /proc: the listening socket's inode in /proc/net/tcp and tcp6 (this network namespace), then the
process holding it among those this user may look into. Elsewhere, or when the holder cannot be seen (another
user's process, a container's own namespace), nothing is named and the error reads as before.
"""

import os

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
COMMAND_CHARS = 80  # of the holder's command line, in the error


def held_by(port: int) -> str:
    """' by `COMMAND` (pid N)' for the process listening on `port`, or '' when none can be named."""
    sockets = _listening(port)
    if not sockets:
        return ""
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return ""
    for pid in pids:
        if _holds(pid, sockets):
            return " by %s (pid %s)" % (_session(pid) or "`%s`" % _command(pid), pid)
    return ""


def _session(pid: str) -> str:
    """'the kubeless-local dev of FOLDER' when `pid` is one of this user's sessions (registry.py; most often what
    holds a port we want: another project's `dev`), else ''."""
    from kubeless_local.emulator import registry
    from kubeless_local.errors import UserError

    try:
        sessions = registry.starting_or_running()
    except (OSError, UserError):  # no registry folder (no cache folder either): the command line names it
        return ""
    for info in sessions:
        if str(info.get("pid")) == pid:
            # its kind: `dev`, or its state folder's name (`run-hello`): said as client.py says it
            kind = (info.get("kind") or "dev").replace("-", " ", 1)
            return "the kubeless-local %s of %s" % (kind, info.get("root"))
    return ""


def _listening(port: int) -> set[str]:
    """The fd link targets (`socket:[INODE]`) of the sockets listening on `port`, any local address."""
    found = set()
    for table in TABLES:
        try:
            with open(table) as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        found.add("socket:[%s]" % fields[9])
        except (OSError, ValueError):
            continue
    return found


def _holds(pid: str, sockets: set[str]) -> bool:
    folder = "/proc/%s/fd" % pid
    try:
        fds = os.listdir(folder)
    except OSError:  # gone, or another user's
        return False
    for fd in fds:
        try:
            if os.readlink(os.path.join(folder, fd)) in sockets:
                return True
        except OSError:
            continue
    return False


def _command(pid: str) -> str:
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as raw:
            words = raw.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    command = " ".join(b" ".join(words).decode(errors="replace").split()) or "?"  # one line, whatever it holds
    return command if len(command) <= COMMAND_CHARS else command[: COMMAND_CHARS - 1] + "…"

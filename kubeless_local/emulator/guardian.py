"""Runtime servers die with `dev`, however `dev` ends: Ctrl-C, a closed terminal, kill -9.

`dev` starts this module as a small process in a session of its own (a closed terminal or a Ctrl-C
does not reach it) and keeps the write end of a pipe to its stdin. On that pipe `dev` says which
process groups it starts (`watch PGID`, `forget PGID`) and whether containers run (`containers`).
When the pipe closes — `dev` ended, whichever way — the guardian SIGKILLs the groups still
watched, and every process that carries the project's marker (below) and started before that moment: what a
function started in a session of its own (a browser, a daemon), which a pod's end takes with it too. Then it
removes the project's containers and exits. What it is told is also recorded in
.kubeless-local/processes.json, so a `dev` that finds a session's leftovers (the guardian was
killed too) stops them before it starts.

A group is killed only while one of its processes carries the project's marker in its environment
(`KUBELESS_LOCAL_PROJECT=<state folder>`), so a process id the system has since reused is left alone.
Keep this module light: it runs as its own interpreter beside the functions' servers, and `run` reads
PROJECT_ENV from it before anything else (emulator/prestart.py). Only os and sys are imported at the top; what
the guardian process and `dev`'s side need besides (signal; json, subprocess, threading, pathlib) is imported
where it is used, by `dev` long before. The guardian's start: ~20 ms of CPU, not ~35. (Its interpreter keeps its
site: remove_containers imports the docker SDK from where `dev`'s does.)
"""

import os
import sys
import time

PROJECT_ENV = "KUBELESS_LOCAL_PROJECT"  # in every runtime server's env: the project's resolved state folder
CONTAINER_LABEL = "kubeless-local.project"  # the docker backend labels every container with the same value
RECORD = "processes.json"
NICENESS = 10  # the guardian process's: it sleeps on its pipe until `dev` ends, and its start is on no one's way


def process_stat(pid):
    """(process group, start time in clock ticks since boot) of live process `pid`; None once it ended (a zombie
    has: it waits only for its parent to read its status). Linux /proc."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state ppid pgrp … starttime (20th)
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else (int(fields[2]), int(fields[19]))


def ticks_now():
    """Now, in the unit and from the origin of a process's start time (process_stat)."""
    with open("/proc/uptime") as uptime:
        return int(float(uptime.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def pids():
    """Every process's pid (Linux /proc)."""
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def group_members(pgid):
    """Pids of the live (not zombie) processes in process group `pgid` (Linux /proc)."""
    return [pid for pid in pids() if (process_stat(pid) or (None,))[0] == pgid]


def _carries_marker(pid, marker):
    try:
        with open("/proc/%d/environ" % pid, "rb") as environ:
            return marker in environ.read().split(b"\0")
    except OSError:
        return False


def kill_groups(pgids, project, trust=False):
    """SIGKILL each group that still holds a runtime server of `project`; returns the groups killed.
    Where there is no /proc to check (macOS), only groups we were told about just now (`trust`) are killed."""
    marker = _marker(project)
    checkable = os.path.isdir("/proc")
    return _sigkill(
        os.killpg,
        [g for g in pgids if (any(_carries_marker(pid, marker) for pid in group_members(g)) if checkable else trust)],
    )


def kill_strays(project, started_before, groups=()):
    """SIGKILL every live process outside `groups` (killed as groups) that carries `project`'s marker and started
    before `started_before` (ticks: ticks_now) — later ones are a next session's; returns their pids. A process a
    function started in a session or group of its own is outside the groups the guardian watches, where a pod's
    end takes it all the same. One that changed its environment is not found."""
    if not os.path.isdir("/proc"):
        return []
    marker = _marker(project)
    strays = []
    for pid in pids():
        stat = process_stat(pid)
        if stat is not None and stat[0] not in groups and stat[1] < started_before and _carries_marker(pid, marker):
            strays.append(pid)
    return _sigkill(os.kill, strays)


def _marker(project):
    return ("%s=%s" % (PROJECT_ENV, project)).encode()


def _sigkill(kill, targets):
    """The `targets` that `kill` (os.kill, os.killpg) sent SIGKILL to; one gone meanwhile, or not ours, is not."""
    import signal

    killed = []
    for target in targets:
        try:
            kill(target, signal.SIGKILL)
            killed.append(target)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def remove_containers(project, before=None):
    """Remove the containers labelled for `project` (created before the time `before`, if given: later ones are a
    next session's); returns their names (none without a Docker engine)."""
    try:
        import docker
        import docker.errors
    except ImportError:
        return []
    try:
        client = docker.from_env(timeout=10)
        # sparse: no inspect per container, so one removed meanwhile (a finished step) cannot fail the listing
        found = client.containers.list(all=True, sparse=True, filters={"label": "%s=%s" % (CONTAINER_LABEL, project)})
        found = [c for c in found if before is None or not _created_since(client, c, before)]
        for container in found:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass  # it went away by itself meanwhile
            except docker.errors.APIError as exc:
                if not being_removed(exc):
                    raise
        return [(container.attrs.get("Names") or ["/" + container.short_id])[0].lstrip("/") for container in found]
    except docker.errors.DockerException as exc:
        print("kubeless-local guardian: cannot remove the containers of %s: %s" % (project, exc), file=sys.stderr)
        return []


def being_removed(exc):
    """Whether the engine refused a removal because another one is under way (the guardian of a killed `dev` and
    the next session's sweep can meet on a container): it goes all the same."""
    return getattr(exc, "status_code", None) == 409 and "already in progress" in str(exc)


def _created_since(client, container, since):
    """Whether `container` was created at the time `since` or later (a listing gives whole seconds: within the
    same second, its inspection's nanoseconds decide)."""
    import docker.errors

    created = container.attrs.get("Created")
    if isinstance(created, int) and created != int(since):
        return created > since
    try:
        stamp = client.api.inspect_container(container.id)["Created"]  # 2026-12-06T23:51:30.123456789Z
    except docker.errors.NotFound:
        return False  # gone meanwhile: nothing to keep
    import calendar

    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))
    return seconds >= since


def sweep_leftovers(state_dir, say=lambda text: None):
    """Stop what a session of this project that ended without cleaning up left running."""
    import json
    from pathlib import Path

    record = Path(state_dir) / RECORD
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    project = str(Path(state_dir).resolve())
    killed = kill_groups([int(g) for g in data.get("groups") or []], project)
    own = process_stat(os.getpid())  # what this session started is younger than this process
    strays = kill_strays(project, own[1], killed) if own else []
    containers = remove_containers(project) if data.get("containers") else []
    if killed or strays or containers:
        say(
            "stopped what an earlier kubeless-local (pid %s) left running: %s"
            % (
                data.get("pid"),
                ", ".join(["process group %d" % g for g in killed] + ["process %d" % p for p in strays] + containers),
            )
        )
    record.unlink()


class Guardian:
    """`dev`'s end of the pipe: starts the guardian process and tells it what to clean up."""

    def __init__(self, state_dir) -> None:
        import subprocess
        import threading
        from pathlib import Path

        self.project = str(Path(state_dir).resolve())
        self.record = Path(state_dir) / RECORD
        self.groups: set[int] = set()
        self.containers = False
        self.lock = threading.Lock()
        # It imports this very package (cwd: the state folder, so no user file shadows a module), and its
        # output goes to a file: it outlives `dev`'s terminal, and must not hold a caller's pipe open.
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        with open(Path(state_dir) / "guardian.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubeless_local.emulator.guardian", self.project],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=state_dir,
                env=env,
                start_new_session=True,
            )
        try:  # its start (an interpreter: ~30 ms of CPU) yields to the functions' (what it is told waits in the pipe)
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, NICENESS)
        except OSError:
            pass
        assert self.proc.stdin is not None, "stdin=PIPE: always a pipe"
        self.pipe = self.proc.stdin

    def watch(self, pgid: int) -> None:
        """Kill process group `pgid` when `dev` ends (until `forget`)."""
        with self.lock:
            self.groups.add(pgid)
            self._send("watch %d" % pgid)

    def forget(self, pgid: int) -> None:
        with self.lock:
            self.groups.discard(pgid)
            self._send("forget %d" % pgid)

    def watch_containers(self) -> None:
        """Remove the project's containers when `dev` ends."""
        with self.lock:
            self.containers = True
            self._send("containers")

    def _send(self, line: str) -> None:
        import json

        tmp = self.record.with_name(RECORD + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "groups": sorted(self.groups), "containers": self.containers}))
        os.replace(tmp, self.record)
        try:
            self.pipe.write(line.encode() + b"\n")
            self.pipe.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guardian is gone (or closed): the record still lets the next `dev` clean up

    def close(self, timeout: float = 10) -> None:
        """A clean stop: everything was stopped; the guardian cleans up what is left, then exits."""
        import subprocess

        with self.lock:
            try:
                self.pipe.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return  # leave the record: the next `dev` sweeps
        if self.proc.returncode == 0:
            self.record.unlink(missing_ok=True)


def session_end(project, session):
    """The start-time bound (ticks) of the strays of the session `session` (its process id): now, or the start of
    the next session's process if one holds the project's lock already (a loaded machine wakes the guardian
    late): its own processes are younger than it."""
    bound = ticks_now()
    try:
        with open(os.path.join(project, "lock")) as lock:
            holder = int(lock.read().strip() or 0)
    except (OSError, ValueError):
        return bound
    stat = process_stat(holder) if holder and holder != session else None
    return min(bound, stat[1]) if stat is not None else bound


def main(project):
    import signal

    session = os.getppid()  # the `dev` (or `run`) that started it
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe's end stops the guardian
    groups, containers = set(), False
    for raw in sys.stdin.buffer:  # until EOF: `dev` closed the pipe or died
        verb, _, argument = raw.decode("ascii", "replace").strip().partition(" ")
        if verb == "watch":
            groups.add(int(argument))
        elif verb == "forget":
            groups.discard(int(argument))
        elif verb == "containers":
            containers = True
    ended = time.time()
    killed = kill_groups(sorted(groups), project, trust=True)
    if os.path.isdir("/proc"):
        kill_strays(project, session_end(project, session), killed)
    if containers:
        remove_containers(project, before=ended)  # a `run` started since (kill -9, then again) has its own


if __name__ == "__main__":
    main(sys.argv[1])

"""Processes a function started in a session or process group of its own — puppeteer's browser (`detached: true`),
`start_new_session=True`, a daemon — outside its server's process group, which a stop kills, but inside its pod,
whose end takes every process of its container (and a save is a new pod).

Guarantee: `outside_group` finds them in a process tree (Linux /proc: the tree's `children` files), with their start
times; `kill` kills only a process that still has the start time it was found with, never one whose pid the system
gave to another since. A process that left the tree (its parent died and it went to the machine's init) is not in
it: the guardian finds those by the project's marker when `dev` ends.
"""

import os
import signal
from typing import Callable

from kubeless_local.emulator.guardian import process_stat, ticks_now
from kubeless_local.emulator.memorywatch import process_trees

Found = list[tuple[int, int]]  # (pid, start time in clock ticks since boot)


def outside_group(root: int, group: int) -> Found:
    """The live processes of `root`'s tree, `root` aside, that are not in process group `group`."""
    found = []
    for pid in process_trees({root}).get(root, [])[1:]:
        stat = process_stat(pid)
        if stat is not None and stat[0] != group:
            found.append((pid, stat[1]))
    return found


def kill(processes: Found, started_before: float = float("inf")) -> None:
    """SIGKILL each of `processes` that started before `started_before` (ticks), if it is still the one found."""
    for pid, start in processes:
        stat = process_stat(pid)
        if stat is not None and stat[1] == start and start < started_before:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # gone meanwhile, or another user's (sudo; a container's)
                pass


def replaced(root: int, group: int) -> Callable[[], None]:
    """Called as a server is told to load new code in place: what kills, once the new code serves, the processes
    the code it replaces started — those of the tree now (a worker's, before the old workers go) and those of the
    tree then that started before now; the tree then only while `root` is the process it is now (a server that
    died meanwhile left its pid to the system, which may have given it to another)."""
    now, found, was = ticks_now(), outside_group(root, group), process_stat(root)

    def clean_up() -> None:
        kill(found)
        if was is not None and process_stat(root) == was:
            kill(outside_group(root, group), now)

    return clean_up


def container_init(pid: int, container_id: str) -> bool:
    """Whether `pid`, as this machine's /proc sees it, is a process of container `container_id` (its cgroup names
    the container): an engine in a VM (Docker Desktop) or another host gives pids of another machine."""
    try:
        with open("/proc/%d/cgroup" % pid) as cgroup:
            return container_id in cgroup.read()
    except OSError:
        return False

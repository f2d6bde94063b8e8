"""A function's memory limit on the process backend, held as the kernel holds a pod's container to it: a function
whose processes use more than its limit (`resources.limits.memory`, `--memory`) is killed, shows Crashed "out of
memory" and is restarted, as an OOMKilled container is. Without it a function that would be OOMKilled in the
cluster ran on here unnoticed.

Guarantees: a function without a limit is never looked at. What counts is the memory of the server's process tree
(the server, the workers it forked and theirs: what its container would hold) that a cgroup cannot reclaim
(`resident_bytes`), pages its processes share counted once (proportionally), as a container's memory cgroup counts
them. It is read every LOOK_EVERY seconds, one thread for every watched server, so a burst between two looks can go
unseen (the kernel stops one at once). Linux only (/proc/<pid>/smaps_rollup): elsewhere `supported()` is False and
limits are not held on this backend (the docker backend's are).
"""

import os
import threading
from typing import Callable, NamedTuple, Optional

from kubeless_local.emulator import guardian

LOOK_EVERY = 0.5  # seconds between two looks at every watched server
COUNTED = (b"Pss", b"Pss_Anon", b"Pss_Shmem")  # the lines of smaps_rollup read
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MOST_PROCESSES = 1000  # of one server's tree: a fork bomb is not walked without end


def supported() -> bool:
    return os.path.exists("/proc/self/smaps_rollup")


def process_trees(groups: set[int]) -> dict[int, list[int]]:
    """{server pid: the pids of its process tree} for the servers (process group leaders) asked for: what the pod's
    container would hold. Found from each process's children (a few reads a server); where the kernel does not
    list children (no CONFIG_PROC_CHILDREN), from one look at every process's group instead."""
    if not os.path.exists("/proc/self/task/%d/children" % threading.get_native_id()):
        return _members_by_group(groups)
    members: dict[int, list[int]] = {}
    for leader in groups:
        tree: list[int] = []
        unseen = [leader]
        while unseen and len(tree) < MOST_PROCESSES:
            pid = unseen.pop()
            below = children(pid)
            if below is not None:  # else it ended meanwhile
                tree.append(pid)
                unseen.extend(below)
        if tree:
            members[leader] = tree
    return members


def children(pid: int) -> Optional[list[int]]:
    """The children of process `pid` (its threads' `children` files: CONFIG_PROC_CHILDREN); None once it ended."""
    try:
        threads = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    found: list[int] = []
    for thread in threads:
        try:
            with open("/proc/%d/task/%s/children" % (pid, thread), "rb") as listed:
                found.extend(int(child) for child in listed.read().split())
        except OSError:
            continue
    return found


def _members_by_group(groups: set[int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for pid in guardian.pids():
        stat = guardian.process_stat(pid)  # None: ended meanwhile, or a zombie (it holds no memory)
        if stat is not None and stat[0] in groups:
            members.setdefault(stat[0], []).append(pid)
    return members


def most_bytes(pid: int) -> int:
    """An upper bound of resident_bytes, cheaply (a counter the kernel keeps, no walk of the page tables): every
    resident page of the process counted whole, its files' and those it shares with its parent or workers too."""
    try:
        with open("/proc/%d/statm" % pid, "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def resident_bytes(pid: int) -> int:
    """What of the process's memory the kernel cannot give back while it runs (no swap, as in a pod): its
    anonymous and shared-memory pages, proportional (Pss_Anon + Pss_Shmem). File pages (the interpreter's own
    binary: ~40 MB of Node's) are left out: a container's cgroup reclaims them before it kills. A kernel older
    than 5.7 has no Pss_Anon: its whole Pss then. 0 once the process has ended."""
    fields: dict[bytes, int] = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid, "rb") as rollup:
            for line in rollup:
                name, _, rest = line.partition(b":")
                if name in COUNTED:
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    if b"Pss_Anon" in fields:
        return fields[b"Pss_Anon"] + fields.get(b"Pss_Shmem", 0)
    return fields.get(b"Pss", 0)


class Watched(NamedTuple):
    limit: int  # bytes
    on_exceeded: Callable[[int], None]  # called once with the bytes used, from the watch's thread


class MemoryWatch:
    """Watches the process groups it is given; its thread starts with the first and ends at close()."""

    def __init__(self) -> None:
        self.watched: dict[int, Watched] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def watch(self, group: int, limit: int, on_exceeded: Callable[[int], None]) -> None:
        """Call on_exceeded(bytes used) once when process group `group` uses more than `limit` bytes."""
        with self.lock:
            self.watched[group] = Watched(limit, on_exceeded)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="memory watch", daemon=True)
                self.thread.start()

    def forget(self, group: int) -> None:
        with self.lock:
            self.watched.pop(group, None)

    def close(self) -> None:
        self.closed.set()
        if self.thread is not None:
            self.thread.join(timeout=2)

    def _run(self) -> None:
        while not self.closed.wait(LOOK_EVERY):
            with self.lock:
                watched = dict(self.watched)
            if not watched:
                continue
            for group, pids in process_trees(set(watched)).items():
                limit = watched[group].limit
                if sum(most_bytes(pid) for pid in pids) <= limit:
                    continue  # under it even counted whole: no need to walk the page tables (~100 µs a process)
                used = sum(resident_bytes(pid) for pid in pids)
                if used > limit:
                    with self.lock:
                        exceeded = self.watched.pop(group, None) is not None  # not forgotten meanwhile
                    if exceeded:
                        watched[group].on_exceeded(used)

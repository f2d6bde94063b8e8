"""Processes of a runtime server as the host sees them (process backend)."""

import os


def child_processes(pid):
    """Pids whose parent is `pid` (the server's workers)."""
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry))
        except (OSError, ValueError):
            continue
    return children

"""The open-files limit of a serving process (`dev`, `run`) and of every server it spawns: its soft limit raised to
the hard one first thing, before a runtime is spawned (children inherit it).

Each client connection a function's front door holds takes a file descriptor in `dev`, and each request it relays one
in the runtime's server; at the usual soft limits (1024 on Linux, 256 on macOS) a load test of a few hundred
connections made every accept of `dev` fail: the other functions, the dashboard and the admin API stopped answering.
A hard limit the system does not let a process reach (macOS: infinity, above its per-process maximum) falls back to
that maximum's usual value; a limit that cannot be raised is left as it is.
"""

try:
    import resource
except ImportError:  # not a POSIX system: nothing to raise
    resource = None  # type: ignore[assignment]

MACOS_MOST = 10240  # OPEN_MAX: what macOS's setrlimit takes at most for RLIMIT_NOFILE
UNBOUNDED_WANT = 1 << 20


def raise_soft_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit as far as the hard limit allows; the soft limit in force after."""
    if resource is None:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNBOUNDED_WANT if hard == resource.RLIM_INFINITY else hard
    for limit in (wanted, MACOS_MOST):
        if soft != resource.RLIM_INFINITY and limit <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            return limit
        except (ValueError, OSError):
            continue
    return soft

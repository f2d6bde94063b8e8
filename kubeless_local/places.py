"""The folders kubeless-local keeps its things in, as strings and with `os` alone: a plain `run` reads them first
thing (emulator/prestart.py), before pathlib (and re, through fnmatch) is imported. paths.py makes Paths of them."""

import os

STATE_DIRNAME = ".kubeless-local"  # a project's working state, beside its code


def cache_root() -> str:
    """The per-user cache folder (not created here: paths.cache_dir() does)."""
    return os.environ.get("KUBELESS_LOCAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubeless-local"
    )

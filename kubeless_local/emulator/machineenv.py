"""This machine's env as a local runtime server, its template and its build steps start from: without the
variables that change how a language's runtime starts or behaves, which a pod does not have (its env is its image's
and the function's), and with the pod's clock and locale.

Guarantee: none of NOT_IN_THE_POD reaches a process backend's server, its template, a head start or a build step
from this machine's env; the function's own env may still set any of them, as in the pod. One in the user's shell
made a function start or behave otherwise here than in the pod: NODE_OPTIONS from a Yarn PnP shell (`--require
./.pnp.cjs`: the server crashed), RUBYOPT from `bundle exec`, GOARCH left from cross-compiling, PYTHONOPTIMIZE
(asserts skipped). Imports os alone: a plain `run`'s head start (prestart.py) uses it first thing.
"""

import os

NOT_IN_THE_POD = frozenset(
    {
        # Node.js: what it reads at start (NODE_PATH is the catalog's)
        "NODE_OPTIONS",
        "NODE_ENV",
        "NODE_DEBUG",
        "NODE_V8_COVERAGE",
        "NODE_NO_WARNINGS",
        "NODE_PENDING_DEPRECATION",
        "NODE_PRESERVE_SYMLINKS",
        "NODE_REDIRECT_WARNINGS",
        "NODE_COMPILE_CACHE",
        "UV_THREADPOOL_SIZE",
        # Python: the interpreter's variables (PYTHONPATH and PYTHONDONTWRITEBYTECODE are the catalog's)
        "PYTHONHOME",
        "PYTHONOPTIMIZE",
        "PYTHONWARNINGS",
        "PYTHONDEVMODE",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONBREAKPOINT",
        "PYTHONSAFEPATH",
        "PYTHONPYCACHEPREFIX",
        "PYTHONINSPECT",
        "PYTHONVERBOSE",
        "PYTHONMALLOC",
        "PYTHONFAULTHANDLER",
        "PYTHONTRACEMALLOC",
        "PYTHONNOUSERSITE",
        "PYTHONUSERBASE",
        "PYTHONSTARTUP",
        "PYTHONINTMAXSTRDIGITS",
        "PYTHONWARNDEFAULTENCODING",
        # Ruby and Bundler as `bundle exec` leaves them (BUNDLE_GEMFILE is the catalog's; a mirror's BUNDLE_* stays)
        "RUBYOPT",
        "RUBYLIB",
        "GEM_PATH",
        "BUNDLE_BIN_PATH",
        "BUNDLER_VERSION",
        "BUNDLER_SETUP",
        "BUNDLE_PATH",
        "BUNDLE_WITHOUT",
        "BUNDLE_FROZEN",
        "BUNDLE_DEPLOYMENT",
        # PHP: another php.ini
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        # Java
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        # Go: the build's target and flags (GOPROXY and the module cache's place stay)
        "GOOS",
        "GOARCH",
        "GOFLAGS",
        "GOWORK",
        "GO111MODULE",
        "GOEXPERIMENT",
        "CGO_ENABLED",
    }
)


def machine_env() -> dict[str, str]:
    """os.environ without NOT_IN_THE_POD, with the pod's clock and locale: UTC (no TZ; its image's zone) and
    LANG=C.UTF-8 (as our images and the language images Kubeless' runtimes build on set it) without this machine's
    LC_*, so its dates, days, text files and stdio are the pod's. The function's own TZ or LANG is set after this."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in NOT_IN_THE_POD and not name.startswith("LC_") and name != "LANGUAGE"
    }
    env["TZ"], env["LANG"] = "UTC", "C.UTF-8"
    return env

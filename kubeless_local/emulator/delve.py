"""Delve (`dlv`), the Go debugger a debugged Go function runs under (runtimes/go/server/main.go).

Built once per Delve version and Go version with the machine's Go, from the module proxy that Go is
configured with (`go install`, GOPROXY as the user has it), into
<cache>/delve/<delve version>-<go version>/dlv. The same step builds the standard library packages a
function's server uses without optimisations into Go's own build cache, so that the first debug build
of a function (runtimes/go/compile-function.sh, debug-build.sh) only compiles the function and the
server: the slow part happens here, with progress, not while the engine waits for the function to
start. Guarantee: the binary is complete or absent. The build
installs into a private temporary folder and the binary is renamed into place, so a killed build leaves
no half binary (its temporary folder is removed by the next build); builders of the same entry take
turns (a file lock), so two `dev`s build it once. A missing Go or an unreachable proxy is one UserError
line naming the fix. A dlv of the user's own (KUBELESS_LOCAL_DLV) is used as it is.
"""

import os
import shutil
from pathlib import Path
from typing import Callable

from kubeless_local.emulator.prepare import Locked, StepFailed, run_step
from kubeless_local.errors import UserError
from kubeless_local.paths import cache_dir

DLV_ENV = "KUBELESS_LOCAL_DLV"  # where a debugged Go server finds dlv (runtimes/go/server/main.go)
DELVE_MODULE = "github.com/go-delve/delve"
DELVE_VERSION = "v1.27.2"
STEP = "Delve build"
# What the Go runtime server imports from the standard library, with what they import: built for
# debugging (debug-build.sh's flags) once, with Delve. net/http alone is most of the work.
DEBUG_FLAGS = "-gcflags=all=-N -l"
WARM_PACKAGES = ("net/http", "encoding/json", "os/exec", "os/signal", "runtime/debug", "compress/gzip")
TMP_MARK = ".tmp-"  # <entry>.tmp-<pid>: a build in progress (or killed)

# run(step, argv, cwd, env, on_line): prepare.run_step's signature, replaced in tests.
Runner = Callable[[str, list, object, dict, Callable[[str], None]], None]


def go_version(go: str, run: Runner = run_step) -> str:
    """`go env GOVERSION` (go1.26.8): the toolchain half of the cache key."""
    lines: list[str] = []
    try:
        run(STEP, [go, "env", "GOVERSION"], None, dict(os.environ), lines.append)
    except StepFailed as exc:
        raise UserError(
            "cannot debug Go functions: %s does not run (%s): install Go or put it on PATH"
            % (go, last_line(exc.output))
        ) from None
    version = next((line.strip() for line in lines if line.strip()), "")
    if not version.startswith("go"):
        raise UserError("cannot debug Go functions: `%s env GOVERSION` printed %r, not a Go version" % (go, version))
    return version


def dlv(go: str = "go", on_line: Callable[[str], None] = lambda line: None, run: Runner = run_step) -> Path:
    """The cached `dlv` for this Go, built first if need be (progress lines go to on_line); the user's own
    when KUBELESS_LOCAL_DLV names one."""
    own = os.environ.get(DLV_ENV)
    if own:
        if not os.access(own, os.X_OK):
            raise UserError("%s=%s: no such executable; unset it, and Delve is built for you" % (DLV_ENV, own))
        return Path(own)
    entry = cache_dir() / "delve" / ("%s-%s" % (DELVE_VERSION, go_version(go, run)))
    binary = entry / "dlv"
    if binary.exists():
        return binary
    with Locked(entry):
        if binary.exists():  # built by another process while this one waited
            return binary
        for stale in entry.parent.glob(entry.name + TMP_MARK + "*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build
        tmp = entry.with_name(entry.name + TMP_MARK + str(os.getpid()))
        tmp.mkdir(parents=True)
        try:
            build(go, tmp, on_line, run)
            entry.mkdir(exist_ok=True)
            os.replace(tmp / "dlv", binary)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def build(go: str, into: Path, on_line: Callable[[str], None], run: Runner) -> None:
    """`go install` Delve into the folder `into`; a UserError line when it cannot."""
    package = "%s/cmd/dlv@%s" % (DELVE_MODULE, DELVE_VERSION)
    on_line("Building Delve %s for Go debugging (once, ~30 s)…" % DELVE_VERSION)
    # -modcacherw: the module cache stays deletable; GOTOOLCHAIN=local: never download another Go.
    env = {**os.environ, "GOBIN": str(into), "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}
    try:
        run(STEP, [go, "install", package], into, env, on_line)
    except StepFailed as exc:
        raise UserError(
            "cannot build Delve (%s): %s; check that `%s` reaches its module proxy (go env GOPROXY)"
            % (package, last_line(exc.output), go)
        ) from None
    if not (into / "dlv").is_file():
        raise UserError("cannot build Delve (%s): `go install` made no dlv binary" % package)
    on_line("Building the Go standard library for debugging (once)…")
    try:
        run(STEP, [go, "build", DEBUG_FLAGS, *WARM_PACKAGES], into, env, on_line)
    except StepFailed as exc:
        raise UserError("cannot build the Go standard library for debugging: %s" % last_line(exc.output)) from None


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


if __name__ == "__main__":  # .ci/setup.sh warms the cache: python3 -m kubeless_local.emulator.delve
    print(dlv(on_line=print))

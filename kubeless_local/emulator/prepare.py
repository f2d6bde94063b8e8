"""The controller's prepare/install/compile steps (contract §4): one pipeline for every backend.

Each prepare writes a new generation folder laid out like the pod's /kubeless; a `Generation` points
the function's stable `kubeless` link at it only once it is good (an atomic rename), so a running
server never sees a half-written tree, and a failed prepare leaves the last good generation serving.
Dependencies are installed once per sha256 of the deps file (shared cache).

The pipeline is written once, in host paths. A backend gives it a step runner (`HostSteps` runs
steps here; the docker backend runs them in a one-shot container of the runtime image) whose
`view` says where the tools see the folders (host paths, or the container's /kubeless, deps and
runtime-lib mounts). The code layout itself is layout.py: plain functions of the spec, so a renderer
that goes the other way (code → manifest) can mirror them.
"""

import fcntl
import hashlib
import itertools
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from re import Pattern
from typing import Callable, Optional

from kubeless_local import podenv
from kubeless_local.emulator import installinputs
from kubeless_local.emulator.layout import (
    hidden_standard_modules,
    layout_code,
    left_behind,
    readable_mode,
    writable_mode,
)
from kubeless_local.emulator.machineenv import machine_env
from kubeless_local.errors import UserError
from kubeless_local.paths import cache_dir
from kubeless_local.runtimes import Runtime
from kubeless_local.spec import FunctionSpec, sha256_hex

# Step names: what a StepFailed says failed (the supervisor maps them to states).
STEP_SETUP = "runtime setup"  # the runtime server's own libraries, once per runtime (needs the registries)
STEP_INSTALL = "dependency install"
STEP_CHECK = "check"
STEP_COMPILE = "compile"


class StepFailed(Exception):
    """A setup, install, check or compile step failed; `output` is what the tool printed."""

    def __init__(self, step, output):
        super().__init__("%s failed" % step)
        self.step, self.output = step, output


@dataclass(frozen=True)
class View:
    """Where the tools (steps and the runtime server) see the prepared folders. None: the host path;
    a string: the mount point in a container."""

    function: Optional[str] = None  # <state>/functions/<name>: gen-N/, build-N/ and the `kubeless`/`build` links
    install: Optional[str] = None  # the stable code folder (the pod's /kubeless); None: <function>/kubeless
    deps: Optional[str] = None
    runtime_lib: Optional[str] = None


HOST = View()


@dataclass
class Prepared:
    """One prepared generation of a function's code: what a backend starts a runtime server on."""

    spec: FunctionSpec
    runtime: Runtime
    root: Path  # <state>/functions/<name>
    generation: int
    code_dir: Path  # this generation's folder
    deps_dir: Path
    runtime_lib: Path
    build_dir: Optional[Path] = None
    deps_hash: str = ""
    placeholders: dict[str, str] = field(default_factory=dict)  # {install}, {deps}, {file}… as the tools see them
    view: View = HOST
    notices: tuple[str, ...] = ()  # what the layout left out of a source folder (code_files), said once
    # the spec's env as it was resolved for this generation (podenv: secret files read once); its servers get it
    user_env: tuple[tuple[str, str], ...] = ()

    @property
    def install_link(self) -> Path:
        """The stable link to the generation that serves (the pod's /kubeless)."""
        return self.root / "kubeless"

    @property
    def build_link(self) -> Path:
        return self.root / "build"

    def expand(self, argv: Iterable[str], **overrides: str) -> list[str]:
        """A catalog argv with its placeholders filled in."""
        values = {**self.placeholders, **overrides}
        return [str(a).format_map(values) for a in argv]

    def runtime_env(self, **placeholders: str) -> dict[str, str]:
        """The catalog's `env` of this runtime's backend block, expanded; `placeholders` override the
        prepared ones (e.g. {deps} while installing). The one place the catalog env is read."""
        values = {**self.placeholders, **placeholders}
        return {key: str(value).format_map(values) for key, value in self.runtime.steps.env.items()}

    def env(self, port: int, **placeholders: str) -> dict[str, str]:
        """The runtime server's env as a local process: the host's, then the container's (contract §4)."""
        env = host_env(self, port)
        env.update(self.runtime_env(**placeholders))
        return env

    def map_paths(self, text: str) -> str:
        """Point paths inside the prepared folders back at the user's files (in errors and logs). Any
        generation's folder maps, not only this one's: a server started on this generation logs from
        later ones after in-place reloads."""
        source = self.spec.source
        if source is None or not any(marker in text for marker in self._path_patterns(source)[0]):
            return text  # the common case, checked first: this runs for every log line
        _, file_re, folder_re, function_file, base = self._path_patterns(source)
        return folder_re.sub(base + "/", file_re.sub(lambda m: function_file, text))

    def _path_patterns(self, source: Path) -> tuple[set[str], Pattern[str], Pattern[str], str, str]:
        """(markers, file pattern, folder pattern, the user's function file, its folder), made once."""
        if not hasattr(self, "_patterns"):
            base = str(source if source.is_dir() else source.parent)
            file_name = self.spec.module + self.runtime.suffix
            function_file = str(source) if source.is_file() else base + "/" + file_name
            roots = {str(self.root), str(self.root.resolve()), self.view.function or str(self.root)}
            folders = "|".join(re.escape(r) + r"/(?:(?:gen|build)-[0-9]+|kubeless|build)" for r in sorted(roots))
            markers = set(roots)
            if self.view.install:
                folders += "|" + re.escape(self.view.install)
                markers.add(self.view.install)
            # (?<!…): a folder only where a path starts, not inside another path (/home/u/kubeless/…)
            folders = r"(?<![\w./-])(?:%s)/" % folders
            self._patterns = (
                markers,
                re.compile(folders + re.escape(file_name) + r"(?![\w.])"),
                re.compile(folders),
                function_file,
                base,
            )
        return self._patterns


def host_env(prepared, port):
    """This machine's env as a local runtime starts from (machineenv) plus the contract's variables: what a local
    process starts from."""
    env = machine_env()
    env.update(function_env(prepared, port, str(prepared.install_link)))
    return env


# pip's settings for the steps on this machine: installs as root (CI, containers) are expected, and a user's own
# setting that refuses an install into a folder (`require-virtualenv`, `user`, in PIP_* or pip.conf) is not the
# pod's. A variable outranks pip's config files, whose index (this machine's registry) still applies.
PIP_STEP_ENV = {"PIP_ROOT_USER_ACTION": "ignore", "PIP_REQUIRE_VIRTUALENV": "0", "PIP_USER": "0"}


def volume_notices(spec: FunctionSpec, in_container):
    """One line per Secret or ConfigMap volume: where the function finds it here, never silently dropped."""
    lines = []
    for volume in podenv.volumes(spec):
        what = "%s %s" % ("secret" if volume.source.kind == "Secret" else volume.source.kind, volume.name)
        if not volume.folder.is_dir():
            lines.append(
                "%s (mounted at %s in the pod): no folder %s; create it with one file per key"
                % (what, volume.mount, volume.folder)
            )
        elif in_container:
            lines.append("%s: %s mounted read-only at %s" % (what, volume.folder, volume.mount))
        else:
            lines.append(
                "%s (mounted at %s in the pod): a local process reads it from %s, path in $%s"
                % (what, volume.mount, volume.folder, volume.env_name)
            )
    return lines


def function_env(prepared: Prepared, port, install, in_container=False):
    """The runtime container's env (contract §4): the user's env as this generation resolved it first, then
    Kubeless' own variables and kubeless-local's (bind to loopback, print control lines, isolation mode)."""
    spec = prepared.spec
    env = dict(prepared.user_env)
    env.setdefault("HOSTNAME", podenv.pod_name(spec))  # the container runtime sets it to the pod's name
    env.update(
        {
            "FUNC_HANDLER": spec.function_name,
            "MOD_NAME": spec.module,
            "FUNC_TIMEOUT": spec.timeout,
            "FUNC_RUNTIME": spec.runtime,
            "FUNC_MEMORY_LIMIT": spec.memory_limit,
            "FUNC_PORT": str(port),
            "KUBELESS_INSTALL_VOLUME": install,
            "KUBELESS_LOCAL_BIND": "127.0.0.1",
            "KUBELESS_LOCAL_CONTROL": "1",
            "KUBELESS_LOCAL_ISOLATION": spec.isolation,
        }
    )
    for volume in podenv.volumes(spec):  # the same variable in both backends: the folder as the function sees it
        env[volume.env_name] = volume.mount if in_container else str(volume.folder)
    return env


def run_step(step, argv, cwd, env, on_line):
    """Run a step on this machine, streaming its output; raise StepFailed with the output."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise StepFailed(step, "cannot run %s: %s" % (argv[0], exc)) from None
    lines = []
    assert proc.stdout is not None  # stdout=PIPE
    for line in proc.stdout:
        lines.append(line)
        on_line(line.rstrip("\n"))
    if proc.wait() != 0:
        raise StepFailed(step, "".join(lines).strip() or "%s exited with code %d" % (argv[0], proc.returncode))


class Locked:
    """An exclusive lock on a cache entry, shared between processes (flock)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def cached_step(folder: Path, build):
    """Run build(folder) once: a `.complete` marker says a folder is usable; a failed one is redone."""
    marker = folder / ".complete"
    if marker.exists():
        return folder
    with Locked(folder):
        if marker.exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder)
        marker.touch()
    return folder


# ---------------------------------------------------------------- running steps


class HostSteps:
    """Runs the pipeline's steps on this machine (process backend): the tools see host paths."""

    view = HOST
    cache_prefix = ""  # cache folders: deps/, runtime-lib/, builds/

    def __init__(self, runtime):
        self.runtime = runtime
        self.exe = runtime.executable_path() or runtime.executable
        self.runtime_dir = str(runtime.runtime_dir)
        self.where = ""  # said in progress lines

    def identity(self):
        """What a cached setup or build depends on besides its inputs: the toolchain."""
        return self.exe

    def install_identity(self):
        """What installed deps depend on besides the deps file and the command: nothing more here (the
        process backend's deps cache keeps its key)."""
        return ""

    def install_step(self, argv):
        """(argv, extra env) of the install step: the catalog's, here."""
        return argv, {}

    def new_prepared(self, **fields):
        return Prepared(**fields)

    def setup_env(self):
        return {**machine_env(), **PIP_STEP_ENV}

    def env(self, prepared):
        return {**host_env(prepared, 0), **PIP_STEP_ENV}

    def run(self, step, argv, cwd, env, on_line, binds=None):
        """Run one step. `binds` ({view field: (host folder, writable)}) say which folders it uses;
        on the host they are where they are."""
        run_step(step, argv, cwd, env, on_line)

    def check(self, prepared, argv, cwd):
        self.run(STEP_CHECK, argv, cwd, step_env(prepared, self), on_line=lambda line: None)

    def finish(self, prepared):
        """What a prepared generation needs before its servers start, once it is complete: nothing here (a
        local process reads its files as the user who wrote them)."""


def setup_runtime_lib(runtime, on_line, steps=None):
    """The runtime server's own libraries ({runtime_lib}), set up once per toolchain and version of the
    setup inputs. A failure (e.g. the registries cannot be reached) is StepFailed("runtime setup")."""
    steps = steps or HostSteps(runtime)
    settings = runtime.steps  # the block of the backend the runtime was resolved for
    digest = hashlib.sha256(repr((settings.setup, steps.identity())).encode())
    for name in settings.setup_inputs:
        digest.update((runtime.runtime_dir / name).read_bytes())
    folder = cache_dir() / (steps.cache_prefix + "runtime-lib") / runtime.name / digest.hexdigest()[:16]
    if not settings.setup:
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def build(target):
        lib = steps.view.runtime_lib or str(target)
        values = {"exe": steps.exe, "version": runtime.version, "runtime_dir": steps.runtime_dir, "runtime_lib": lib}
        on_line("setting up the %s runtime%s (once)" % (runtime.name, steps.where))
        steps.run(
            STEP_SETUP,
            [a.format_map(values) for a in settings.setup],
            target,
            steps.setup_env(),
            on_line,
            binds={"runtime_lib": (target, True)},
        )

    return cached_step(folder, build)


def step_env(prepared, steps, extra=None, **placeholders):
    """A step's env: the runner's base (this machine's, or a container's), the catalog's env of the
    backend's block, then the step's own variables."""
    env = steps.env(prepared)
    env.update(prepared.runtime_env(**placeholders))
    env.update(extra or {})
    return env


def install_inputs(prepared, deps):
    """(the files of the function its install reads besides the deps file, the sha256 that names the install
    of both): installinputs.find. StepFailed("dependency install") for one the pod's install would not see."""
    if not deps.strip():
        return installinputs.Inputs((), ""), ""
    try:
        inputs = installinputs.find(prepared.runtime.dep_name, deps, prepared.code_dir, prepared.spec.source)
    except installinputs.Missing as exc:
        raise StepFailed(STEP_INSTALL, str(exc)) from None
    return inputs, sha256_hex((deps + "\0" + inputs.digest if inputs.digest else deps).encode())


def install_deps(prepared, steps, deps, inputs, digest, on_line):
    """The folder of the installed deps: one cached install per deps-file content and `inputs` (their
    `digest`, from install_inputs), install command (a changed command, e.g. one that now installs the whole
    closure, installs anew) and install image (another image's pip or npm lays out other files)."""
    runtime = prepared.runtime
    install = runtime.steps.install
    cache = cache_dir() / (steps.cache_prefix + "deps") / (runtime.name or "custom")
    if not deps.strip() or not install:
        (cache / "none").mkdir(parents=True, exist_ok=True)
        return cache / "none"
    identity = steps.install_identity()
    key = sha256_hex(repr((install, digest, identity) if identity else (install, digest)).encode())

    def build(target):
        inputs.copy_into(prepared.code_dir, target)  # where the tool looks: beside the deps file, as in /kubeless
        if steps.view is not HOST:  # the runtime container reads them too (a linked package, autoloaded classes)
            open_to_all([target], [target / rel for rel in inputs.paths], [])
        (target / runtime.dep_name).write_text(deps)
        beside = " with " + ", ".join(inputs.paths) if inputs.paths else ""
        on_line("installing %s%s%s (sha256 %s…)" % (runtime.dep_name, beside, steps.where, digest[:12]))
        values = {"deps": steps.view.deps or str(target)}
        values["deps_file"] = values["deps"] + "/" + runtime.dep_name
        env = step_env(
            prepared,
            steps,
            {"KUBELESS_DEPS_FILE": values["deps_file"], "KUBELESS_INSTALL_VOLUME": values["deps"]},
            **values,
        )
        argv, extra = steps.install_step(prepared.expand(install, **values))
        env.update({key: podenv.expand(str(value), env) for key, value in extra.items()})
        # {runtime_lib} too: a runtime may keep a download cache shared by every deps file there (Java's
        # Maven repository)
        binds = {"deps": (target, True), "runtime_lib": (prepared.runtime_lib, True)}
        steps.run(STEP_INSTALL, argv, target, env, on_line, binds=binds)

    return cached_step(cache / key, build)


# ---------------------------------------------------------------- the pipeline


def new_generation(state_dir, name):
    """(function root, generation number, its empty gen-N folder) for the next prepare of `name`."""
    root = Path(state_dir) / "functions" / name
    root.mkdir(parents=True, exist_ok=True)
    generation = next_generation(root)
    code_dir = root / ("gen-%d" % generation)
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir()
    return root, generation, code_dir


def next_generation(root: Path):
    numbers = [int(p.name[4:]) for p in root.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def prepare(
    spec: FunctionSpec,
    runtime: Runtime,
    state_dir: Path,
    on_line: Callable[[str], None] = lambda line: None,
    previous: Optional[Prepared] = None,
    steps=None,
) -> Prepared:
    """Lay out a new generation of `spec`'s code, set up the runtime, install deps, check, compile.
    Raises StepFailed/UserError (and then leaves no trace of the new generation).

    The stable `kubeless` link is NOT switched here: a Generation of it switches it (see there).
    """
    steps = steps or HostSteps(runtime)
    root, generation, code_dir = new_generation(state_dir, spec.name)
    prepared = steps.new_prepared(
        spec=spec,
        runtime=runtime,
        root=root,
        generation=generation,
        code_dir=code_dir,
        deps_dir=code_dir,
        runtime_lib=code_dir,
        view=steps.view,
    )
    try:
        _prepare(prepared, steps, on_line, previous)
        steps.finish(prepared)
    except BaseException:
        discard(prepared)
        raise
    return prepared


def open_to_all(folders: list, trees: list, writable: list) -> None:
    """`folders` themselves, and every file and folder of `trees`, readable by every user, and those of `writable`
    writable too: a runtime container runs as the pod's user (1000, or the Deployment's securityContext), not as
    the host user who wrote them under a umask of 077 or copied a file of mode 0600, where in the pod its volume
    gives it its code, in /kubeless: an emptyDir the init container filled as that user, which the function may
    write to. (The state folder, 0700, still keeps the other users of this machine out.)"""
    modes = [(readable_mode, [str(folder) for folder in folders])]
    for to_mode, group in ((readable_mode, trees), (writable_mode, writable)):
        for tree in group:
            if tree is not None:
                modes.append((to_mode, [os.path.join(d, n) for d, ds, fs in os.walk(tree) for n in ["", *ds, *fs]]))
    for to_mode, paths in modes:
        for path in paths:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and to_mode(st.st_mode) != st.st_mode:
                os.chmod(path, stat.S_IMODE(to_mode(st.st_mode)))


HIDES = "%s hides Python's standard module `%s` (the function's folder comes first on PYTHONPATH, in the pod too)"


def _hiding_standard_modules(spec, hidden):
    """What to say of a Python function's modules named as standard ones (layout.hidden_standard_modules): the
    handler's own is refused (the runtime's imports find it, and the server cannot start); another is said."""
    said = []
    for entry, module in hidden:
        if module == spec.module:
            raise UserError(
                "handler %s: %s, which the runtime imports: rename the file and the handler"
                % (spec.handler, HIDES % (entry, module))
            )
        said.append(HIDES % (entry, module) + "; rename it if the function does not start")
    return said


def _prepare(prepared, steps, on_line, previous):
    spec, runtime, view = prepared.spec, prepared.runtime, steps.view
    settings = runtime.steps  # the block of the backend the runtime was resolved for
    notices: list = []
    shared = previous.code_dir if previous is not None else None
    deps = layout_code(spec, runtime, prepared.code_dir, notices.append, shared)
    notices += left_behind(spec, runtime)
    if runtime.server == "python":
        notices += _hiding_standard_modules(spec, hidden_standard_modules(prepared.code_dir))
    user_env, left_unset = podenv.variables(spec)
    notices += left_unset
    prepared.notices = tuple(notices)
    prepared.user_env = tuple(user_env)
    if previous is None:
        notices += volume_notices(spec, in_container=view is not HOST)
    for line in notices:
        if previous is None or line not in previous.notices:  # said once, not on every save
            on_line(line)
    prepared.runtime_lib = setup_runtime_lib(runtime, on_line, steps)
    function = view.function or str(prepared.root)
    install = view.install or function + "/kubeless"
    prepared.placeholders = {
        "exe": steps.exe,
        "version": runtime.version,
        "runtime_dir": steps.runtime_dir,
        "install": install,
        "deps": "",
        "deps_file": install + "/" + runtime.dep_name,
        "file": install + "/" + spec.module + runtime.suffix,
        "module": spec.module,
        "handler": spec.function_name,
        "build": function + "/build",
        "runtime_lib": view.runtime_lib or str(prepared.runtime_lib),
    }
    inputs, prepared.deps_hash = install_inputs(prepared, deps)
    if previous is not None and previous.deps_hash == prepared.deps_hash and deps.strip():
        prepared.deps_dir = previous.deps_dir
    else:
        prepared.deps_dir = install_deps(prepared, steps, deps, inputs, prepared.deps_hash, on_line)
    prepared.placeholders["deps"] = view.deps or str(prepared.deps_dir)
    # Validate and compile against this generation's own folder, before anything serves it.
    here = function + "/" + prepared.code_dir.name
    here = {"install": here, "file": here + "/" + spec.module + runtime.suffix}
    if settings.check:
        steps.check(prepared, prepared.expand(settings.check, **here), prepared.code_dir)
    if settings.compile:
        prepared.build_dir = prepared.root / ("build-%d" % prepared.generation)
        shutil.rmtree(prepared.build_dir, ignore_errors=True)
        prepared.build_dir.mkdir()
        argv = prepared.expand(settings.compile, build=function + "/" + prepared.build_dir.name, **here)
        env = step_env(
            prepared, steps, {"KUBELESS_FUNC_NAME": spec.function_name, "KUBELESS_INSTALL_VOLUME": here["install"]}
        )
        binds = {
            "function": (prepared.root, True),
            "deps": (prepared.deps_dir, False),
            "runtime_lib": (prepared.runtime_lib, True),
        }
        compile_cached(
            prepared,
            steps,
            (settings.compile, steps.identity()),
            lambda: steps.run(STEP_COMPILE, argv, prepared.build_dir, env, lambda line: None, binds=binds),
        )


BUILDS_KEPT = 20  # cached builds per runtime; older ones are removed


def build_key(prepared, extra):
    """sha256 of everything a compile reads: the code, the deps and runtime libraries, the toolchain, the
    Function's env (the compile step runs with it)."""
    spec = prepared.spec
    digest = hashlib.sha256(
        repr(
            (
                prepared.runtime.name,
                extra,
                str(prepared.deps_dir),
                str(prepared.runtime_lib),
                spec.module,
                spec.function_name,
                sorted(dict(prepared.user_env).items()),
            )
        ).encode()
    )
    for path in sorted(prepared.code_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(prepared.code_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_cached(prepared, steps, extra, compile):
    """Run compile() into prepared.build_dir once per content; the same code again (a restart of `dev`,
    an undo) gets the cached output copied in instead. Returns True when it came from the cache."""
    folder = cache_dir() / (steps.cache_prefix + "builds") / prepared.runtime.name / build_key(prepared, extra)
    if (folder / ".complete").exists():
        shutil.copytree(folder, prepared.build_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        os.utime(folder)  # recently used: kept longest
        return True
    compile()
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp-%d" % os.getpid())
        shutil.copytree(prepared.build_dir, tmp, symlinks=True)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, folder)
        except OSError:  # another process stored the same build meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        builds = sorted(
            (p for p in folder.parent.iterdir() if (p / ".complete").exists()), key=lambda p: p.stat().st_mtime
        )
        for old in builds[:-BUILDS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    return False


# ---------------------------------------------------------------- generations


def point(link: Path, target: Path) -> None:
    """Atomically point `link` at `target` (relative symlink, so it also works inside containers)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)


def activate(prepared: Prepared) -> None:
    """Point the stable links at this generation (old generations stay: see prune_generations)."""
    point(prepared.install_link, prepared.code_dir)
    if prepared.build_dir is not None:
        point(prepared.build_link, prepared.build_dir)


def discard(prepared: Prepared) -> None:
    """Remove a generation that never served (a failed step or load)."""
    remove_folders(prepared.root, [p for p in (prepared.code_dir, prepared.build_dir) if p is not None])


def remove_folders(root: Path, folders):
    """Remove generation folders without making the caller wait: each is renamed into <root>/trash at
    once (its name is free, nothing serves from it) and deleted by a background thread; a folder of
    10,000 files takes seconds to delete, and the next save must not wait for it. What an earlier
    session left in the trash goes too."""
    trash = root / "trash"
    trash.mkdir(exist_ok=True)
    doomed = list(trash.iterdir())
    for folder in folders:
        target = trash / ("%s.%d.%d" % (folder.name, os.getpid(), next(_trash_numbers)))
        try:
            os.rename(folder, target)
        except FileNotFoundError:
            continue
        except OSError:
            target = folder  # cannot be renamed: delete it where it is
        doomed.append(target)
    if doomed:
        threading.Thread(target=_delete, args=(doomed,), daemon=True).start()


def _delete(folders):
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


_trash_numbers = itertools.count()


CALL_MARGIN = 10.0  # seconds past a function's timeout for a stopped call to be answered and gone


def call_bound(spec: FunctionSpec) -> float:
    """Seconds a call of `spec` may run at most: its timeout (the runtime servers stop a runaway call
    there) plus CALL_MARGIN."""
    return float(spec.timeout) + CALL_MARGIN


def prune_generations(current: Prepared, previous: Optional[Prepared] = None, calls_may_run: bool = True) -> None:
    """Remove the generations no call can use any more. `previous` (the one `current` replaced) retires
    now: a call it started may still read its files, and only the timeout bounds a call (the runtime
    servers stop a runaway call there), so it stays until the timeout (+ margin) has passed. Its
    deadline is written down (`retired/gen-N`), so a generation replaced several saves ago is kept as
    long as its own calls may run. `calls_may_run=False`: the server was restarted, no call
    of an older generation runs, every one but `current` goes."""
    root, now = current.root, time.time()
    retired = root / "retired"
    if previous is not None and previous.code_dir != current.code_dir and calls_may_run:
        retired.mkdir(exist_ok=True)
        (retired / previous.code_dir.name).write_text("%.3f\n" % (now + call_bound(previous.spec)))
    keep = {p.name for p in (current.code_dir, current.build_dir) if p is not None}
    over = []
    for path in root.iterdir():
        match = re.fullmatch(r"(?:gen|build)-([0-9]+)", path.name)
        if match is None or path.name in keep or not path.is_dir():
            continue
        if not calls_may_run or retired_until(retired / ("gen-" + match.group(1))) <= now:
            over.append(path)
    remove_folders(root, over)
    for stamp in retired.glob("gen-*"):
        if not (root / stamp.name).exists():
            stamp.unlink(missing_ok=True)


def retired_until(stamp: Path) -> float:
    """When the calls of a replaced generation are over (0: no stamp, no call)."""
    try:
        return float(stamp.read_text())
    except (OSError, ValueError):
        return 0.0


class Generation:
    """A new generation of a function, from prepared to kept or discarded: the one owner of its links
    and folders. `switch()` points the stable links at it (an atomic rename); then `keep()`: it serves,
    and the generation it replaces retires once no call can use it any more; or `discard()`: it does not
    serve, the generation it replaces is pointed at again and this one's folders go. A prepare that
    fails makes no Generation at all: the last good one keeps serving."""

    def __init__(self, prepared: Prepared, replaces: Optional[Prepared] = None) -> None:
        self.prepared = prepared
        self.replaces = replaces  # the generation that served when this one was prepared (None: the first)

    @property
    def reloads_in_place(self) -> bool:
        """The running server can serve it: only the code changed (same runtime, deps and manifest) and
        the runtime reloads by signal. Else it needs a new server."""
        old, new = self.replaces, self.prepared
        return (
            old is not None
            and new.runtime.reload == "signal"
            and old.runtime == new.runtime
            and old.deps_dir == new.deps_dir
            and old.spec.document == new.spec.document
            and old.user_env == new.user_env  # (a secret's key file the env is read from was saved)
        )

    def switch(self) -> None:
        """Point the stable links at this generation: new workers and new servers load it."""
        activate(self.prepared)

    def keep(self, calls_may_run: bool) -> None:
        """It serves. The generation it replaces retires (see prune_generations); `calls_may_run=False`:
        the server was restarted, no call of an older generation runs."""
        prune_generations(self.prepared, self.replaces, calls_may_run)

    def discard(self) -> None:
        """It does not serve: the links point at the generation it replaces again (new workers keep
        loading the last good code) and its folders go."""
        if self.replaces is not None:
            activate(self.replaces)
        discard(self.prepared)

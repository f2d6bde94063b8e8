"""The code of a Function laid out as the Kubeless controller's prepare init container lays out the
pod's /kubeless (contract §4): a source folder or file copied, or the inline artifact (text, base64,
URL; zip / compressed tar) decoded, checksum-verified and unpacked, plus the deps file.

Plain functions of the spec and a target folder, nothing else: a renderer that goes the other way
(code folder → Function manifest with `function`, `function-content-type` and `checksum`) mirrors
`layout_code` and `inline_artifact`, and takes a folder's files from the same `code_files`.
"""

import base64
import binascii
import fcntl
import io
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kubeless_local.errors import UserError
from kubeless_local.spec import (
    CONFIGMAPS_DIRNAME,
    SECRETS_DIRNAME,
    SKIP_DIRS,
    SOURCE_ANNOTATION,
    VIRTUALENV,
    FunctionSpec,
    archive_kind,
    checksum_of,
    is_virtualenv,
    not_a_file,
    unresolvable_link,
)

PLAIN_CONTENT_TYPES = ("", "text", "url", "base64")  # the file keeps MOD_NAME + suffix (contract §4)


def fetch(url):
    import urllib.request  # with http.client, email and ssl (~15 ms): only for code given as a URL

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise UserError("cannot download %s (%s)" % (url, exc)) from None


def inline_artifact(spec: FunctionSpec):
    """The artifact bytes of an inline Function (after base64-decode or download), checksum-verified."""
    ctype = spec.content_type or "text"
    if "url" in ctype:
        data = fetch(spec.function)
    elif "base64" in ctype:
        try:
            data = base64.b64decode(spec.function, validate=False)
        except (binascii.Error, ValueError):
            raise UserError(
                "%s: spec.function is not valid base64 (function-content-type %s)" % (spec.origin, ctype)
            ) from None
    else:
        data = spec.function.encode()
    if spec.checksum:
        actual = checksum_of(data)
        if actual != spec.checksum:
            raise UserError(
                "%s: spec.checksum %s does not match the code (%s); update the checksum or the code"
                % (spec.origin, spec.checksum, actual)
            )
    return data


def safe_extract(data, ctype, target: Path, origin):
    import tarfile
    import zipfile

    try:
        if "+zip" in ctype:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    dest = (target / member).resolve()
                    if not str(dest).startswith(str(target.resolve())):
                        raise UserError("%s: archive entry %s escapes the install folder" % (origin, member))
                archive.extractall(target)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                archive.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise UserError("%s: not a valid %s archive (%s)" % (origin, ctype.lstrip("+").split("+")[-1], exc)) from None


@dataclass
class CodeFiles:
    """What of a source folder is the function's code (`code_files`). Paths are strings: a folder may
    hold tens of thousands of files, walked on every save."""

    files: list = field(default_factory=list)  # (relative path with `/`, path to read), sorted
    stats: dict = field(default_factory=dict)  # relative path → its os.stat_result (links followed)
    outside: list = field(default_factory=list)  # (relative path, Path it points at): links leaving the project
    skipped: list = field(default_factory=list)  # (relative path, why): not a regular file or folder

    def notices(self, source: Path):
        """One line per entry left out, naming it (what `dev` says)."""
        lines = [
            "%s is a symbolic link to %s, outside the project: not copied (copy what the function needs into"
            " the project)" % (source / rel, where)
            for rel, where in self.outside
        ]
        return lines + ["%s: %s, skipped" % (source / rel, why) for rel, why in self.skipped]


# The project's own folders of secrets and ConfigMaps (podenv.py): never code, even where the function's source is
# the project folder (`push` zipped a secret's keys into the Function, readable by whoever may read Functions).
PROJECT_ONLY = {
    SECRETS_DIRNAME: "the project's secrets: not code (the pod gets them from the cluster's Secrets)",
    CONFIGMAPS_DIRNAME: "the project's ConfigMaps: not code (the pod gets them from the cluster's ConfigMaps)",
}


def code_files(source: Path, project: Optional[Path] = None) -> CodeFiles:
    """The files of a source folder that are the function's code: what `dev` lays out and `push` zips.
    Regular files, through folders, minus the dependency/state folders (SKIP_DIRS, at any depth) and
    hidden names at the top. A symbolic link is followed when what it points at is inside `project`
    (default: the source folder itself) and refused when it leaves it; a broken link, a link loop, a
    FIFO, a socket or a device is skipped (opening a FIFO would block). Never raises for an entry."""
    real = os.path.realpath(source)
    boundary = os.path.realpath(project or source)
    found = CodeFiles()
    kept_out = {boundary + "/" + name: why for name, why in PROJECT_ONLY.items()}
    kept_out.update(dict.fromkeys(own_output(), OWN_OUTPUT))
    _walk(str(source), real, "", boundary.rstrip("/") + "/", frozenset({real}), found, kept_out)
    return found


OWN_OUTPUT = "where this kubeless-local writes its output: not code (each line would be a save, and reload it)"


def own_output() -> list[str]:
    """The real paths of the files this process's stdout and stderr go to: `dev > dev.log 2>&1` in the project,
    or through a pipe, the files its reader writes (`dev 2>&1 | tee dev.log`: Linux only)."""
    paths: list[str] = []
    for fd in (1, 2):
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISFIFO(mode) and sys.platform.startswith("linux"):
                paths += _files_written_by_readers_of(os.readlink("/proc/self/fd/%d" % fd))
            if not stat.S_ISREG(mode):
                continue
            path = os.readlink("/proc/self/fd/%d" % fd) if sys.platform.startswith("linux") else ""
            if not path and hasattr(fcntl, "F_GETPATH"):  # macOS
                path = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if path:
            paths.append(os.path.realpath(path))
    return paths


READERS_LOOKED_AGAIN = 10.0  # seconds before a pipe whose reader writes no file is looked at again (tee starting)
_readers: dict[str, tuple[float, tuple[str, ...]]] = {}  # pipe → (when looked at, the files its readers write)


def _files_written_by_readers_of(pipe: str) -> tuple[str, ...]:
    """The regular files open for writing in the processes whose stdin is `pipe` (`pipe:[inode]`): what `tee`
    writes this process's output to. Found once per pipe (its reader starts with the pipeline); a pipe read by
    a process that writes none (`| less`) is looked at again now and then (~0.5 ms for 100 processes)."""
    looked = _readers.get(pipe)
    if looked is not None and (looked[1] or time.monotonic() < looked[0] + READERS_LOOKED_AGAIN):
        return looked[1]
    _readers[pipe] = (time.monotonic(), _readers_files(pipe))
    return _readers[pipe][1]


def _readers_files(pipe: str) -> tuple[str, ...]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if not pid.isdigit() or pid == str(os.getpid()) or os.readlink("/proc/%s/fd/0" % pid) != pipe:
                continue
            for fd in os.listdir("/proc/%s/fd" % pid):
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                if target.startswith("/") and fd != "0" and _open_for_writing(pid, fd):
                    found.append(os.path.realpath(target))
        except OSError:
            continue  # gone, or another user's
    return tuple(found)


def _open_for_writing(pid: str, fd: str) -> bool:
    with open("/proc/%s/fdinfo/%s" % (pid, fd)) as info:
        flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
    return bool(flags & (os.O_WRONLY | os.O_RDWR)) and os.path.isfile("/proc/%s/fd/%s" % (pid, fd))


def _walk(
    folder: str, real_folder: str, prefix: str, inside: str, ancestors: frozenset, found: CodeFiles, kept_out: dict
):
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        found.skipped.append((prefix.rstrip("/") or ".", "cannot be read (%s)" % (exc.strerror or exc)))
        return
    for entry in entries:
        name, rel, path = entry.name, prefix + entry.name, entry.path
        if name in SKIP_DIRS or (not prefix and name.startswith(".")):
            continue
        real = real_folder + "/" + name
        if entry.is_symlink():
            try:
                real = os.path.realpath(path, strict=True)
            except OSError as exc:
                found.skipped.append((rel, unresolvable_link(path, exc)))
                continue
            if not (real + "/").startswith(inside):
                found.outside.append((rel, Path(real)))
                continue
        if real in kept_out:
            found.skipped.append((rel, kept_out[real]))
            continue
        try:
            st = entry.stat()  # follows a link; cached by scandir
        except OSError as exc:
            found.skipped.append((rel, "cannot be read (%s)" % (exc.strerror or exc)))
            continue
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if real in ancestors:
                found.skipped.append((rel, "a symbolic link loop (to a folder above it)"))
            elif is_virtualenv(path):
                found.skipped.append((rel, VIRTUALENV))
            else:
                _walk(path, real, rel + "/", inside, ancestors | {real}, found, kept_out)
        elif stat.S_ISREG(mode):
            found.files.append((rel, path))
            found.stats[rel] = st
        else:
            found.skipped.append((rel, not_a_file(mode)))


def unchanged(copy: str, st: os.stat_result):
    """`copy` (a file of an earlier generation) still is what copy2 made of a file that now has stat `st`:
    same size, mtime and mode on both sides (the mode made readable, or writable, by all too:
    prepare.open_to_all). A user's save changes the source's mtime; a function that wrote into its own code folder
    changed the copy's."""
    try:
        old = os.lstat(copy)
    except OSError:
        return False
    return (old.st_size, old.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and old.st_mode in (
        st.st_mode,
        readable_mode(st.st_mode),
        writable_mode(st.st_mode),
    )


def readable_mode(mode: int) -> int:
    """`mode` readable by every user (and searchable or runnable, where its owner may)."""
    return mode | 0o444 | (0o111 if mode & 0o100 or stat.S_ISDIR(mode) else 0)


def writable_mode(mode: int) -> int:
    """`mode` readable and writable by every user (and searchable or runnable, where its owner may)."""
    return readable_mode(mode) | 0o222


def copy_code(
    source: Path, target: Path, project: Optional[Path], on_notice: Callable[[str], None], previous: Optional[Path]
):
    """Lay a source folder's code files out in `target`, saying what was left out. A file unchanged since
    the `previous` generation's copy is hard-linked to that copy instead of copied again: a save costs
    what changed, not the folder. Never linked to the user's file itself, whose later in-place writes
    would reach into the generations; each generation's files are copies only the layout writes."""
    found = code_files(source, project)
    made = {str(target)}
    for rel, path in found.files:
        dest = "%s/%s" % (target, rel)
        folder = dest.rpartition("/")[0]
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            if previous is not None and unchanged("%s/%s" % (previous, rel), found.stats[rel]):
                try:
                    os.link("%s/%s" % (previous, rel), dest)
                    continue
                except OSError:
                    pass  # a file system without hard links, or removed meanwhile: copy it
            shutil.copy2(path, dest)
        except OSError as exc:  # removed meanwhile, unreadable
            found.skipped.append((rel, "cannot be read (%s)" % (exc.strerror or exc)))
    for line in found.notices(source):
        on_notice(line)


HARMLESS_TO_HIDE = {"test"}  # Python's own test suite: nothing a function or the runtime imports


def hidden_standard_modules(code_dir: Path) -> list[tuple[str, str]]:
    """(entry, module) for each of the function's top-level modules named as Python's standard ones (`json.py`,
    `email/`): /kubeless comes before the standard library on PYTHONPATH (the controller sets it so, in the pod as
    here), so `import json` finds the function's file, in the runtime's own imports too. [] where this Python cannot
    name its standard modules (3.9)."""
    standard: frozenset[str] = getattr(sys, "stdlib_module_names", frozenset()) - HARMLESS_TO_HIDE
    hidden = []
    for entry in sorted(code_dir.iterdir()):
        if entry.suffix == ".py" and entry.stem in standard and entry.is_file():
            hidden.append((entry.name, entry.stem))
        elif entry.name in standard and (entry / "__init__.py").is_file():
            hidden.append((entry.name + "/", entry.name))
    return hidden


def source_file_name(spec: FunctionSpec, runtime) -> str:
    """The name a local source file gets in /kubeless: MOD_NAME + the runtime's suffix; for a runtime Kubeless
    does not know (no suffix: a custom image's) the file's own name without its extension, as the Kubeless
    docs' custom runtime lays it out (the file, not the handler, names it)."""
    assert spec.source is not None
    return spec.module + runtime.suffix if runtime.suffix else spec.source.stem


# How a handler names a module of its own folder, per runtime server: each match's groups give the module's
# path from the handler's folder, without the runtime's suffix.
LOCAL_IMPORTS = {
    "python": re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([A-Za-z_]\w*))", re.M),
    "nodejs": re.compile(r"""(?:require\(\s*|from\s+|import\s*\(\s*)['"]\./([\w./-]+?)(?:\.[cm]?js)?['"]"""),
    "ruby": re.compile(r"""require(?:_relative[ \t(]*['"](?:\./)?|[ \t(]*['"]\./)([\w./-]+?)(?:\.rb)?['"]"""),
    "php": re.compile(
        r"""(?:require|include)(?:_once)?[ \t(]*(?:__DIR__[ \t]*\.[ \t]*)?['"]/?(?:\./)?([\w./-]+?)\.php['"]"""
    ),
}
READ_AT_MOST = 1 << 20  # bytes of a handler searched for imports


def left_behind(spec: FunctionSpec, runtime) -> list[str]:
    """A line for the files beside a one-file function that its handler imports: in the pod only the function's
    file is in /kubeless, so the import fails there (and here, the same); the folder as the source brings them."""
    source, pattern = spec.source, LOCAL_IMPORTS.get(runtime.server)
    if source is None or pattern is None or not source.is_file() or archive_kind(source.name):
        return []
    try:
        with open(source, "rb") as file:
            text = file.read(READ_AT_MOST).decode(errors="replace")
    except OSError:
        return []
    folder = source.parent
    beside = []
    for name in {name for match in pattern.finditer(text) for name in match.groups() if name}:
        if (folder / (name + runtime.suffix)).is_file():
            beside.append(name + runtime.suffix)
        elif runtime.server == "python" and (folder / name).is_dir():  # a package
            beside.append(name + "/")
    beside.sort()
    if not beside:
        return []
    return [
        "%s imports %s from beside it, but the function's source is the file %s alone: in the pod only that file is"
        " in /kubeless, so the import fails; make the folder the source (%s: .)"
        % (source, ", ".join(beside), source.name, SOURCE_ANNOTATION)
    ]


def _one_file(spec: FunctionSpec, runtime) -> None:
    """A function of one file is /kubeless/<module><suffix>: a module in a folder (src/handler) names a file that
    only a folder or an archive has (the controller's ConfigMap key cannot hold a `/` either)."""
    if "/" in spec.module:
        raise UserError(
            "%s: spec.handler %s names %s%s in a folder, but the function is one file: make the source the"
            " folder that holds it (`run FOLDER`) or a zip of it"
            % (spec.origin, spec.handler, spec.module, runtime.suffix)
        )


def layout_code(
    spec: FunctionSpec,
    runtime,
    target: Path,
    on_notice: Callable[[str], None] = lambda line: None,
    previous: Optional[Path] = None,
):
    """Fill `target` as the prepare init container fills /kubeless; returns the deps file content.
    `on_notice` hears about entries of a source folder that are left out; `previous`: the folder of the
    generation serving now, whose unchanged files are shared instead of copied."""
    ctype = spec.content_type or "text"
    deps = spec.deps
    if spec.source is not None:
        if spec.source.is_dir():
            copy_code(spec.source, target, spec.project, on_notice, previous)
        elif archive_kind(spec.source.name):  # `run x.zip`: unpacked, as the controller unpacks base64+zip
            safe_extract(spec.source.read_bytes(), archive_kind(spec.source.name), target, str(spec.source))
        else:
            _one_file(spec, runtime)
            shutil.copy2(spec.source, target / source_file_name(spec, runtime))
    elif spec.function:
        data = inline_artifact(spec)
        if "+zip" in ctype or "+compressedtar" in ctype:
            safe_extract(data, ctype, target, spec.origin)
        elif ctype in PLAIN_CONTENT_TYPES:
            _one_file(spec, runtime)
            (target / (spec.module + runtime.suffix)).write_bytes(data)
        else:
            (target / spec.module).write_bytes(data)
    if spec.deps_file is not None:
        deps = spec.deps_file.read_text()
    if runtime.dep_name:
        dep_path = target / runtime.dep_name
        if "+deps" in ctype or (
            spec.source is not None and spec.source.is_dir() and spec.deps_file is None and dep_path.exists()
        ):
            deps = dep_path.read_text() if dep_path.exists() else ""
        elif deps.strip():
            # Kubeless copies even an empty deps file; Node 20 refuses to load code beside an empty
            # package.json (and the Go image deletes an empty go.mod), so an empty one is left out.
            dep_path.unlink(missing_ok=True)  # a new file: the folder's may be shared with an older generation
            dep_path.write_text(deps)
    return deps

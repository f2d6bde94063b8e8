"""What a deps install reads besides its deps file. In the pod the install step runs in /kubeless, beside the
function's files (contract §4: workdir /kubeless), so a deps file may name them: a local package
(`./libs/mylib` in requirements.txt, `"file:./libs/mylib"` in package.json, `path: "libs/mylib"` in a
Gemfile, a `path` repository in composer.json), another requirements file (`-r base.txt`), a folder of
wheels (`-f ./wheels`), the function's own classes composer.json autoloads (`"App\\": "src/"`: composer's
autoloader looks for them beside its vendor/); and its tool reads the lock file beside it
(package-lock.json, Gemfile.lock, composer.lock) when there is one.

Guarantee:
- `find(dep_name, deps, code_dir)` names every such file or folder of the laid-out code (gen-N, the pod's
  /kubeless) that the install reads, as paths relative to it; the install copies them into its folder at
  the same relative paths (its folder holds the deps file, so they are where the tool looks) and its cache
  key covers their bytes: editing a local package installs it again, an unchanged one never;
- a deps file with no such reference keeps the cache key of its text alone;
- a reference the install could not see in the pod (outside the function's files, or not among them) is a
  `Missing` naming the deps file, the reference and the fix, instead of the tool's error about a path
  the user sees on their disk.
A reference is read from the deps file's text by the rules below (each tool's own: pip, npm, Bundler,
Composer); what they do not name (e.g. a package.json value `user/repo`, GitHub's shorthand) is left to
the tool.
"""

import glob
import hashlib
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from kubeless_local.spec import SOURCE_ANNOTATION

# Files beside the deps file that its tool reads when they are there.
COMPANIONS = {
    "package.json": ("package-lock.json", "npm-shrinkwrap.json"),
    "Gemfile": ("Gemfile.lock",),
    "composer.json": ("composer.lock",),
}

PIP_FILE_OPTIONS = {"-r": "file", "--requirement": "file", "-c": "file", "--constraint": "file"}
PIP_PATH_OPTIONS = {"-e": "path", "--editable": "path", "-f": "links", "--find-links": "links"}
PIP_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar")
NPM_DEPENDENCIES = ("dependencies", "optionalDependencies", "peerDependencies", "devDependencies")
NPM_LOCAL = re.compile(r"^(?:file:|link:)(.+)$|^((?:\.\.?|~)?/.*)$")  # npm's own: `file:`, or a path
GEMFILE_PATHS = (
    re.compile(r"""\bpath:\s*(['"])(.+?)\1"""),
    re.compile(r""":path\s*=>\s*(['"])(.+?)\1"""),
    re.compile(r"""^\s*path\s*\(?\s*(['"])(.+?)\1""", re.M),  # path "libs" do … end
    re.compile(r"""^\s*eval_gemfile\s*\(?\s*(['"])(.+?)\1""", re.M),
)
GEMSPEC = re.compile(r"^\s*gemspec\b(.*)$", re.M)


class Missing(Exception):
    """A deps file names a file of the function that the install would not find in the pod; str() says
    which and what to do."""


@dataclass(frozen=True)
class Inputs:
    paths: tuple[str, ...]  # relative to the code folder, with `/`; folders whole
    digest: str  # sha256 of their names and bytes; "" when there are none

    def copy_into(self, code_dir: Path, target: Path) -> None:
        """Lay the inputs out in the install folder as they are in the code folder."""
        for rel in self.paths:
            source, dest = code_dir / rel, target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True)  # (modes kept: a library's scripts run)
            else:
                shutil.copy2(source, dest)


def find(dep_name: str, deps: str, code_dir: Path, source: Optional[Path] = None) -> Inputs:
    """The inputs of installing `deps` (the text of `dep_name`) in `code_dir`. `source`: the function's
    source as the user gave it, named in a Missing's fix. Raises Missing."""
    reader = READERS.get(dep_name)
    named = reader(deps, code_dir) if reader else []
    named += [(name, name) for name in COMPANIONS.get(dep_name, ()) if (code_dir / name).is_file()]
    root = code_dir.resolve()
    paths: list[str] = []
    for ref, rel in named:
        where = (root / rel).resolve()
        if where != root and root not in where.parents:
            raise Missing(
                "%s names %s, outside the function's files: in the pod its install sees only them (in"
                " /kubeless); move it into the function's folder" % (dep_name, ref)
            )
        if not where.exists():
            fix = (
                "; the function's source is the file %s alone: make its folder the source (`run FOLDER`, the"
                " %s annotation)" % (source.name, SOURCE_ANNOTATION)
                if source is not None and source.is_file()
                else ": put it in the function's folder (hidden names and dependency folders are not copied)"
            )
            raise Missing(
                "%s names %s, which is not among the function's files (in the pod its install sees only"
                " them, in /kubeless)%s" % (dep_name, ref, fix)
            )
        paths.append(where.relative_to(root).as_posix())  # "." for the folder itself (`-e .`, `gemspec`)
    paths = _outermost(sorted(set(paths)))
    return Inputs(tuple(paths), _digest(code_dir, paths) if paths else "")


def _outermost(paths: list[str]) -> list[str]:
    """Without those inside another of them (a folder is copied and hashed whole)."""
    if "." in paths:
        return ["."]
    kept: list[str] = []
    for path in paths:  # sorted: a folder comes before what is inside it
        if not any(path.startswith(folder + "/") for folder in kept):
            kept.append(path)
    return kept


def _digest(code_dir: Path, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        top = code_dir / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            digest.update(path.relative_to(code_dir).as_posix().encode() + b"\0")
            digest.update(_file_digest(path))
    return digest.hexdigest()


_digests: dict[tuple, bytes] = {}  # (inode, device, size, mtime) → sha256 of the file's bytes
DIGESTS_KEPT = 20_000


def _file_digest(path: Path) -> bytes:
    """sha256 of a file, read once per version: a generation's unchanged files are links to the last one's,
    so a save reads what changed, not a whole library again."""
    st = path.stat()
    key = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
    found = _digests.get(key)
    if found is None:
        if len(_digests) >= DIGESTS_KEPT:
            _digests.clear()
        found = _digests[key] = hashlib.sha256(path.read_bytes()).digest()
    return found


def _expanded(pattern: str, code_dir: Path) -> list[tuple[str, str]]:
    """(pattern, path) of each folder a glob matches (`packages/*`), or the pattern itself as a path."""
    matches = sorted(glob.glob(str(code_dir / pattern))) if any(c in pattern for c in "*?[") else []
    return [(pattern, os.path.relpath(m, code_dir)) for m in matches] or [(pattern, pattern)]


def _relative(base: str, path: str) -> str:
    """`path` as named in a file of folder `base` (relative to the code folder)."""
    return str(PurePosixPath(base) / path) if base else path


# ---------------------------------------------------------------- each tool's references: (as written, path)


def _pip(deps: str, code_dir: Path, base: str = "", seen: Optional[set] = None) -> list[tuple[str, str]]:
    """pip's: -r/-c files (read too; relative to the file that names them), -e paths and plain requirements
    that are paths (a `/` or a leading `.`, or an archive: relative to the working folder, the code's), and
    -f folders (relative to the naming file, as pip takes them when they are there)."""
    seen = set() if seen is None else seen
    found: list[tuple[str, str]] = []
    for line in _pip_lines(deps):
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if not words:
            continue
        option, value = words[0], words[1] if len(words) > 1 else ""
        if "=" in option and option.startswith("--"):
            option, _, value = option.partition("=")
        elif len(option) > 2 and option[:2] in PIP_FILE_OPTIONS.keys() | PIP_PATH_OPTIONS.keys():
            option, value = option[:2], option[2:]  # -rbase.txt
        kind = PIP_FILE_OPTIONS.get(option) or PIP_PATH_OPTIONS.get(option)
        if kind == "file" and value and "://" not in value:
            rel = _relative(base, value)
            found.append((value, rel))
            path = code_dir / rel
            if rel not in seen and path.is_file():
                seen.add(rel)
                found += _pip(path.read_text(errors="replace"), code_dir, str(PurePosixPath(rel).parent), seen)
        elif kind == "links" and value and "://" not in value and (code_dir / _relative(base, value)).exists():
            found.append((value, _relative(base, value)))
        elif kind == "path" and _pip_path(value):
            found.append((value, _pip_path(value)))
        elif not option.startswith("-"):
            requirement = re.split(r"\s+--?[a-zA-Z]", line)[0]  # before its options (--hash=…)
            if _pip_path(requirement):
                found.append((requirement, _pip_path(requirement)))
    return found


def _pip_lines(text: str) -> list[str]:
    """Logical lines: `\\` continuations joined, comments dropped (pip's own rules)."""
    text = re.sub(r"\\\r?\n", " ", text)
    return [re.sub(r"(^|\s+)#.*$", "", line).strip() for line in text.splitlines()]


def _pip_path(requirement: str) -> str:
    """The local path a requirement names, or ""."""
    requirement = requirement.split(";", 1)[0].strip().strip("'\"")
    if "@" in requirement and not requirement.startswith((".", "/")):
        requirement = requirement.split("@", 1)[1].strip()  # name @ file:…
    if requirement.startswith("file:"):
        path = requirement[5:]
        return "" if path.startswith("//") else path  # file:///…: an absolute path, not the function's
    path = re.sub(r"\[[^\]]*\]$", "", requirement)  # ./libs/mylib[extra]
    if "://" in path or path.startswith(("/", "~")):
        return ""
    if path.startswith(".") or "/" in path or path.endswith(PIP_ARCHIVES):
        return path
    return ""


def _npm(deps: str, code_dir: Path) -> list[tuple[str, str]]:
    """npm's: dependency versions `file:<path>`, `link:<path>` or a path (`./`, `../`), and the `workspaces`
    folders (globs expanded), relative to package.json."""
    try:
        manifest = json.loads(deps)
    except ValueError:
        return []
    found: list[tuple[str, str]] = []
    workspaces = manifest.get("workspaces") if isinstance(manifest, dict) else None
    if isinstance(workspaces, dict):  # yarn's form: {"packages": [...]}
        workspaces = workspaces.get("packages")
    for pattern in workspaces if isinstance(workspaces, list) else ():
        if isinstance(pattern, str) and not pattern.startswith(("/", "~")):
            found += _expanded(pattern, code_dir)
    for group in NPM_DEPENDENCIES:
        block = manifest.get(group) if isinstance(manifest, dict) else None
        for version in (block or {}).values() if isinstance(block, dict) else ():
            match = NPM_LOCAL.match(version) if isinstance(version, str) else None
            path = match and (match.group(1) or match.group(2))
            if path and not path.startswith(("/", "~")):
                found.append((version, path))
    return found


def _bundler(deps: str, code_dir: Path) -> list[tuple[str, str]]:
    """Bundler's: `path:` options and blocks, `eval_gemfile`, `gemspec` (the folder itself unless it says
    `path:`), relative to the Gemfile."""
    text = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in deps.splitlines())
    found = [(m.group(2), m.group(2)) for pattern in GEMFILE_PATHS for m in pattern.finditer(text)]
    for match in GEMSPEC.finditer(text):
        if not re.search(r"\bpath:|:path\s*=>", match.group(1)):
            found.append(("gemspec", "."))
    return [(ref, path) for ref, path in found if not path.startswith(("/", "~"))]


def _composer(deps: str, code_dir: Path) -> list[tuple[str, str]]:
    """Composer's: the `url` of `path` and `artifact` repositories (globs expanded), relative to composer.json;
    and the function's own `autoload` (and `autoload-dev`: `composer install` takes both) folders and files
    that are there: the autoloader composer writes finds them beside its vendor/, as /kubeless/src in the pod."""
    try:
        manifest = json.loads(deps)
    except ValueError:
        return []
    if not isinstance(manifest, dict):
        return []
    found = _composer_repositories(manifest, code_dir)
    for block in (manifest.get("autoload"), manifest.get("autoload-dev")):
        for kind, entries in block.items() if isinstance(block, dict) else ():
            if kind in ("psr-4", "psr-0") and isinstance(entries, dict):
                paths = [p for value in entries.values() for p in (value if isinstance(value, list) else [value])]
            elif kind in ("classmap", "files") and isinstance(entries, list):
                paths = entries
            else:
                continue
            found += [
                (path, path or ".")
                for path in paths
                if isinstance(path, str) and not path.startswith(("/", "~")) and (code_dir / path).exists()
            ]
    return found


def _composer_repositories(manifest: dict, code_dir: Path) -> list[tuple[str, str]]:
    """The `url` of each `path` and `artifact` repository, globs expanded."""
    repositories = manifest.get("repositories")
    if isinstance(repositories, dict):
        repositories = list(repositories.values())
    found: list[tuple[str, str]] = []
    for repository in repositories if isinstance(repositories, list) else ():
        if not isinstance(repository, dict) or repository.get("type") not in ("path", "artifact"):
            continue
        url = repository.get("url")
        if not isinstance(url, str) or url.startswith(("/", "~")) or "://" in url:
            continue
        found += _expanded(url, code_dir)
    return found


# Each tool's reader of its deps file's references: (as written, path relative to the code folder)
READERS: dict[str, Callable[[str, Path], list[tuple[str, str]]]] = {
    "requirements.txt": _pip,
    "package.json": _npm,
    "Gemfile": _bundler,
    "composer.json": _composer,
}

"""The code of a Function laid out as the Kubeless controller's prepare init container lays out the
pod's /kubeless (contract §4): a source folder or file copied, or the inline artifact (text, base64,
URL; zip / compressed tar) decoded, checksum-verified and unpacked, plus the deps file.

Plain functions of the spec and a target folder, nothing else: a renderer that goes the other way
(code folder → Function manifest with `function`, `function-content-type` and `checksum`) mirrors
`layout_code` and `inline_artifact`.
"""

import base64
import binascii
import io
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from kubeless_local.errors import UserError
from kubeless_local.spec import SKIP_DIRS, FunctionSpec, archive_kind, checksum_of

PLAIN_CONTENT_TYPES = ("", "text", "url", "base64")  # the file keeps MOD_NAME + suffix (contract §4)


def fetch(url):
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


def copy_tree(source: Path, target: Path):
    for item in source.iterdir():
        if item.name in SKIP_DIRS or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, ignore=shutil.ignore_patterns(*SKIP_DIRS))
        else:
            shutil.copy2(item, target / item.name)


def layout_code(spec: FunctionSpec, runtime, target: Path):
    """Fill `target` as the prepare init container fills /kubeless; returns the deps file content."""
    ctype = spec.content_type or "text"
    deps = spec.deps
    if spec.source is not None:
        if spec.source.is_dir():
            copy_tree(spec.source, target)
        elif archive_kind(spec.source.name):  # `run x.zip`: unpacked, as the controller unpacks base64+zip
            safe_extract(spec.source.read_bytes(), archive_kind(spec.source.name), target, str(spec.source))
        else:
            shutil.copy2(spec.source, target / (spec.module + runtime.suffix))
    elif spec.function:
        data = inline_artifact(spec)
        if "+zip" in ctype or "+compressedtar" in ctype:
            safe_extract(data, ctype, target, spec.origin)
        elif ctype in PLAIN_CONTENT_TYPES:
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
            dep_path.write_text(deps)
    return deps

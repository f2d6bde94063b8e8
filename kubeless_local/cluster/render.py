"""The project's Kubeless objects as a cluster receives them (`kubeless-local push`).

The inverse of the prepare pipeline's code layout (emulator/layout.py): a Function whose code is a
local file or folder (annotation `local.kubeless.io/source`) gets it inline, as the Kubeless CLI
sends it (contract §1): one UTF-8 file → `text`, any other file → `base64`, a folder → `base64+zip`,
with `checksum: sha256:<hex>` of the artifact and `deps` from the deps file. Laying the rendered
Function out again (`layout.layout_code`) gives the same files, byte for byte. Everything else in a
manifest goes as written, minus the local-only annotations.
"""

import base64
import copy
import io
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Optional

import yaml

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.emulator.layout import code_files
from kubeless_local.errors import UserError
from kubeless_local.paths import project_folder
from kubeless_local.runtimes import RUNTIME_RE, Catalog
from kubeless_local.spec import FunctionSpec, checksum_of

LOCAL_ANNOTATION_PREFIX = "local.kubeless.io/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubeless-local"
PROJECT_LABEL = "kubeless-local.io/project"  # which project applied it: what `push --prune` may delete
CONFIGMAP_LIMIT = 1024 * 1024  # Kubeless keeps the code in a ConfigMap; the API server refuses more than 1 MiB
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same folder gives the same zip, so a re-push is a no-op


def project_label(root: Path) -> str:
    """The project label's value: the project folder's name as a label value (≤ 63 characters)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-_.")[:63].strip("-_.")
    return name or "project"


def dep_name_of(runtime: str, catalog: Optional[Catalog] = None) -> str:
    """The runtime's dependency file name (requirements.txt, package.json…), or '' when unknown."""
    match = RUNTIME_RE.match(runtime or "")
    entries = (catalog or Catalog()).entries
    entry = entries.get(match.group(1)) if match else None
    return entry.dep_name if entry else ""


def zip_folder(source: Path, project: Optional[Path] = None) -> bytes:
    """A deterministic zip of the folder's code (layout.code_files: the files `dev` lays out): sorted
    entries, fixed times, the files' permission bits. A link that leaves `project` (default: the
    folder) is refused: push never sends a file from outside the project."""
    found = code_files(source, project)
    if found.outside:
        rel, where = found.outside[0]
        raise UserError(
            "%s is a symbolic link to %s, outside the project: push sends only the project's files; copy what"
            " the function needs into the project or remove the link" % (Path(source) / rel, where)
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, path in found.files:
            try:
                with open(path, "rb") as file:
                    mode, data = os.fstat(file.fileno()).st_mode, file.read()
            except OSError as exc:
                raise UserError("%s: cannot read (%s)" % (path, exc.strerror or exc)) from None
            info = zipfile.ZipInfo(rel, ZIP_DATE)
            info.external_attr = (stat.S_IFREG | (mode & 0o777)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def inline_artifact_of(path: Path, project: Optional[Path] = None):
    """(function, function-content-type, checksum) of local code as the Kubeless CLI
    sends it: one UTF-8 file → text, any other file → base64, an archive → base64+<kind>, a folder →
    base64+zip. One encoder for `push` and `function deploy --from-file`."""
    if path.is_dir():
        data = zip_folder(path, project)
        return base64.b64encode(data).decode(), "base64+zip", checksum_of(data)
    data = path.read_bytes()
    if specs.archive_kind(path.name):
        return base64.b64encode(data).decode(), "base64" + specs.archive_kind(path.name), checksum_of(data)
    try:
        return data.decode("utf-8"), "text", checksum_of(data)
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64", checksum_of(data)


def inline_code(fn: FunctionSpec, dep_name: str):
    """(function, function-content-type, checksum, deps) of a Function's local code."""
    source = fn.source
    assert source is not None
    deps = fn.deps
    function, ctype, checksum = inline_artifact_of(source, fn.project)
    in_folder = source / dep_name if dep_name and source.is_dir() else None
    if fn.deps_file is None and in_folder is not None and in_folder.is_file():
        deps = in_folder.read_text()  # the prepare step copies the ConfigMap's deps over the folder's
    if fn.deps_file is not None:
        deps = fn.deps_file.read_text()
    return function, ctype, checksum, deps


def _labelled(doc: dict, namespace: str, project: str) -> dict:
    meta = doc.setdefault("metadata", {})
    meta["namespace"] = meta.get("namespace") or namespace  # a manifest's own namespace wins, as in kubectl
    labels = meta.get("labels") or {}
    meta["labels"] = {**labels, MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: project}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(LOCAL_ANNOTATION_PREFIX)
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return doc


def render_function(fn: FunctionSpec, namespace: str, project: str, catalog: Optional[Catalog] = None) -> dict:
    doc = copy.deepcopy(fn.document)
    spec = doc.setdefault("spec", {})
    if fn.source is not None:
        function, ctype, checksum, deps = inline_code(fn, dep_name_of(fn.runtime, catalog))
        spec.update({"function": function, "function-content-type": ctype, "checksum": checksum, "deps": deps})
    elif fn.deps_file is not None:
        spec["deps"] = fn.deps_file.read_text()
    if isinstance(spec.get("timeout"), (int, float)):
        spec["timeout"] = str(spec["timeout"])  # the controller's Function type has a string; `timeout: 30` is a number
    size = len(str(spec.get("function") or "").encode()) + len(str(spec.get("deps") or "").encode())
    if size > CONFIGMAP_LIMIT:
        raise UserError(
            "%s: the code is %.1f MiB once encoded; Kubeless keeps it in a ConfigMap (1 MiB limit): make it smaller,"
            " or host an archive and use function-content-type url+zip" % (fn.origin, size / CONFIGMAP_LIMIT)
        )
    return _labelled(doc, namespace, project)


def not_emulated_documents(root: Path, ignore=()):
    """Documents of the Kubeless kinds not run locally (KinesisTrigger), so not in the loaded Manifests."""
    loader = specs.Loader(root, ignore)
    found = []
    for path in specs.manifest_files(loader.root, loader.ignore):
        for doc in loader.documents(path)[0]:
            items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("apiVersion") == specs.API_VERSION:
                    found += [item] if item.get("kind") in specs.NOT_EMULATED else []
    return found


def render(manifests: specs.Manifests, namespace: str, project: str, extra=(), catalog=None) -> list:
    """Every object to apply, Functions first, each a dict ready for server-side apply."""
    catalog = catalog or Catalog()
    objects = [render_function(fn, namespace, project, catalog) for fn in manifests.functions]
    for trigger in [
        *manifests.http_triggers,
        *manifests.cron_triggers,
        *manifests.kafka_triggers,
        *manifests.nats_triggers,
        *extra,
    ]:
        document = trigger if isinstance(trigger, dict) else trigger.document
        objects.append(_labelled(copy.deepcopy(document), namespace, project))
    # Kubeless' http-trigger controller creates extensions/v1beta1 Ingresses, which Kubernetes ≥ 1.22 does not
    # serve: push applies each HTTPTrigger's networking.k8s.io/v1 Ingress itself, from the gateway's mapping
    objects += [_labelled(ingress, namespace, project) for ingress in http_routes.ingresses(manifests)]
    return objects


def render_project(root, namespace: str, project: Optional[str] = None, ignore=()) -> list:
    root = Path(root)
    manifests = specs.load(root, ignore)
    if not manifests.functions:
        raise UserError("%s: no Kubeless Function found to push" % root)
    return render(
        manifests, namespace, project or project_label(project_folder(root)), not_emulated_documents(root, ignore)
    )


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (code, deps) as literal blocks, so the YAML reads like the source."""


def _string(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(objects: list) -> str:
    return yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 20
    )

"""A Function's container env as the kubelet resolves it for the pod, resolved here: `value`, and `valueFrom`
where this machine has what it refers to: a secret's key from the project's secrets/<name>/<key> (the folder that
`--secrets` mounts), a ConfigMap's from configmaps/<name>/<key>, the pod's own fields (fieldRef: its name,
namespace, labels, addresses) and its resources (resourceFieldRef).

Guarantee: a variable that cannot be resolved is left unset, never set empty, and `unresolved` says why (in the
pod it would hold a value, or the pod would not start); it was set to "" and the function misbehaved silently.
"""

import math
import os
import socket
from pathlib import Path
from typing import Optional

from kubeless_local.errors import UserError
from kubeless_local.spec import SECRETS_DIRNAME, FunctionSpec, quantity

CONFIGMAPS_DIRNAME = "configmaps"  # <project>/configmaps/<name>/<key>: a ConfigMap's keys, one file each
KEY_REFS = {"secretKeyRef": ("secret", SECRETS_DIRNAME), "configMapKeyRef": ("ConfigMap", CONFIGMAPS_DIRNAME)}
POD_ADDRESS = "127.0.0.1"  # the pod's and the node's address here: where the function is reached
# fieldRef paths the kubelet gives an env var, and what they are here (labels and annotations: `labeled`)
FIELDS = {
    "metadata.name": lambda spec: spec.name + "-local",  # the pod: <deployment>-<hash>-<id> in the cluster
    "metadata.namespace": lambda spec: spec.namespace,
    "spec.nodeName": lambda spec: socket.gethostname(),
    "spec.serviceAccountName": lambda spec: "default",
    "status.podIP": lambda spec: POD_ADDRESS,
    "status.podIPs": lambda spec: POD_ADDRESS,
    "status.hostIP": lambda spec: POD_ADDRESS,
    "status.hostIPs": lambda spec: POD_ADDRESS,
}

Resolved = tuple[Optional[str], str]  # (the value, "") or (None, why it is left unset)


def resolve(spec: FunctionSpec, entry: dict) -> Resolved:
    """One `env` entry of the Function's container."""
    name, source = entry.get("name"), entry.get("valueFrom")
    if not isinstance(source, dict):
        return str(entry.get("value", "")), ""
    for kind, (what, folder) in KEY_REFS.items():
        ref = source.get(kind)
        if isinstance(ref, dict):
            path = key_file(spec, folder, ref)
            try:
                return path.read_bytes().decode("utf-8", "replace"), ""  # the bytes, as the kubelet gives them
            except OSError:
                return None, "env %s: from key %s of %s %s%s: no file %s; left unset" % (
                    name,
                    ref.get("key"),
                    what,
                    ref.get("name"),
                    " (optional)" if ref.get("optional") else "",
                    path,
                )
    if isinstance(source.get("fieldRef"), dict):
        return field(spec, name, str(source["fieldRef"].get("fieldPath")))
    if isinstance(source.get("resourceFieldRef"), dict):
        return resource(spec, name, source["resourceFieldRef"])
    return None, "env %s: valueFrom %s is not resolved here; left unset" % (name, ", ".join(map(str, source)))


def key_file(spec: FunctionSpec, folder: str, ref: dict) -> Path:
    """Where a secret's or ConfigMap's key is here: <project>/<folder>/<name>/<key>."""
    return (spec.project or Path.cwd()) / folder / str(ref.get("name")) / str(ref.get("key"))


def key_files(spec: FunctionSpec) -> list[Path]:
    """The files the env is read from: a save of one restarts the function with the new value."""
    return [
        key_file(spec, folder, entry["valueFrom"][kind])
        for entry in spec.container.get("env") or []
        if isinstance(entry, dict) and isinstance(entry.get("valueFrom"), dict)
        for kind, (_, folder) in KEY_REFS.items()
        if isinstance(entry["valueFrom"].get(kind), dict)
    ]


def field(spec: FunctionSpec, name, path: str) -> Resolved:
    if path in FIELDS:
        return FIELDS[path](spec), ""
    for prefix, values in (("metadata.labels", pod_labels(spec)), ("metadata.annotations", spec.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(values.get(path[len(prefix) + 2 : -2], "")), ""  # the kubelet gives "" for a missing key
    return None, "env %s: fieldRef %s is not resolved here; left unset" % (name, path)


def pod_labels(spec: FunctionSpec) -> dict:
    """The pod's labels: the Function's, and those the controller adds."""
    return {**spec.labels, "created-by": "kubeless", "function": spec.name}


def resource(spec: FunctionSpec, name, ref: dict) -> Resolved:
    """limits./requests.cpu in cores, .memory in bytes, over the divisor and rounded up, as the kubelet gives
    them; without a limit, what this machine has (the kubelet gives the node's allocatable)."""
    wanted = str(ref.get("resource"))
    try:
        divisor = quantity(ref.get("divisor") or "1", spec.origin, "divisor", "1Mi")
    except UserError:
        divisor = 0
    kind = wanted.rpartition(".")[2]
    if kind == "cpu" and divisor:
        have = spec.cpu_limit_cores or float(os.cpu_count() or 1)
    elif kind == "memory" and divisor:
        have = spec.memory_limit_bytes or float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    else:
        return None, "env %s: resourceFieldRef %s is not resolved here; left unset" % (name, wanted)
    return str(math.ceil(have / divisor)), ""


def unresolved(spec: FunctionSpec) -> list[str]:
    """Why each env variable that cannot be resolved here is left unset, a line each."""
    entries = [entry for entry in spec.container.get("env") or [] if isinstance(entry, dict)]
    return [why for why in (resolve(spec, entry)[1] for entry in entries) if why]

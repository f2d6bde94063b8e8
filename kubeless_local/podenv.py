"""A Function's container env as the kubelet resolves it for the pod, resolved here: `value`, and `valueFrom` and
`envFrom` where this machine has what they refer to: a secret's keys from the project's secrets/<name>/<key> (the
folder that `--secrets` mounts), a ConfigMap's from configmaps/<name>/<key>, the pod's own fields (fieldRef: its
name, namespace, labels, addresses) and its resources (resourceFieldRef).

Guarantee: a variable that cannot be resolved is left unset, never set empty, and `variables` says why (in the
pod it would hold a value, or the pod would not start); it was set to "" and the function misbehaved silently.
"""

import math
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Optional

from kubeless_local.errors import UserError
from kubeless_local.spec import CONFIGMAPS_DIRNAME, SECRETS_DIRNAME, FunctionSpec, quantity


class Source(NamedTuple):
    kind: str  # its object's kind
    key_ref: str  # env[].valueFrom.<key_ref>: one key
    ref: str  # envFrom[].<ref>: every key
    folder: str  # where its keys are: <project>/<folder>/<name>/<key>
    volume: str  # volumes[].<volume>: mounted, a file per key
    volume_name: str  # volumes[].<volume>.<volume_name>: its object's name


SOURCES = (
    Source("Secret", "secretKeyRef", "secretRef", SECRETS_DIRNAME, "secret", "secretName"),
    Source("ConfigMap", "configMapKeyRef", "configMapRef", CONFIGMAPS_DIRNAME, "configMap", "name"),
)


class Volume(NamedTuple):
    """A Secret or ConfigMap the pod mounts."""

    source: Source
    name: str  # its object's
    mount: str  # where the pod mounts it
    folder: Path  # where its keys are here: <project>/<source.folder>/<name>/

    @property
    def env_name(self) -> str:
        """The variable that holds where its files are, in both backends: KUBELESS_LOCAL_SECRET_<NAME>,
        KUBELESS_LOCAL_CONFIGMAP_<NAME>."""
        return "KUBELESS_LOCAL_%s_%s" % (self.source.kind.upper(), re.sub(r"[^A-Za-z0-9]", "_", self.name).upper())


def volume_sources(pod: dict) -> Iterator[tuple[Source, dict, Optional[str]]]:
    """(source, its reference, the volume's name) of each Secret and ConfigMap volume of a pod spec."""
    for volume in pod.get("volumes") or []:
        for source in SOURCES:
            ref = volume.get(source.volume) if isinstance(volume, dict) else None
            if isinstance(ref, dict):
                yield source, ref, volume.get("name")


def volumes(spec: FunctionSpec) -> list[Volume]:
    """The pod's Secret and ConfigMap volumes its container mounts (`kubeless function deploy --secrets`, or
    written in the Deployment), in the order of its volumeMounts."""
    by_volume = {
        name: (source, str(ref[source.volume_name]))
        for source, ref, name in volume_sources(spec.pod)
        if ref.get(source.volume_name)
    }
    found = []
    for mount in spec.container.get("volumeMounts") or []:
        if isinstance(mount, dict) and mount.get("name") in by_volume:
            source, name = by_volume[mount["name"]]
            folder = (spec.project or Path.cwd()) / source.folder / name
            found.append(Volume(source, name, str(mount.get("mountPath") or "/" + name), folder))
    return found


POD_ADDRESS = "127.0.0.1"  # the pod's and the node's address here: where the function is reached


def pod_name(spec: FunctionSpec) -> str:
    """The function's pod here (<deployment>-<hash>-<id> in the cluster): fieldRef metadata.name, HOSTNAME."""
    return spec.name + "-local"


# fieldRef paths the kubelet gives an env var, and what they are here (labels and annotations: `field`)
FIELDS = {
    "metadata.name": pod_name,
    "metadata.namespace": lambda spec: spec.namespace,
    "spec.nodeName": lambda spec: socket.gethostname(),
    "spec.serviceAccountName": lambda spec: "default",
    "status.podIP": lambda spec: POD_ADDRESS,
    "status.podIPs": lambda spec: POD_ADDRESS,
    "status.hostIP": lambda spec: POD_ADDRESS,
    "status.hostIPs": lambda spec: POD_ADDRESS,
}

Resolved = tuple[Optional[str], str]  # (the value, "") or (None, why it is left unset)


def variables(spec: FunctionSpec) -> tuple[list[tuple[str, str]], list[str]]:
    """The container's env as (name, value) pairs in the kubelet's order (each key of `envFrom`'s secrets and
    ConfigMaps, prefixed, then the `env` entries: a later one wins), and why each one that cannot be resolved
    here is left unset, a line each."""
    pairs: list[tuple[str, str]] = []
    unset: list[str] = []
    for source, ref, prefix in env_from(spec.container):
        place = folder_of(spec, source, ref)
        try:
            keys = sorted(file for file in place.iterdir() if file.is_file())
        except OSError:
            unset.append("envFrom %s: no folder %s; its keys are left unset" % (named(source, ref), place))
            continue
        pairs.extend((prefix + key.name, read(key)) for key in keys)
    for entry in spec.container.get("env") or []:
        if isinstance(entry, dict):
            value, why = resolve(spec, entry)
            if value is not None and "valueFrom" not in entry:
                value = expand(value, dict(pairs))  # $(NAME) of a variable defined above it
            if value is not None:
                pairs.append((entry["name"], value))
            elif why:
                unset.append(why)
    return pairs, unset


def expand(value: str, defined: dict) -> str:
    """`value` with each $(NAME) replaced by defined[NAME], as the kubelet expands an env `value`: `$$` is a `$`,
    a reference to a variable not defined stays as written (Kubernetes' third_party/forked/golang/expansion)."""
    out: list[str] = []
    done = 0  # value[:done] is in `out`
    cursor = 0
    while cursor < len(value) - 1:
        if value[cursor] != "$":
            cursor += 1
            continue
        out.append(value[done:cursor])
        after = value[cursor + 1]
        closer = value.find(")", cursor + 2) if after == "(" else -1
        if after == "$":
            out.append("$")
        elif closer != -1:
            name = value[cursor + 2 : closer]
            out.append(defined[name] if name in defined else "$(%s)" % name)
            cursor = closer - 1
        else:  # `$(` with no `)`, or `$` before anything else: kept
            out.append("$" + after)
        cursor += 2
        done = cursor
    return "".join(out) + value[done:]


def resolve(spec: FunctionSpec, entry: dict) -> Resolved:
    """One `env` entry of the Function's container."""
    name, value_from = entry.get("name"), entry.get("valueFrom")
    if not isinstance(value_from, dict):
        return str(entry.get("value", "")), ""
    keyed = key_ref(entry)
    if keyed is not None:
        source, ref = keyed
        path = folder_of(spec, source, ref) / str(ref.get("key"))
        try:
            return read(path), ""
        except OSError:
            return None, "env %s: from key %s of %s: no file %s; left unset" % (
                name,
                ref.get("key"),
                named(source, ref),
                path,
            )
    if isinstance(value_from.get("fieldRef"), dict):
        return field(spec, name, str(value_from["fieldRef"].get("fieldPath")))
    if isinstance(value_from.get("resourceFieldRef"), dict):
        return resource(spec, name, value_from["resourceFieldRef"])
    return None, "env %s: valueFrom %s is not resolved here; left unset" % (name, ", ".join(map(str, value_from)))


def env_from(container: dict) -> Iterator[tuple[Source, dict, str]]:
    """(source, its reference, the prefix of its keys' names) for each secret and ConfigMap of `envFrom`."""
    for entry in container.get("envFrom") or []:
        for source in SOURCES:
            if isinstance(entry, dict) and isinstance(entry.get(source.ref), dict):
                yield source, entry[source.ref], str(entry.get("prefix") or "")


def key_ref(entry) -> Optional[tuple[Source, dict]]:
    """(source, its reference) of the secret's or ConfigMap's key an `env` entry takes its value from, or None."""
    value_from = entry.get("valueFrom") if isinstance(entry, dict) else None
    for source in SOURCES:
        if isinstance(value_from, dict) and isinstance(value_from.get(source.key_ref), dict):
            return source, value_from[source.key_ref]
    return None


def folder_of(spec: FunctionSpec, source: Source, ref: dict) -> Path:
    """Where a secret's or ConfigMap's keys are here: <project>/<folder>/<name>/."""
    return (spec.project or Path.cwd()) / source.folder / str(ref.get("name"))


def named(source: Source, ref: dict) -> str:
    return "%s %s%s" % (source.kind, ref.get("name"), " (optional)" if ref.get("optional") else "")


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")  # the bytes, as the kubelet gives a key's


def references(container: dict) -> Iterator[tuple[Source, dict, Optional[str]]]:
    """(source, its reference, the key or None for all of them) for each secret and ConfigMap a container's env
    reads: `envFrom` first, then `env`'s `valueFrom`, in their order."""
    for source, ref, _ in env_from(container):
        yield source, ref, None
    for entry in container.get("env") or []:
        keyed = key_ref(entry)
        if keyed is not None:
            yield keyed[0], keyed[1], str(keyed[1].get("key"))


def key_files(spec: FunctionSpec) -> list[Path]:
    """The files and folders the env is read from: a save there starts the function again with the new values."""
    return [
        folder_of(spec, source, ref) / key if key is not None else folder_of(spec, source, ref)
        for source, ref, key in references(spec.container)
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

"""Kubeless objects as the Kubeless CLI v1.0.8 builds them from its flags (`kubeless function deploy`,
`kubeless trigger … create`), and printed as it prints them (`--dryrun -o yaml|json`: Go's YAML, keys
sorted, `""` for empty strings). Golden files made with the real CLI: tests/fixtures/kubeless-cli/.

No click here: the `function`/`trigger` commands (commands/kubeless.py) parse flags and call these.
"""

import json
from pathlib import Path
from typing import Optional

import yaml

from kubeless_local import spec as specs
from kubeless_local.errors import UserError

CREATED_BY = {"created-by": "kubeless"}
# What the Kubeless CLI writes into every Function it builds, whatever the flags.
HPA = {
    "metadata": {"creationTimestamp": None},
    "spec": {"maxReplicas": 0, "scaleTargetRef": {"kind": "", "name": ""}},
    "status": {
        "conditions": None,
        "currentMetrics": None,
        "currentReplicas": 0,
        "desiredReplicas": 0,
    },
}


def read_code(location: str):
    """(function, function-content-type, checksum) of --from-file: a file, an archive or a URL, as the
    Kubeless CLI fills them (a URL is downloaded for its checksum and stays a URL)."""
    archive = specs.archive_kind(location)
    if specs.is_url(location):
        from kubeless_local.emulator.layout import fetch

        return location, "url" + archive, specs.checksum_of(fetch(location))
    from kubeless_local.cluster.render import inline_artifact_of  # the encoder `push` uses

    try:
        return inline_artifact_of(Path(location))
    except OSError as exc:
        raise UserError("--from-file %s: cannot read (%s)" % (location, exc.strerror or exc)) from None


def read_deps(location: Optional[str]) -> str:
    if not location:
        return ""
    if specs.is_url(location):
        from kubeless_local.emulator.layout import fetch

        return fetch(location).decode("utf-8", "replace")
    try:
        return Path(location).read_text()
    except OSError as exc:
        raise UserError("--dependencies %s: cannot read (%s)" % (location, exc.strerror or exc)) from None


def function_document(
    name,
    *,
    runtime,
    handler,
    code,
    namespace="default",
    deps="",
    env=(),
    labels=None,
    secrets=(),
    memory=None,
    cpu=None,
    timeout=specs.DEFAULT_TIMEOUT,
    port=specs.DEFAULT_PORT,
    service_port=None,
    image=None,
):
    """The Function `kubeless function deploy … --dryrun` prints; `code` is read_code's triple."""
    function, content_type, checksum = code
    all_labels = {**(labels or {}), **CREATED_BY, "function": name}
    container: dict = {"imagePullPolicy": "Always", "name": "", "resources": {}}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env]
    if image:
        container["image"] = image
    if cpu or memory:  # the Kubeless CLI sets both, the one not given as "0"
        quantities = {"cpu": cpu or "0", "memory": memory or "0"}
        container["resources"] = {"limits": dict(quantities), "requests": dict(quantities)}
    pod: dict = {"containers": [container]}
    if secrets:
        container["volumeMounts"] = [{"mountPath": "/" + s, "name": s + "-vol"} for s in secrets]
        pod["volumes"] = [{"name": s + "-vol", "secret": {"secretName": s}} for s in secrets]
    return {
        "apiVersion": specs.API_VERSION,
        "kind": "Function",
        "metadata": {"creationTimestamp": None, "labels": all_labels, "name": name, "namespace": namespace},
        "spec": {
            "checksum": checksum,
            "deployment": {
                "metadata": {"creationTimestamp": None},
                "spec": {
                    "selector": None,
                    "strategy": {},
                    "template": {"metadata": {"creationTimestamp": None}, "spec": pod},
                },
                "status": {},
            },
            "deps": deps,
            "function": function,
            "function-content-type": content_type,
            "handler": handler,
            "horizontalPodAutoscaler": json.loads(json.dumps(HPA)),
            "runtime": runtime,
            "service": {
                "ports": [
                    {
                        "name": "http-function-port",
                        "port": int(service_port or port),
                        "protocol": "TCP",
                        "targetPort": int(port),
                    }
                ],
                "selector": dict(all_labels),
                "type": "ClusterIP",
            },
            "timeout": str(timeout),
        },
    }


def _trigger(kind, name, namespace, spec, labels=None):
    return {
        "apiVersion": specs.API_VERSION,
        "kind": kind,
        "metadata": {
            "creationTimestamp": None,
            "labels": {**CREATED_BY, **(labels or {})},
            "name": name,
            "namespace": namespace,
        },
        "spec": spec,
    }


def cronjob_trigger(name, function, schedule, namespace="default", payload=None):
    spec: dict = {"function-name": function, "schedule": schedule}
    if payload is not None:
        spec["payload"] = payload
    return _trigger("CronJobTrigger", name, namespace, spec, {"function": function})


def http_trigger(name, function, namespace="default", path="", hostname="", cors=False, gateway="nginx", tls=""):
    spec: dict = {"function-name": function, "host-name": hostname, "path": path, "gateway": gateway}
    if cors:
        spec["cors-enable"] = True
    if tls:
        spec["tls-secret"] = tls
    return _trigger("HTTPTrigger", name, namespace, spec, {"function": function})


def topic_trigger(kind, name, selector, topic, namespace="default"):
    """KafkaTrigger or NATSTrigger: functions chosen by label selector, fed from `topic`."""
    return _trigger(kind, name, namespace, {"functionSelector": {"matchLabels": selector}, "topic": topic})


class _GoDumper(yaml.SafeDumper):
    """YAML as Go's yaml (ghodss/yaml) writes it: block sequences not indented under their key, strings
    quoted with `"` only where they must be, multi-line strings as literal blocks (PyYAML's safe dumper
    already writes block sequences at their key's indentation, as Go does)."""


def _go_string(dumper, value):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    node = dumper.represent_scalar("tag:yaml.org,2002:str", value)
    plain = (
        value != ""
        and dumper.resolve(yaml.ScalarNode, value, (True, False)) == "tag:yaml.org,2002:str"
        and dumper.analyze_scalar(value).allow_block_plain
    )
    node.style = None if plain else '"'
    return node


_GoDumper.add_representer(str, _go_string)


def to_go_yaml(document) -> str:
    return yaml.dump(document, Dumper=_GoDumper, sort_keys=True, default_flow_style=False, width=1 << 20) + "\n"


def to_json(document) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"

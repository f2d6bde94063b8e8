"""Kubeless objects as the Kubeless CLI v1.0.8 builds them from its flags (`kubeless function deploy`,
`kubeless trigger … create`), and printed as it prints them (`--dryrun -o yaml|json`: Go's YAML, keys
sorted, `""` for empty strings). Golden files made with the real CLI: tests/fixtures/kubeless-cli/.

One constructor for a Function, `function_document`: `function deploy` (new_function), `function update`
(update_function: the deployed Function merged with the flags given) and `kubeless-local run`
(function_from_files) all build theirs with it. No click here: the commands (commands/kubeless.py,
commands/local.py) gather flags and call these.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kubeless_local import spec as specs
from kubeless_local.errors import UserError

CREATED_BY = {"created-by": "kubeless"}
# What the Kubeless CLI writes into every Function it builds, whatever the flags.
DEPLOYMENT = {  # the pod template (pod_template) is filled in
    "metadata": {"creationTimestamp": None},
    "spec": {"selector": None, "strategy": {}, "template": {"metadata": {"creationTimestamp": None}}},
    "status": {},
}
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


def pod_template(document: dict, create: bool = False) -> dict:
    """The pod template of a Function document (spec.deployment + FunctionSpec.POD_PATH); {} where absent,
    or with `create` made where missing and returned in place, to be filled."""
    if not create:
        return specs.FunctionSpec.pod_of((document.get("spec") or {}).get("deployment"))
    node = document.setdefault("spec", {}).setdefault("deployment", {})
    for key in specs.FunctionSpec.POD_PATH:
        node = node.setdefault(key, {})
    return node


def runtime_container(document: dict) -> dict:
    """The runtime's container in a Function document's pod template; {} where absent."""
    return specs.FunctionSpec.container_of(pod_template(document))


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
) -> dict:
    """The Function `kubeless function deploy … --dryrun` prints; `code` is read_code's triple."""
    function, content_type, checksum = code
    all_labels = {**(labels or {}), **CREATED_BY, "function": name}
    document = {
        "apiVersion": specs.API_VERSION,
        "kind": "Function",
        "metadata": {"creationTimestamp": None, "labels": all_labels, "name": name, "namespace": namespace},
        "spec": {
            "checksum": checksum,
            "deployment": json.loads(json.dumps(DEPLOYMENT)),
            "deps": deps,
            "function": function,
            "function-content-type": content_type,
            "handler": handler,
            "horizontalPodAutoscaler": json.loads(json.dumps(HPA)),
            "runtime": runtime,
            "service": _service(all_labels, port, service_port),
            "timeout": str(timeout),
        },
    }
    pod = pod_template(document, create=True)
    pod["containers"] = [_container(env, image, memory, cpu, secrets)]
    if secrets:  # as the Kubeless CLI mounts them: volume <name>-vol at /<name>
        pod["volumes"] = [{"name": s + "-vol", "secret": {"secretName": s}} for s in secrets]
    return document


def _container(env, image, memory, cpu, secrets) -> dict:
    container: dict = {"imagePullPolicy": "Always", "name": "", "resources": {}}
    if secrets:
        container["volumeMounts"] = [{"mountPath": "/" + s, "name": s + "-vol"} for s in secrets]
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env]
    if image:
        container["image"] = image
    if cpu or memory:  # the Kubeless CLI sets both, the one not given as "0"
        quantities = {"cpu": cpu or "0", "memory": memory or "0"}
        container["resources"] = {"limits": dict(quantities), "requests": dict(quantities)}
    return container


def _service(labels, port, service_port) -> dict:
    return {
        "ports": [
            {
                "name": "http-function-port",
                "port": int(service_port or port),
                "protocol": "TCP",
                "targetPort": int(port),
            }
        ],
        "selector": dict(labels),
        "type": "ClusterIP",
    }


# ---------------------------------------------------------------- deploy and update


@dataclass(frozen=True)
class FunctionFlags:
    """The flags of `kubeless function deploy|update`, parsed (pairs split, lists joined). A flag not given is
    None, or empty for the repeatable ones: on update, only the flags given replace the deployed values."""

    namespace: str = "default"
    runtime: Optional[str] = None
    handler: Optional[str] = None
    from_file: Optional[str] = None  # a file, a folder, an archive or a URL
    dependencies: Optional[str] = None  # a deps file or its URL
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # added to the deployed ones
    secrets: tuple[str, ...] = ()
    memory: Optional[str] = None
    cpu: Optional[str] = None
    timeout: Optional[str] = None
    port: Optional[int] = None
    service_port: Optional[int] = None
    schedule: Optional[str] = None  # a CronJobTrigger of the function's name (schedule_trigger)
    runtime_image: Optional[str] = None


def new_function(name: str, flags: FunctionFlags) -> dict:
    """The Function `kubeless function deploy NAME` builds from its flags."""
    return _merged(name, {}, flags)


def update_function(deployed: dict, flags: FunctionFlags) -> dict:
    """The Function `kubeless function update` writes: the deployed one, each flag given replacing its value
    (labels are added). The local files it runs from (its local.kubeless.io/ annotations) stay, unless
    --from-file / --dependencies name others."""
    document = _merged(deployed["metadata"]["name"], deployed, flags)
    annotations = dict((deployed.get("metadata") or {}).get("annotations") or {})
    for given, key in ((flags.from_file, specs.SOURCE_ANNOTATION), (flags.dependencies, specs.DEPS_ANNOTATION)):
        if given:
            annotations.pop(key, None)
    if annotations:
        document["metadata"]["annotations"] = annotations
    if specs.SOURCE_ANNOTATION in annotations:
        _drop_inline_code(document)
    return document


def local_files(document: dict, flags: FunctionFlags, project: Path) -> dict:
    """Code and deps that --from-file / --dependencies name inside `project` stay files there (annotations:
    hot reload) instead of inline copies; elsewhere they stay inline. Changes and returns `document`."""
    if not flags.from_file and not flags.dependencies:
        return document
    annotations = {**(document["metadata"].get("annotations") or {}), **_inside(project, flags)}
    if specs.SOURCE_ANNOTATION in annotations:
        _drop_inline_code(document)
    if specs.DEPS_ANNOTATION in annotations:
        document["spec"]["deps"] = ""
    if annotations:
        document["metadata"]["annotations"] = annotations
    return document


def _inside(project: Path, flags: FunctionFlags) -> dict:
    """{annotation: path relative to `project`} of the --from-file / --dependencies inside it."""
    here, found = project.resolve(), {}
    for key, location in ((specs.SOURCE_ANNOTATION, flags.from_file), (specs.DEPS_ANNOTATION, flags.dependencies)):
        path = Path(location).resolve() if location and not specs.is_url(location) else None
        if path is not None and (path == here or here in path.parents):
            found[key] = path.relative_to(here).as_posix() if path != here else "."
    return found


def _drop_inline_code(document: dict):
    """The session reads the code from the file the source annotation names, not from spec.function."""
    for key in ("function", "function-content-type", "checksum"):
        document["spec"].pop(key, None)


def schedule_trigger(name: str, flags: FunctionFlags) -> Optional[dict]:
    """The CronJobTrigger `--schedule` asks for (named as the function), or None."""
    return cronjob_trigger(name, name, flags.schedule, flags.namespace) if flags.schedule else None


def _merged(name: str, deployed: dict, flags: FunctionFlags) -> dict:
    """The Function for `flags` over `deployed` ({} for a new one): a flag not given keeps the deployed value."""
    old = deployed.get("spec") or {}
    container = runtime_container(deployed)
    if flags.schedule:
        specs.validate_schedule("--schedule", flags.schedule)
    image = flags.runtime_image or container.get("image")
    runtime, handler = _runtime_and_handler(old, flags, image)
    _check_quantities(flags)
    port, service_port = _ports(old, flags)
    memory, cpu = _limits(container, flags)
    return function_document(
        name,
        runtime=runtime,
        handler=handler,
        code=_code(old, flags, deployed=bool(deployed), image_only=bool(image and not runtime)),
        namespace=flags.namespace,
        deps=read_deps(flags.dependencies) if flags.dependencies else old.get("deps", ""),
        env=flags.env or [(e["name"], e.get("value", "")) for e in container.get("env") or []],
        labels={**_user_labels(deployed), **dict(flags.labels)},
        secrets=list(flags.secrets) or _secret_names(deployed),
        memory=memory,
        cpu=cpu,
        timeout=flags.timeout or old.get("timeout") or specs.DEFAULT_TIMEOUT,
        port=port,
        service_port=service_port,
        image=image,
    )


def _runtime_and_handler(old: dict, flags: FunctionFlags, image: Optional[str]):
    """(runtime, handler); both "" for a prebuilt image that is the whole function (`--runtime-image` alone,
    the Kubeless docs' custom runtime), as the Kubeless CLI allows: a runtime needs a handler."""
    runtime = flags.runtime or old.get("runtime") or ""
    handler = flags.handler or old.get("handler") or ""
    if image and not runtime and not handler:
        return "", ""
    if not handler or not (runtime or image):
        raise UserError(
            "--runtime and --handler are required, e.g. --runtime python3.11 --handler handler.hello"
            " (or --runtime-image alone: an image that is the whole function)"
        )
    specs.validate_handler("--handler", handler)
    return runtime, handler


def _check_quantities(flags: FunctionFlags):
    for flag, value in (("memory", flags.memory), ("cpu", flags.cpu)):
        if value and not specs.QUANTITY_RE.match(value):
            raise UserError("--%s %r must be a Kubernetes quantity, e.g. 128Mi or 200m" % (flag, value))


def _code(old: dict, flags: FunctionFlags, deployed: bool, image_only: bool):
    if flags.from_file:
        return read_code(flags.from_file)
    if deployed or image_only:
        return old.get("function", ""), old.get("function-content-type", ""), old.get("checksum", "")
    raise UserError("--from-file is required: a file, a folder, an archive or a URL")


def _user_labels(deployed: dict) -> dict:
    """The deployed labels but those function_document sets itself."""
    labels = (deployed.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if k not in (*CREATED_BY, "function")}


def _ports(old: dict, flags: FunctionFlags):
    """(port, service port): a new --port without --servicePort moves both, as the Kubeless CLI does."""
    deployed = ((old.get("service") or {}).get("ports") or [{}])[0]
    port = flags.port or deployed.get("targetPort") or specs.DEFAULT_PORT
    return port, flags.service_port or (deployed.get("port") if not flags.port else None)


def _limits(container: dict, flags: FunctionFlags):
    """(memory, cpu) limits: each flag given, else the deployed one."""
    limits = (container.get("resources") or {}).get("limits") or {}
    return flags.memory or limits.get("memory"), flags.cpu or limits.get("cpu")


def _secret_names(deployed: dict) -> list:
    return [
        v["secret"]["secretName"]
        for v in pod_template(deployed).get("volumes") or []
        if isinstance(v, dict) and (v.get("secret") or {}).get("secretName")
    ]


# ---------------------------------------------------------------- run


def function_from_files(
    name,
    source,
    runtime,
    handler,
    *,
    deps_file=None,
    timeout=specs.DEFAULT_TIMEOUT,
    env=(),
    labels=None,
    memory=None,
    cpu=None,
    port=None,
    image="",
    origin=None,
    isolation=None,
    deps="",
    url="",
    secrets=(),
    project=None,
) -> specs.FunctionSpec:
    """The Function `kubeless-local run` runs: what `function deploy` builds for the same flags, with the
    local annotations (files, port, isolation) instead of inline code. `source` a local file, folder or
    archive; or `url` (source None): code the prepare step downloads; `deps`: the deps file's text (a deps
    URL, fetched); `port`: the local port."""
    origin = origin or "Function %s" % name
    specs.validate_name(origin, name)
    specs.validate_handler(origin, handler)
    code = (url, "url" + specs.archive_kind(url), "") if url else ("", "", "")
    document = function_document(
        name,
        runtime=runtime,
        handler=handler,
        code=code,
        deps=deps,
        env=env,
        labels=labels,
        secrets=secrets,
        memory=memory,
        cpu=cpu,
        timeout=timeout,
        image=image,
    )
    annotations = {specs.SOURCE_ANNOTATION: str(source)} if source is not None else {}
    for key, value in ((specs.DEPS_ANNOTATION, deps_file), (specs.PORT_ANNOTATION, port)):
        if value:
            annotations[key] = str(value)
    if isolation:
        annotations[specs.ISOLATION_ANNOTATION] = isolation
    # The labels are the user's: `run` deploys nothing that the Kubeless CLI's created-by/function would mark.
    document["metadata"].update(labels=dict(labels or {}), annotations=annotations)
    spec = document["spec"]
    fn = specs.FunctionSpec(
        name=name,
        runtime=runtime,
        handler=handler,
        origin=origin,
        labels=dict(document["metadata"]["labels"]),
        annotations=annotations,
        timeout=spec["timeout"],
        function=url,
        content_type=spec["function-content-type"],
        deps=deps,
        deployment=spec["deployment"],
        service=spec["service"],
        source=Path(source).resolve() if source is not None else None,
        deps_file=Path(deps_file).resolve() if deps_file else None,
        document=document,
        project=Path(project).resolve() if project else None,
    )
    specs.validate_function(fn)
    return fn


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


@functools.cache
def _go_dumper():
    """A dumper that writes YAML as Go's yaml (ghodss/yaml) does: block sequences not indented under their key,
    strings quoted with `"` only where they must be, multi-line strings as literal blocks (PyYAML's safe dumper
    already writes block sequences at their key's indentation, as Go does). Made on first use: PyYAML takes
    ~15 ms to import, and `run` writes no YAML."""
    import yaml

    def go_string(dumper, value):
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

    class GoDumper(yaml.SafeDumper):
        pass

    GoDumper.add_representer(str, go_string)
    return GoDumper


def to_go_yaml(document) -> str:
    import yaml

    return yaml.dump(document, Dumper=_go_dumper(), sort_keys=True, default_flow_style=False, width=1 << 20) + "\n"


def to_json(document) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"

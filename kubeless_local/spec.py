"""Kubeless manifests: Function and trigger models, loading from YAML, validation.

Errors name the file, the object and the field, and say how to fix it (contract §1, §2).
"""

import codecs
import dataclasses
import errno
import fnmatch
import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kubeless_local import schedules
from kubeless_local.errors import UserError
from kubeless_local.paths import project_folder

API_VERSION = "kubeless.io/v1beta1"
KINDS = ("Function", "HTTPTrigger", "CronJobTrigger", "KafkaTrigger", "NATSTrigger")  # emulated
NOT_EMULATED = ("KinesisTrigger",)  # Kubeless kinds accepted and listed, not run locally
ALL_KINDS = KINDS + NOT_EMULATED
SOURCE_ANNOTATION = "local.kubeless.io/source"
DEPS_ANNOTATION = "local.kubeless.io/deps"
PORT_ANNOTATION = "local.kubeless.io/port"
ISOLATION_ANNOTATION = "local.kubeless.io/isolation"
DEFAULT_TIMEOUT = "180"
SECRETS_DIRNAME = "secrets"  # <project>/secrets/<name>/: a secret's keys, one file each
CONFIGMAPS_DIRNAME = "configmaps"  # <project>/configmaps/<name>/: a ConfigMap's keys, one file each
DEFAULT_PORT = 8080
POD_PORT = 8080  # where a runtime server listens in a namespace of its own (a pod, an isolated container): FUNC_PORT
CHECKSUM_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# A Kubernetes resource quantity (128Mi, 1G, 0.5Gi, 1e9), as `resources.limits.memory` takes it.
QUANTITY_RE = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
QUANTITY_UNITS = {
    **{suffix: 2 ** (10 * power) for power, suffix in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{suffix: 1000.0**power for power, suffix in zip(range(-3, 7), ("n", "u", "m", "", "k", "M", "G", "T", "P", "E"))},
}
ISOLATIONS = ("warm", "per-call")  # warm: module state kept between calls, as in the pod; per-call: fresh
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SKIP_DIRS = {".kubeless-local", "node_modules", "vendor", "__pycache__", ".git", ".venv", "venv"}
VIRTUALENV = "a Python virtual environment: not the project's (a function's deps come from its deps file)"


def is_virtualenv(folder: str) -> bool:
    """A Python virtual environment by any name (`python -m venv env`): skipped as venv/ and .venv/ are."""
    return os.path.isfile(folder + "/pyvenv.cfg")


# What in a project is neither a regular file nor a folder: skipped with a notice by the code walker
# (layout.code_files) and the manifest loader alike, never opened (opening a FIFO blocks until a writer comes).
SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def not_a_file(mode) -> str:
    """Why an entry of this (followed) mode is skipped."""
    kind = next((what for test, what in SPECIAL_FILES if test(mode)), "not a regular file")
    return "%s, not a regular file or folder" % kind


def unresolvable_link(path, exc: OSError) -> str:
    """Why a symbolic link that cannot be followed (`exc`: what following it raised) is skipped."""
    why = "a symbolic link loop" if exc.errno == errno.ELOOP else "a broken symbolic link"
    return "%s (to %s)" % (why, os.readlink(path))


# Archive file names → the content-type suffix the Kubeless CLI gives them (`--from-file x.zip` → base64+zip).
ARCHIVE_SUFFIXES = {
    ".zip": "+zip",
    ".tar.gz": "+compressedtar",
    ".tgz": "+compressedtar",
    ".tar.bz2": "+compressedtar",
    ".tbz2": "+compressedtar",
    ".tar.xz": "+compressedtar",
    ".txz": "+compressedtar",
    ".tar": "+compressedtar",
}


def archive_kind(name) -> str:
    """'+zip', '+compressedtar' or '' for a file name or URL."""
    lowered = str(name).lower().split("?", 1)[0]
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES.items() if lowered.endswith(suffix)), "")


def is_url(text) -> bool:
    return str(text).startswith(("http://", "https://"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_of(data: bytes) -> str:
    """The `spec.checksum` Kubeless expects for these exact bytes (contract §9)."""
    return "sha256:" + sha256_hex(data)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    runtime: str
    handler: str
    origin: str  # "<file>" or "<file>: Function <name>", used in error messages
    namespace: str = "default"
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    timeout: str = DEFAULT_TIMEOUT
    function: str = ""
    content_type: str = ""
    checksum: str = ""
    deps: str = ""
    deployment: dict = field(default_factory=dict)
    service: dict = field(default_factory=dict)
    source: Optional[Path] = None  # local file or folder (annotation), resolved
    deps_file: Optional[Path] = None  # local deps file (annotation), resolved
    document: dict = field(default_factory=dict)  # the manifest as written, for push
    project: Optional[Path] = None  # the project folder: secrets are read from its secrets/<name>/

    @property
    def module(self):
        return self.handler.split(".", 1)[0]

    @property
    def function_name(self):
        return self.handler.split(".", 1)[1] if "." in self.handler else ""  # "": an image-only Function

    # Where a Function's spec.deployment (a Deployment) holds the pod template: the one spelling of
    # `deployment.spec.template.spec`; kubeless_objects builds and merges documents through it too.
    POD_PATH = ("spec", "template", "spec")

    @staticmethod
    def pod_of(deployment) -> dict:
        """The pod template (`spec.template.spec`) of a Function's spec.deployment; {} where absent."""
        node = deployment
        for key in FunctionSpec.POD_PATH:
            node = (node or {}).get(key)
        return node or {}

    @staticmethod
    def container_of(pod: dict) -> dict:
        """The pod's first container, the runtime's (the Kubeless controller fills in the rest); {} where absent."""
        return (pod.get("containers") or [{}])[0] or {}

    @property
    def pod(self) -> dict:
        return self.pod_of(self.deployment)

    @property
    def container(self) -> dict:
        return self.container_of(self.pod)

    @property
    def env(self):
        """User env of the runtime container, as (name, value) pairs in order, resolved as the kubelet resolves
        it (`envFrom`, `valueFrom`: podenv.py); one that cannot be resolved here is left out."""
        from kubeless_local import podenv  # (it imports this module)

        return podenv.variables(self)[0]

    def _limit(self, resource) -> str:
        return str(((self.container.get("resources") or {}).get("limits") or {}).get(resource) or "0")

    @property
    def memory_limit(self) -> str:
        """The runtime container's memory limit, a Kubernetes quantity ("0": none)."""
        return self._limit("memory")

    @property
    def memory_limit_bytes(self) -> int:
        """The memory limit in bytes (0: none); the quantity was checked when the spec was read."""
        return memory_bytes(self.memory_limit, self.origin)

    @property
    def cpu_limit(self) -> str:
        """The runtime container's CPU limit, a Kubernetes quantity ("0": none)."""
        return self._limit("cpu")

    @property
    def cpu_limit_cores(self) -> float:
        """The CPU limit in cores ("500m": 0.5; 0: none); the quantity was checked when the spec was read."""
        return quantity(self.cpu_limit, self.origin, "cpu", "500m")

    @property
    def security_context(self) -> dict:
        """The runtime container's securityContext over the pod's (a key set on the container wins), as
        Kubernetes applies them; {} when neither is set."""
        return {**(self.pod.get("securityContext") or {}), **(self.container.get("securityContext") or {})}

    @property
    def image(self):
        """A custom runtime image (prebuilt), or ''."""
        return self.container.get("image") or ""

    @property
    def port(self):
        ports = self.service.get("ports") or []
        if ports and ports[0].get("targetPort"):
            return int(ports[0]["targetPort"])
        return DEFAULT_PORT

    @property
    def secrets(self):
        """(secret name, mount path) of the pod's secret volumes (`kubeless function deploy --secrets`)."""
        from kubeless_local import podenv  # (it imports this module)

        return [(v.name, v.mount) for v in podenv.volumes(self) if v.source.kind == "Secret"]

    @property
    def wanted_port(self):
        """The port `kubeless function deploy --port` asked for (service.targetPort), or None for the
        default it writes without the flag: locally it is the port used when free."""
        return self.port if self.port != DEFAULT_PORT else None

    @property
    def isolation(self):
        return self.annotations.get(ISOLATION_ANNOTATION, "warm")

    def watched_paths(self):
        """What a change of reloads the function: its code, its deps file, the files its env is read from, its
        Secret and ConfigMap volumes' folders (the docker backend mounts a copy, brought up to date then)."""
        from kubeless_local import podenv  # (it imports this module)

        volumes = [volume.folder for volume in podenv.volumes(self)]
        return [p for p in (self.source, self.deps_file) if p is not None] + podenv.key_files(self) + volumes


@dataclass(frozen=True)
class HTTPTrigger:
    name: str
    function_name: str
    origin: str
    path: str = ""
    host_name: str = ""
    cors_enable: bool = False
    document: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CronJobTrigger:
    name: str
    function_name: str
    schedule: str
    origin: str
    payload: object = None
    document: dict = field(default_factory=dict)


@dataclass(frozen=True)
class KafkaTrigger:
    name: str
    topic: str
    selector: dict  # functionSelector.matchLabels
    origin: str
    document: dict = field(default_factory=dict)
    expressions: tuple = ()  # functionSelector.matchExpressions: ({key, operator, values}, …)
    namespace: str = "default"
    source = "kafka"  # the event source (events.SOURCES) whose envelope its functions get


@dataclass(frozen=True)
class NATSTrigger(KafkaTrigger):
    """Same shape as a KafkaTrigger (topic, functionSelector); the NATS envelope."""

    source = "nats"


@dataclass(frozen=True)
class ObjectError:
    """An object that could not be loaded (or a whole file, when its objects cannot be told apart): the
    others load and run; `dev` shows it as a ConfigError row named `key`."""

    key: str  # the Function's name; `<kind>/<name>` for another object; the file's path otherwise
    path: Path  # the manifest file
    message: str  # one line naming the file and the fix, as a UserError says it
    whole_file: bool = False  # unreadable or malformed YAML: none of its objects loaded


@dataclass
class Manifests:
    functions: list = field(default_factory=list)
    http_triggers: list = field(default_factory=list)
    cron_triggers: list = field(default_factory=list)
    kafka_triggers: list = field(default_factory=list)
    nats_triggers: list = field(default_factory=list)
    notices: list = field(default_factory=list)  # one line each: files and objects not loaded, and why
    errors: list = field(default_factory=list)  # ObjectError: objects the user must fix; the rest loaded

    def extend(self, other):
        for attribute in (
            "functions",
            "http_triggers",
            "cron_triggers",
            "kafka_triggers",
            "nats_triggers",
            "notices",
            "errors",
        ):
            getattr(self, attribute).extend(getattr(other, attribute))

    def function(self, name):
        for fn in self.functions:
            if fn.name == name:
                return fn
        return None

    def raise_first(self):
        """All or nothing (push, `dev FILE`, `function deploy`'s check): the first error as a UserError."""
        if self.errors:
            raise UserError(self.errors[0].message)


def _fail(origin, message):
    raise UserError("%s: %s" % (origin, message))


def _string(origin, spec, key, default=""):
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        _fail(origin, "spec.%s must be a string, got %s" % (key, type(value).__name__))
    return value


def _mapping(origin, value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(origin, "%s must be a mapping, got %s" % (where, type(value).__name__))
    return value


def validate_handler(origin, handler):
    if not handler:
        _fail(origin, "spec.handler is required, e.g. handler: handler.hello (<file>.<function>)")
    parts = handler.split(".")
    if len(parts) != 2 or not all(parts):
        _fail(origin, "spec.handler %r must be <module>.<function> with exactly one dot, e.g. handler.hello" % handler)


def validate_name(origin, name):
    if not name:
        _fail(origin, "metadata.name is required")
    if not NAME_RE.match(name) or len(name) > 63:
        _fail(origin, "metadata.name %r must be a DNS-1123 label (lower-case letters, digits, '-')" % name)


def _object(doc, path, kind):
    """(name, metadata, spec, origin) of one Kubeless object, its name validated."""
    meta = _mapping(str(path), doc.get("metadata"), "metadata")
    name = meta.get("name") or ""
    origin = "%s: %s %s" % (path, kind, name or "<unnamed>")
    validate_name(origin, name)
    return name, meta, _mapping(origin, doc.get("spec"), "spec"), origin


def _required(origin, spec, key):
    value = _string(origin, spec, key)
    if not value:
        _fail(origin, "spec.%s is required" % key)
    return value


def parse_function(doc, path: Path, project: Optional[Path] = None):
    name, meta, spec, origin = _object(doc, path, "Function")
    handler = _string(origin, spec, "handler")
    runtime = _string(origin, spec, "runtime")
    annotations = {str(k): str(v) for k, v in _mapping(origin, meta.get("annotations"), "metadata.annotations").items()}
    labels = {str(k): str(v) for k, v in _mapping(origin, meta.get("labels"), "metadata.labels").items()}
    deployment = _mapping(origin, spec.get("deployment"), "spec.deployment")
    service = _mapping(origin, spec.get("service"), "spec.service")
    fn = FunctionSpec(
        name=name,
        runtime=runtime,
        handler=handler,
        origin=origin,
        namespace=meta.get("namespace") or "default",
        labels=labels,
        annotations=annotations,
        timeout=_string(origin, spec, "timeout") or DEFAULT_TIMEOUT,
        function=_string(origin, spec, "function"),
        content_type=_string(origin, spec, "function-content-type"),
        checksum=_string(origin, spec, "checksum"),
        deps=_string(origin, spec, "deps"),
        deployment=deployment,
        service=service,
        source=_local_path(origin, path, annotations.get(SOURCE_ANNOTATION), SOURCE_ANNOTATION, project),
        deps_file=_local_path(origin, path, annotations.get(DEPS_ANNOTATION), DEPS_ANNOTATION, project),
        document=doc,
        project=Path(project or path.parent).resolve(),
    )
    _refuse_a_file_name_as_code(fn, path)
    validate_function(fn)
    return fn


def _refuse_a_file_name_as_code(fn: FunctionSpec, manifest: Path):
    """`function: handler.py` is taken as the code itself, in the cluster too, and fails to load with a NameError
    that does not say why: one line naming the annotation meant."""
    code = fn.function.strip()
    if fn.source is not None or fn.content_type not in ("", "text") or not code or "\n" in code:
        return
    try:
        named = (manifest.parent / code).is_file()
    except (OSError, ValueError):  # not a path at all (too long, a NUL)
        return
    if named:
        _fail(
            fn.origin,
            "spec.function holds the code itself, not a file's name (%s): to run that file, set annotation %s: %s "
            "and leave spec.function out" % (code, SOURCE_ANNOTATION, code),
        )


def _local_path(origin, manifest: Path, value, annotation, project=None):
    if not value:
        return None
    resolved = (manifest.parent / value).resolve()
    project = Path(project or manifest.parent).resolve()
    if resolved != project and project not in resolved.parents:
        # It would be compiled, copied and watched (a recursive watch of /etc): only the project's own files.
        written = manifest.parent / value
        if written.absolute().parent.resolve() / written.name != resolved:  # a link (of a monorepo's shared code)
            _fail(
                origin,
                "annotation %s: %s links to %s, outside the project folder %s: copy it in, or run in a folder that "
                "holds both" % (annotation, value, resolved, project),
            )
        _fail(
            origin, "annotation %s: %s is outside the project folder %s; move it inside" % (annotation, value, project)
        )
    if not resolved.exists():
        _fail(origin, "annotation %s: %s does not exist (paths are relative to the manifest)" % (annotation, value))
    return resolved


def quantity(text, origin="", what="memory", example="128Mi") -> float:
    """The value of a Kubernetes quantity ("128Mi", "1G", "1e9", "500m", "0"); "" is 0 (no limit)."""
    text = str(text or "0").strip()
    match = QUANTITY_RE.match(text)
    if not match:
        raise UserError("%s: %s limit %r is not a Kubernetes quantity (e.g. %s)" % (origin, what, text, example))
    suffix = match.group(3) or ""
    scale = QUANTITY_UNITS[suffix] if suffix in QUANTITY_UNITS else 10.0 ** int(suffix[1:])  # else 1e9's e9
    return float(match.group(1)) * scale


def memory_bytes(text, origin="") -> int:
    """A memory quantity in bytes; 0: no limit."""
    return int(quantity(text, origin))


def validate_function(fn: FunctionSpec):
    origin = fn.origin
    if fn.handler or not fn.image or fn.function or fn.source is not None:
        validate_handler(origin, fn.handler)  # none with only an image: the image is the function (seed §custom)
    if not fn.runtime and not fn.image:
        _fail(origin, "spec.runtime is required, e.g. runtime: python3.11 (see `kubeless-local get-server-config`)")
    if not fn.function and fn.source is None and not fn.image:
        _fail(origin, "no code: set spec.function, or annotation %s: <file or folder>" % SOURCE_ANNOTATION)
    if fn.checksum and not CHECKSUM_RE.match(fn.checksum):
        _fail(origin, "spec.checksum %r must be sha256:<64 hex digits>" % fn.checksum)
    try:
        timeout = float(fn.timeout)
    except ValueError:
        timeout = -1
    if timeout <= 0:
        _fail(origin, 'spec.timeout %r must be a positive number of seconds, e.g. "180"' % fn.timeout)
    port = fn.annotations.get(PORT_ANNOTATION)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        _fail(origin, "annotation %s %r must be a port number" % (PORT_ANNOTATION, port))
    if not QUANTITY_RE.match(fn.memory_limit):
        _fail(origin, "memory %r must be a Kubernetes quantity, e.g. 128Mi or 1Gi" % fn.memory_limit)
    if not QUANTITY_RE.match(fn.cpu_limit):
        _fail(origin, "cpu %r must be a Kubernetes quantity, e.g. 500m or 1" % fn.cpu_limit)
    if fn.isolation not in ISOLATIONS:
        _fail(origin, "annotation %s must be warm or per-call, got %r" % (ISOLATION_ANNOTATION, fn.isolation))
    try:  # their shape, here with the manifest named (the env's values are resolved, secret files read, at prepare)
        fn.port, [entry["name"] for entry in fn.container.get("env") or []]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        _fail(origin, "spec.service.ports / spec.deployment container env is malformed (%s)" % exc)


def parse_http_trigger(doc, path):
    name, _, spec, origin = _object(doc, path, "HTTPTrigger")
    trigger = HTTPTrigger(
        name=name,
        function_name=_required(origin, spec, "function-name"),
        origin=origin,
        path=_string(origin, spec, "path"),
        host_name=_string(origin, spec, "host-name"),
        cors_enable=spec.get("cors-enable") is True or str(spec.get("cors-enable")).lower() == "true",
        document=doc,
    )
    from kubeless_local import http_routes  # the gateway's mapping checks what the controller refuses

    http_routes.route_of(trigger)
    return trigger


SCHEDULE_EXAMPLES = '"*/5 * * * *", @hourly or "@every 5m"'


def schedule_problem(schedule) -> Optional[str]:
    """Why Kubeless would refuse this CronJobTrigger schedule (robfig/cron's reason), or None when it
    accepts it; the grammar is kubeless_local.schedules'."""
    try:
        schedules.parse(schedule)
    except ValueError as exc:
        return str(exc)
    return None


def validate_schedule(where, schedule):
    """UserError naming `where` (a manifest's object, or a flag) when the Kubeless CLI refuses the schedule."""
    problem = schedule_problem(schedule)
    if problem:
        _fail(where, "schedule %r is not valid: %s; e.g. %s" % (schedule, problem, SCHEDULE_EXAMPLES))


def parse_cron_trigger(doc, path):
    name, _, spec, origin = _object(doc, path, "CronJobTrigger")
    function_name = _required(origin, spec, "function-name")
    schedule = _string(origin, spec, "schedule")
    validate_schedule(origin + ": spec.schedule", schedule)
    return CronJobTrigger(
        name=name,
        function_name=function_name,
        schedule=schedule,
        origin=origin,
        payload=spec.get("payload"),
        document=doc,
    )


TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's legal topic names
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")  # a Kubernetes LabelSelector's


def _match_expressions(origin, value):
    where = "spec.functionSelector.matchExpressions"
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail(origin, "%s must be a list of {key, operator, values}" % where)
    expressions = []
    for index, item in enumerate(value):
        item = _mapping(origin, item, "%s[%d]" % (where, index))
        key, operator, values = item.get("key"), item.get("operator"), item.get("values")
        if not isinstance(key, str) or not key:
            _fail(origin, "%s[%d].key is required" % (where, index))
        if operator not in SELECTOR_OPERATORS:
            _fail(origin, "%s[%d].operator must be one of %s" % (where, index, ", ".join(SELECTOR_OPERATORS)))
        if operator in ("In", "NotIn") and (not isinstance(values, list) or not values):
            _fail(origin, "%s[%d].values must be a non-empty list for %s" % (where, index, operator))
        if operator in ("Exists", "DoesNotExist") and values:
            _fail(origin, "%s[%d].values must be empty for %s" % (where, index, operator))
        expressions.append({"key": key, "operator": operator, "values": [str(v) for v in values or []]})
    return tuple(expressions)


def parse_topic_trigger(doc, path, kind="KafkaTrigger"):
    name, meta, spec, origin = _object(doc, path, kind)
    topic = _required(origin, spec, "topic")
    if not TOPIC_RE.match(topic) or topic in (".", ".."):
        _fail(origin, "spec.topic %r must be letters, digits, '.', '_' or '-' (as Kafka's topic names)" % topic)
    selector = _mapping(origin, spec.get("functionSelector"), "spec.functionSelector")
    labels = _mapping(origin, selector.get("matchLabels"), "spec.functionSelector.matchLabels")
    cls = NATSTrigger if kind == "NATSTrigger" else KafkaTrigger
    return cls(
        name=name,
        topic=topic,
        selector={str(k): str(v) for k, v in labels.items()},
        origin=origin,
        document=doc,
        expressions=_match_expressions(origin, selector.get("matchExpressions")),
        namespace=meta.get("namespace") or "default",
    )


def parse_kafka_trigger(doc, path):
    return parse_topic_trigger(doc, path, "KafkaTrigger")


def parse_nats_trigger(doc, path):
    return parse_topic_trigger(doc, path, "NATSTrigger")


PARSERS = {
    "Function": ("functions", parse_function),
    "HTTPTrigger": ("http_triggers", parse_http_trigger),
    "CronJobTrigger": ("cron_triggers", parse_cron_trigger),
    "KafkaTrigger": ("kafka_triggers", parse_kafka_trigger),
    "NATSTrigger": ("nats_triggers", parse_nats_trigger),
}


class Ignore:
    """What under a project folder is not the project's: deps, state and hidden folders, editor droppings,
    and the user's gitignore-style patterns (`dev --ignore`). A folder that matches is pruned whole:
    never walked, never watched."""

    def __init__(self, patterns=()):
        self.patterns = []  # (glob, matches the path from the root, folders only)
        for raw in patterns:
            glob = raw.rstrip("/")
            glob = glob[3:] if glob.startswith("**/") else glob
            anchored = "/" in glob  # `a/b` and `/a` match from the root; `name` at any depth, as in .gitignore
            self.patterns.append((glob.lstrip("/"), anchored, raw.endswith("/")))

    def _user(self, rel, is_dir):
        name = rel.rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(rel if anchored else name, glob) and (is_dir or not dir_only)
            for glob, anchored, dir_only in self.patterns
        )

    def folder(self, rel):
        """`rel`: a folder's path relative to the root, with `/`."""
        name = rel.rsplit("/", 1)[-1]
        return name in SKIP_DIRS or name.startswith(".") or self._user(rel, True)

    def file(self, rel):
        name = rel.rsplit("/", 1)[-1]
        return name.startswith(".") or name.endswith(IGNORED_SUFFIXES) or self._user(rel, False)

    def path(self, rel, is_dir=False):
        """A file or folder the watcher reported: ignored when it, or a folder above it, is."""
        parts = rel.split("/")
        if any(self.folder("/".join(parts[:i])) for i in range(1, len(parts))):
            return True
        return self.folder(rel) if is_dir else self.file(rel)

    def folders(self, top: Path, root: Optional[Path] = None):
        """`top` and every folder under it that is not ignored (paths relative to `root`, default `top`)."""
        return [Path(folder) for folder, _ in self._walk(top, root)]

    def walk(self, top: Path, root: Optional[Path] = None):
        """The files under `top` that are not ignored, sorted; ignored folders are never entered."""
        root = root or top
        found = []
        for folder, files in self._walk(top, root):
            for name in files:
                path = Path(folder, name)
                if not self.file(_rel(path, root)):
                    found.append(path)
        return sorted(found)

    def _walk(self, top, root):
        root = root or top
        for folder, dirs, files in os.walk(top):
            dirs[:] = [
                d for d in dirs if not self.folder(_rel(Path(folder, d), root)) and not is_virtualenv(folder + "/" + d)
            ]
            yield folder, files


def _rel(path: Path, root: Path):
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


IGNORED_SUFFIXES = (".pyc", ".swp", ".tmp", "~")  # editors' and compilers' droppings: never a reason to reload
# A line that names a Kubeless object: an apiVersion kubeless.io/… or a Kubeless kind, not in a comment.
KUBELESS_LINE = re.compile(
    rb"""[^#]*?\b(apiVersion["']?\s*:\s*["']?kubeless\.io/|kind["']?\s*:\s*["']?(%s)\b)"""
    % "|".join(ALL_KINDS).encode()
)
KUBELESS_WORDS = (b"kubeless.io/", *(kind.encode() for kind in ALL_KINDS))


def names_kubeless_objects(data: bytes) -> bool:
    """Whether a file may hold a Kubeless object, cheaply: the lines holding `kubeless.io/` or a kind's name
    (found with bytes.find, fast on 20 MB) are checked. A file without one (a data file, CI files, a file
    that names kubeless.io in a comment) is never parsed."""
    for word in KUBELESS_WORDS:
        at = data.find(word)
        while at != -1:
            start, end = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
            if KUBELESS_LINE.match(data, start, len(data) if end == -1 else end):
                return True
            at = data.find(word, at + len(word))
    return False


TEMPLATE_TEXT = re.compile(r"\{\{[^{}\n]*\}\}")  # Helm / Go template actions: `{{ .Values.name }}`
# A manifest file larger than this is not parsed (a notice says so): the API server takes objects of at most
# ~1.5 MB and Kubeless keeps code in a 1 MiB ConfigMap, so such a file is data, and parsing it costs seconds.
MAX_MANIFEST_BYTES = 8 << 20
# Aliases may expand a document to at most this many nodes more than it has written out: a 1 KB "billion
# laughs" file would otherwise expand to gigabytes in every copy, fingerprint and `ls -o json`.
MAX_ALIAS_EXPANSION = 100_000


def manifest_files(root: Path, ignore=None):
    """YAML files under a folder (or the file itself), skipping state, deps, hidden and ignored folders."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError("%s: no such file or folder" % root)
    return [p for p in (ignore or Ignore()).walk(root) if p.suffix in (".yaml", ".yml")]


def alias_expansion(documents):
    """How many nodes the aliases add once expanded (a shared sub-tree counts as often as it is used), or
    None for an alias that refers to itself (or nesting too deep to walk). Each distinct node is visited
    once, so a bomb costs no time here."""
    sizes: dict = {}  # id(container) → its expanded size; None while it is being counted (a cycle)
    written = 0  # the containers and their scalars as the text writes them

    def size(node):
        nonlocal written
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise RecursionError("an alias inside itself")
            return sizes[id(node)]
        sizes[id(node)] = None
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        written += 1 + sum(1 for child in children if not isinstance(child, (dict, list)))
        sizes[id(node)] = total = 1 + sum(size(child) for child in children)
        return total

    try:
        expanded = sum(size(document) for document in documents)
    except RecursionError:
        return None
    return expanded - written - sum(1 for document in documents if not isinstance(document, (dict, list)))


@functools.cache
def yaml_loader():
    """libyaml's safe loader when present (~10x faster). PyYAML is imported here, on the first YAML read
    (~15 ms): `run` reads none."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(path: Path, text=None):
    try:
        text = path.read_text(encoding="utf-8") if text is None else text
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc)) from None
    import yaml

    try:
        documents = [d for d in yaml.load_all(text, Loader=yaml_loader()) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "%s:%d:%d" % (path, mark.line + 1, mark.column + 1) if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError("%s: malformed YAML: %s; fix the syntax there" % (where, problem)) from None
    if "*" in text:  # an alias is written `*name`: no star, no alias
        added = alias_expansion(documents)
        if added is None:
            raise UserError(
                "%s: a YAML alias refers to itself (or the nesting is too deep); write the value out" % path
            )
        if added > MAX_ALIAS_EXPANSION:
            raise UserError(
                "%s: YAML aliases expand to more than %d nodes (an alias bomb?); write the values out or use fewer"
                " aliases" % (path, MAX_ALIAS_EXPANSION)
            )
    return documents


def template_notice(path):
    return "%s: not loaded: a template ({{ ... }}), not a Kubeless manifest as it stands" % path


# The byte-order marks of UTF-16 and UTF-32 (the UTF-32 ones last: UTF-32-LE's begins as UTF-16-LE's does).
WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def read_manifest(path: Path):
    """(documents, notice) of one YAML file. A file without Kubeless text is skipped unparsed, and so is one
    too large to be manifests (a notice), and what is not a regular file (a FIFO, a socket, a link that
    cannot be followed); a template that is not valid YAML is a notice; any other YAML error in a Kubeless
    file is the user's to fix."""
    try:
        # Non-blocking, so a FIFO opens at once (and is then skipped) instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path) and exc.errno in (errno.ENOENT, errno.ELOOP):
            return [], "%s: %s, skipped" % (path, unresolvable_link(path, exc))
        if exc.errno == errno.ENXIO:  # what opening a socket raises
            return [], "%s: %s, skipped" % (path, not_a_file(os.stat(path).st_mode))
        raise UserError("%s: cannot read (%s)" % (path, exc)) from None
    with open(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            return [], "%s: %s, skipped" % (path, not_a_file(mode))
        try:
            data = file.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise UserError("%s: cannot read (%s)" % (path, exc)) from None
    if data.startswith(WIDE_BOMS):  # UTF-16 or -32 (YAML allows them): what Windows PowerShell's `>` writes
        try:
            data = data.decode("utf-32" if data.startswith(WIDE_BOMS[2:]) else "utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError("%s: cannot read (%s)" % (path, exc)) from None
    if not names_kubeless_objects(data):
        return [], None
    if len(data) > MAX_MANIFEST_BYTES:
        return [], "%s: not loaded: larger than %d MiB, which no set of Kubeless manifests needs" % (
            path,
            MAX_MANIFEST_BYTES >> 20,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc)) from None
    try:
        return load_documents(path, text), None
    except UserError:
        if TEMPLATE_TEXT.search(text):
            return [], template_notice(path)
        raise


KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def kustomize_patches(kustomization: Path) -> list[Path]:
    """The patch files a kustomization names (`patches`, `patchesStrategicMerge`, `patchesJson6902`): a patch of
    a Function is a part of one (`kind: Function`, a name, what it changes), not a Function of its own. A
    kustomization that does not read is no patch's."""
    try:
        [document] = load_documents(kustomization) or [None]
    except (UserError, ValueError):
        return []
    if not isinstance(document, dict):
        return []
    named = [entry.get("path") for entry in document.get("patches") or () if isinstance(entry, dict)]
    named += [entry for entry in document.get("patchesStrategicMerge") or () if isinstance(entry, str)]
    named += [entry.get("path") for entry in document.get("patchesJson6902") or () if isinstance(entry, dict)]
    return [
        (kustomization.parent / path).resolve()
        for path in named
        if isinstance(path, str) and path and "\n" not in path  # (an inline patch is YAML text, not a path)
    ]


def patch_notice(path, kustomization):
    return "%s: not loaded: a kustomize patch (%s names it), not a Function of its own" % (path, kustomization)


def object_key(doc, path: Path, project: Path):
    """The name `ls` shows for an object that could not be loaded: a Function's name, `<kind>/<name>` for
    another object, else the file's path in the project."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if isinstance(name, str) and NAME_RE.match(name) and isinstance(kind, str) and kind:
        return name if kind == "Function" else "%s/%s" % (kind.lower(), name)
    return _rel(path, project)


def one_cron_job_per_function(cron_triggers):
    """A notice for each function that several CronJobTriggers call: in a cluster the cronjob-trigger
    controller keeps one CronJob per function (`trigger-<function>`), so only one of them would run."""
    by_function: dict = {}
    for trigger in cron_triggers:
        by_function.setdefault(trigger.function_name, []).append(trigger)
    return [
        "%s: CronJobTriggers %s all call function %s; a cluster keeps one of them (one CronJob trigger-%s per"
        " function), here each runs"
        % (triggers[1].origin.split(":")[0], ", ".join(t.name for t in triggers), name, name)
        for name, triggers in by_function.items()
        if len(triggers) > 1
    ]


class Loader:
    """The Kubeless objects under a folder (or in one file, or the files `only()` names). Each file's
    documents are kept by its stat, so a reload re-reads only the files that changed; the objects are
    rebuilt (cheap) every time. `collect()` loads what it can and lists the rest as errors; `load()` is
    all or nothing."""

    def __init__(self, root, ignore=(), only=None):
        self.root = Path(root).resolve()
        self.project = project_folder(self.root)  # sources must stay inside it
        self.ignore = ignore if isinstance(ignore, Ignore) else Ignore(ignore)
        self.only = only  # a callable: the manifest files to load instead of every YAML file under root
        self.cache = {}  # path → ((mtime_ns, size, inode), (documents, notice, error))
        self.kustomizations: dict = {}  # path → ((mtime_ns, size, inode), the patch files it names)

    def documents(self, path):
        """(documents, notice, error message) of one file."""
        try:
            st = path.stat()
        except OSError as exc:
            if os.path.islink(path):  # a broken link or a link loop: said, never loadable
                return [], "%s: %s, skipped" % (path, unresolvable_link(path, exc)), None
            return [], None, None  # deleted since the walk: the next change event reloads
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self.cache.get(path)
        if cached is None or cached[0] != key:
            try:
                found = (*read_manifest(path), None)
            except UserError as exc:
                found = ([], None, str(exc))
            cached = self.cache[path] = (key, found)
        return cached[1]

    def patches(self, files) -> dict[Path, Path]:
        """The kustomize patches among `files` → the kustomization that names each (read again when it changed)."""
        found: dict[Path, Path] = {}
        for path in files:
            if path.name not in KUSTOMIZATIONS:
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self.kustomizations.get(path)
            if cached is None or cached[0] != key:
                cached = self.kustomizations[path] = (key, kustomize_patches(path))
            found.update(dict.fromkeys(cached[1], path))
        return found

    def files(self):
        if self.only is None:
            return manifest_files(self.root, self.ignore)
        return sorted(path for path in self.only() if path.is_file())

    def collect(self) -> Manifests:
        """Every object that loads; each one that does not is an ObjectError, and the others still load."""
        files = self.files()
        present = set(files)
        self.cache = {path: entry for path, entry in self.cache.items() if path in present}  # forget deleted files
        manifests = Manifests()
        patches = self.patches(files)
        for path in files:
            if path in patches:
                manifests.notices.append(patch_notice(path, patches[path]))
                continue
            documents, notice, error = self.documents(path)
            if notice:
                manifests.notices.append(notice)
            if error:
                manifests.errors.append(ObjectError(_rel(path, self.project), path, error, whole_file=True))
                continue
            found, problems = Manifests(), []
            for doc in documents:
                try:
                    add_document(found, doc, path, self.project)
                except UserError as exc:
                    problems.append(ObjectError(object_key(doc, path, self.project), path, str(exc)))
            if problems and TEMPLATE_TEXT.search(path.read_text(encoding="utf-8", errors="replace")):
                manifests.notices.append(template_notice(path))  # valid YAML, but `{{ }}` where names go
                continue
            manifests.extend(found)
            manifests.errors.extend(problems)
        self._one_function_per_name(manifests)
        manifests.notices.extend(one_cron_job_per_function(manifests.cron_triggers))
        return manifests

    def _one_function_per_name(self, manifests):
        """A name defined twice: the first file's Function runs, the second is an error; every error gets a
        key of its own (the file's path when the object's name is taken)."""
        files: dict = {}
        namespaces: dict = {}
        for fn in manifests.functions:
            path = Path(fn.origin.split(":")[0])
            if fn.name in files and namespaces[fn.name] != fn.namespace:
                # the same Function for two namespaces (k8s/staging/, k8s/prod/): one runs here, by name
                message = (
                    "%s: Function %s (namespace %s) is also defined in %s (namespace %s); locally a name runs once,"
                    " whatever its namespace: `dev --ignore %s` runs this one"
                    % (
                        path,
                        fn.name,
                        fn.namespace,
                        files[fn.name],
                        namespaces[fn.name],
                        _rel(files[fn.name], self.project),
                    )
                )
                manifests.errors.append(ObjectError(_rel(path, self.project), path, message))
            elif fn.name in files:
                message = "%s: Function %s is also defined in %s; names must be unique" % (
                    path,
                    fn.name,
                    files[fn.name],
                )
                manifests.errors.append(ObjectError(_rel(path, self.project), path, message))
            else:
                files[fn.name], namespaces[fn.name] = path, fn.namespace
        manifests.functions = [fn for fn in manifests.functions if files[fn.name] == Path(fn.origin.split(":")[0])]
        taken = set(files)
        errors = []
        for error in manifests.errors:
            key, number = error.key, 1
            if key in taken:
                key = base = _rel(error.path, self.project)
                while key in taken:
                    number += 1
                    key = "%s#%d" % (base, number)
            taken.add(key)
            errors.append(dataclasses.replace(error, key=key))
        manifests.errors = errors

    def load(self) -> Manifests:
        manifests = self.collect()
        manifests.raise_first()
        return manifests


def load(root, ignore=()) -> Manifests:
    """Every Kubeless object in the YAML files under `root` (a file or a folder); the first error raised."""
    return Loader(root, ignore).load()


def add_document(manifests, doc, path, project=None):
    if not isinstance(doc, dict):
        return  # not a Kubernetes object (a list or scalar file): not ours
    api, kind = doc.get("apiVersion"), doc.get("kind")
    is_kubeless = isinstance(api, str) and api.startswith("kubeless.io/")
    if kind == "List" and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            add_document(manifests, item, path, project)
        return
    if not is_kubeless:
        if kind in ALL_KINDS:
            raise UserError(
                "%s: %s has apiVersion %r; Kubeless objects use apiVersion: %s" % (path, kind, api, API_VERSION)
            )
        return  # another tool's YAML (a Deployment, a CI file): ignored
    if api != API_VERSION:
        raise UserError("%s: apiVersion %r is not supported; use %s" % (path, api, API_VERSION))
    if kind in NOT_EMULATED:
        name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
        manifests.notices.append("%s: %s %s is not emulated locally; skipped" % (path, kind, name or "<unnamed>"))
        return
    if kind not in PARSERS:
        raise UserError(
            "%s: unknown kind %r for %s; expected one of %s" % (path, kind, API_VERSION, ", ".join(ALL_KINDS))
        )
    attribute, parser = PARSERS[kind]
    obj = parse_function(doc, path, project) if kind == "Function" else parser(doc, path)
    getattr(manifests, attribute).append(obj)

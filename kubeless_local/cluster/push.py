"""`kubeless-local push`: the project's objects rendered, checked against the runtimes the cluster's
Kubeless runs, then applied to the cluster of a kubeconfig context; `--wait`: each Function's rollout of
the pushed code, then its answer through the API server's service proxy."""

import json
from pathlib import Path
from typing import Optional

import yaml

from kubeless_local.cluster import kind, render
from kubeless_local.cluster.apply import Applier
from kubeless_local.cluster.kubeconfig import Target, connect
from kubeless_local.errors import UserError


def rendered(path, namespace: Optional[str], default_namespace: str = "default", ignore=()) -> list:
    """The objects to apply; `namespace` (--namespace) must agree with the manifests' own namespaces."""
    objects = render.render_project(Path(path), namespace or default_namespace, ignore=ignore)
    _run_compiled(objects)
    for obj in objects:
        meta = obj["metadata"]
        if namespace and meta["namespace"] != namespace:
            raise UserError(
                "%s %s has metadata.namespace %s but --namespace is %s; remove one of them"
                % (obj["kind"], meta["name"], meta["namespace"], namespace)
            )
    return objects


def _run_compiled(objects: list) -> None:
    """A Function of a compiled runtime (go) runs the binary its compile phase left in the install volume
    (kind.cluster_command): its first container gets that command unless it names a command or an image."""
    from kubeless_local import runtimes
    from kubeless_local.cluster import kind
    from kubeless_local.paths import RUNTIMES_DIR

    entries = runtimes.load(RUNTIMES_DIR / "catalog.yaml")
    for obj in objects:
        match = runtimes.RUNTIME_RE.match(str((obj.get("spec") or {}).get("runtime") or ""))
        entry = entries.get(match.group(1)) if match and obj["kind"] == "Function" else None
        command = kind.cluster_command(entry) if entry else []
        if not command:
            continue
        pod = obj["spec"].setdefault("deployment", {}).setdefault("spec", {}).setdefault("template", {})
        containers = pod.setdefault("spec", {}).setdefault("containers", [])
        if not containers:
            containers.append({})
        if "command" not in containers[0] and "image" not in containers[0]:
            containers[0]["command"] = command


def client_dry_run(path, namespace=None, context=None, ignore=()) -> list:
    """What would be applied, without contacting a server (the context's namespace if a kubeconfig exists)."""
    default = "default"
    if not namespace:
        try:
            default = connect(context).namespace
        except UserError:
            if context:
                raise
    return rendered(path, namespace, default, ignore)


def target(context=None) -> Target:
    return connect(context)


def push(target: Target, path, namespace=None, *, server_dry_run=False, prune=False, force_conflicts=False, ignore=()):
    """Apply the project (server-side apply); returns the Results, in order. A Function whose runtime the
    cluster's Kubeless cannot run is refused before anything is applied."""
    objects = rendered(path, namespace, target.namespace, ignore)
    check_runtimes(objects, cluster_runtimes(target))
    project = objects[0]["metadata"]["labels"][render.PROJECT_LABEL]
    applier = Applier(target, project, dry_run=server_dry_run, force_conflicts=force_conflicts)
    return applier.push(objects, prune=prune)


# ------------------------------------------------------------------ the secrets and ConfigMaps the pods need
def sources_needed(function: dict) -> list[tuple[str, str]]:
    """(kind, name) of each Secret and ConfigMap a Function's pod cannot start without (its volumes, its env's
    `valueFrom` and `envFrom`; an `optional` one aside), in their order."""
    from kubeless_local.podenv import references, volume_sources
    from kubeless_local.spec import FunctionSpec

    pod = FunctionSpec.pod_of((function.get("spec") or {}).get("deployment"))
    refs = [(source.kind, ref.get(source.volume_name), ref.get("optional")) for source, ref, _ in volume_sources(pod)]
    for container in pod.get("containers") or []:
        refs.extend((source.kind, ref.get("name"), ref.get("optional")) for source, ref, _ in references(container))
    return list(dict.fromkeys((what, str(name)) for what, name, optional in refs if name and not optional))


def missing_sources(target: Target, function_results, project: Path) -> list[str]:
    """A line for each Secret or ConfigMap a pushed Function's pod needs that its namespace does not have (the
    pod would not start), with the command that makes it from the project's folder of it where there is one.
    One the cluster does not let us look at (RBAC) is not said."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from kubeless_local.spec import CONFIGMAPS_DIRNAME, SECRETS_DIRNAME

    core = client.CoreV1Api(target.api)
    read = {"Secret": core.read_namespaced_secret, "ConfigMap": core.read_namespaced_config_map}
    make = {"Secret": ("secret generic", SECRETS_DIRNAME), "ConfigMap": ("configmap", CONFIGMAPS_DIRNAME)}
    lines = []
    for result in function_results:
        for what, name in sources_needed(result.object):
            try:
                read[what](name, result.namespace)
                continue
            except ApiException as exc:
                if exc.status != 404:
                    continue
            verb, folder = make[what]
            local = project / folder / name
            fix = (
                "create it from %s: `kubectl -n %s create %s %s --from-file=%s`"
                % (local, result.namespace, verb, name, local)
                if local.is_dir()
                else "create it in the cluster"
            )
            lines.append(
                "Function %s needs %s %s, which namespace %s does not have: its pod will not start; %s"
                % (result.name, what, name, result.namespace, fix)
            )
    return lines


# ------------------------------------------------------------------ the runtimes the cluster can run
KUBELESS_NAMESPACE, CONTROLLER = kind.CONTROLLER  # the controller's namespace and Deployment


def cluster_runtimes(target: Target) -> Optional[list]:
    """The runtime strings (ID + version) of the cluster's kubeless-config `runtime-images`, in its order;
    None where it cannot be read (not there, not allowed, unreachable): then the apply says what is wrong."""
    from kubernetes import client

    try:
        config = client.CoreV1Api(target.api).read_namespaced_config_map(
            kind.KUBELESS_CONFIG, KUBELESS_NAMESPACE, _request_timeout=10
        )
        images = yaml.safe_load((config.data or {}).get("runtime-images") or "[]")
    except _read_errors():  # not there, not allowed, unreachable: no check, the apply reports the cause
        return None
    if not isinstance(images, list):
        return None
    return [
        "%s%s" % (r.get("ID"), v.get("version"))
        for r in images
        if isinstance(r, dict)
        for v in r.get("versions") or []
        if isinstance(v, dict)
    ]


def _read_errors() -> tuple:
    """What reading from the API server can raise (its answer, the connection, the YAML inside)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, yaml.YAMLError)


def check_runtimes(objects: list, available: Optional[list]) -> None:
    """UserError for the first Function whose runtime is not in `available` (None: nothing known)."""
    if available is None:
        return
    for obj in objects:
        runtime = (obj.get("spec") or {}).get("runtime")
        if obj["kind"] != "Function" or not runtime or runtime in available:
            continue
        raise UserError(
            "Function %s: runtime %s is not one this cluster's Kubeless runs (kubeless-config runtime-images: %s);"
            " %s" % (obj["metadata"]["name"], runtime, ", ".join(available) or "none", _runtime_fix(runtime, available))
        )


def _runtime_fix(runtime: str, available: list) -> str:
    """`cluster up` (or docs/push.md's command) adds the project's images; a legacy ID that `dev` maps to
    the same runtime works as it is where the cluster has it."""
    from kubeless_local import runtimes
    from kubeless_local.paths import RUNTIMES_DIR

    fix = "`kubeless-local cluster up` adds the project's runtime images (any cluster: see docs/push.md)"
    match = runtimes.RUNTIME_RE.match(runtime)
    entries = runtimes.load(RUNTIMES_DIR / "catalog.yaml")
    if match and match.group(1) in entries:
        legacy = [v for v in entries[match.group(1)].legacy if match.group(1) + v in available]
        if legacy:
            fix += ", or use runtime %s%s (dev runs it as %s)" % (match.group(1), legacy[-1], runtime)
    return fix


# -------------------------------------------------------------------------------- --wait
WAIT_SECONDS = 300  # a function's rollout must be complete by then (image pulls and dependency installs)
CONTROLLER_SECONDS = 30  # the controller writes a Function's Deployment within seconds of seeing it
CALL_SECONDS = 15  # a Service whose pod just became ready may have no endpoint for a moment (503)
FINALIZER = "kubeless.io/function"  # the controller's, added when it first takes a Function
# A pod state that will not become ready by waiting (the kubelet's reasons).
STUCK = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def wait_and_call(
    target: Target, function_results, timeout: float = WAIT_SECONDS, poll: float = 1.0, controller_timeout=None
):
    """For each pushed Function: wait until the controller has written the pushed code into its Deployment
    (the pod template carries the pushed checksum) and that rollout is complete, then call it once through
    the API server's service proxy, as `kubeless function call` does; yields (name, answer). A controller
    that writes no such Deployment, or a pod that cannot start, is reported as soon as it shows."""
    from kubernetes import client

    apps, core = client.AppsV1Api(target.api), client.CoreV1Api(target.api)
    for result in function_results:
        _wait_for_rollout(target, apps, core, result, timeout, poll, controller_timeout or CONTROLLER_SECONDS)
        yield result.name, _call(core, result, poll)


def _wait_for_rollout(target: Target, apps, core, result, timeout: float, poll: float, controller_timeout: float):
    import time

    from kubernetes.client.exceptions import ApiException

    checksum = str((result.object.get("spec") or {}).get("checksum") or "").split(":")[-1]
    start = time.monotonic()
    while True:
        try:
            deployment = apps.read_namespaced_deployment(result.name, result.namespace)
        except ApiException as exc:
            if exc.status != 404:  # 404: not created yet by the controller
                raise UserError("Deployment %s: %s %s" % (result.name, exc.status, exc.reason)) from None
            deployment = None
        current = deployment is not None and _carries(deployment.spec.template.spec, checksum)
        if current and _rolled_out(deployment) and _serves_only(target, core, result, checksum):
            return
        if current:
            _fail_if_stuck(core, result, checksum)
        waited = time.monotonic() - start
        if waited > timeout:
            raise UserError(
                "Function %s: its Deployment is not available after %d s; see `kubectl -n %s describe deployment"
                " %s` and the Kubeless controller's logs" % (result.name, timeout, result.namespace, result.name)
            )
        if not current and waited > controller_timeout:
            raise UserError(_controller_silent(target, result, deployment is not None, controller_timeout))
        time.sleep(poll)


def _carries(pod_spec, checksum: str) -> bool:
    """A pod (template) of the pushed code: the controller puts its checksum in the prepare step."""
    inits = pod_spec.init_containers or []
    return not checksum or any(c.name == "prepare" and checksum in " ".join(c.args or []) for c in inits)


def _rolled_out(deployment) -> bool:
    """As `kubectl rollout status`: the newest generation observed, every replica updated and available,
    no old one left."""
    status, wanted = deployment.status, deployment.spec.replicas if deployment.spec.replicas is not None else 1
    if status is None or (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return False
    updated = status.updated_replicas or 0
    return updated >= wanted and (status.replicas or 0) <= updated and (status.available_replicas or 0) >= updated


def _serves_only(target: Target, core, result, checksum: str) -> bool:
    """No ready endpoint of the Service is an old pod (one leaves them a moment after its ReplicaSet is
    scaled down; until then a call could reach it). True where they cannot be read (no EndpointSlice API
    before 1.21, or RBAC): the rollout is all there is to wait for."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        slices = client.DiscoveryV1Api(target.api).list_namespaced_endpoint_slice(
            result.namespace, label_selector="kubernetes.io/service-name=%s" % result.name
        )
    except ApiException as exc:
        if exc.status in (403, 404):  # not allowed to read them, or no such API: the rollout must do
            return True
        raise UserError("EndpointSlices of %s: %s %s" % (result.name, exc.status, exc.reason)) from None
    ready = {
        e.target_ref.name
        for item in slices.items
        for e in item.endpoints or []
        if e.target_ref is not None and (e.conditions is None or e.conditions.ready is not False)
    }
    pods = core.list_namespaced_pod(result.namespace, label_selector="function=%s" % result.name).items
    new = {p.metadata.name for p in pods if _carries(p.spec, checksum)}
    return ready <= new  # none yet: the call waits out the Service's 503 (CALL_SECONDS)


def _fail_if_stuck(core, result, checksum: str) -> None:
    """UserError naming the first container of the new pods that cannot start (pull, crash, a failed
    prepare/install/compile step: its termination message, e.g. a compile error)."""
    pods = core.list_namespaced_pod(result.namespace, label_selector="function=%s" % result.name).items
    for pod in pods:
        if pod.metadata.deletion_timestamp or not _carries(pod.spec, checksum):
            continue
        containers = [("init container", c) for c in pod.status.init_container_statuses or []]
        containers += [("container", c) for c in pod.status.container_statuses or []]
        for role, container in containers:
            failed = _stuck(container)
            if failed:
                where = "pod %s, %s %s" % (pod.metadata.name, role, container.name)
                logs = "kubectl -n %s logs %s -c %s" % (result.namespace, pod.metadata.name, container.name)
                raise UserError("Function %s: %s: %s; see `%s`" % (result.name, where, failed, logs))


def _stuck(container) -> str:
    """Why a container cannot start, or "" (a failed init step counts: the kubelet only repeats it)."""
    waiting = container.state.waiting if container.state else None
    terminated = (container.state.terminated if container.state else None) or (
        container.last_state.terminated if container.last_state else None
    )
    if terminated is not None and terminated.exit_code and (waiting is not None or container.restart_count):
        text = (terminated.message or terminated.reason or "").strip().replace("\n", " ")
        return "exited %d%s" % (terminated.exit_code, ": " + text[:300] if text else "")
    if waiting is not None and waiting.reason in STUCK:
        return "%s%s" % (waiting.reason, ": " + waiting.message.strip()[:300] if waiting.message else "")
    return ""


def _controller_silent(target: Target, result, has_deployment: bool, seconds: float) -> str:
    """Why waiting longer is pointless: the controller has not taken the Function, or took it and wrote
    no Deployment of this code (its log says why; quoted when the API serves it)."""
    from kubernetes import client

    try:
        function: dict = client.CustomObjectsApi(target.api).get_namespaced_custom_object(  # type: ignore[assignment]
            "kubeless.io", "v1beta1", result.namespace, "functions", result.name
        )
        taken = FINALIZER in ((function.get("metadata") or {}).get("finalizers") or [])
    except _read_errors():  # only the wording depends on it
        taken = False
    logs = "`kubectl -n %s logs deployment/%s`" % (KUBELESS_NAMESPACE, CONTROLLER)
    if not taken:
        return "Function %s: the Kubeless controller has not taken it within %d s%s" % (
            result.name,
            seconds,
            _controller_state(target, logs),
        )
    what = "did not update its Deployment to the pushed code" if has_deployment else "created no Deployment for it"
    said = _controller_said(core=client.CoreV1Api(target.api), name=result.name)
    return "Function %s: the Kubeless controller took it but %s within %d s; %s" % (
        result.name,
        what,
        seconds,
        "its log: %s" % said if said else "its log says why: %s" % logs,
    )


def _controller_state(target: Target, logs: str) -> str:
    """Why the controller may not be taking Functions: not installed, or not ready (as the v1.0.8 controller
    on Kubernetes 1.22 and later, which exits at start); the commands to look further otherwise."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        deployment = client.AppsV1Api(target.api).read_namespaced_deployment(CONTROLLER, KUBELESS_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return (
                ": there is no Deployment %s in namespace %s (Kubeless is not installed there; `kubeless-local"
                " cluster up` installs it, or see docs/push.md)" % (CONTROLLER, KUBELESS_NAMESPACE)
            )
        deployment = None
    except _read_errors():
        deployment = None
    if deployment is not None:
        wanted = deployment.spec.replicas or 0
        ready = (deployment.status.ready_replicas or 0) if deployment.status is not None else 0
        if ready < max(wanted, 1):
            return (
                ": Deployment %s/%s has %d of %d replicas ready (the Kubeless v1.0.8 controller exits at start on"
                " Kubernetes 1.22 and later: docs/push.md); its log: %s"
                % (KUBELESS_NAMESPACE, CONTROLLER, ready, wanted, logs)
            )
    return "; is it running? (`kubectl -n %s get deployment %s`, %s)" % (KUBELESS_NAMESPACE, CONTROLLER, logs)


def _controller_said(core, name: str) -> str:
    """The controller pod's last error line about `name`, where its log can be read ("" otherwise)."""
    try:
        pods = core.list_namespaced_pod(KUBELESS_NAMESPACE, label_selector="kubeless=controller").items
        for pod in pods:
            log = core.read_namespaced_pod_log(
                pod.metadata.name, KUBELESS_NAMESPACE, container="kubeless-function-controller", tail_lines=200
            )
            lines = [line for line in log.splitlines() if "level=error" in line and name in line]
            if lines:
                return lines[-1].strip()[:400]
    except _read_errors():  # the log is a bonus; the command to read it is given anyway
        pass
    return ""


def _call(core, result, poll: float):
    """The function's answer through the service proxy: `…/services/NAME:PORT/proxy/` (with the trailing
    slash: without it every API server answers 301)."""
    import time

    from kubernetes.client.exceptions import ApiException

    ports = ((result.object.get("spec") or {}).get("service") or {}).get("ports") or [{}]
    port = ports[0].get("name") or "http-function-port"
    deadline = time.monotonic() + CALL_SECONDS
    while True:
        try:
            return core.connect_get_namespaced_service_proxy_with_path(
                "%s:%s" % (result.name, port), result.namespace, ""
            )
        except ApiException as exc:
            if exc.status == 503 and time.monotonic() < deadline:  # no endpoint yet: the pod just became ready
                time.sleep(poll)
                continue
            body = (exc.body or "").strip() if isinstance(exc.body, str) else ""
            detail = (json.loads(body).get("message") if body.startswith("{") else body.splitlines()[0]) if body else ""
            raise UserError(
                "Function %s: the call answered %s %s%s"
                % (result.name, exc.status, exc.reason, ": " + detail if detail else "")
            ) from None

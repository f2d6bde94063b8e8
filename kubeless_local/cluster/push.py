"""`kubeless-local push`: the project's objects rendered, then applied to the cluster of a kubeconfig context."""

import json
from pathlib import Path
from typing import Optional

from kubeless_local.cluster import render
from kubeless_local.cluster.apply import Applier
from kubeless_local.cluster.kubeconfig import Target, connect
from kubeless_local.errors import UserError


def rendered(path, namespace: Optional[str], default_namespace: str = "default", ignore=()) -> list:
    """The objects to apply; `namespace` (--namespace) must agree with the manifests' own namespaces."""
    objects = render.render_project(Path(path), namespace or default_namespace, ignore=ignore)
    for obj in objects:
        meta = obj["metadata"]
        if namespace and meta["namespace"] != namespace:
            raise UserError(
                "%s %s has metadata.namespace %s but --namespace is %s; remove one of them"
                % (obj["kind"], meta["name"], meta["namespace"], namespace)
            )
    return objects


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
    """Apply the project (server-side apply); returns the Results, in order."""
    objects = rendered(path, namespace, target.namespace, ignore)
    project = objects[0]["metadata"]["labels"][render.PROJECT_LABEL]
    applier = Applier(target, project, dry_run=server_dry_run, force_conflicts=force_conflicts)
    return applier.push(objects, prune=prune)


WAIT_SECONDS = 300  # a function's Deployment must be available by then (image pulls and dependency installs)


def wait_and_call(target: Target, function_results, timeout: float = WAIT_SECONDS, poll: float = 2.0):
    """Wait for each Function's Deployment to be available, then call it once through the API server's
    service proxy, as `kubeless function call` does; yields (name, answer)."""
    import time

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    apps, core = client.AppsV1Api(target.api), client.CoreV1Api(target.api)
    for result in function_results:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = apps.read_namespaced_deployment_status(result.name, result.namespace).status
                if status is not None and (status.available_replicas or 0) >= 1:
                    break
            except ApiException as exc:
                if exc.status != 404:  # not created yet by the controller: keep waiting
                    raise UserError("Deployment %s: %s %s" % (result.name, exc.status, exc.reason)) from None
            if time.monotonic() > deadline:
                raise UserError(
                    "Function %s: its Deployment is not available after %d s; see `kubectl -n %s describe deployment"
                    " %s` and the Kubeless controller's logs" % (result.name, timeout, result.namespace, result.name)
                )
            time.sleep(poll)
        ports = ((result.object.get("spec") or {}).get("service") or {}).get("ports") or [{}]
        port = ports[0].get("name") or "http-function-port"
        try:
            answer = core.connect_get_namespaced_service_proxy("%s:%s" % (result.name, port), result.namespace)
        except ApiException as exc:
            body = (exc.body or "").strip() if isinstance(exc.body, str) else ""
            detail = (json.loads(body).get("message") if body.startswith("{") else body.splitlines()[0]) if body else ""
            raise UserError(
                "Function %s: the call answered %s %s%s"
                % (result.name, exc.status, exc.reason, ": " + detail if detail else "")
            ) from None
        yield result.name, answer

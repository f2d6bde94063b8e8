"""Server-side apply of the rendered objects (field manager `kubeless-local`), and prune.

Each API failure becomes one line naming the object, the cluster and the fix (a UserError): API server
unreachable, Kubeless not installed, RBAC denied, a field owned by another manager. The generated
`patch_namespaced_custom_object` answers None when an apply creates the object (201), so the
`*_with_http_info` variant is used with the raw answer, which gives the status code and the body.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import urllib3
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeless_local.cluster.kubeconfig import Target
from kubeless_local.cluster.render import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from kubeless_local.errors import UserError

GROUP, VERSION = "kubeless.io", "v1beta1"
FIELD_MANAGER = "kubeless-local"
APPLY_PATCH = "application/apply-patch+yaml"
PLURALS = {  # kind → resource, in the order objects are applied (triggers name their functions)
    "Function": "functions",
    "HTTPTrigger": "httptriggers",
    "CronJobTrigger": "cronjobtriggers",
    "KafkaTrigger": "kafkatriggers",
    "NATSTrigger": "natstriggers",
    "KinesisTrigger": "kinesistriggers",
}
# Kinds outside kubeless.io that push applies: kind → (group, version, resource). Served by every cluster
# (no CRD to check): an HTTPTrigger's Ingress (http_routes.ingress_of).
BUILT_IN = {"Ingress": ("networking.k8s.io", "v1", "ingresses")}
ORDER = [*PLURALS, *BUILT_IN]


def api_of(kind: str) -> tuple:
    """(group, version, resource) of a kind push applies."""
    return BUILT_IN.get(kind) or (GROUP, VERSION, PLURALS[kind])


# The Kubeless controller adds its finalizer with an Update of the whole Function, re-serialized by its
# own (2018) structs: atomic lists such as the containers of spec.deployment change form (`name: ""`)
# and become its fields. Taking those back on the next push is what a push means.
CONTROLLER_MANAGERS = {"function-controller", "kubeless-function-controller"}
TIMEOUT = (5, 30)  # connect, read (seconds)
RETRIES_429 = 30
SERVER_FIELDS = ("resourceVersion", "generation", "managedFields")
NOT_INSTALLED = "Kubeless is not installed in this cluster: run `kubeless-local cluster up` or install Kubeless"


@dataclass
class Result:
    kind: str
    name: str
    namespace: str
    action: str  # created, configured, unchanged, deleted (with " (server dry run)" when not stored)
    object: dict = field(default_factory=dict)  # what the server stored (or would store)

    def line(self) -> str:
        said = "%s.%s/%s %s" % (self.kind.lower(), api_of(self.kind)[0], self.name, self.action)
        if self.kind == "Ingress":
            said += " (HTTPTrigger %s as a networking.k8s.io/v1 Ingress)" % self.name
        return said


class Applier:
    def __init__(self, target: Target, project: str, *, dry_run: bool = False, force_conflicts: bool = False):
        self.target = target
        self.api = client.CustomObjectsApi(target.api)
        self.project = project
        self.dry_run = dry_run
        self.force_conflicts = force_conflicts
        self._installed: Optional[set] = None

    # ---------------------------------------------------------------- errors as one line
    def _fail(self, exc: Exception, doing: str):
        where = "context %s (%s)" % (self.target.context, self.target.server)
        if isinstance(exc, urllib3.exceptions.HTTPError):
            reason = getattr(exc, "reason", None) or exc
            raise UserError("cannot reach the API server of %s: %s" % (where, _short(reason))) from None
        assert isinstance(exc, ApiException)
        body = _body(exc)
        message = body.get("message") or exc.reason or ""
        if exc.status == 401:
            raise UserError("%s: the API server did not accept the credentials (401 Unauthorized)" % where) from None
        if exc.status == 403:
            raise UserError(
                "%s: RBAC denied %s: %s; ask for permission on %s resources" % (where, doing, message, GROUP)
            ) from None
        if exc.status == 409 and exc.reason and "conflict" in message.lower():
            causes = (body.get("details") or {}).get("causes") or []
            if causes and all(_manager(c.get("message", "")).strip('"') in CONTROLLER_MANAGERS for c in causes):
                raise _ControllerConflict() from None
            raise UserError(self._conflict(body, doing)) from None
        raise UserError("%s: %s failed (%s %s): %s" % (where, doing, exc.status, exc.reason, message)) from None

    def _conflict(self, body: dict, doing: str) -> str:
        causes = (body.get("details") or {}).get("causes") or []
        fields = ", ".join("%s (owned by %s)" % (c.get("field"), _manager(c.get("message", ""))) for c in causes)
        return "%s: %s is managed by another field manager; pass --force-conflicts to take it over" % (
            doing,
            fields or body.get("message", "a field"),
        )

    def _call(self, doing: str, method, *args, missing_ok=False, **kwargs) -> Any:
        """One API call; a 429 (the API server is busy, or a new CRD's storage is starting) is retried as
        kubectl retries it, for at most ~30 s; any other failure is one line."""
        for attempt in range(RETRIES_429 + 1):
            try:
                return method(*args, _request_timeout=TIMEOUT, **kwargs)
            except ApiException as exc:
                if exc.status == 404 and missing_ok:
                    return None
                if exc.status != 429 or attempt == RETRIES_429:
                    self._fail(exc, doing)
                retry_after = (exc.headers or {}).get("Retry-After") or "1"
                time.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 1.0))
            except urllib3.exceptions.HTTPError as exc:
                self._fail(exc, doing)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- what the cluster serves
    def installed(self) -> set:
        """The Kubeless kinds this cluster serves (its CRDs), from API discovery (any user may read it)."""
        if self._installed is None:
            resources = self._call("API discovery", self.api.get_api_resources, GROUP, VERSION, missing_ok=True)
            if resources is None:  # the kubeless.io group is not served: no Kubeless CRD
                raise UserError(NOT_INSTALLED)
            self._installed = {r.kind for r in resources.resources or [] if "/" not in r.name}
            if "Function" not in self._installed:
                raise UserError(NOT_INSTALLED)
        return self._installed

    def check(self, objects: list):
        missing = sorted({o["kind"] for o in objects} - self.installed() - set(BUILT_IN))
        if missing:
            raise UserError(
                "%s: the %s CRD is not installed in this cluster; install that Kubeless trigger controller"
                " (or remove these objects)" % (self.target.context, ", ".join(missing))
            )

    def managed(self, kind: str, namespace: str) -> dict:
        """{name: object} of this project's objects of one kind that this tool applied earlier."""
        selector = "%s=%s,%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY, PROJECT_LABEL, self.project)
        group, version, plural = api_of(kind)
        doing = "list %s in namespace %s" % (plural, namespace)
        listing = self._call(
            doing, self.api.list_namespaced_custom_object, group, version, namespace, plural, label_selector=selector
        )
        # a list of built-in objects (Ingresses) leaves kind and apiVersion out of its items
        typed = {"kind": kind, "apiVersion": "%s/%s" % (group, version)}
        return {item["metadata"]["name"]: {**typed, **item} for item in listing.get("items") or []}

    # ---------------------------------------------------------------- apply and prune
    def apply(self, obj: dict, before: Optional[dict]) -> Result:
        meta = obj["metadata"]
        kind, name, namespace = obj["kind"], meta["name"], meta["namespace"]
        doing = "apply %s %s in namespace %s" % (kind, name, namespace)
        try:
            response = self._apply(obj, doing, self.force_conflicts)
        except _ControllerConflict:  # only fields the Kubeless controller re-serialized: take them back
            response = self._apply(obj, doing, True)
        stored = json.loads(response.data or b"{}")
        stored.get("metadata", {}).pop("managedFields", None)  # bookkeeping, as `kubectl get -o yaml` hides it
        if response.status == 201 or before is None:
            action = "created"
        elif _content(stored) == _content(before):  # a dry run answers the old resourceVersion: compare content
            action = "unchanged"
        else:
            action = "configured"
        return Result(kind, name, namespace, action + (" (server dry run)" if self.dry_run else ""), stored)

    def _apply(self, obj: dict, doing: str, force: bool):
        meta = obj["metadata"]
        return self._call(  # urllib3's response
            doing,
            self.api.patch_namespaced_custom_object_with_http_info,
            *api_of(obj["kind"])[:2],
            meta["namespace"],
            api_of(obj["kind"])[2],
            meta["name"],
            obj,
            field_manager=FIELD_MANAGER,
            force=force or None,
            dry_run="All" if self.dry_run else None,
            _content_type=APPLY_PATCH,
            _preload_content=False,  # the raw answer: its status (201 created) and body
        )

    def delete(self, kind: str, name: str, namespace: str) -> Result:
        doing = "delete %s %s in namespace %s" % (kind, name, namespace)
        self._call(
            doing,
            self.api.delete_namespaced_custom_object,
            *api_of(kind)[:2],
            namespace,
            api_of(kind)[2],
            name,
            dry_run="All" if self.dry_run else None,
            missing_ok=True,  # deleted meanwhile: nothing to prune
        )
        return Result(kind, name, namespace, "pruned" + (" (server dry run)" if self.dry_run else ""))

    def push(self, objects: list, prune: bool = False) -> list:
        """Apply every object; with `prune`, delete this project's earlier objects that are gone locally."""
        self.check(objects)
        namespaces = sorted({o["metadata"]["namespace"] for o in objects})
        present = {o["kind"] for o in objects}
        # an Ingress kind is listed only when pushed or pruned: RBAC may deny it to a project without HTTPTriggers
        kinds = [k for k in ORDER if k in self.installed() or (k in BUILT_IN and (k in present or prune))]
        earlier = {(k, ns): self.managed(k, ns) for k in kinds for ns in namespaces}
        ordered = sorted(objects, key=lambda o: ORDER.index(o["kind"]))
        results: list = []
        for index, obj in enumerate(ordered):
            try:
                results.append(self.apply(obj, earlier[(obj["kind"], obj["metadata"]["namespace"])].get(_name(obj))))
            except UserError as exc:
                if self.dry_run:  # nothing was stored
                    raise
                raise UserError("%s%s" % (exc, _part_way(ordered[:index], ordered[index + 1 :]))) from None
        if prune:
            keep = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects}
            for (kind, namespace), found in earlier.items():
                for name in sorted(found):
                    if (kind, namespace, name) not in keep:
                        results.append(self.delete(kind, name, namespace))
        return results


def _name(obj: dict) -> str:
    return obj["metadata"]["name"]


def _part_way(applied: list, left: list) -> str:
    """What an error part way through a push leaves: never half-applied without saying so."""
    said = [
        "%s: %s" % (what, ", ".join("%s %s" % (o["kind"], _name(o)) for o in objects))
        for what, objects in (("applied before it", applied), ("not applied", left))
        if objects
    ]
    return " (%s)" % "; ".join(said) if applied else ""


class _ControllerConflict(Exception):
    """A conflict only with the Kubeless controller's re-serialized fields (CONTROLLER_MANAGERS)."""


def _content(obj: dict) -> dict:
    """An object without the metadata the server keeps for itself (versions, field managers)."""
    meta = {
        k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "generation", "managedFields")
    }
    return {**obj, "metadata": meta}


def _body(exc: ApiException) -> dict:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _manager(message: str) -> str:
    """`conflict with "kubectl-client-side-apply" using kubeless.io/v1beta1` → the manager's name."""
    parts = message.split('"')
    return '"%s"' % parts[1] if len(parts) > 2 else "another manager"


def _short(reason) -> str:
    text = str(reason)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker
    return text.splitlines()[0][:200]


CRDS = Path(__file__).parent / "manifests" / "crds.yaml"


def install_crds(target: Target, timeout: float = 60) -> None:
    """Apply the shipped Kubeless CRDs (server-side apply) and wait until the API serves them."""
    extensions = client.ApiextensionsV1Api(target.api)
    for crd in yaml.safe_load_all(CRDS.read_text()):
        extensions.patch_custom_resource_definition(
            crd["metadata"]["name"], crd, field_manager=FIELD_MANAGER, _content_type=APPLY_PATCH, _preload_content=False
        )
    api = client.CustomObjectsApi(target.api)
    deadline = time.monotonic() + timeout
    while True:
        try:  # served once each kind lists (a new CRD's storage answers 429 while it starts)
            for plural in (p for k, p in PLURALS.items() if k != "KinesisTrigger"):
                api.list_namespaced_custom_object(GROUP, VERSION, "default", plural, limit=1, _request_timeout=TIMEOUT)
            return
        except ApiException:
            pass
        if time.monotonic() > deadline:
            raise UserError("the Kubeless CRDs were applied but are not served after %d s" % timeout)
        time.sleep(0.2)

"""The cluster to push to, found as kubectl finds it: $KUBECONFIG (a list of files, merged) or
~/.kube/config, and its current context unless one is named. Nothing here prints a credential."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from kubeless_local.errors import UserError

# Context names the local-cluster tools give their clusters: pushing there needs no confirmation.
LOCAL_CONTEXT_PREFIXES = ("kind-", "k3d-", "minikube", "docker-desktop", "docker-for-desktop", "rancher-desktop")


@dataclass
class Target:
    api: client.ApiClient
    context: str
    server: str  # the API server's URL, for messages (never a token or a certificate)
    namespace: str  # the context's namespace, or "default"

    @property
    def is_local(self) -> bool:
        return self.context.startswith(LOCAL_CONTEXT_PREFIXES)


def kubeconfig_paths(explicit: Optional[str] = None):
    """The kubeconfig files kubectl would read: --kubeconfig, else $KUBECONFIG, else ~/.kube/config."""
    value = explicit or os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def connect(context: Optional[str] = None, kubeconfig: Optional[str] = None, timeout: float = 10) -> Target:
    paths = kubeconfig_paths(kubeconfig)
    existing = [p for p in paths if p.is_file()]
    if not existing:
        raise UserError(
            "no kubeconfig: %s not found; set KUBECONFIG or create a cluster (`kubeless-local cluster up`)"
            % os.pathsep.join(str(p) for p in paths)
        )
    files = os.pathsep.join(str(p) for p in existing)
    try:
        contexts, current = config.list_kube_config_contexts(config_file=files)
    except (ConfigException, OSError, ValueError) as exc:
        raise UserError("kubeconfig %s cannot be read: %s" % (files, _first_line(exc))) from None
    names = [c["name"] for c in contexts or []]
    name = context or (current or {}).get("name")
    if not name:
        raise UserError("kubeconfig %s has no current context; pass --context (one of: %s)" % (files, ", ".join(names)))
    if name not in names:
        raise UserError(
            "context %r not found in kubeconfig %s; available: %s" % (name, files, ", ".join(names) or "none")
        )
    selected = next(c for c in contexts if c["name"] == name)
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=files, context=name, client_configuration=configuration)
    except (ConfigException, OSError, ValueError) as exc:
        raise UserError("kubeconfig %s, context %s: %s" % (files, name, _first_line(exc))) from None
    configuration.retries = 0  # an unreachable server is reported at once, not after urllib3's retries
    api = client.ApiClient(configuration)
    namespace = (selected.get("context") or {}).get("namespace") or "default"
    return Target(api=api, context=name, server=_server(configuration.host), namespace=namespace)


def _server(url: str) -> str:
    parsed = urlparse(url)
    return "%s://%s" % (
        parsed.scheme,
        parsed.hostname if parsed.port is None else "%s:%d" % (parsed.hostname, parsed.port),
    )


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

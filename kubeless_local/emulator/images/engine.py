"""Finding the container engine: DOCKER_HOST, the docker context, the default socket, Podman."""

import hashlib
import json
import os
from pathlib import Path

from kubeless_local.errors import Unavailable


def docker_context_host(config_dir=None):
    """DOCKER_HOST of the current docker context (`docker context use`), or None."""
    config_dir = Path(config_dir or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError):
            name = None
    if not name or name == "default":
        return None
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        return json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def engine_candidates():
    """Where to look for an engine, in order: DOCKER_HOST, the docker context, the default socket, Podman."""
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    found = []
    context = docker_context_host()
    if context:
        found.append(context)
    found.append("unix:///var/run/docker.sock")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or "/run/user/%d" % os.getuid()
    for sock in (os.path.join(runtime_dir, "podman", "podman.sock"), "/run/podman/podman.sock"):
        if os.path.exists(sock):
            found.append("unix://" + sock)
    return found


_clients: dict = {}  # engine URL -> connected client


def docker_client(required=True):
    """A connected docker SDK client, or UserError (None when not required) with the fix."""
    import docker
    from docker.errors import DockerException

    tried = []
    for url in engine_candidates():
        if url in _clients:
            return _clients[url]
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            client.ping()
        except (DockerException, OSError) as exc:
            tried.append("%s (%s)" % (url, str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__))
            continue
        _clients[url] = client
        return client
    if not required:
        return None
    raise Unavailable(
        "no Docker engine answers (tried %s); start Docker (or set DOCKER_HOST)" % "; ".join(tried), "docker engine"
    )


def engine_url(client):
    """The URL `client` (one of docker_client's) was connected to; None for another client."""
    return next((url for url, each in _clients.items() if each is client), None)

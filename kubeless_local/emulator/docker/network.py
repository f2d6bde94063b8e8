"""How a function's container is reached: each has a network namespace of its own where its server listens
on 8080 as in a pod (FUNC_PORT=8080), reachable only at 127.0.0.1:<its local port> on the host.

The modes (settings `docker.network`, chosen once per engine):
  bridge  the engine has a `bridge` network (Docker's and Podman's default, Docker Desktop): the container is
          on it with its 8080 published on 127.0.0.1 at a port the engine picks (`-p 127.0.0.1::8080`); dev's
          front door (emulator/frontdoor.py) listens on 127.0.0.1:<port> and forwards there.
  relay   an engine without one (`dockerd --bridge=none`): the function's container joins the namespace of a
          relay container of ours (network "none": loopback only, the pod's pause container), whose connector
          (connector.py) hands connections to 127.0.0.1:8080 there over a unix socket in a private folder;
          dev's front door (emulator/frontdoor.py) listens on 127.0.0.1:<port>.
  host    opt-in only: the host's network, the server binds 127.0.0.1:<port> itself (FUNC_PORT=<port>). No
          isolation: two images on a fixed port cannot run at once, and a server binding 0.0.0.0 is reachable
          on the machine's other addresses.
`auto` (the default) is bridge when the engine has a bridge network, else relay. In bridge and relay mode the
door is what lets a reload be blue/green (docker/backend.py): it switches from one container to the next.
"""

from typing import Any

MODES = ("bridge", "relay", "host")


def choose(setting: str, client: Any) -> tuple[str, str]:
    """(mode, why) for the settings' `docker.network` on the engine `client` answers for."""
    if setting in MODES:
        return setting, "docker.network: %s in the settings" % setting
    if has_bridge(client):
        return "bridge", "the engine has a bridge network"
    return "relay", "the engine has no bridge network"


def has_bridge(client: Any) -> bool:
    """The engine has the default network `bridge` (the name filter matches substrings: compare exactly)."""
    return any(network.name == "bridge" for network in client.networks.list(names=["bridge"]))


def described(mode: str, why: str) -> str:
    """dev's one line about it."""
    where = {
        "bridge": "each function in its own network namespace on the bridge, published on 127.0.0.1 only",
        "relay": "each function in its own network namespace, relayed to 127.0.0.1 only",
        "host": "functions share the host's network and bind 127.0.0.1",
    }[mode]
    return "docker network: %s (%s; %s)" % (mode, why, where)

"""What the runtime images and step containers take from this machine's own configuration: the CA
bundle (HTTPS through a TLS-intercepting proxy) and the package registries. No registry host is
written in kubeless-local: where the host configures none, the tool's built-in default stays."""

import os
import shutil
import subprocess
from functools import cache

CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def host_ca_bundle():
    """The host's CA bundle, or None."""
    for candidate in (os.environ.get("KUBELESS_LOCAL_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"), *CA_CANDIDATES):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _ask(argv):
    """The first line a host tool prints (e.g. `go env GOPROXY`), or "" when it is missing or says nothing."""
    if shutil.which(argv[0]) is None:
        return ""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else ""


# name: (env variables that configure it, the host tool's own setting, how to set it)
REGISTRIES = {
    "goproxy": (("GOPROXY",), ["go", "env", "GOPROXY"], "`go env -w GOPROXY=…` or GOPROXY"),
    "npm_registry": (
        ("NPM_CONFIG_REGISTRY", "npm_config_registry"),
        ["npm", "config", "get", "registry"],
        "`npm config set registry …` or NPM_CONFIG_REGISTRY",
    ),
    "pip_index": (
        ("PIP_INDEX_URL",),
        ["python3", "-m", "pip", "config", "get", "global.index-url"],
        "`pip config set global.index-url …` or PIP_INDEX_URL",
    ),
}
STEP_ENV = {"goproxy": "GOPROXY", "npm_registry": "NPM_CONFIG_REGISTRY", "pip_index": "PIP_INDEX_URL"}


@cache
def registry(name):
    """The registry URL this machine is configured with ("" when none): its env first, then the tool."""
    variables, argv, _ = REGISTRIES[name]
    value = next((os.environ[v] for v in variables if os.environ.get(v)), "") or _ask(argv)
    if value in ("undefined", "null", "None"):  # how npm and pip say "not set"
        value = ""
    if name == "goproxy":  # a list ("https://proxy.example,direct"): the first proxy URL
        value = next((p for p in value.replace("|", ",").split(",") if "://" in p), "")
    return value.rstrip("/")


def registry_env():
    """Env of a step container: the host's registries, where it has them."""
    return {STEP_ENV[name]: registry(name) for name in REGISTRIES if registry(name)}

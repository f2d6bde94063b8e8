"""The upstream-like Python image of the docker tests (tests/fixtures/upstream-python: it cannot reload in place,
as the official Kubeless images), built FROM our image without network, and the Function it runs."""

from pathlib import Path

from kubeless_local.emulator import images

TAG = "kubeless-local-test/upstream-python:3.11"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upstream-python"  # see its Dockerfile
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations:
    local.kubeless.io/source: handler.py
spec:
  runtime: python3.11
  handler: handler.hello
"""


def build_upstream_python() -> str:
    """Builds the image on the host's engine (fails, not skips, without one: CI runs .ci/docker-setup.sh)."""
    images.docker_client().images.build(path=str(FIXTURE), tag=TAG, network_mode="none", rm=True)
    return TAG

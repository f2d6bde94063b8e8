"""The docker backend: runs each function in its runtime image. Modules: containers (the pod-like
layout, labels, options), network (how a function's own network namespace is reached: bridge, relay,
host), connector (the relay container's program, not imported), steps (the prepare pipeline's steps in
one-shot containers), pump (the log pump, readiness of images without control lines), backend (container
lifecycle)."""

from kubeless_local.emulator.docker.backend import DockerBackend
from kubeless_local.emulator.docker.containers import (
    CA_ENV,
    CA_MOUNT,
    DEPS_MOUNT,
    FUNCTION_MOUNT,
    INSTALL,
    LABEL_FUNCTION,
    LABEL_PROJECT,
    LABEL_STEP,
    LIB_MOUNT,
    custom_runtime,
    security_context,
)
from kubeless_local.emulator.docker.steps import PASS_ENV, DockerPrepared, DockerSteps

__all__ = [
    "CA_ENV",
    "CA_MOUNT",
    "DEPS_MOUNT",
    "FUNCTION_MOUNT",
    "INSTALL",
    "LABEL_FUNCTION",
    "LABEL_PROJECT",
    "LABEL_STEP",
    "LIB_MOUNT",
    "PASS_ENV",
    "DockerBackend",
    "DockerPrepared",
    "DockerSteps",
    "custom_runtime",
    "security_context",
]

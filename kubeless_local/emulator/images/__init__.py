"""Runtime images for the docker backend: the engine, which image a runtime uses, the host's CA
bundle and registries, and building them. The package's names below are its public face."""

from kubeless_local.emulator.images.build import (
    BASE_IMAGE,
    CA_NAME,
    SOURCE_LABEL,
    build_args,
    build_context,
    build_image,
    build_images,
    image_rows,
    is_stale,
    source_hash,
)
from kubeless_local.emulator.images.choice import (
    OWN_LABEL,
    ImageChoice,
    Phase,
    configured_images,
    configured_phases,
    env_name,
    image_for,
    image_present,
    load_runtime_images,
    override_for,
    runtime_images_file,
)
from kubeless_local.emulator.images.engine import (
    docker_client,
    docker_context_host,
    engine_candidates,
    engine_url,
)
from kubeless_local.emulator.images.host import host_ca_bundle, registry, registry_env

__all__ = [
    "BASE_IMAGE",
    "CA_NAME",
    "OWN_LABEL",
    "SOURCE_LABEL",
    "ImageChoice",
    "Phase",
    "build_args",
    "build_context",
    "build_image",
    "build_images",
    "configured_images",
    "configured_phases",
    "docker_client",
    "docker_context_host",
    "engine_candidates",
    "engine_url",
    "env_name",
    "host_ca_bundle",
    "image_for",
    "image_present",
    "image_rows",
    "is_stale",
    "load_runtime_images",
    "override_for",
    "registry",
    "registry_env",
    "runtime_images_file",
    "source_hash",
]

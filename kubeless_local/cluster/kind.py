"""Kubeless on a cluster the way local development runs it: the `runtime-images` of `kubeless-config`
derived from the runtime catalog (runtimes/catalog.yaml), so the cluster runs the same images as `dev`."""

import shlex
from pathlib import Path

import yaml

from kubeless_local import runtimes
from kubeless_local.paths import RUNTIMES_DIR

MANIFESTS = Path(__file__).resolve().parent / "manifests"
KUBELESS_MANIFEST = MANIFESTS / "kubeless-v1.0.8.yaml"  # controller, RBAC, kubeless-config (CRDs: crds.yaml)
# Where the Kubeless controller mounts the function's volume in every container (KUBELESS_INSTALL_VOLUME):
# the catalog's {install} and {deps} of the docker backend.
INSTALL_VOLUME = "/kubeless"


def runtime_images(catalog_path=None) -> list:
    """Kubeless `runtime-images` (pkg/langruntime: ID, depName, fileNameSuffix, versions[].images[])
    for every catalog version that has an image: the `runtime` phase runs the image as built for the
    docker backend (its CMD is the catalog's docker command), the `installation` phase runs the catalog's
    docker install step in the same image (the controller wraps it in `sh -c`, in the install volume)."""
    entries = runtimes.load(catalog_path or RUNTIMES_DIR / "catalog.yaml")
    result = []
    for entry in entries.values():
        versions = []
        for v in entry.versions:
            version = v.default if v.version == "auto" else v.version
            if not v.image or not version:
                continue  # process backend only: no image to run on a cluster
            values = {
                "version": version,
                "install": INSTALL_VOLUME,
                "deps": INSTALL_VOLUME,
                "deps_file": "%s/%s" % (INSTALL_VOLUME, entry.dep_name),
            }
            image = v.image.format_map(values)
            env = {k: str(value).format_map(values) for k, value in entry.docker.env.items()}
            phases = []
            if entry.docker.install and entry.dep_name:
                install = shlex.join(arg.format_map(values) for arg in entry.docker.install)
                phases.append(_phase("installation", image, env, install))
            phases.append(_phase("runtime", image, env))
            # "images": the controller parses this with ghodss/yaml, i.e. by the Go field name (Images), not by
            # the `yaml:"runtimeImage"` tag its struct also carries
            name = "%s%s" % (entry.id, version.replace(".", ""))
            versions.append({"name": name, "version": version, "images": phases})
        if versions:
            result.append(
                {"ID": entry.id, "depName": entry.dep_name, "fileNameSuffix": entry.suffix, "versions": versions}
            )
    return result


def _phase(phase, image, env, command=""):
    out = {"phase": phase, "image": image}
    if command:
        out["command"] = command
    if env:
        out["env"] = dict(env)  # a copy: no YAML anchors in the rendered config
    return out


def kubeless_objects(path=KUBELESS_MANIFEST) -> list:
    """The objects of the shipped Kubeless manifest, in order."""
    return [obj for obj in yaml.safe_load_all(Path(path).read_text()) if obj]

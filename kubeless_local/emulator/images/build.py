"""Building the runtime images from runtimes/<lang>/Dockerfile, and listing them. Progress goes to
a callback (the CLI draws it); nothing here prints."""

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from kubeless_local.emulator.images import host
from kubeless_local.emulator.images.choice import OWN_LABEL, image_for, image_present, override_for
from kubeless_local.errors import Failed, NotFound, Unavailable, UserError
from kubeless_local.paths import RUNTIMES_DIR

BASE_IMAGE = "debian:bookworm-slim"
CA_NAME = "kubeless-local-ca.crt"
SOURCE_LABEL = OWN_LABEL + ".source"  # sha256 of the runtime folder the image was built from
SOURCE_IGNORED = ("node_modules", ".git", "__pycache__")


def build_context(runtime, target: Path):
    """A temporary build context: runtimes/<server> (without installed modules) + the host CA bundle.
    The CA only ever lives in this temp folder and the Dockerfiles' fetch stages."""
    source = RUNTIMES_DIR / runtime.server
    if not (source / "Dockerfile").is_file():
        raise NotFound("no Dockerfile for %s (%s)" % (runtime.name, source / "Dockerfile"), "Dockerfile", runtime.name)
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns("node_modules", ".git", "__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    ca = host.host_ca_bundle()
    (target / CA_NAME).write_bytes(Path(ca).read_bytes() if ca else b"")
    return target


def build_args(runtime, registries=True):
    """The catalog's `docker.build_args`, expanded ({version}, and the host's registries {goproxy},
    {npm_registry}, {pip_index}), plus BASE. A registry an image needs and the host lacks is a UserError.
    `registries` False leaves the registries' placeholders as the catalog writes them (source_hash)."""
    values = {"version": runtime.version}
    args = {}
    for key, value in runtime.docker.build_args.items():
        for name, (_, _, how) in host.REGISTRIES.items():
            if "{%s}" % name in value:
                values[name] = host.registry(name) if registries else "{%s}" % name
                if not values[name]:
                    raise UserError(
                        "building %s needs a %s and this machine configures none; set one (%s)"
                        % (runtime.image, name.replace("_", " "), how)
                    )
        args[key] = value.format_map(values)
    args["BASE"] = os.environ.get("KUBELESS_LOCAL_BASE_IMAGE", BASE_IMAGE)
    return args


def source_hash(runtime):
    """sha256 of what an image of `runtime` is built from: its runtime folder and build args. Not the registries
    the build fetched from (where its packages came from, not what they are): every docker `run` checks an image
    with this, and asking npm or pip for their registry took ~0.3 s."""
    digest = hashlib.sha256(repr(sorted(build_args(runtime, registries=False).items())).encode())
    folder = RUNTIMES_DIR / runtime.server
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part in SOURCE_IGNORED for part in rel.parts) and path.suffix != ".pyc":
            digest.update(str(rel).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def is_stale(image, runtime):
    """True when one of our images was built from other runtime files than these (an upgrade, an edit)."""
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if SOURCE_LABEL not in labels:
        return False
    return labels[SOURCE_LABEL] != source_hash(runtime)


def build_image(client, runtime, on_line=lambda line: None):
    """Build the runtime's catalog image; returns the image. Raises UserError with the failing step."""
    from docker.errors import APIError, BuildError

    tag = runtime.image
    if not tag:
        raise UserError("%s has no image in the runtime catalog: it runs on the process backend only" % runtime.name)
    args = build_args(runtime)
    if image_present(client, args["BASE"]) is None:
        raise NotFound(
            "the base image %s is missing and cannot be pulled here; create it (.ci/docker-setup.sh "
            "does: debootstrap + docker import)" % args["BASE"],
            "base image",
            args["BASE"],
        )
    with tempfile.TemporaryDirectory(prefix="kubeless-local-build-") as tmp:
        context = build_context(runtime, Path(tmp) / "context")
        lines: list[str] = []
        try:
            stream = client.api.build(
                path=str(context),
                tag=tag,
                buildargs=args,
                rm=True,
                forcerm=True,
                network_mode="host",
                decode=True,
                pull=False,
                labels={OWN_LABEL + ".built": time.strftime("%Y-%m-%dT%H:%M:%S"), SOURCE_LABEL: source_hash(runtime)},
            )
            for chunk in stream:
                if "error" in chunk:
                    raise BuildError(chunk["error"].strip(), lines)
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    if line.strip():
                        lines.append(line)
                        on_line(line)
        except BuildError as exc:
            raise Failed(
                "building %s failed: %s\n%s"
                % (tag, str(exc.msg).splitlines()[-1] if str(exc.msg) else "error", "\n".join(lines[-15:])),
                "image build",
                tag,
            ) from None
        except APIError as exc:
            raise Unavailable("building %s failed: %s" % (tag, exc.explanation or exc), "image build", tag) from None
    return client.images.get(tag)


def build_images(runtimes, client, on_progress=lambda runtime, state, line, seconds: None):
    """Build several runtime images one after the other; returns [(runtime, seconds)].
    on_progress(runtime, state, line, seconds): state is "building" (with each output line), "done"
    or "failed"; seconds since that image's build started."""
    results = []
    for rt in runtimes:
        started = time.monotonic()
        on_progress(rt, "building", "", 0.0)
        try:
            build_image(
                client,
                rt,
                lambda line, rt=rt, started=started: on_progress(rt, "building", line, time.monotonic() - started),
            )
        except UserError:
            on_progress(rt, "failed", "", time.monotonic() - started)
            raise
        results.append((rt, time.monotonic() - started))
        on_progress(rt, "done", "", results[-1][1])
    return results


def image_rows(catalog, client=None):
    """What `runtime ls` shows: one row per catalog runtime, and one per legacy version the user chose
    an image for (a Function of that version runs in it, as its own version: see choice.override_for)."""
    rows = [_image_row(rt.name, image_for(rt), rt, client) for rt in catalog.all()]
    for runtime_id in catalog.ids():
        runtimes = [rt for rt in catalog.versions(runtime_id) if rt.image]
        for version in catalog.legacy(runtime_id):
            choice = override_for(runtime_id, version)
            if choice is not None and runtimes:
                rows.append(_image_row(runtime_id + version, choice, runtimes[-1], client))
    return rows


def _image_row(name, choice, rt, client):
    image = image_present(client, choice.image) if client is not None else None
    return {
        "runtime": name,
        "image": choice.image,
        "source": choice.source,
        "present": image is not None,
        "stale": image is not None and not choice.overridden and is_stale(image, rt),
        "id": image.short_id.split(":")[-1] if image is not None else "",
        "size_mb": round(image.attrs.get("Size", 0) / 1e6) if image is not None else None,
        "created": (image.attrs.get("Created") or "")[:19] if image is not None else "",
    }

"""`init`: a new function folder from the runtime's template (handler, deps file, function.yaml)."""

import os
from dataclasses import dataclass
from pathlib import Path

from kubeless_local import spec as specs
from kubeless_local.errors import Conflict, UserError
from kubeless_local.paths import TEMPLATES_DIR
from kubeless_local.runtimes import Catalog

PLACEHOLDERS = ("{{name}}", "{{runtime}}")


@dataclass(frozen=True)
class Scaffolded:
    created: list  # the files written, in order
    notice: str  # e.g. "python3.8 is a legacy Kubeless runtime; …", or ""


def scaffold(name, runtime, target=None, force=False, catalog=None, on_line=lambda line: None) -> Scaffolded:
    """Write the `runtime` template into `target` (default: ./NAME). A folder that is not empty is
    refused unless `force`, which overwrites the template's files and leaves every other file alone.
    Then the runtime's `init` step, if its catalog entry has one (what an editor needs, e.g. Java's local
    Maven repository); its failure is a notice, not an error: the folder is written and runs all the same."""
    specs.validate_name("function name", name)
    rt, notice = (catalog or Catalog()).resolve(runtime, require_local=False)
    template = TEMPLATES_DIR / rt.server
    if not template.is_dir():
        raise UserError("no template for the %s runtime yet (looked in %s)" % (rt.id, template))
    target = Path(target or name)
    if target.exists() and not target.is_dir():
        raise UserError("%s exists and is not a folder; choose another name" % target)
    if not force and target.exists() and any(target.iterdir()):
        raise Conflict("%s/ already exists and is not empty; choose another name" % target, "folder", str(target))
    created = []
    for source in specs.Ignore().walk(template):  # not __pycache__ that pip compiled beside an installed template
        dest = target / source.relative_to(template)
        text = source.read_text()
        for placeholder, value in zip(PLACEHOLDERS, (name, runtime)):
            text = text.replace(placeholder, value)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
        except OSError as exc:  # a folder not the user's, a read-only mount, a full disk
            raise UserError(
                "cannot write %s (%s); run `init` in a folder you can write to" % (exc.filename or dest, exc.strerror)
            ) from None
        created.append(dest)
    notices = [notice or "", _editor_support(rt.for_backend("process"), target, on_line)]
    return Scaffolded(created, "\n".join(n for n in notices if n))


def _editor_support(runtime, folder, on_line) -> str:
    """Run the runtime's `init` step in the new folder; "" when done or when there is none, else a notice."""
    argv = runtime.process.init
    if not argv:
        return ""
    from kubeless_local.emulator.prepare import STEP_SETUP, StepFailed, run_step, setup_runtime_lib

    if not runtime.available():
        return "%s is not on this machine, so your editor's libraries were not installed (it runs all the same)" % (
            runtime.executable
        )
    try:
        lib = setup_runtime_lib(runtime, on_line)
        values = {"runtime_dir": str(runtime.runtime_dir), "runtime_lib": str(lib)}
        run_step(STEP_SETUP, [a.format_map(values) for a in argv], folder, dict(os.environ), on_line)
    except StepFailed as exc:
        said = exc.output.strip().splitlines()
        return "your editor's libraries were not installed: %s%s" % (exc, (": " + said[-1]) if said else "")
    return ""

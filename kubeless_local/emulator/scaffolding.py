"""`init`: a new function folder from the runtime's template (handler, deps file, function.yaml)."""

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


def scaffold(name, runtime, target=None, force=False, catalog=None) -> Scaffolded:
    """Write the `runtime` template into `target` (default: ./NAME). A folder that is not empty is
    refused unless `force`, which overwrites the template's files and leaves every other file alone."""
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
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text()
        for placeholder, value in zip(PLACEHOLDERS, (name, runtime)):
            text = text.replace(placeholder, value)
        dest.write_text(text)
        created.append(dest)
    return Scaffolded(created, notice or "")

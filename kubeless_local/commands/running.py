"""`run`: one function from a file, without a manifest — the command's work, without click. The click command
(commands/local.py) calls `run_function`, and so does the console script's entry (commands/entry.py) for a plain
line, ~20 ms sooner (click is not imported)."""

from pathlib import Path

from kubeless_local import config
from kubeless_local import kubeless_objects as objects
from kubeless_local import spec as specs
from kubeless_local.commands.serving import names, parse_pairs, serve
from kubeless_local.errors import UserError


def run_function(
    file,
    runtime,
    handler,
    name=None,
    dependencies=None,
    env=(),
    label=(),
    timeout=specs.DEFAULT_TIMEOUT,
    port=None,
    memory=None,
    cpu=None,
    isolation=None,
    runtime_image=None,
    secrets=(),
    backend=None,
    ignore=(),
    debug=False,
    debug_port=None,
):
    """`run FILE`'s work, its arguments as the command declares them (their defaults too)."""
    from kubeless_local.emulator import headstart

    code = code_location(file, "FILE")
    source = code if isinstance(code, Path) else None
    name, root, state_dir = headstart.run_folders(source, handler, name)
    if backend != "docker" and not debug:  # the runtime's server side starts now, if not yet (commands/entry.py)
        headstart.head_start(runtime, str(state_dir.resolve()))
    deps_file, deps_text = deps_location(dependencies)
    fn = objects.function_from_files(
        name,
        source,
        runtime,
        handler,
        deps_file=deps_file,
        deps=deps_text,
        url=code if isinstance(code, str) else "",
        secrets=names(secrets),
        project=root,
        timeout=timeout,
        env=parse_pairs(env, "--env"),
        labels=dict(parse_pairs(label, "--label", bare_keys=True)),
        memory=memory,
        cpu=cpu,
        port=port,
        isolation=isolation,
        image=runtime_image or "",
        origin="kubeless-local run %s" % file,
    )
    if runtime_image and (backend or config.load(root).backend) == "process":
        raise UserError("--runtime-image needs the docker backend: add --backend docker")
    serve(
        root,
        backend,
        manifests=specs.Manifests(functions=[fn]),
        ignore=ignore,
        state_dir=state_dir,
        debug=(name,) if debug else (),
        debug_port=debug_port,
    )


def code_location(text, flag):
    """A URL stays a URL (downloaded by the prepare step); a path must exist: resolved Path."""
    if specs.is_url(text):
        return text
    path = Path(text)
    if not path.exists():
        raise UserError("%s %s does not exist (a file, a folder, an archive or a URL)" % (flag, text))
    return path.resolve()


def deps_location(text):
    """(deps file, deps text): a URL --dependencies is downloaded now, as the Kubeless CLI does."""
    if not text:
        return None, ""
    if specs.is_url(text):
        from kubeless_local.emulator.layout import fetch

        return None, fetch(text).decode("utf-8", "replace")
    path = Path(text)
    if not path.is_file():
        raise UserError("--dependencies %s is not a file" % text)
    return path.resolve(), ""

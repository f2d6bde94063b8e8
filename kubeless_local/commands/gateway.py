"""`gateway explain` (and `gateway ca`): the HTTPTrigger gateway of `dev`, seen from the command line."""

import json
from pathlib import Path

import click

from kubeless_local.commands.common import ignore_option, json_option
from kubeless_local.commands.output import user_errors
from kubeless_local.errors import UserError


@click.group()
def gateway():
    """The HTTPTrigger gateway `dev` runs (routes by Host and path as the cluster's ingress does)."""


def header_pairs(values) -> list:
    pairs = []
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise UserError("-H %r: a header is NAME: VALUE, e.g. -H 'Host: a.example.com'" % value)
        pairs.append((name.strip(), text.strip()))
    return pairs


@gateway.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option("-X", "--request", "method", default="GET", show_default=True, help="The request's method.")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="A request header (repeat).")
@click.option("--port", type=click.IntRange(0, 65535), help="The gateway's port (default: dev's default, 8480).")
@click.option("--https-port", type=click.IntRange(0, 65535), help="Its HTTPS port (default: dev's default, 8443).")
@click.option("-p", "--project", default=".", type=click.Path(exists=True), help="The project folder.")
@ignore_option()
@json_option
@user_errors
def explain(urls, method, headers, port, https_port, project, ignore, output):
    """Which HTTPTrigger a request to URL reaches and why the others do not, the rewritten path, the auth and
    CORS outcome, and the exact request the function receives: the table `dev`'s gateway routes by.

    The URL's host is the Host header (a.example.com or a.example.com.localhost alike) unless -H sets one."""
    from kubeless_local import http_routes
    from kubeless_local.emulator.gateway import DEFAULT_HTTPS_PORT, DEFAULT_PORT

    routes = http_routes.project_routes(Path(project), ignore)
    found = [
        http_routes.explain(
            routes.table,
            method.upper(),
            url,
            header_pairs(headers),
            DEFAULT_PORT if port is None else port,
            DEFAULT_HTTPS_PORT if https_port is None else https_port,
        )
        for url in urls
    ]
    if output == "json":
        click.echo(json.dumps(found, indent=2))
        return
    for _, problem in routes.problems:
        click.echo("! %s" % problem)
    for index, explained in enumerate(found):
        if index:
            click.echo()
        show(explained)


def show(explained: dict) -> None:
    request = explained["request"]
    click.echo("%s %s (Host: %s)" % (request["method"], request["url"], request["host"]))
    if not explained["candidates"]:
        click.echo("  no HTTPTrigger in the project")
    for candidate in explained["candidates"]:
        click.echo("  %s %s: %s" % ("✓" if candidate["matched"] else "✗", candidate["route"], candidate["why"]))
    click.echo("auth: %s; cors: %s" % (explained["auth"], "on" if explained["cors"] else "off"))
    for fallback in explained.get("cors_fallbacks", []):
        click.echo("  cors: %s" % fallback)
    if explained["status"]:
        click.echo("the gateway answers %d: %s" % (explained["status"], explained["reason"]))
        for name, value in explained["response_headers"]:
            click.echo("  %s: %s" % (name, value))
        return
    forwarded = explained["forwarded"]
    click.echo("function %s receives:" % explained["function"])
    click.echo("  %s %s HTTP/1.1" % (forwarded["method"], forwarded["target"]))
    for name, value in forwarded["headers"]:
        click.echo("  %s: %s" % (name, value))
    if explained["response_headers"]:
        click.echo("and its answer gets (replacing the function's own):")
        for name, value in explained["response_headers"]:
            click.echo("  %s: %s" % (name, value))


@gateway.command()
@user_errors
def ca():
    """The development CA that signs the certificates of HTTPTriggers with `tls: true` (made the first time),
    and how to trust it."""
    from kubeless_local.emulator import tls

    authority = tls.DevCA()
    authority.load()
    click.echo(authority.cert_file)
    click.echo(
        "Trust it to call https routes without -k: curl --cacert %s …; Python: SSL_CERT_FILE or"
        " requests' verify=%s; the system (Debian/Ubuntu): cp %s /usr/local/share/ca-certificates/kubeless-local.crt"
        " && update-ca-certificates; a browser: import it as an authority. Its key (%s) stays on this machine."
        % (authority.cert_file, authority.cert_file, authority.cert_file, authority.key_file),
        err=True,
    )

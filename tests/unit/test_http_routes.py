"""HTTPTriggers as routes (kubeless_local/http_routes.py): each behaviour a table of cases."""

import base64
from pathlib import Path

import pytest

from kubeless_local import http_routes as hr
from kubeless_local import spec as specs
from kubeless_local.errors import UserError


def trigger(name="t", function="echo", path="", host="a.example.com", gateway=None, annotations=None, **spec):
    document = {
        "apiVersion": specs.API_VERSION,
        "kind": "HTTPTrigger",
        "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
        "spec": {"function-name": function, "path": path, "host-name": host, **spec},
    }
    if gateway:
        document["spec"]["gateway"] = gateway
    return specs.parse_http_trigger(document, Path("%s.yaml" % name))


def manifests(*triggers, functions=("echo", "other")):
    found = specs.Manifests(http_triggers=list(triggers))
    for name in functions:
        found.functions.append(
            specs.FunctionSpec(name=name, runtime="python3.11", handler="h.f", origin="f.yaml", function="x")
        )
    return found


def table(*triggers, secrets=None):
    built = hr.build(manifests(*triggers), secrets or {})
    assert built.problems == []
    return built.table


def decide(routes, url, method="GET", headers=None, **kwargs):
    host, _, target = url.partition("/")
    return routes.decide(method, host, "/" + target, {k.lower(): v for k, v in (headers or {}).items()}, **kwargs)


# ---------------------------------------------------------------- rewrite profiles
REWRITES = [
    # (gateway, path, rewrite override, request, the function sees or 404)
    ("nginx", "echo", None, "/echo/deep?q=1", "/?q=1"),
    ("nginx", "echo", None, "/echo", "/"),
    ("nginx", "echo", None, "/ECHO", "/"),
    ("nginx", "echo", None, "/echoes", "/"),
    ("nginx", "echo", None, "/other", 404),
    ("nginx", "", None, "/any/path?x=1", "/any/path?x=1"),
    ("nginx", "", None, "/", "/"),
    ("nginx", "echo", "strip-prefix", "/echo/deep?q=1", "/deep?q=1"),
    ("nginx", "echo", "strip-prefix", "/Echo/deep", "/deep"),
    ("nginx", "echo", "strip-prefix", "/echo", "/"),
    ("nginx", "echo", "strip-prefix", "/echoes", 404),
    ("nginx", "echo", "none", "/echo/deep?q=1", "/echo/deep?q=1"),
    ("nginx", "echo", "none", "/echoes", "/echoes"),
    ("nginx", "echo", "none", "/ECHO", 404),
    ("traefik", "echo", None, "/echo/deep?q=1", "/echo/deep?q=1"),
    ("traefik", "echo", None, "/echoes", 404),
    ("traefik", "echo", None, "/ECHO", 404),
    ("traefik", "echo", "root", "/echo/deep?q=1", "/?q=1"),
    ("kong", "echo", None, "/echo", "/echo"),
    ("kong", "echo", "strip-prefix", "/echo/x", "/x"),
    ("kong", "", None, "/x?y", "/x?y"),
]


@pytest.mark.parametrize(("gateway", "path", "rewrite", "request_target", "sees"), REWRITES)
def test_rewrite_profiles(gateway, path, rewrite, request_target, sees):
    annotations = {hr.REWRITE_ANNOTATION: rewrite} if rewrite else None
    routes = table(trigger(path=path, gateway=gateway, annotations=annotations))
    decision = routes.decide("GET", "a.example.com", request_target, {})
    if sees == 404:
        assert (decision.status, decision.body) == (404, hr.DEFAULT_BACKEND)
    else:
        assert (decision.status, decision.target, decision.route.function) == (0, sees, "echo")


# ---------------------------------------------------------------- hosts and the longest prefix
HOSTS = [
    # (Host header, path, function or 404)
    ("a.example.com", "/", "echo"),
    ("A.Example.com:8080", "/", "echo"),
    ("a.example.com.localhost", "/", "echo"),
    ("a.example.com.localhost:9999", "/x", "echo"),
    ("b.example.com", "/", "other"),
    ("b.example.com", "/api/v2/x", "deep"),
    ("b.example.com", "/api/x", "api"),
    ("c.example.com", "/", 404),
    ("localhost", "/", 404),
    ("", "/", 404),
]


@pytest.mark.parametrize(("host", "path", "function"), HOSTS)
def test_host_routing_and_the_longest_prefix(host, path, function):
    routes = hr.build(
        manifests(
            trigger("a", "echo", host="a.example.com"),
            trigger("b", "other", host="b.example.com"),
            trigger("api", "api", path="api", host="b.example.com"),
            trigger("deep", "deep", path="api/v2", host="b.example.com"),
            functions=("echo", "other", "api", "deep"),
        ),
        {},
    ).table
    decision = routes.decide("GET", host, path, {})
    assert (decision.route.function if decision.status == 0 else decision.status) == function
    explained = routes.decide("GET", host, path, {}, explaining=True)  # explain's candidates, the same winner
    assert [c.route.function for c in explained.candidates if c.matched] == ([] if function == 404 else [function])
    assert len(explained.candidates) == len(routes.routes)


def test_a_trigger_without_a_host_serves_hosts_no_route_names():
    routes = table(trigger("any", "other", host=""), trigger("a", "echo", host="a.example.com"))
    assert decide(routes, "whatever.test/x").route.function == "other"
    assert decide(routes, "a.example.com/x").route.function == "echo"


# ---------------------------------------------------------------- forwarded headers
def test_forwarded_headers_as_ingress_nginx_sends_them():
    routes = table(trigger(path="echo"))
    decision = routes.decide(
        "GET",
        "a.example.com:8480",
        "/echo?x=1",
        {"proxy": "evil"},
        client="127.0.0.1",
        port=8480,
        request_id=lambda: "r1",
    )
    assert dict(decision.set_headers) == {
        "X-Request-ID": "r1",
        "X-Real-IP": "127.0.0.1",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Host": "a.example.com:8480",
        "X-Forwarded-Port": "8480",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Scheme": "http",
        "X-Scheme": "http",
        "X-Original-URI": "/echo?x=1",
    }
    assert decision.drop_headers == ("proxy",)
    assert (
        dict(decide(routes, "a.example.com/echo", headers={"X-Request-ID": "mine"}).set_headers)["X-Request-ID"]
        == "mine"
    )


# ---------------------------------------------------------------- CORS
CORS = [
    # (annotation, value, header, expected value)
    (None, None, "Access-Control-Allow-Origin", "*"),
    ("cors-allow-origin", "https://app.example.com", "Access-Control-Allow-Origin", "https://app.example.com"),
    ("cors-allow-origin", "not a url; $pid", "Access-Control-Allow-Origin", "*"),
    ("cors-allow-methods", "GET, POST", "Access-Control-Allow-Methods", "GET, POST"),
    ("cors-allow-methods", "GET; rm", "Access-Control-Allow-Methods", hr.CORS_DEFAULTS["cors-allow-methods"]),
    ("cors-allow-headers", "X-A, X-B", "Access-Control-Allow-Headers", "X-A, X-B"),
    ("cors-allow-headers", "X-A:$pid", "Access-Control-Allow-Headers", hr.CORS_DEFAULTS["cors-allow-headers"]),
    ("cors-allow-credentials", "false", "Access-Control-Allow-Credentials", None),
    ("cors-allow-credentials", "maybe", "Access-Control-Allow-Credentials", "true"),
    ("cors-max-age", "60", "Access-Control-Max-Age", "60"),
    ("cors-max-age", "a minute", "Access-Control-Max-Age", "1728000"),
    ("cors-expose-headers", "X-Total", "Access-Control-Expose-Headers", "X-Total"),
]


@pytest.mark.parametrize(("annotation", "value", "header", "expected"), CORS)
def test_cors_annotations_and_their_fallbacks(annotation, value, header, expected):
    annotations = {hr.NGINX + annotation: value} if annotation else None
    routes = table(trigger(annotations=annotations, **{"cors-enable": True}))
    preflight = decide(routes, "a.example.com/", method="OPTIONS")
    assert preflight.status == 204
    assert dict(preflight.response_headers).get(header) == expected
    if value is not None and expected != value and header != "Access-Control-Allow-Credentials":
        assert preflight.route.cors.fallbacks == ((hr.NGINX + annotation, value),)


def test_cors_preflight_comes_before_auth_and_headers_go_on_a_401():
    routes = hr.build(
        manifests(trigger(**{"cors-enable": True, "basic-auth-secret": "users"})),
        {"users": {"auth": b"u:{PLAIN}p"}},
    ).table
    assert decide(routes, "a.example.com/", method="OPTIONS").status == 204
    refused = decide(routes, "a.example.com/")
    assert refused.status == 401
    assert dict(refused.response_headers)["Access-Control-Allow-Origin"] == "*"
    assert dict(refused.response_headers)["WWW-Authenticate"].startswith("Basic realm=")
    assert "Access-Control-Max-Age" not in dict(decide(routes, "a.example.com/").response_headers)


def test_without_cors_an_options_request_goes_to_the_function():
    assert decide(table(trigger()), "a.example.com/", method="OPTIONS").status == 0


# ---------------------------------------------------------------- basic auth
def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


AUTH = [
    # (Authorization header, status)
    (None, 401),
    ("Bearer x", 401),
    (basic("u", "wrong"), 401),
    (basic("nobody", "p"), 401),
    ("Basic !!!", 401),
    (basic("u", "p"), 0),
]


@pytest.mark.parametrize(("authorization", "status"), AUTH)
def test_basic_auth(authorization, status):
    routes = hr.build(manifests(trigger(**{"basic-auth-secret": "users"})), {"users": {"auth": b"u:{PLAIN}p\n"}}).table
    decision = decide(routes, "a.example.com/", headers={"Authorization": authorization} if authorization else {})
    assert decision.status == status
    if status == 0:
        assert "authorization" in decision.drop_headers


# ---------------------------------------------------------------- TLS
def test_tls_redirects_http_with_308_and_serves_https():
    routes = table(trigger(path="echo", tls=True))
    redirect = routes.decide("GET", "a.example.com:8480", "/echo?q=1", {}, https_port=8443)
    assert (redirect.status, dict(redirect.response_headers)["Location"]) == (
        308,
        "https://a.example.com:8443/echo?q=1",
    )
    assert dict(routes.decide("GET", "a.example.com", "/echo", {}).response_headers)["Location"] == (
        "https://a.example.com/echo"
    )
    assert routes.decide("GET", "a.example.com", "/echo?q=1", {}, scheme="https").target == "/?q=1"


# ---------------------------------------------------------------- what is refused, with file and field
REFUSED = [
    (
        {"gateway": "kong", "basic-auth-secret": "users"},
        "t.yaml: HTTPTrigger t: spec.basic-auth-secret with gateway kong: %s" % hr.KONG_AUTH,
    ),
    (
        {"tls": True, "tls-secret": "cert"},
        "t.yaml: HTTPTrigger t: spec.tls and spec.tls-secret together: %s" % hr.TLS_BOTH,
    ),
    ({"gateway": "istio"}, "t.yaml: HTTPTrigger t: spec.gateway 'istio' must be one of nginx, traefik, kong"),
]


@pytest.mark.parametrize(("spec", "message"), REFUSED)
def test_what_the_controller_refuses_is_refused_at_load(spec, message):
    with pytest.raises(UserError) as info:
        trigger(**spec)
    assert str(info.value).startswith(message)


def test_a_bad_rewrite_annotation_is_refused():
    with pytest.raises(UserError, match="annotation local.kubeless.io/rewrite must be one of root, strip-prefix, none"):
        trigger(annotations={hr.REWRITE_ANNOTATION: "up"})


PROBLEMS = [
    # (triggers, secrets, the one line)
    (
        [trigger(function="nope")],
        {},
        "t.yaml: HTTPTrigger t: spec.function-name 'nope' names no Function in this project",
    ),
    (
        [trigger("one", path="x"), trigger("two", path="x")],
        {},
        "one.yaml: HTTPTrigger one and two.yaml: HTTPTrigger two both route host a.example.com path /x",
    ),
    (
        [trigger("one", path="X"), trigger("two", path="x")],
        {},
        "one.yaml: HTTPTrigger one and two.yaml: HTTPTrigger two both route host a.example.com path /x",
    ),
    (
        [trigger(**{"basic-auth-secret": "users"})],
        {},
        "t.yaml: HTTPTrigger t: spec.basic-auth-secret 'users': no Secret",
    ),
    (
        [trigger(**{"basic-auth-secret": "users"})],
        {"users": {"other": b""}},
        "t.yaml: HTTPTrigger t: Secret users has no key auth",
    ),
    (
        [trigger(**{"basic-auth-secret": "users"})],
        {"users": {"auth": b"u:plaintext\n", "__file__": "s.yaml"}},
        "s.yaml: Secret users key auth: line 1 is not USER:HASH",
    ),
]


@pytest.mark.parametrize(("triggers", "secrets", "line"), PROBLEMS)
def test_project_problems_are_one_line_each(triggers, secrets, line):
    built = hr.build(manifests(*triggers), secrets)
    assert len(built.problems) == 1
    assert built.problems[0][1].startswith(line) and "\n" not in built.problems[0][1]
    assert len(built.table.routes) == len(triggers) - 1


# ---------------------------------------------------------------- Secrets in the project
def test_secrets_from_manifests_and_the_secrets_folder(tmp_path):
    (tmp_path / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\ndata:\n  auth: %s\nstringData:\n  note: hi\n"
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: broken}\ndata: {auth: '***'}\n"
        % base64.b64encode(b"u:{PLAIN}p").decode()
    )
    (tmp_path / "secrets" / "local").mkdir(parents=True)
    (tmp_path / "secrets" / "local" / "auth").write_bytes(b"v:{PLAIN}q")
    found = hr.secrets_in(tmp_path)
    assert (found["users"]["auth"], found["users"]["note"], found["local"]["auth"]) == (
        b"u:{PLAIN}p",
        b"hi",
        b"v:{PLAIN}q",
    )
    assert isinstance(found["broken"]["auth"], hr.SecretError) and "data.auth is not base64" in found["broken"]["auth"]


REDIRECTS = [
    # (spec, annotations, redirected to https)
    ({"tls": True}, None, True),
    ({"tls-secret": "cert"}, None, True),
    ({"tls-secret": "cert"}, {hr.NGINX + "ssl-redirect": "false"}, False),
    ({"tls": True, "gateway": "traefik"}, None, False),
    ({}, None, False),
]


@pytest.mark.parametrize(("spec", "annotations", "redirected"), REDIRECTS)
def test_which_routes_redirect_http_to_https(spec, annotations, redirected):
    route = hr.route_of(trigger(annotations=annotations, **spec))
    assert route.redirects_to_https is redirected

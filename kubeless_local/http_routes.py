"""HTTPTriggers as routes: the one mapping the local gateway, `gateway explain` and `push`'s Ingresses share.

An HTTPTrigger becomes what Kubeless' http-trigger controller makes of it (contract §2) and what the ingress
controller then does with that Ingress: a host (exact; `<host>.localhost` too, locally), a path matched as
the gateway profile matches it, a rewrite of the path the function sees, basic auth, CORS headers, TLS.

| gateway | match (default rewrite `root`)                                   | rewrite the function sees      |
|---------|------------------------------------------------------------------|--------------------------------|
| nginx   | `^/path` as a case-insensitive regex (ingress-nginx ≥ 0.22): not | `/` with the query kept; no    |
|         | bounded by `/`, `/ECHO` and `/echoes` match `path: echo`         | path: the request's, unchanged |
| traefik | pathType Prefix: case-sensitive, by whole `/` segments           | unchanged                      |
| kong    | pathType Prefix                                                  | unchanged                      |

The annotation `local.kubeless.io/rewrite: root|strip-prefix|none` overrides the rewrite (strip-prefix: nginx
before 0.22, `/echo/deep` → `/deep`). Of the routes of a host the longest path wins; a host no route names
gets the routes without a host, else ingress-nginx's default backend: 404. Nothing here does I/O but
reading the project's Secret manifests (`secrets_in`).
"""

import base64
import functools
import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import yaml

from kubeless_local import spec as specs
from kubeless_local.errors import UserError
from kubeless_local.paths import project_folder

GATEWAYS = ("nginx", "traefik", "kong")
REWRITE_ANNOTATION = "local.kubeless.io/rewrite"
REWRITES = ("root", "strip-prefix", "none")
NGINX = "nginx.ingress.kubernetes.io/"
KONG_AUTH = "Setting basic authentication with Kong is not yet supported"  # the controller's words
TLS_BOTH = "Can not create ingress object from HTTP trigger spec with both TLSSecret and IngressTLS specified"
DEFAULT_BACKEND = b"default backend - 404"  # what ingress-nginx's default backend answers
REQUEST_ID = "X-Request-ID"  # the forwarded header that differs from request to request (decide() makes one)
# Hop-by-hop headers (RFC 9110 §7.6.1): never passed on; Content-Length is recomputed.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)


@dataclass(frozen=True)
class MatchKind:
    """How an Ingress path matches a request path (and the pathType push gives it)."""

    name: str
    case_insensitive: bool
    by_segment: bool  # `/echo` matches `/echo` and `/echo/x`, not `/echoes`
    path_type: str
    says: str

    def matches(self, prefix: str, path: str) -> bool:
        if self.case_insensitive:
            prefix, path = prefix.lower(), path.lower()
        if not path.startswith(prefix):
            return False
        return not self.by_segment or prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


MATCH_KINDS = {
    kind.name: kind
    for kind in (
        MatchKind("regex", True, False, "ImplementationSpecific", "case-insensitive prefix, not bounded by /"),
        MatchKind("regex-segment", True, True, "ImplementationSpecific", "case-insensitive, whole / segments"),
        MatchKind("string", False, False, "ImplementationSpecific", "case-sensitive prefix, not bounded by /"),
        MatchKind("prefix", False, True, "Prefix", "case-sensitive, whole / segments"),
    )
}
# (gateway, rewrite) → how the path matches: nginx's rewrite-target makes the path a regex (ingress-nginx ≥ 0.22)
MATCHING = {
    ("nginx", "root"): "regex",
    ("nginx", "strip-prefix"): "regex-segment",  # pushed as `/path(/|$)(.*)` → `/$2`
    ("nginx", "none"): "string",  # no rewrite-target: nginx's plain prefix location
    **{(gateway, rewrite): "prefix" for gateway in ("traefik", "kong") for rewrite in REWRITES},
}
DEFAULT_REWRITE = {"nginx": "root", "traefik": "none", "kong": "none"}
# (gateway, rewrite) → the Ingress annotations that make that ingress controller rewrite so (push); a pair
# missing here has no such annotation, and is refused at load
REWRITE_ANNOTATIONS = {
    ("nginx", "root"): {NGINX + "rewrite-target": "/"},
    ("nginx", "strip-prefix"): {NGINX + "rewrite-target": "/$2", NGINX + "use-regex": "true"},
    ("nginx", "none"): {},
    ("traefik", "root"): {"traefik.ingress.kubernetes.io/rewrite-target": "/"},
    ("traefik", "strip-prefix"): {"traefik.ingress.kubernetes.io/rule-type": "PathPrefixStrip"},
    ("traefik", "none"): {},
    ("kong", "strip-prefix"): {"konghq.com/strip-path": "true"},
    ("kong", "none"): {},
}
# what the http-trigger controller adds for basic auth and CORS, per gateway (contract §2)
AUTH_PREFIX = {"nginx": NGINX, "traefik": "ingress.kubernetes.io/"}
CORS_ANNOTATION = {"nginx": NGINX + "enable-cors", "traefik": "ingress.kubernetes.io/enable-cors"}
CORS_ANNOTATION["kong"] = CORS_ANNOTATION["traefik"]
CLASS_ANNOTATION = "kubernetes.io/ingress.class"  # superseded by spec.ingressClassName, which push sets


# ---------------------------------------------------------------- CORS (ingress-nginx's annotation parser)
CORS_DEFAULTS = {
    "cors-allow-origin": "*",
    "cors-allow-methods": "GET, PUT, POST, DELETE, PATCH, OPTIONS",
    "cors-allow-headers": "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,"
    "Range,Authorization",
    "cors-expose-headers": "",
    "cors-allow-credentials": "true",
    "cors-max-age": "1728000",
}
# A value that does not match falls back to the default, as ingress-nginx does (it never echoes a bad value).
CORS_VALID = {
    "cors-allow-origin": re.compile(r"^(https?://[A-Za-z0-9\-.]*(:[0-9]+)?|\*)?$"),
    "cors-allow-methods": re.compile(r"^([A-Za-z]+,?\s?)+$"),
    "cors-allow-headers": re.compile(r"^([A-Za-z0-9\-_]+,?\s?)+$"),
    "cors-expose-headers": re.compile(r"^(([A-Za-z0-9\-_]+|\*),?\s?)+$"),
    "cors-allow-credentials": re.compile(r"^(?i:true|false)$"),
    "cors-max-age": re.compile(r"^-?[0-9]+$"),
}


@dataclass(frozen=True)
class Cors:
    allow_origin: str
    allow_methods: str
    allow_headers: str
    expose_headers: str
    allow_credentials: bool
    max_age: str
    fallbacks: tuple = ()  # (annotation, value written) that were invalid and replaced by the default

    def headers(self, preflight: bool) -> list:
        """The headers nginx's CORS template sets; a preflight gets the ones its 204 carries."""
        found = [("Access-Control-Allow-Origin", self.allow_origin)]
        if self.allow_credentials:
            found.append(("Access-Control-Allow-Credentials", "true"))
        found += [
            ("Access-Control-Allow-Methods", self.allow_methods),
            ("Access-Control-Allow-Headers", self.allow_headers),
        ]
        if self.expose_headers:
            found.append(("Access-Control-Expose-Headers", self.expose_headers))
        if preflight:
            found += [
                ("Access-Control-Max-Age", self.max_age),
                ("Content-Type", "text/plain charset=UTF-8"),
            ]  # and `Content-Length: 0`, which nginx drops from a 204 as HTTP wants
        return found


def cors_of(annotations: dict) -> Cors:
    values, fallbacks = {}, []
    for key, default in CORS_DEFAULTS.items():
        written = annotations.get(NGINX + key)
        if written is None or written == "":
            values[key] = default
        elif CORS_VALID[key].match(written):
            values[key] = written
        else:
            values[key] = default
            fallbacks.append((NGINX + key, written))
    return Cors(
        allow_origin=values["cors-allow-origin"] or "*",
        allow_methods=values["cors-allow-methods"],
        allow_headers=values["cors-allow-headers"],
        expose_headers=values["cors-expose-headers"],
        allow_credentials=values["cors-allow-credentials"].lower() == "true",
        max_age=values["cors-max-age"],
        fallbacks=tuple(fallbacks),
    )


# ---------------------------------------------------------------- routes
@dataclass(frozen=True)
class Route:
    trigger: str
    origin: str  # "<file>: HTTPTrigger <name>"
    function: str
    host: str  # "" : any host (an Ingress rule without a host)
    path: str  # the Ingress path, "/" + spec.path
    gateway: str
    rewrite: str  # root | strip-prefix | none (root on the path "/" is none: ingress-nginx skips it)
    auth_secret: str = ""
    cors: Optional[Cors] = None
    tls: bool = False  # spec.tls: a certificate from the local CA (in a cluster: cert-manager / kube-lego)
    tls_secret: str = ""
    namespace: str = ""  # the trigger's metadata.namespace ("": push's namespace)
    annotations: dict = field(default_factory=dict)  # the trigger's own (copied onto the Ingress)
    labels: dict = field(default_factory=dict)
    port: int = specs.DEFAULT_PORT  # the function Service's port

    @property
    def file(self) -> str:
        return self.origin.split(":", 1)[0]

    @functools.cached_property  # what never changes for a route is found once, not at each request
    def redirects_to_https(self) -> bool:
        """ingress-nginx's ssl-redirect: on by default for a host with TLS (and set by the controller with
        tls-acme); `ssl-redirect: "false"` turns it off. Traefik and Kong serve both."""
        wanted = self.annotations.get(NGINX + "ssl-redirect", "true").lower() != "false"
        return self.gateway == "nginx" and bool(self.tls or self.tls_secret) and wanted

    @property
    def realm(self) -> str:
        """The basic-auth realm: the `auth-realm` annotation, as ingress-nginx reads it ("" by default)."""
        return self.annotations.get(AUTH_PREFIX.get(self.gateway, NGINX) + "auth-realm", "").replace('"', "")

    @functools.cached_property
    def match(self) -> MatchKind:
        return MATCH_KINDS[MATCHING[(self.gateway, self.rewrite)]]

    @functools.cached_property
    def cors_headers(self) -> tuple:
        """The CORS headers set on every answer but a preflight's; () without CORS."""
        return tuple(self.cors.headers(preflight=False)) if self.cors else ()

    def rewritten(self, path: str, query: str) -> str:
        """The path and query the function receives for a request this route matched."""
        if self.rewrite == "root":
            new = "/"
        elif self.rewrite == "strip-prefix":
            rest = path[len(self.path) :]
            new = rest if rest.startswith("/") else "/" + rest
        else:
            new = path
        return new + ("?" + query if query else "")

    def describe(self) -> str:
        host = self.host or "*"
        auth = " auth=%s" % self.auth_secret if self.auth_secret else ""
        cors = " cors" if self.cors else ""
        tls = " tls" if self.tls or self.tls_secret else ""
        return "%s%s → %s (%s, %s, rewrite %s)%s%s%s" % (
            host,
            self.path,
            self.function,
            self.trigger,
            self.gateway,
            self.rewrite,
            auth,
            cors,
            tls,
        )


def _flag(value) -> bool:
    """A Kubeless bool field (`tls: true`); YAML may hold it as a string."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def route_of(trigger: specs.HTTPTrigger) -> Route:
    """The route of one trigger; a UserError naming its file and field for what the controller refuses."""
    doc = trigger.document or {}
    spec = doc.get("spec") or {}
    meta = doc.get("metadata") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    gateway = str(spec.get("gateway") or "nginx")
    where = trigger.origin
    if gateway not in GATEWAYS:
        raise UserError("%s: spec.gateway %r must be one of %s" % (where, gateway, ", ".join(GATEWAYS)))
    auth = str(spec.get("basic-auth-secret") or "")
    if auth and gateway == "kong":
        raise UserError("%s: spec.basic-auth-secret with gateway kong: %s; use nginx or traefik" % (where, KONG_AUTH))
    tls, tls_secret = _flag(spec.get("tls")), str(spec.get("tls-secret") or "")
    if tls and tls_secret:
        raise UserError("%s: spec.tls and spec.tls-secret together: %s; keep one of them" % (where, TLS_BOTH))
    path = "/" + trigger.path.lstrip("/") if trigger.path != "/" else "/"
    rewrite = annotations.get(REWRITE_ANNOTATION, DEFAULT_REWRITE[gateway] if path != "/" else "none")
    if rewrite not in REWRITES:
        raise UserError(
            "%s: annotation %s must be one of %s, got %r" % (where, REWRITE_ANNOTATION, ", ".join(REWRITES), rewrite)
        )
    if path == "/":
        rewrite = "none"  # rewrite-target equal to the path: ingress-nginx leaves the path as it is
    if (gateway, rewrite) not in REWRITE_ANNOTATIONS:
        raise UserError(
            "%s: annotation %s: gateway %s has no %s rewrite; use one of %s"
            % (
                where,
                REWRITE_ANNOTATION,
                gateway,
                rewrite,
                ", ".join(r for g, r in REWRITE_ANNOTATIONS if g == gateway),
            )
        )
    return Route(
        trigger=trigger.name,
        origin=where,
        function=trigger.function_name,
        host=trigger.host_name.lower(),
        path=path,
        gateway=gateway,
        rewrite=rewrite,
        auth_secret=auth,
        cors=cors_of(annotations) if trigger.cors_enable else None,
        tls=tls,
        tls_secret=tls_secret,
        namespace=meta.get("namespace") or "",
        annotations=annotations,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
    )


# ---------------------------------------------------------------- the table and its decisions
@dataclass(frozen=True)
class Candidate:
    route: Route
    matched: bool
    why: str  # why it matched, or why not


@dataclass(frozen=True)
class Decision:
    """What the gateway does with one request: answer it itself (`status` set) or forward it."""

    status: int = 0  # the gateway's own answer (404, 401, 204, 308); 0: forward to `route.function`
    route: Optional[Route] = None
    target: str = ""  # path and query the function receives
    set_headers: tuple = ()  # (name, value) added to (or replacing) the request's
    drop_headers: tuple = ()  # request headers removed before the function
    response_headers: tuple = ()  # (name, value) set on the answer, replacing the function's of that name
    body: bytes = b""
    candidates: tuple = ()  # every route, matched or not, and why
    reason: str = ""

    def request_headers(self, headers: list, unsent: frozenset = frozenset()) -> list:
        """The headers the function receives, of the request's (name, value) pairs (Content-Length aside, and
        those named in `unsent`, lower-cased)."""
        dropped = _dropped(self.drop_headers, tuple(name for name, _ in self.set_headers), unsent)
        return [(k, v) for k, v in headers if k.lower() not in dropped] + list(self.set_headers)

    def response_headers_over(self, answered: list) -> list:
        """The answer's headers: the function's, those of the route (CORS) replacing any of the same name."""
        replaced = {name.lower() for name, _ in self.response_headers}
        kept = [(k, v) for k, v in answered if k.lower() not in replaced and k.lower() not in HOP_BY_HOP]
        return kept + list(self.response_headers)


@functools.lru_cache(maxsize=64)
def _dropped(drop_headers: tuple, set_names: tuple, unsent: frozenset) -> frozenset:
    """The request headers a decision keeps from the function (lower-cased); a handful of shapes, each made once."""
    replaced = {name.lower() for name in set_names}
    return frozenset(drop_headers) | HOP_BY_HOP | replaced | {"content-length"} | unsent


def split_host(host_header: str) -> tuple:
    """(host name lower-cased, port or '') of a Host header."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.lstrip(":")
    name, _, port = host.partition(":")
    return name, port


class RouteTable:
    """The routes in force; `decide` is the gateway's whole routing logic, `explain` shows it."""

    def __init__(self, routes=(), secrets: Optional[dict] = None, checkers: Optional[dict] = None):
        self.routes_in_order = list(routes)  # as the files define them
        # longest path first (ingress-nginx orders its locations so); ties in file order
        self.routes = sorted(routes, key=lambda r: -len(r.path))
        self.secrets = secrets or {}
        self.checkers = checkers or {}  # auth secret name → callable(user, password) -> bool
        self.by_host: dict = {}  # Host header → the routes serving it

    def __bool__(self) -> bool:
        return bool(self.routes)

    def hosts(self) -> set:
        return {r.host for r in self.routes}

    def serving(self, host_header: str) -> list:
        """The routes serving this Host (remembered: the gateway asks on every request)."""
        found = self.by_host.get(host_header)
        if found is None:
            if len(self.by_host) > 1024:
                self.by_host.clear()
            found = self.by_host[host_header] = self.for_host(host_header)[0]
        return found

    def winner(self, host_header: str, path: str) -> Optional[Route]:
        """The route a request goes to: the longest path of those serving its host that matches."""
        for route in self.serving(host_header):
            if route.match.matches(route.path, path):
                return route
        return None

    def for_host(self, host_header: str) -> tuple:
        """(routes serving this Host, why): its own, else those without a host."""
        name, _ = split_host(host_header)
        names = {name, name[: -len(".localhost")]} if name.endswith(".localhost") else {name}
        own = [r for r in self.routes if r.host and r.host in names]
        if own:
            return own, "host %s" % name
        anywhere = [r for r in self.routes if not r.host]
        return anywhere, "no route names host %s" % (name or "(none)")

    def candidates(self, host_header: str, path: str) -> list:
        serving, _ = self.for_host(host_header)
        name, _ = split_host(host_header)
        found, winner = [], None
        for route in self.routes:
            if route not in serving:
                why = (
                    "host %s is not %s" % (route.host, name or "(none)") if route.host else "host %s has routes" % name
                )
                found.append(Candidate(route, False, why))
            elif not route.match.matches(route.path, path):
                found.append(
                    Candidate(route, False, "path %s does not match %s (%s)" % (path, route.path, route.match.says))
                )
            elif winner is not None:
                found.append(Candidate(route, False, "%s is longer and matched first" % winner.path))
            else:
                winner = route
                found.append(Candidate(route, True, "path %s matches %s (%s)" % (path, route.path, route.match.says)))
        return found

    def decide(
        self,
        method: str,
        host_header: str,
        target: str,
        headers: dict,
        client: str = "127.0.0.1",
        scheme: str = "http",
        port: int = 80,
        request_id: Optional[Callable[[], str]] = None,
        https_port: int = 443,
        explaining: bool = False,
    ) -> Decision:
        """`headers`: the request's, names lower-cased. The same answer for the live gateway and `explain`
        (`explaining`: with every route's candidacy and why, which the gateway does not need)."""
        path, _, query = (target if target.startswith("/") else "/" + target).partition("?")
        path = path.partition("#")[0] or "/"
        query = query.partition("#")[0]
        route = self.winner(host_header, path)
        candidates = tuple(self.candidates(host_header, path)) if explaining else ()
        if route is None:
            return Decision(
                404, body=DEFAULT_BACKEND, candidates=candidates, reason="no route matches: default backend"
            )
        cors = route.cors_headers
        if route.redirects_to_https and scheme == "http":
            name = split_host(host_header)[0]
            location = "https://%s%s%s" % (name, "" if https_port == 443 else ":%d" % https_port, target)
            return Decision(
                308,
                route,
                response_headers=(("Location", location),),
                candidates=candidates,
                reason="ssl-redirect: HTTPS only",
            )
        if route.cors and method == "OPTIONS":  # the preflight is answered before auth
            return Decision(
                204,
                route,
                response_headers=tuple(route.cors.headers(preflight=True)),
                candidates=candidates,
                reason="CORS preflight answered by the gateway",
            )
        if route.auth_secret:
            check = self.checkers.get(route.auth_secret)
            user, password = basic_credentials(headers.get("authorization", ""))
            if check is None or user is None or not check(user, password):
                why = "no credentials" if user is None else "wrong user or password for %s" % user
                return Decision(
                    401,
                    route,
                    response_headers=(("WWW-Authenticate", 'Basic realm="%s"' % route.realm), *cors),
                    body=UNAUTHORIZED,
                    candidates=candidates,
                    reason="basic auth (secret %s): %s" % (route.auth_secret, why),
                )
        forwarded = (
            (REQUEST_ID, headers.get("x-request-id") or (request_id or new_request_id)()),
            ("X-Real-IP", client),
            ("X-Forwarded-For", client),
            ("X-Forwarded-Host", host_header),
            ("X-Forwarded-Port", str(port)),
            ("X-Forwarded-Proto", scheme),
            ("X-Forwarded-Scheme", scheme),
            ("X-Scheme", scheme),
            ("X-Original-URI", target),
        )
        return Decision(
            0,
            route,
            target=route.rewritten(path, query),
            set_headers=forwarded,
            drop_headers=("proxy", "authorization") if route.auth_secret else ("proxy",),
            response_headers=cors,
            candidates=candidates,
            reason="forwarded to function %s" % route.function,
        )


UNAUTHORIZED = (
    b"<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    b"<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def new_request_id() -> str:
    # ingress-nginx's $request_id: 32 hex digits; an identifier, not a secret (os.urandom is a system call)
    return "%032x" % random.getrandbits(128)


def basic_credentials(authorization: str) -> tuple:
    """(user, password) of a `Basic` Authorization header, or (None, None)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None, None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)


# ---------------------------------------------------------------- the project's routes
def secrets_in(root: Path, ignore=()) -> dict:
    """{name: {key: bytes}} of the Secret manifests (kind: Secret, `data` base64 or `stringData`) under the
    project, and of its secrets/<name>/ folders (one file per key, as a pod mounts a Secret)."""
    found: dict = {}
    root = Path(root)
    folder = root / specs.SECRETS_DIRNAME
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                found[entry.name] = {f.name: f.read_bytes() for f in sorted(entry.iterdir()) if f.is_file()}
    if not root.is_dir():
        return found
    for path in specs.manifest_files(root, specs.Ignore(ignore)):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "Secret" not in text:
            continue
        try:
            documents = list(yaml.load_all(text, Loader=specs.yaml_loader()))
        except yaml.YAMLError:
            continue  # the manifest loader reports a malformed file
        for doc in documents:
            if isinstance(doc, dict) and doc.get("kind") == "Secret" and doc.get("apiVersion") == "v1":
                name = (doc.get("metadata") or {}).get("name")
                if isinstance(name, str) and name:
                    found[name] = _secret_data(path, name, doc)
    return found


def _secret_data(path: Path, name: str, doc: dict) -> dict:
    """{key: bytes} of a Secret manifest; a value that is not base64 is kept as the error to show."""
    data: dict = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except ValueError:
            data[str(key)] = SecretError(
                "%s: Secret %s: data.%s is not base64; encode it (base64 -w0)" % (path, name, key)
            )
    for key, value in (doc.get("stringData") or {}).items():
        data[str(key)] = str(value).encode()
    data["__file__"] = str(path)
    return data


class SecretError(str):
    """A Secret value that cannot be read: the message to show."""


@dataclass
class Routes:
    """What `build` makes of the project's HTTPTriggers: the routes, and each problem as one line."""

    table: RouteTable
    problems: list  # (trigger origin, message)


def build(manifests: specs.Manifests, secrets: dict, auth_checker: Optional[Callable] = None) -> Routes:
    """Routes of every HTTPTrigger that the controller would accept; one line per one it would refuse or
    that would fight another for its host and path (the first file's wins, as the older Ingress wins)."""
    routes: list = []
    problems: list = []
    taken: dict = {}
    checkers: dict = {}
    for trigger in manifests.http_triggers:
        try:
            route = route_of(trigger)
            if manifests.function(route.function) is None:
                raise UserError(
                    "%s: spec.function-name %r names no Function in this project" % (route.origin, route.function)
                )
            if route.auth_secret:
                checkers[route.auth_secret] = remembered(checker_for(route, secrets, auth_checker))
            if route.tls_secret and auth_checker is None:  # locally: the gateway serves its certificate
                tls_pair(route, secrets)
        except UserError as exc:
            problems.append((trigger.origin, str(exc)))
            continue
        key = (route.host, route.path.lower() if route.match.case_insensitive else route.path)
        if key in taken:
            first = taken[key]
            problems.append(
                (
                    route.origin,
                    "%s and %s both route host %s path %s; the first one serves it: give one another host-name or path"
                    % (first.origin, route.origin, route.host or "*", route.path),
                )
            )
            continue
        taken[key] = route
        routes.append(route)
    return Routes(RouteTable(routes, secrets, checkers), problems)


def remembered(check: Callable, size: int = 1024) -> Callable:
    """`check` that remembers the credentials it accepted (by their sha256): a bcrypt check costs milliseconds,
    and a browser sends the same Authorization on every request."""
    accepted: set = set()

    def checked(user: str, password: str) -> bool:
        key = hashlib.sha256(("%s\0%s" % (user, password)).encode()).digest()
        if key in accepted:
            return True
        if not check(user, password):
            return False
        if len(accepted) >= size:
            accepted.clear()
        accepted.add(key)
        return True

    checked.check = check  # type: ignore[attr-defined]
    return checked


TLS_KEYS = ("tls.crt", "tls.key")  # a kubernetes.io/tls Secret's


def tls_pair(route: Route, secrets: dict) -> tuple:
    """(certificate PEM, key PEM) of a route's tls-secret; a UserError for a missing or incomplete Secret."""
    secret = secrets.get(route.tls_secret)
    if secret is None:
        raise UserError(
            "%s: spec.tls-secret %r: no Secret of that name in the project (a kind: Secret manifest of type"
            " kubernetes.io/tls, e.g. `kubectl create secret tls %s --cert=… --key=… --dry-run=client -o yaml`)"
            % (route.origin, route.tls_secret, route.tls_secret)
        )
    for key in TLS_KEYS:
        if isinstance(secret.get(key), SecretError):
            raise UserError(str(secret[key]))
        if not secret.get(key):
            raise UserError("%s: Secret %s has no key %s" % (route.origin, route.tls_secret, key))
    return secret["tls.crt"], secret["tls.key"]


def checker_for(route: Route, secrets: dict, auth_checker: Optional[Callable]) -> Callable:
    """The password check of a route's basic-auth-secret; a UserError for a missing or malformed secret."""
    from kubeless_local import htpasswd

    secret = secrets.get(route.auth_secret)
    if secret is None and auth_checker is not None:
        return auth_checker(b"", route.origin)
    if secret is None:
        raise UserError(
            "%s: spec.basic-auth-secret %r: no Secret of that name in the project (a kind: Secret manifest, or a"
            " folder %s/%s/ holding the file auth)"
            % (route.origin, route.auth_secret, specs.SECRETS_DIRNAME, route.auth_secret)
        )
    auth = secret.get("auth")
    if isinstance(auth, SecretError):
        raise UserError(str(auth))
    if auth is None:
        raise UserError(
            "%s: Secret %s has no key auth; put the htpasswd file there (`htpasswd -c auth USER`, then"
            " `kubectl create secret generic %s --from-file=auth --dry-run=client -o yaml`)"
            % (route.origin, route.auth_secret, route.auth_secret)
        )
    where = "%s: Secret %s key auth" % (secret.get("__file__") or route.origin, route.auth_secret)
    return (auth_checker or htpasswd.Htpasswd.parse)(auth, where)


def project_routes(root: Path, ignore=()) -> Routes:
    """The routes `dev` would serve for the project under `root` now (its manifests and Secrets)."""
    root = Path(root).resolve()
    manifests = specs.Loader(root, specs.Ignore(ignore)).collect()
    return build(manifests, secrets_in(project_folder(root), ignore))


def explain(table: RouteTable, method: str, url: str, headers: list, port: int, https_port: int = 443) -> dict:
    """What the gateway on `port` does with a request, as data (`gateway explain`): every route and why it
    matched or not, the gateway's own answer or the exact request the function receives. `url`'s host is the
    Host unless `headers` has one."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    given = {name.lower(): value for name, value in headers}
    host = given.get("host") or parts.netloc
    if "host" not in given:
        headers = [("Host", host), *headers]
        given["host"] = host
    scheme = parts.scheme or "http"
    decision = table.decide(
        method,
        host,
        target,
        given,
        scheme=scheme,
        port=https_port if scheme == "https" else port,
        request_id=lambda: "<generated>",
        https_port=https_port,
        explaining=True,
    )
    route = decision.route
    found: dict = {
        "request": {"method": method, "url": url, "host": host, "target": target},
        "candidates": [
            {"trigger": c.route.trigger, "route": c.route.describe(), "matched": c.matched, "why": c.why}
            for c in decision.candidates
        ],
        "trigger": route.trigger if route else None,
        "function": route.function if route else None,
        "status": decision.status or None,  # the gateway's own answer; None: the function answers
        "reason": decision.reason,
        "auth": ("basic, secret %s" % route.auth_secret) if route and route.auth_secret else "none",
        "cors": route.cors is not None if route else False,
        "response_headers": [list(pair) for pair in decision.response_headers],
    }
    if route is not None and route.cors is not None and route.cors.fallbacks:
        found["cors_fallbacks"] = ["%s: %r is not valid, the default is used" % pair for pair in route.cors.fallbacks]
    if not decision.status:
        found["forwarded"] = {
            "method": method,
            "target": decision.target,
            "headers": [list(pair) for pair in decision.request_headers(headers)],
        }
    return found


def ingress_of(route: Route, service_port: int = specs.DEFAULT_PORT) -> dict:
    """The `networking.k8s.io/v1` Ingress of a route (what push applies): the http-trigger controller's
    Ingress (contract §2) in today's API, with the class in `ingressClassName` and the path's `pathType`; the
    trigger's own annotations copied (the local ones aside), and those that make the controller match and
    rewrite as the route does."""
    annotations = {
        k: v for k, v in route.annotations.items() if not k.startswith("local.kubeless.io/") and k != CLASS_ANNOTATION
    }
    annotations.update(REWRITE_ANNOTATIONS[(route.gateway, route.rewrite)])
    if route.auth_secret:
        prefix = AUTH_PREFIX[route.gateway]
        annotations.update({prefix + "auth-secret": route.auth_secret, prefix + "auth-type": "basic"})
    if route.cors is not None:
        annotations[CORS_ANNOTATION[route.gateway]] = "true"
    if route.tls:
        annotations.update({"kubernetes.io/tls-acme": "true", NGINX + "ssl-redirect": "true"})
    path = route.path + "(/|$)(.*)" if route.rewrite == "strip-prefix" and route.gateway == "nginx" else route.path
    backend = {"service": {"name": route.function, "port": {"number": service_port}}}
    rule: dict = {"http": {"paths": [{"path": path, "pathType": route.match.path_type, "backend": backend}]}}
    if route.host:
        rule = {"host": route.host, **rule}
    spec: dict = {"ingressClassName": route.gateway, "rules": [rule]}
    secret = route.tls_secret or ("%s-tls" % route.trigger if route.tls else "")
    if secret:
        spec["tls"] = [{**({"hosts": [route.host]} if route.host else {}), "secretName": secret}]
    metadata: dict = {"name": route.trigger, **({"namespace": route.namespace} if route.namespace else {})}
    if route.labels:
        metadata["labels"] = dict(route.labels)
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def service_port_of(fn: specs.FunctionSpec) -> int:
    """The port of the function's Service (spec.service.ports[0].port, else Kubeless' 8080)."""
    ports = fn.service.get("ports") or []
    port = ports[0].get("port") if ports and isinstance(ports[0], dict) else None
    return int(port) if port else specs.DEFAULT_PORT


def ingresses(manifests: specs.Manifests) -> list:
    """The Ingress of each HTTPTrigger, for push; a UserError for the first that cannot route (its function
    missing, or another trigger's host and path), as `dev` would say it."""
    built = build(manifests, {}, auth_checker=lambda data, where: None)  # the cluster holds the secrets
    if built.problems:
        raise UserError(built.problems[0][1])
    found = []
    for route in built.table.routes_in_order:
        fn = manifests.function(route.function)
        found.append(ingress_of(route, service_port_of(fn) if fn is not None else specs.DEFAULT_PORT))
    return found

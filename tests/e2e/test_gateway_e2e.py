"""The HTTPTrigger gateway of a real `dev`, in front of real Python and Node functions (issue O)."""

import base64
import json
import os
import re
import socket
import subprocess
import textwrap

import pytest
import requests
from conftest import cli
from sockets import free_port, taken_port

BACKENDS = os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(",")

PY_ECHO = textwrap.dedent(
    """\
    def handler(event, context):
        request = event["extensions"]["request"]
        return {"path": request.fullpath, "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()}}
    """
)
JS_ECHO = textwrap.dedent(
    """\
    module.exports = {
      handler: (event, context) => {
        const r = event.extensions.request;
        return {path: r.path, query: r.originalUrl.split('?')[1] || '', headers: r.headers};
      },
    };
    """
)
USERS = {"alice": ("-m", "apr1 pass"), "bob": ("-B", "bcrypt pass"), "carol": ("-s", "sha pass")}


def function(name, runtime, source, handler="handler.handler"):
    return textwrap.dedent(
        """\
        apiVersion: kubeless.io/v1beta1
        kind: Function
        metadata:
          name: %s
          annotations: {local.kubeless.io/source: %s}
        spec: {runtime: %s, handler: %s}
        """
        % (name, source, runtime, handler)
    )


def http_trigger(name, function, host, path="", annotations=None, **spec):
    document = {
        "apiVersion": "kubeless.io/v1beta1",
        "kind": "HTTPTrigger",
        "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
        "spec": {"function-name": function, "host-name": host, "path": path, **spec},
    }
    return json.dumps(document) + "\n"


def htpasswd_secret():
    """A Secret manifest whose auth key Debian's htpasswd wrote: one user per format."""
    lines = b"".join(
        subprocess.run(["htpasswd", "-nb", flag, user, password], capture_output=True, check=True).stdout.strip()
        + b"\n"
        for user, (flag, password) in USERS.items()
    )
    return "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\ntype: Opaque\ndata:\n  auth: %s\n" % (
        base64.b64encode(lines).decode()
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "handler.py").write_text(PY_ECHO)
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "handler.js").write_text(JS_ECHO)
    (tmp_path / "functions.yaml").write_text(
        function("pyecho", "python3.11", "py/handler.py") + "---\n" + function("jsecho", "nodejs20", "js/handler.js")
    )
    triggers = [
        http_trigger("a", "pyecho", "a.test", "echo"),
        http_trigger("a-api", "jsecho", "a.test", "api", gateway="traefik"),
        http_trigger(
            "b",
            "jsecho",
            "b.test",
            annotations={"nginx.ingress.kubernetes.io/cors-allow-origin": "https://app.test"},
            **{"cors-enable": True},
        ),
        http_trigger(
            "bad-cors",
            "jsecho",
            "c.test",
            annotations={"nginx.ingress.kubernetes.io/cors-allow-methods": "GET;$pid"},
            **{"cors-enable": True},
        ),
        http_trigger("auth", "pyecho", "auth.test", **{"basic-auth-secret": "users", "cors-enable": True}),
        http_trigger("auth-js", "jsecho", "auth-js.test", **{"basic-auth-secret": "users"}),
    ]
    (tmp_path / "triggers.yaml").write_text("---\n".join(triggers))
    (tmp_path / "secret.yaml").write_text(htpasswd_secret())
    return tmp_path


def start(start_dev, project, backend):
    port = free_port()
    dev = start_dev("dev", "--backend", backend, "--gateway-port", str(port), cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    return dev, "http://127.0.0.1:%d" % port


def get(gateway, host, target, method="GET", **kwargs):
    return requests.request(
        method, gateway + target, headers={"Host": host, **kwargs.pop("headers", {})}, timeout=30, **kwargs
    )


# (Host, request, function, path the function sees, query it sees) or 404
ROUTING = [
    ("a.test", "/echo/deep?q=1", "pyecho", "/", "q=1"),
    ("a.test", "/ECHO", "pyecho", "/", ""),
    ("a.test", "/echoes", "pyecho", "/", ""),
    ("a.test:8480", "/echo?x=y", "pyecho", "/", "x=y"),
    ("a.test.localhost", "/echo", "pyecho", "/", ""),
    ("a.test", "/api/v1?z=2", "jsecho", "/api/v1", "z=2"),
    ("a.test", "/apis", 404, None, None),
    ("a.test", "/other", 404, None, None),
    ("b.test", "/any/path?k=v", "jsecho", "/any/path", "k=v"),
    ("unknown.test", "/", 404, None, None),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_gateway_routes_rewrites_authenticates_and_sets_cors(tmp_path, start_dev, project, backend):
    dev, gateway = start(start_dev, project, backend)
    assert "routes on %s" % gateway in dev.output()
    rows = json.loads(cli("ls", "-o", "json", cwd=project, check=True).stdout)
    assert {row["backend"] for row in rows} == {backend}
    assert "http://a.test.localhost:%s/echo" % gateway.rsplit(":", 1)[1] in dev.output()

    for host, target, function, path, query in ROUTING:
        answer = get(gateway, host, target, headers={"Proxy": "http://evil.test"})
        if function == 404:
            assert (answer.status_code, answer.text) == (404, "default backend - 404"), (host, target)
            continue
        assert answer.status_code == 200, (host, target, answer.text)
        seen = answer.json()
        assert (seen["path"], seen["query"]) == (path, query), (host, target)
        headers = seen["headers"]
        assert "proxy" not in headers
        assert (headers["x-real-ip"], headers["x-forwarded-for"], headers["x-forwarded-proto"]) == (
            "127.0.0.1",
        ) * 2 + ("http",)
        assert (headers["x-forwarded-host"], headers["x-scheme"], headers["host"]) == (host, "http", host)
        assert headers["x-forwarded-port"] == gateway.rsplit(":", 1)[1] and len(headers["x-request-id"]) == 32
        assert "x-kubeless-local-source" not in headers  # the front door takes the gateway's mark off

    routed = sum(1 for row in ROUTING if row[2] == "pyecho")  # the front door (either backend's) records each

    def recorded():
        return json.loads(cli("history", "pyecho", "-o", "json", cwd=project, check=True).stdout)

    dev.wait_until(lambda: len(recorded()) == routed, "every routed call recorded", timeout=10)
    assert {(row["source"], row["trigger"]) for row in recorded()} == {("gateway", "a")}

    # CORS behind the Node runtime, which sets Access-Control-Allow-Origin itself: ours replaces it, never two
    answer = get(gateway, "b.test", "/", headers={"Origin": "https://app.test"})
    assert answer.raw.headers.getlist("Access-Control-Allow-Origin") == ["https://app.test"]
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = get(gateway, "b.test", "/", method="OPTIONS", headers={"Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 204 and preflight.raw.headers.getlist("Access-Control-Allow-Origin") == [
        "https://app.test"
    ]
    assert preflight.headers["Access-Control-Max-Age"] == "1728000"
    fallback = get(gateway, "c.test", "/", method="OPTIONS")
    assert fallback.headers["Access-Control-Allow-Methods"] == "GET, PUT, POST, DELETE, PATCH, OPTIONS"

    # basic auth: apr1, bcrypt and SHA lines from htpasswd; the function never sees Authorization
    assert get(gateway, "auth.test", "/", method="OPTIONS").status_code == 204  # preflight before auth
    refused = get(gateway, "auth.test", "/")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert refused.headers["Access-Control-Allow-Origin"] == "*"  # CORS headers on the 401 too
    for user, (_, password) in USERS.items():
        for host in ("auth.test", "auth-js.test"):
            assert get(gateway, host, "/", auth=(user, password + "x")).status_code == 401, (user, host)
            answer = get(gateway, host, "/x?y=1", auth=(user, password))
            assert answer.status_code == 200, (user, host, answer.text)
            assert "authorization" not in answer.json()["headers"]


def test_a_reload_updates_the_routes_and_problems_are_one_line(tmp_path, start_dev, project):
    dev, gateway = start(start_dev, project, "process")
    assert get(gateway, "new.test", "/").status_code == 404
    assert get(gateway, "new.test", "/fresh/x").status_code == 404  # the same request is routed after the reload
    with open(project / "triggers.yaml", "a") as file:
        file.write("---\n" + http_trigger("new", "pyecho", "new.test", "fresh"))
        file.write("---\n" + http_trigger("dup", "jsecho", "new.test", "fresh"))
    dev.wait_until(lambda: get(gateway, "new.test", "/fresh/x").status_code == 200, "the new route served", timeout=30)
    assert get(gateway, "new.test", "/fresh").json()["path"] == "/"
    dev.wait_for_output(
        "HTTPTrigger new and %s: HTTPTrigger dup both route host new.test path /fresh" % (project / "triggers.yaml")
    )


def test_requests_alike_each_get_a_request_id_of_their_own_and_a_clients_own_is_kept(start_dev, project):
    """The gateway works a request head out once and reuses that for the same head again: not its X-Request-ID,
    which ingress-nginx makes anew for each request."""
    _, gateway = start(start_dev, project, "process")
    with requests.Session() as session:  # one kept-alive connection: the same head, byte for byte, each time
        seen = [
            session.get(gateway + "/echo", headers={"Host": "a.test"}, timeout=30).json()["headers"]["x-request-id"]
            for _ in range(3)
        ]
        assert len(set(seen)) == 3 and all(len(seen_id) == 32 for seen_id in seen), seen
        empty = {"Host": "a.test", "X-Request-ID": ""}  # not an id: the gateway makes one, as ingress-nginx does
        made = [session.get(gateway + "/echo", headers=empty, timeout=30).json()["headers"] for _ in range(2)]
        assert made[0]["x-request-id"] != made[1]["x-request-id"] and len(made[0]["x-request-id"]) == 32
        own = {"Host": "a.test", "X-Request-ID": "mine"}
        kept = [session.get(gateway + "/echo", headers=own, timeout=30).json()["headers"] for _ in range(2)]
        assert [headers["x-request-id"] for headers in kept] == ["mine", "mine"]


def test_an_http_1_0_client_kept_alive_is_told_so_and_served_again(start_dev, project):
    """`ab -k` (HTTP/1.0 asking `Connection: keep-alive`) through the gateway hung: the answer kept the connection
    without saying so, and an HTTP/1.0 client then waits for the close. Through each runtime, a 404 too."""
    _, gateway = start(start_dev, project, "process")
    port = int(gateway.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for host, target, status in [("a.test", "/echo", 200), ("a.test", "/api", 200), ("a.test", "/other", 404)] * 2:
            sock.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nConnection: keep-alive\r\n\r\n" % (target, host)).encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
            while len(body) < length:
                body += sock.recv(65536)
            assert head.split(b" ")[1] == str(status).encode(), head
            assert re.search(rb"(?im)^connection: keep-alive\r?$", head), head


def test_a_taken_gateway_port_is_one_line_and_exit_2(tmp_path, project):
    with taken_port() as port:
        result = cli("dev", "--gateway-port", str(port), cwd=project, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: the HTTPTrigger gateway cannot listen on 127\.0\.0\.1:%d: Address already in use by `.*` \(pid %d\);"
        r" pass --gateway-port / --gateway-https-port PORT \(0: any free port\)" % (port, os.getpid()),
        lines[-1],
    ), lines[-1]


def explained(project, port, urls, headers=(), method="GET"):
    args = [arg for header in headers for arg in ("-H", header)]
    result = cli(
        "gateway", "explain", "-o", "json", "--port", str(port), "-X", method, *args, *urls, cwd=project, check=True
    )
    return json.loads(result.stdout)


def live(session, gateway, url, headers, method="GET"):
    """The gateway's answer to `url` (its host is the Host header), with exactly `headers` besides Host."""
    _, _, rest = url.partition("://")
    host, _, target = rest.partition("/")
    pairs = dict(header.split(": ", 1) for header in headers)
    return session.request(method, gateway + "/" + target, headers={"Host": host, **pairs}, timeout=30)


def test_explain_agrees_with_the_live_gateway_on_every_case(start_dev, project):
    _, gateway = start(start_dev, project, "process")
    port = int(gateway.rsplit(":", 1)[1])
    session = requests.Session()
    session.headers.clear()  # only the headers the case names (and Host), so both see the same request
    basic = "Authorization: Basic " + base64.b64encode(b"alice:apr1 pass").decode()
    cases = [
        (
            ("Accept-Encoding: identity", "User-Agent: t", "Proxy: http://evil.test"),
            "GET",
            [f"http://{h}{t}" for h, t, *_ in ROUTING],
        ),
        (
            ("Accept-Encoding: identity", "User-Agent: t", "Origin: https://app.test"),
            "GET",
            ["http://b.test/", "http://c.test/"],
        ),
        (("Accept-Encoding: identity", "User-Agent: t"), "OPTIONS", ["http://b.test/", "http://auth.test/"]),
        (("Accept-Encoding: identity", "User-Agent: t"), "GET", ["http://auth.test/", "http://auth-js.test/x"]),
        (
            ("Accept-Encoding: identity", "User-Agent: t", basic),
            "GET",
            ["http://auth.test/?a=1", "http://auth-js.test/x"],
        ),
    ]
    compared = 0
    for headers, method, urls in cases:
        for url, explanation in zip(urls, explained(project, port, urls, headers, method)):
            answer = live(session, gateway, url, headers, method)
            if explanation["status"]:
                assert answer.status_code == explanation["status"], url
                for name, value in explanation["response_headers"]:
                    assert answer.raw.headers.getlist(name) == [value], (url, name)
            else:
                assert answer.status_code == 200, (url, answer.text)
                seen = answer.json()
                forwarded = explanation["forwarded"]
                target = seen["path"] + ("?" + seen["query"] if seen["query"] else "")
                assert target == forwarded["target"], url
                expected = {name.lower(): value for name, value in forwarded["headers"]}
                got = {k: v for k, v in seen["headers"].items() if k not in ("content-length", "content-type")}
                assert got.pop("x-request-id") and expected.pop("x-request-id") == "<generated>"
                assert got == expected, url
                for name, value in explanation["response_headers"]:
                    assert answer.raw.headers.getlist(name) == [value], (url, name)
            compared += 1
    assert compared == sum(len(urls) for _, _, urls in cases)


def https_get(port, server_name, host, target, ca_file):
    """GET over TLS to 127.0.0.1:`port`, naming `server_name` by SNI and verifying the certificate with `ca_file`
    (no DNS: the name never resolves); (status, body)."""
    import http.client
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with context.wrap_socket(raw, server_hostname=server_name) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, host)).encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_tls_by_sni_from_a_secret_and_from_the_development_ca(tmp_path, start_dev, monkeypatch):
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("secure.test", "secure.test.localhost")
    key, cert = issued.private_key_pem.bytes(), b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    project = tmp_path / "tls"
    (project / "py").mkdir(parents=True)
    (project / "py" / "handler.py").write_text(PY_ECHO)
    (project / "functions.yaml").write_text(function("pyecho", "python3.11", "py/handler.py"))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "secure-cert"},
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
    }
    (project / "cert.yaml").write_text(json.dumps(secret))
    (project / "triggers.yaml").write_text(
        http_trigger("secure", "pyecho", "secure.test", "api", **{"tls-secret": "secure-cert"})
        + "---\n"
        + http_trigger("acme", "pyecho", "acme.test", tls=True)
    )
    monkeypatch.setenv("KUBELESS_LOCAL_CA_DIR", str(tmp_path / "ca"))  # the dev CA of this test only
    port, https_port = free_port(), free_port()
    dev = start_dev("dev", "--gateway-port", str(port), "--gateway-https-port", str(https_port), cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    assert "https://secure.test.localhost:%d/api" % https_port in dev.output()

    authority_file = tmp_path / "trustme.pem"
    authority.cert_pem.write_to_path(str(authority_file))
    for name in ("secure.test", "secure.test.localhost"):
        status, body = https_get(https_port, name, name, "/api/x?q=1", authority_file)
        assert status == 200, body
        seen = json.loads(body)
        assert (seen["path"], seen["query"]) == ("/", "q=1")
        assert (seen["headers"]["x-forwarded-proto"], seen["headers"]["x-forwarded-port"]) == ("https", str(https_port))

    # tls: true: a certificate of the development CA, which `gateway ca` prints; http redirects with 308
    printed = cli("gateway", "ca", cwd=project, check=True)
    ca_file = printed.stdout.strip()
    assert ca_file == str(tmp_path / "ca" / "ca.pem") and "curl --cacert" in printed.stderr
    status, body = https_get(https_port, "acme.test.localhost", "acme.test.localhost", "/deep?x=1", ca_file)
    assert status == 200 and json.loads(body)["path"] == "/deep"
    redirect = requests.get(
        "http://127.0.0.1:%d/deep?x=1" % port, headers={"Host": "acme.test"}, allow_redirects=False, timeout=30
    )
    assert (redirect.status_code, redirect.headers["Location"]) == (308, "https://acme.test:%d/deep?x=1" % https_port)
    # ingress-nginx redirects every host with TLS (ssl-redirect defaults to true)
    redirect = get("http://127.0.0.1:%d" % port, "secure.test.localhost", "/api?a=b", allow_redirects=False)
    assert (redirect.status_code, redirect.headers["Location"]) == (
        308,
        "https://secure.test.localhost:%d/api?a=b" % https_port,
    )


def test_kept_alive_connections_the_function_closed_are_not_reused(tmp_path):
    """A server that closes idle kept-alive connections (Node after 5 s) behind the gateway: every later
    request still answers 200, never a 502 for a connection closed while it waited in the pool."""
    import socket
    import threading
    from types import SimpleNamespace

    from kubeless_local import spec as specs
    from kubeless_local.emulator.gateway import Gateway
    from kubeless_local.emulator.logs import LogHub

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list = []

    both = threading.Barrier(2, timeout=30)  # the first two requests are answered together: two pooled

    def answer(sock):  # the connection's first request, keep-alive, then closed (an idle timeout)
        sock.recv(65536)
        if len(accepted) <= 2:
            both.wait()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        sock.close()

    def serve():
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            accepted.append(sock)
            threading.Thread(target=answer, args=(sock,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = "http://127.0.0.1:%d" % listener.getsockname()[1]
    ready = (SimpleNamespace(url=url, server_port=0), SimpleNamespace(timeout="5"))
    # reached through its URL (server_target None: no private port, as the docker backend's host mode)
    supervisor = SimpleNamespace(wait_ready=lambda name, timeout: ready, recorder=None, server_target=lambda i: None)
    fn = specs.FunctionSpec(name="f", runtime="python3.11", handler="h.f", origin="f.yaml", function="x")
    trigger = specs.parse_http_trigger(
        {
            "apiVersion": specs.API_VERSION,
            "kind": "HTTPTrigger",
            "metadata": {"name": "t"},
            "spec": {"function-name": "f"},
        },
        tmp_path / "t.yaml",
    )
    gateway = Gateway(supervisor, LogHub(), tmp_path, port=0)
    try:
        gateway.update(specs.Manifests(functions=[fn], http_triggers=[trigger]))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            first = list(pool.map(lambda _: requests.get(gateway.url + "/", timeout=30), range(2)))
        answers = first + [requests.get(gateway.url + "/", timeout=30) for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 6
        assert len(accepted) == 6  # each on a fresh connection: the closed ones were dropped, not retried into
    finally:
        gateway.stop()
        listener.close()


def test_no_listener_until_the_project_has_an_http_trigger(tmp_path, start_dev):
    import socket

    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "handler.py").write_text(PY_ECHO)
    (tmp_path / "functions.yaml").write_text(function("pyecho", "python3.11", "py/handler.py"))
    port = free_port()
    dev = start_dev("dev", "--gateway-port", str(port), cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    (tmp_path / "trigger.yaml").write_text(http_trigger("late", "pyecho", "late.test"))
    dev.wait_for_output("routes on http://127.0.0.1:%d" % port)
    assert get("http://127.0.0.1:%d" % port, "late.test", "/x").json()["path"] == "/x"


def test_on_the_hosts_network_the_gateway_records_its_calls_and_the_function_never_sees_its_mark(tmp_path, start_dev):
    """docker.network: host has no front door: the gateway reaches the container on the function's port itself,
    records each call, and sends no mark (a door would have taken it off; here nothing would)."""
    (tmp_path / ".kubeless-local.yaml").write_text("docker: {network: host}\n")
    (tmp_path / "handler.py").write_text(PY_ECHO)
    (tmp_path / "functions.yaml").write_text(
        function("pyecho", "python3.11", "handler.py") + "---\n" + http_trigger("a", "pyecho", "a.test", "echo")
    )
    dev, gateway = start(start_dev, tmp_path, "docker")
    assert "docker network: host" in dev.output()
    for n in range(3):
        answer = get(gateway, "a.test", "/echo?n=%d" % n)
        assert answer.status_code == 200, answer.text
        assert "x-kubeless-local-source" not in answer.json()["headers"]
        assert answer.json()["headers"]["x-forwarded-host"] == "a.test"

    def recorded():
        return json.loads(cli("history", "pyecho", "-o", "json", cwd=tmp_path, check=True).stdout)

    dev.wait_until(lambda: len(recorded()) == 3, "the three gateway calls recorded", timeout=10)
    rows = recorded()
    assert [(row["source"], row["trigger"], row["path"], row["status"]) for row in rows] == [
        ("gateway", "a", "/", 200)
    ] * 3

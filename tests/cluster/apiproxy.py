"""A loopback TLS proxy in front of the API server for the Kubeless v1.0.8 controller on Kubernetes >= 1.22.

The controller reads its CRD through apiextensions.k8s.io/v1beta1 at start-up and deletes Deployments
through extensions/v1beta1, both removed in 1.22 (a 404 there makes it exit, or silently keep the
Deployment). The proxy serves those two paths from their current versions and passes everything else
through unchanged, the client's own token included (the proxy holds no credential). Watches stream.
"""

import http.client
import json
import re
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

# (method, removed path, its current path, the apiVersion the old client expects back)
REWRITES = [
    (
        "GET",
        re.compile(r"^/apis/apiextensions\.k8s\.io/v1beta1/(customresourcedefinitions/[^/?]+)(\?.*)?$"),
        r"/apis/apiextensions.k8s.io/v1/\1\2",
        ("apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1"),
    ),
    (
        "DELETE",
        re.compile(r"^/apis/extensions/v1beta1/(namespaces/[^/]+/deployments/[^/?]+)(\?.*)?$"),
        r"/apis/apps/v1/\1\2",
        ("apps/v1", "extensions/v1beta1"),
    ),
]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer"}


def rewrite(method: str, path: str):
    """(the path to ask upstream, (upstream apiVersion, apiVersion to answer) or None)."""
    for verb, pattern, replacement, versions in REWRITES:
        if method == verb and pattern.match(path):
            return pattern.sub(replacement, path), versions
    return path, None


class Proxy:
    """Listens on 127.0.0.1 (a free port unless given) with its own certificate; forwards to `upstream`."""

    def __init__(self, upstream: str, upstream_ca: str, cert: str, key: str, port: int = 0):
        target = urlparse(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 443
        self.upstream_tls = ssl.create_default_context(cafile=upstream_ca)
        self.rewritten: list = []  # (method, path) of each request served from a current version
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the test reads `rewritten`, not a log
                pass

            def do_request(self):
                proxy.forward(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_request  # what client-go sends

        class Server(socketserver.ThreadingMixIn, HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "Proxy":
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def forward(self, handler: BaseHTTPRequestHandler):
        path, versions = rewrite(handler.command, handler.path)
        if versions:
            self.rewritten.append((handler.command, handler.path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        if versions:  # the answer is rewritten as a whole: JSON, not protobuf
            headers["Accept"] = "application/json"
            headers.pop("Accept-Encoding", None)
        answered = [False]  # set once the status line went out: a failure after it only closes the connection
        upstream = http.client.HTTPSConnection(
            self.upstream_host, self.upstream_port, context=self.upstream_tls, timeout=600
        )
        try:
            upstream.request(handler.command, path, body=body, headers=headers)
            answer = upstream.getresponse()
            if versions:
                data = answer.read()
                try:
                    obj = json.loads(data)
                    if obj.get("apiVersion") == versions[0]:
                        obj["apiVersion"] = versions[1]
                        data = json.dumps(obj).encode()
                except ValueError:
                    pass  # not JSON (an error page): passed on as it is
                self.answer(handler, answer, [data], answered)
            else:
                self.answer(handler, answer, iter(lambda: answer.read1(65536), b""), answered)
        except (OSError, http.client.HTTPException) as exc:
            # the API server or the client went away (a watch ended, a shutdown): answer if still possible
            handler.close_connection = True
            if not answered[0]:
                try:
                    handler.send_error(502, "upstream: %s" % exc)
                except OSError:
                    pass
        finally:
            upstream.close()

    @staticmethod
    def answer(handler, answer, chunks, answered):
        """Status and headers as the API server sent them, the body re-chunked as it arrives (watches)."""
        answered[0] = True
        handler.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() not in ("date", "server"):
                handler.send_header(key, value)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for chunk in chunks:
            if chunk:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

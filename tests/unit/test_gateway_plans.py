"""The gateway's plans (emulator/gateway.py): a request head is decided once and the same head again reuses
that, under the same table, address and scheme only; and a function's answer head is read once. Driven with
the gateway's own Protocols on fake transports (the live gateway is tested in tests/e2e/test_gateway_e2e.py)."""

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubeless_local import http_routes
from kubeless_local import spec as specs
from kubeless_local.emulator import gateway as gateways
from kubeless_local.emulator.base import Reach
from kubeless_local.emulator.logs import LogHub

HEAD = b"GET /echo/deep?q=1 HTTP/1.1\r\nHost: a.test\r\nProxy: http://evil.test\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


class Transport:
    def __init__(self, peer="127.0.0.1"):
        self.written, self.peer, self.closed = [], peer, False

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    abort = close

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_reading(self):
        return True

    def get_extra_info(self, name, default=None):
        return (self.peer, 5000) if name == "peername" else default


def table(path="echo", host="a.test"):
    trigger = {
        "apiVersion": specs.API_VERSION,
        "kind": "HTTPTrigger",
        "metadata": {"name": "t"},
        "spec": {"function-name": "echo", "host-name": host, "path": path},
    }
    fn = specs.FunctionSpec(name="echo", runtime="python3.11", handler="h.f", origin="f.yaml", function="x")
    manifests = specs.Manifests(functions=[fn], http_triggers=[specs.parse_http_trigger(trigger, Path("t.yaml"))])
    return http_routes.build(manifests, {}).table


@pytest.fixture
def gateway():
    instance = SimpleNamespace(name="echo", url="http://127.0.0.1:1", port=1, server_port=1, state=None)
    supervisor = SimpleNamespace(
        wait_ready=lambda name, timeout: (instance, SimpleNamespace(timeout="30")),
        recorder=None,
        server_target=lambda instance: Reach(("127.0.0.1", 1)),
    )
    loop = asyncio.new_event_loop()
    made = gateways.Gateway(supervisor, LogHub(), Path("."), port=0)
    made.loop, made.table = loop, table()
    yield made
    loop.close()


def connected(gateway, peer="127.0.0.1", scheme="http"):
    client, upstream = gateways.Client(gateway, scheme), gateways.Upstream(("127.0.0.1", 1))
    client.connection_made(Transport(peer))
    upstream.transport = Transport()
    gateway.pool(upstream, "echo")
    return client, upstream


def request_ids(head):
    return [line for line in head.split(b"\r\n") if line.startswith(b"X-Request-ID:")]


def test_the_same_head_is_planned_once_and_each_request_sent_gets_its_own_id(gateway):
    client, upstream = connected(gateway)
    sent = []
    for _ in range(3):
        client.data_received(HEAD)
        sent.append(upstream.transport.written[-1])
        upstream.data_received(ANSWER)
    assert len(gateway.plans) == 1
    assert all(head.startswith(b"GET /?q=1 HTTP/1.1\r\n") and b"Proxy" not in head for head in sent)
    ids = [request_ids(head) for head in sent]
    assert all(len(found) == 1 and len(found[0]) == len(b"X-Request-ID: ") + 32 for found in ids)
    assert len({found[0] for found in ids}) == 3
    # apart from the id, the same bytes each time: what the first plan made
    assert len({head.replace(found[0], b"") for head, found in zip(sent, ids)}) == 1
    assert client.transport.written == [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"] * 3


def test_another_address_scheme_or_table_is_planned_anew(gateway):
    first, _ = connected(gateway)
    first.data_received(HEAD)
    plan = gateway.plan(HEAD, first)
    assert gateway.plan(HEAD, first) is plan
    other_peer, _ = connected(gateway, peer="127.0.0.2")
    assert gateway.plan(HEAD, other_peer) is not plan
    assert gateway.plan(HEAD, other_peer).decision.set_headers[1] == ("X-Real-IP", "127.0.0.2")
    https, _ = connected(gateway, scheme="https")
    assert gateway.plan(HEAD, https).decision.set_headers[5] == ("X-Forwarded-Proto", "https")
    gateway.table = table(path="other")  # a reload: the route moved
    moved = gateway.plan(HEAD, first)
    assert moved.decision.status == 404 and gateway.plan(HEAD, first) is moved
    gateway.https_port += 1  # the HTTPS listener came up on another port: redirects name it
    assert gateway.plan(HEAD, first) is not moved


def test_plans_kept_are_bounded_and_a_long_head_is_not_kept(gateway):
    client, _ = connected(gateway)
    for number in range(gateways.PLANS + 10):
        gateway.plan(b"GET /echo/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % number, client)
    assert len(gateway.plans) <= gateways.PLANS + 1
    long_head = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Pad: %s\r\n\r\n" % (b"x" * gateways.KEPT_HEAD)
    gateway.plan(long_head, client)
    assert not any(key[0] == long_head for key in gateway.plans)


def test_a_head_the_table_fails_to_decide_is_said_and_ends_only_its_connection(gateway, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a secret that cannot be read")

    failing, _ = connected(gateway)
    monkeypatch.setattr(gateway.table, "decide", broken)
    failing.data_received(HEAD)
    assert failing.closed
    assert "request from 127.0.0.1 failed: ValueError('a secret that cannot be read')" in [
        line.text for line in gateway.logs.tail("gateway")
    ]
    gateway.table = table()
    served, upstream = connected(gateway)
    served.data_received(HEAD)
    upstream.data_received(ANSWER)
    assert served.transport.written == [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]


@pytest.mark.parametrize(
    "answer, method, keep, expected",
    [
        (ANSWER[:-2], "GET", True, (200, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", ("length", 2), True, True)),
        (ANSWER[:-2], "GET", False, (200, None, ("length", 2), True, False)),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET", True, (204, None, ("none", 0), True, True)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", True, (200, None, ("none", 0), True, True)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
            True,
            (200, None, ("chunked", 0), True, True),
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", "GET", True, (200, None, ("until-close", 0), False, False)),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "GET", True, (100, b"", ("none", 0), True, True)),
    ],
)
def test_an_answer_head_read_once_is_read_as_a_fresh_reading_reads_it(answer, method, keep, expected):
    """answer_head keeps readings; each reading, kept or not, is what read_answer_head makes of the head."""
    fresh = gateways.read_answer_head(answer, method, keep, (), False)
    kept_reading = gateways.answer_head(answer, method, keep, (), False)
    assert kept_reading == fresh == gateways.answer_head(answer, method, keep, (), False)
    status, passed, framing, server_keeps, kept = expected
    assert (fresh[0], fresh[2], fresh[3], fresh[4]) == (status, framing, server_keeps, kept)
    if passed is not None:
        assert fresh[1] == passed
    assert fresh[1].endswith(b"Connection: close\r\n\r\n") == (not kept)


@pytest.mark.parametrize("keep", [True, False])
def test_an_http_1_0_client_kept_alive_is_told_so(keep):
    """`ab -k` through the gateway hung: its answer kept an HTTP/1.0 client's connection without saying so."""
    head = gateways.read_answer_head(ANSWER[:-2], "GET", keep, (), True)[1]
    assert head.endswith(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
    assert gateways.head_of(404, "", [], keep, True).endswith(
        b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n"
    )
    assert b"Connection" not in gateways.head_of(404, "", [], True, False)

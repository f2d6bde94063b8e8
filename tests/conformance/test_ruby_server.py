"""The Ruby runtime server (runtimes/ruby) run directly, without the engine: reload, worker pool,
timeouts, return values, the working folder, and the Gemfile install wrapper. Needs ruby3.1 +
ruby-sinatra + ruby-prometheus-client-mmap (Debian). It starts real servers, so it lives beside the
conformance suite, not in tests/unit."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from runtime_server import RuntimeServer
from sockets import read_to_end, refusing_port, taken_port
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "runtimes" / "ruby" / "kubeless.rb"
INSTALL = REPO / "runtimes" / "ruby" / "install.rb"
GEM_FIXTURE = REPO / "tests" / "fixtures" / "ruby" / "kl_greet"
RUBY = shutil.which("ruby3.1") or "ruby"


class Server(RuntimeServer):
    def __init__(self, folder, source, timeout="180", env=None):
        super().__init__([RUBY, str(SERVER)], folder, "handler.rb", source, "ruby3.1", timeout, env)


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(source, **kw):
        folder = tmp_path / f"fn{len(servers)}"
        folder.mkdir()
        server = Server(folder, source, **kw)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def started(server):
    assert server.control() == {"event": "ready", "generation": 0}
    return server


def metric(server, name, method):
    text = requests.get(server.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{method="{method}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_reload_keeps_last_good_code_and_reports_file_line(serve):
    s = started(serve('def handler(e, c)\n  "v1"\nend\n'))
    assert requests.get(s.url, timeout=5).text == "v1"
    s.file.write_text('def handler(e, c)\n  "v2"\nend\n')
    s.proc.send_signal(signal.SIGHUP)
    assert s.control(1) == {"event": "ready", "generation": 1}
    assert requests.get(s.url, timeout=5).text == "v2"

    s.file.write_text('def handler(e, c)\n  "v3" +\nend\n')
    s.proc.send_signal(signal.SIGHUP)
    failed = s.control(2)
    assert failed["event"] == "load-failed" and failed["generation"] == 2
    assert f"{s.file}:3" in failed["error"]
    assert requests.get(s.url, timeout=5).text == "v2"

    s.file.write_text("def other(e, c) = 1\n")
    s.proc.send_signal(signal.SIGHUP)
    failed = s.control(3)
    assert failed["event"] == "load-failed" and f"{s.file}:1" in failed["error"] and "'handler'" in failed["error"]
    assert requests.get(s.url, timeout=5).text == "v2"


def test_load_failure_at_start_exits_with_control_line(serve):
    s = serve('x = 1\nraise "broken at load"\n')
    failed = s.control()
    assert failed["event"] == "load-failed" and failed["generation"] == 0
    assert f"{s.file}:2" in failed["error"] and "broken at load" in failed["error"]
    assert s.proc.wait(10) == 1
    assert "Failed to load" not in s.log()  # the engine shows the error, once


def test_standalone_a_load_failure_is_the_servers_own_stderr_line(serve):
    # without the engine (the pod), no control line: the error goes to stderr
    s = serve('x = 1\nraise "broken at load"\n', env={"KUBELESS_LOCAL_CONTROL": ""})
    assert s.proc.wait(10) == 1
    assert wait_for(lambda: "broken at load" in s.log(), 10)
    assert f"Failed to load {s.file}: {s.file}:2" in s.log() and "@kubeless-local" not in s.log()


def test_timeout_kills_runaway_worker_and_server_keeps_serving(serve):
    s = started(serve('def handler(e, c)\n  return "fast" if e[:data] == "fast"\n  loop {}\nend\n', timeout="1"))
    before = set(s.workers())
    t0 = time.monotonic()
    r = requests.get(s.url, timeout=30)
    assert r.status_code == 408 and "Timeout while processing the function" in r.text
    assert time.monotonic() - t0 < 20  # stopped by the 1 s timeout, not left to the client's 30 s
    assert requests.post(s.url, data="fast", timeout=5).text == "fast"
    # the spinning worker is gone: no process is left burning CPU

    def all_idle():
        states = []
        for pid in s.workers():
            try:
                states.append(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass  # exited meanwhile
        return "R" not in states

    assert wait_for(all_idle), "a worker is still running"
    assert not before & set(s.workers())
    assert metric(s, "function_failures_total", "GET") == 1


# Ruby for a handler: the call says it arrived (a file in `dir`), then waits until `want` calls have
# arrived, at most 20 s; true when they did. Calls that all meet were in flight at the same time, which no
# clock on a loaded machine can show.
MEET = (
    "def meet(dir, want)\n"
    '  File.write(File.join(dir, "#{Process.pid}-#{rand(1 << 40)}"), "")\n'
    "  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20\n"
    "  sleep 0.01 until Dir.children(dir).size >= want || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline\n"
    "  Dir.children(dir).size >= want\n"
    "end\n"
)


def call_at_once(url, data, calls):
    """POST `data` `calls` times, each from its own thread, all at once; the answers' texts."""
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(requests.post(url, data=data, timeout=30).text))
        for _ in range(calls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_calls_run_in_parallel_and_state_stays_warm(serve, tmp_path):
    s = started(
        serve(
            MEET
            + '@n = 0\ndef handler(e, c)\n  return meet(e[:data], 4).to_s if e[:data] != ""\n  (@n += 1).to_s\nend\n'
        )
    )
    assert [requests.get(s.url, timeout=5).text for _ in range(3)] == ["1", "2", "3"]
    (tmp_path / "meet").mkdir()
    assert call_at_once(s.url, str(tmp_path / "meet"), 4) == ["true"] * 4  # the 4 calls were served at once


def test_exception_is_500_logged_and_counted(serve):
    s = started(serve('def handler(e, c)\n  raise ArgumentError, "bad input"\nend\n'))
    r = requests.post(s.url, data="x", timeout=5)
    assert r.status_code == 500
    # the log travels through a pipe and a reader thread: it may arrive after the answer
    assert wait_for(lambda: "ArgumentError: bad input" in s.log() and "handler.rb:2" in s.log()), s.log()
    assert metric(s, "function_calls_total", "POST") == 1
    assert metric(s, "function_failures_total", "POST") == 1
    assert requests.get(s.url + "/healthz", timeout=5).text == "OK"


def test_return_values_and_methods(serve):
    s = started(
        serve(
            "def handler(e, c)\n"
            "  case e[:data]\n"
            '  when "hash" then { "a" => 1 }\n'
            '  when "nil" then nil\n'
            '  when "int" then 204\n'
            '  when "pair" then [202, "accepted"]\n'
            '  else "#{e[:extensions][:request].request_method} #{e[:extensions][:request].path}"\n'
            "  end\n"
            "end\n"
        )
    )
    r = requests.post(s.url, data="hash", timeout=5)
    assert r.json() == {"a": 1} and r.headers["Content-Type"] == "application/json"
    assert requests.post(s.url, data="nil", timeout=5).text == ""
    assert requests.post(s.url, data="int", timeout=5).status_code == 204
    r = requests.post(s.url, data="pair", timeout=5)
    assert (r.status_code, r.text) == (202, "accepted")
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
        r = requests.request(method, s.url + "/a/b", timeout=5)
        assert (r.status_code, r.text) == (200, f"{method} /a/b")
        assert "X-Cascade" not in r.headers
    # curl -X PUT sends no Content-Length: WEBrick alone would answer 411
    c = socket.create_connection(("127.0.0.1", s.port))
    c.sendall(b"PUT /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    reply = read_to_end(c).decode()
    assert reply.startswith("HTTP/1.1 200") and reply.endswith("PUT /x")


def test_event_data_rules(serve):
    s = started(
        serve(
            'require "json"\n'
            "def handler(e, c)\n"
            "  d = e[:data]\n"
            '  return "binary:#{d.bytesize}" if d.is_a?(String) && d.encoding == Encoding::BINARY\n'
            "  JSON.generate([d.class.name, d])\n"
            "end\n"
        )
    )
    r = requests.post(s.url, data='{"a":1}', headers={"Content-Type": "application/json"}, timeout=5)
    assert r.json() == ["Hash", {"a": 1}]
    r = requests.post(s.url, data='{"a":1}', headers={"Content-Type": "application/json; charset=utf-8"}, timeout=5)
    assert r.json() == ["String", '{"a":1}']
    # cron triggers send Content-Type: application/json on a GET without body
    r = requests.get(s.url, headers={"Content-Type": "application/json"}, timeout=5)
    assert r.json() == ["String", ""]
    # binary sent as a form: reaches the function untouched (Sinatra would try to parse it)
    r = requests.post(
        s.url, data=b"a=%\xff&&", headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5
    )
    assert (r.status_code, r.text) == (200, "binary:6")
    # invalid JSON is the client's error (400), not a failure of the function, and not a call
    r = requests.post(s.url, data="oops", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "invalid JSON" in r.text
    assert metric(s, "function_failures_total", "POST") == 0


def run_install(deps, gemfile_text):
    deps.mkdir()
    (deps / "Gemfile").write_text(gemfile_text)
    env = {**os.environ, "KUBELESS_DEPS_FILE": str(deps / "Gemfile")}
    return subprocess.run([RUBY, str(INSTALL)], cwd=deps, env=env, capture_output=True, text=True, timeout=120)


def test_gemfile_with_local_gem_is_installed_and_loads(serve, tmp_path):
    gem_src = tmp_path / "kl_greet"
    shutil.copytree(GEM_FIXTURE, gem_src)
    built = subprocess.run(["gem", "build", "kl_greet.gemspec"], cwd=gem_src, capture_output=True, text=True)
    assert built.returncode == 0 and (gem_src / "kl_greet-0.1.0.gem").exists(), built.stderr
    deps = tmp_path / "deps"
    res = run_install(deps, f"source 'https://rubygems.org'\ngem 'kl_greet', path: '{gem_src}'\n")
    assert res.returncode == 0, res.stdout + res.stderr
    s = started(
        serve(
            'require "kl_greet"\ndef handler(e, c) = KlGreet.greet("ruby")\n',
            env={
                "KUBELESS_RUBY_DEPS": str(deps),
                "GEM_HOME": str(deps / "ruby" / "3.1.0"),
                "BUNDLE_GEMFILE": str(deps / "Gemfile"),
            },
        )
    )
    assert requests.get(s.url, timeout=5).text == "greetings, ruby"


def test_unreachable_gem_source_is_one_clear_line(tmp_path):
    # The fetch is refused like an unreachable RubyGems (a free port was once taken meanwhile by another
    # program's server, which asked for credentials).
    with refusing_port() as port:
        res = run_install(tmp_path / "deps", f"source 'http://127.0.0.1:{port}/'\ngem 'kl_not_on_this_machine'\n")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0] == (
        f"bundle install failed: cannot download gems from http://127.0.0.1:{port} "
        "(connection refused); only gems installed on this machine or given with path: can be used"
    )


def test_unreachable_gem_source_on_a_port_with_401_in_it_is_not_asked_for_credentials(tmp_path):
    # Bundler reads any "401" in a fetch error as "Authentication is required", the port in its URL included.
    with refusing_port(range(40100, 40200)) as port:
        res = run_install(tmp_path / "deps", f"source 'http://127.0.0.1:{port}/'\ngem 'kl_not_on_this_machine'\n")
    assert res.stderr.strip() == (
        f"bundle install failed: cannot download gems from http://127.0.0.1:{port} "
        "(connection refused); only gems installed on this machine or given with path: can be used"
    )


def test_gem_missing_locally_and_no_network_source_reports_bundler_error(tmp_path):
    res = run_install(tmp_path / "deps", "gem 'kl_not_on_this_machine'\n")
    assert res.returncode != 0 and "kl_not_on_this_machine" in res.stderr


def test_pool_size_bounds_workers(serve, tmp_path):
    code = MEET + 'def handler(e, c)\n  met = meet(e[:data], 2)\n  sleep 0.5\n  "#{Process.pid} #{met}"\nend\n'
    s = started(serve(code, env={"KUBELESS_RUBY_WORKERS": "2"}))
    (tmp_path / "meet").mkdir()
    t0 = time.monotonic()
    answers = call_at_once(s.url, str(tmp_path / "meet"), 4)
    elapsed = time.monotonic() - t0
    pids, met = {answer.split()[0] for answer in answers}, {answer.split()[1] for answer in answers}
    assert len(answers) == 4 and len(pids) == 2
    assert met == {"true"}  # two calls were served at once
    assert elapsed > 0.9  # never more than two: the 4 calls of 0.5 s took two rounds (a lower bound load cannot break)
    assert len(s.workers()) == 2


def test_per_call_isolation_resets_module_state(serve):
    s = started(serve("@n = 0\ndef handler(e, c) = (@n += 1).to_s\n", env={"KUBELESS_LOCAL_ISOLATION": "per-call"}))
    assert [requests.get(s.url, timeout=5).text for _ in range(3)] == ["1", "1", "1"]


def test_pool_reuses_the_most_recently_used_worker_before_a_fresh_one(tmp_path):
    """A worker forked ahead of demand (prefork, e.g. after a reload) waits behind the warm worker
    that just served: sequential calls keep their module state."""
    script = (
        "require_relative %r\n"
        "pool = WorkerPool.new(4) { |_| Process.pid }\n"
        "warm = pool.call(nil, 10)\n"  # no idle worker: one is forked for the call, then kept
        "pool.prefork\n"  # a fresh worker joins the idle list
        "puts [warm, pool.call(nil, 10), pool.call(nil, 10)].uniq.size\n"
        "pool.shutdown\n" % str(REPO / "runtimes" / "ruby" / "worker_pool.rb")
    )
    done = subprocess.run([RUBY, "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_port_in_use_is_an_exit_not_a_load_failure(tmp_path):
    with taken_port() as port:
        (tmp_path / "fn").mkdir()
        s = Server(tmp_path / "fn", 'def handler(e, c) = "x"\n', env={"FUNC_PORT": str(port)})
        assert s.proc.wait(20) == 4
    assert wait_for(lambda: f"cannot listen on 127.0.0.1:{port}" in s.log()), s.log()
    assert "@kubeless-local" not in s.log() and "Traceback" not in s.log()

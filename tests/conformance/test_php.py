"""PHP-specific vectors (contract §5 PHP column, §10 #16) and the places where the PHP runtime
deliberately differs from the legacy Kubeless image (see the README parity table).

The second half runs runtimes/php/kubeless.php directly (no engine): SIGHUP reload with the
control lines, composer dependencies from a path repository, shutdown without orphans."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from runtime_server import RuntimeServer
from sockets import taken_port
from waiting import wait_for

pytestmark = pytest.mark.language("php")

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "runtimes" / "php" / "kubeless.php"
GREETER = REPO / "tests" / "fixtures" / "php" / "greeter"
PHP = shutil.which("php8.2") or "php"


def group_cpu_seconds(pid):
    """CPU time used so far by the processes of `pid`'s process group (server, launcher, runners)."""
    pgid = os.getpgid(pid)
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_seconds(pid):
    try:
        fields = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- through the engine (fixture)


def test_exception_answers_500_not_legacy_200(function):
    # legacy: the Go proxy delivered php-fpm's error body with status 200 (§10 #16)
    f = function("raise")
    r = f.post(data="boom")
    assert r.status_code == 500
    assert r.text.strip() == "boom"  # the exception message, as the legacy controller wrote it
    assert f.metrics().get(("function_failures_total", "POST"), 0) == 1
    assert "RuntimeException: boom" in f.wait_for_log("RuntimeException: boom")
    assert f.post(data="fine").text == "ok"


def test_decoded_json_is_returned_as_json(function):
    # legacy wrote the return value into a Slim body and failed on arrays/objects
    r = function("echo").post(data='{"a": [1, 2]}', headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"a": [1, 2]}


def test_returned_psr7_response_sets_status_and_headers(function):
    # legacy: the proxy delivered the body only, always 200
    r = function("status").get()
    assert (r.status_code, r.headers["X-Custom"], r.text) == (201, "yes", "created")


def test_request_is_psr7_and_every_method_and_path_reaches_the_function(function):
    f = function("request")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        r = f.request(method, "/any/path?q=v", headers={"X-Test": "t"})
        assert (r.status_code, r.text) == (200, "t|v")


def test_module_state_is_warm_across_sequential_calls(function):
    # legacy forked per call (state lost); warm runners keep globals, as the Python/Ruby runtimes do
    f = function("state")
    assert [f.get().text for _ in range(3)] == ["1", "2", "3"]


def test_runaway_code_is_killed_408_counted_as_failure(function, backend_name):
    # set_time_limit() ignores sleep on Linux, so legacy never stopped a sleeping call
    f = function("spin", timeout=1)
    started = time.monotonic()
    r = f.get()
    assert r.status_code == 408 and "Timeout while processing the function" in r.text
    assert time.monotonic() - started < 20  # the spinning call was stopped, not left to the client's 30 s
    assert f.metrics().get(("function_failures_total", "GET"), 0) == 1  # as the legacy proxy counted
    assert f.get("/healthz").text == "OK"
    if backend_name == "process":
        before = group_cpu_seconds(f.instance.pid)
        time.sleep(1.0)  # a window to measure CPU use over (not a wait): a runner left spinning uses all of it
        assert group_cpu_seconds(f.instance.pid) - before < 0.5  # the spinning runner is gone


def test_sleeping_call_times_out_while_others_are_served(function):
    f = function("sleep", timeout=1)
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(f.post, data="5")
        quick = []
        # quick calls, three at a time, for as long as the slow one runs: some of them certainly
        # run while it holds a runner, and around its timeout
        for _ in range(200):
            if slow.done() and len(quick) >= 3:
                break
            batch = [pool.submit(f.post, data="0.05") for _ in range(3)]
            quick += [q.result().text for q in batch]
        assert quick == ["done"] * len(quick)
        assert slow.result().status_code == 408


# ---------------------------------------------------------------- the server run directly


class Server(RuntimeServer):
    def __init__(self, folder, source, timeout="180", env=None):
        super().__init__([PHP, str(SERVER)], folder, "handler.php", source, "php8.2", timeout, env)


@pytest.fixture
def server(tmp_path):
    started = []

    def start(source, **kw):
        s = Server(tmp_path, source, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


HELLO = '<?php\nfunction handler($event, $context) { return "v%d"; }\n'


def test_sighup_reloads_and_keeps_last_good_code(server):
    s = server(HELLO % 1)
    assert s.control(0) == {"event": "ready", "generation": 0}
    assert s.get().text == "v1"
    assert s.reload(HELLO % 2, 1) == {"event": "ready", "generation": 1}
    assert s.get().text == "v2"

    failed = s.reload('<?php\nfunction handler($event, $context) {\n  return "v3"\n}\n', 2)
    assert failed["event"] == "load-failed" and failed["generation"] == 2
    assert str(s.file) + ":4" in failed["error"] and "ParseError" in failed["error"]
    assert s.get().text == "v2"  # the last good code keeps serving

    # a fatal compile error (not catchable in PHP) is reported too
    dup = "<?php\nfunction handler($e, $c) { return 1; }\nfunction handler($e, $c) { return 2; }\n"
    failed = s.reload(dup, 3)
    assert failed["event"] == "load-failed" and "Cannot redeclare" in failed["error"]
    assert s.get().text == "v2"

    # a new version without the handler function is not taken either
    failed = s.reload("<?php\nfunction other($e, $c) { return 1; }\n", 4)
    assert failed["event"] == "load-failed" and "function 'handler' is not defined in handler.php" in failed["error"]
    assert s.get().text == "v2"

    assert s.reload(HELLO % 5, 5) == {"event": "ready", "generation": 5}
    assert s.get().text == "v5"


def test_load_error_at_start_exits_with_the_error(server):
    s = server("<?php\nthrow new RuntimeException('broken at load');\n")
    event = s.control(0)
    assert event["event"] == "load-failed" and event["generation"] == 0
    assert "handler.php:2" in event["error"] and "broken at load" in event["error"]
    assert s.proc.wait(10) != 0


def test_missing_function_at_start_is_a_load_failure(server):
    # as the other runtimes (legacy PHP started and answered 500 per call): the engine can then keep
    # the last good code serving after a handler typo, and `dev` says what is wrong at once
    s = server('<?php\nfunction other($event, $context) { return "x"; }\n')
    event = s.control(0)
    assert event["event"] == "load-failed" and event["generation"] == 0
    assert "function 'handler' is not defined in handler.php" in event["error"]
    assert s.proc.wait(10) != 0
    assert "function 'handler' is not defined" in s.log()


def test_standalone_a_load_failure_is_the_servers_own_stderr_line(server):
    # under the engine the control line alone carries it (the engine shows it, once); without it (the pod), stderr
    s = server("<?php\nthrow new RuntimeException('broken at load');\n")
    assert s.proc.wait(10) != 0
    assert wait_for(lambda: "broken at load" in s.log(), 10)
    assert all(line.startswith("@kubeless-local ") for line in s.log().splitlines() if "broken at load" in line)
    s = server("<?php\nthrow new RuntimeException('broken at load');\n", env={"KUBELESS_LOCAL_CONTROL": ""})
    assert s.proc.wait(10) != 0
    assert wait_for(lambda: "broken at load" in s.log(), 10)
    assert "handler.php:2" in s.log() and "@kubeless-local" not in s.log()


def test_a_file_without_its_php_tag_says_so(server):
    s = server('function handler($event, $context) { return "x"; }\n')
    event = s.control(0)
    assert event["event"] == "load-failed" and "the file has no <?php tag" in event["error"]
    assert s.proc.wait(10) != 0


def test_sigterm_leaves_no_process_behind(server):
    s = server(HELLO % 1)
    assert s.control(0)["event"] == "ready"
    s.get()
    family = s.descendants()
    assert len(family) >= 3  # launcher, zygote, runner(s)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(10) == 0
    wait_for(lambda: not any(Path("/proc", str(p)).exists() for p in family), 5, interval=0.05)
    assert not [p for p in family if Path("/proc", str(p)).exists()]


def test_runaway_call_dies_even_if_the_server_is_killed(server):
    # the runner's SIGALRM backstop stops a spinning call when nobody is left to kill it
    s = server("<?php\nfunction handler($e, $c) { while (true) {} }\n", timeout="1")
    assert s.control(0)["event"] == "ready"
    with ThreadPoolExecutor(1) as pool:
        runners = s.descendants()
        before = {pid: cpu_seconds(pid) for pid in runners}
        pending = pool.submit(requests.get, s.url, timeout=10)
        # the call runs: a runner burns CPU
        assert wait_for(lambda: any(cpu_seconds(pid) - before[pid] > 0.1 for pid in runners))
        family = s.descendants()
        s.proc.kill()
        with pytest.raises(requests.RequestException):
            pending.result()
    wait_for(lambda: not any(Path("/proc", str(p)).exists() for p in family), 15, interval=0.1)
    assert not [p for p in family if Path("/proc", str(p)).exists()]


def test_composer_dependencies_from_a_path_repository(server, tmp_path):
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "composer.json").write_text(
        json.dumps(
            {
                "require": {"kubeless-local/greeter": "*"},
                "repositories": [
                    {"type": "path", "url": str(GREETER), "options": {"symlink": False}},
                    {"packagist.org": False},
                ],
            }
        )
    )
    env = {**os.environ, "COMPOSER_ALLOW_SUPERUSER": "1", "COMPOSER_HOME": str(tmp_path / "composer-home")}
    # the catalog's process.install, run in {deps}
    done = subprocess.run(
        ["composer", "install", "--no-interaction", "--no-progress"],
        cwd=deps,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (deps / "vendor" / "autoload.php").is_file()

    # legacy functions require vendor/autoload.php themselves: it resolves through the include path
    source = (
        "<?php\nrequire_once 'vendor/autoload.php';\nuse KubelessLocal\\Greeter\\Greeter;\n"
        "function handler($event, $context) { return Greeter::greet('php'); }\n"
    )
    s = server(source, env={"KUBELESS_PHP_DEPS": str(deps)})
    assert s.control(0)["event"] == "ready", s.log()
    assert s.get().text == "greetings, php"
    # and the runtime includes the autoloader itself
    plain = "<?php\nfunction handler($event, $context) { return \\KubelessLocal\\Greeter\\Greeter::greet('x'); }\n"
    assert s.reload(plain, 1)["event"] == "ready"
    assert s.get().text == "greetings, x"


def titled(server, title):
    """Pids of the server's processes whose title (cli_set_process_title) starts with `title`."""
    found = []
    for pid in server.descendants():
        try:
            if Path("/proc", str(pid), "cmdline").read_bytes().startswith(title.encode()):
                found.append(pid)
        except OSError:
            pass
    return found


def waiting_for_a_call(pid):
    """The runner blocks reading its socket: it has connected and said hello (kl_connect)."""
    try:
        wchan = Path("/proc", str(pid), "wchan").read_text()
    except OSError:
        return False
    return "poll" in wchan or "unix_stream" in wchan


def test_a_runner_that_connects_late_waits_behind_the_warm_one(server):
    """A runner forked on demand that connects after the call it was forked for was served by the
    warm runner must not take the next call: sequential calls keep their module state."""
    s = server(
        "<?php\n$n = 0;\nfunction handler($e, $c) { global $n; usleep((int) $e->data); return (string) ++$n; }\n",
        env={"KUBELESS_LOCAL_WORKERS": "1"},
    )
    assert s.control(0)["event"] == "ready"
    assert s.get().text == "1"
    [zygote] = titled(s, "kubeless-php zygote")
    os.kill(zygote, signal.SIGSTOP)  # the fork asked for below waits
    try:
        with ThreadPoolExecutor(2) as pool:
            # two calls at once: one waits in the queue, so the server asks the zygote for a runner
            calls = [pool.submit(requests.post, s.url, data="300000", timeout=10) for _ in range(2)]
            assert sorted(c.result().text for c in calls) == ["2", "3"]  # both served by the warm runner
    finally:
        os.kill(zygote, signal.SIGCONT)
    assert wait_for(lambda: len(titled(s, "kubeless-php runner")) == 2)  # the late runner exists...
    assert wait_for(lambda: all(waiting_for_a_call(pid) for pid in titled(s, "kubeless-php runner")))  # ...and is idle
    assert s.get().text == "4"


def test_client_errors_are_400_and_not_function_failures(server):
    s = server('<?php\nfunction handler($event, $context) { return "ok"; }\n')
    assert s.control(0)["event"] == "ready"
    r = requests.post(s.url, data="oops", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "invalid JSON" in r.text
    for request in (
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-T\xffst: v\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Test: \x01\r\nConnection: close\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(request)
            assert c.recv(4096).startswith(b"HTTP/1.1 400 "), request
    metrics = s.get("/metrics").text
    assert "function_calls_total{" not in metrics and "function_failures_total{" not in metrics
    assert s.get().text == "ok"  # the runners are all still there
    assert 'function_failures_total{method="GET"} 0' in s.get("/metrics").text


def test_port_in_use_is_an_exit_not_a_load_failure(server):
    with taken_port() as port:
        s = server(HELLO % 1, env={"FUNC_PORT": str(port)})
        assert s.proc.wait(20) == 4
    assert f"cannot listen on 127.0.0.1:{port}" in s.log()
    assert "load-failed" not in s.log()

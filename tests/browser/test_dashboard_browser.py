"""The dashboard in a real browser against a real `dev`: live function states through a save and a syntax
error, the log filter kept in the URL, recorded calls (live rows, a call's detail, replay as recorded and edited
with the diff, the status filter), a call saved as a pytest test that passes, each function's metrics, the trigger graph, the guard's answers, the login cookie, requests that stay on
127.0.0.1, the event stream resumed with Last-Event-ID, an accessibility scan, and a screenshot of each view."""

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import ARTIFACTS, Session, wait_live
from waiting import wait_until

from kubeless_local.dashboard.guard import COOKIE

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
VIEWS = ["functions", "logs", "invocations", "cron", "emit", "topics", "metrics", "graph"]


def row(page, name="hello"):
    return page.locator("tr[data-function=%s]" % name)


def wait_ready(page, name="hello"):
    row(page, name).locator(".state-Ready").wait_for(timeout=120_000)
    return int(row(page, name).locator("[data-testid=generation]").inner_text())


def cookie_of(page):
    return next(c for c in page.context.cookies() if c["name"] == COOKIE)


def ask(session, path, headers=None, method="GET", cookie=None):
    """(status, body) of one request to the session's dashboard; Host is the dashboard's unless given."""
    connection = http.client.HTTPConnection("127.0.0.1", session.port, timeout=10)
    sent = {"Host": "127.0.0.1:%d" % session.port, **(headers or {})}
    if cookie:
        sent["Cookie"] = "%s=%s" % (COOKIE, cookie)
    try:
        connection.putrequest(method, path, skip_host=True)
        for name, value in {**sent, "Content-Length": "0"}.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_a_save_shows_reloading_then_ready_with_the_next_generation(page, project):
    generation = wait_ready(page)
    saved = time.monotonic()
    handler = project / "handler.py"
    handler.write_text(handler.read_text().replace("hello called", "hello v2 called"))
    trail = row(page).locator("[data-testid=trail]")
    ready = "Ready (gen %d)" % (generation + 1)
    # the engine publishes Reloading as the save is taken (the page applies it at once, however quick the
    # reload), then Ready once the next generation serves; the generation cell may show the new generation while
    # the row still says Reloading, so wait for the Ready of the next generation itself
    wait_until(lambda: trail.inner_text().split(" → ")[-1] == ready, "the next generation Ready", timeout=30)
    print("the page showed %s %.2f s after the save" % (ready, time.monotonic() - saved))
    steps = trail.inner_text().split(" → ")
    # never Ready with the old generation once Reloading was shown
    reloading = steps.index("Reloading (gen %d)" % generation)
    assert reloading > steps.index("Ready (gen %d)" % generation), steps
    assert all(step.startswith("Reloading") for step in steps[reloading:-1]), steps
    assert row(page).locator(".state-Ready").count() == 1


def test_a_syntax_error_shows_compile_error_with_the_file_and_line(page, project):
    wait_ready(page)
    (project / "handler.py").write_text("def hello(event, context):\n    return 1\n\ndef broken(:\n    pass\n")
    problem = page.locator("[data-testid=problem]")
    problem.wait_for(timeout=30_000)
    assert "hello: CompileError at handler.py:4" in problem.locator("h2").inner_text()
    assert "SyntaxError" in problem.locator("pre.error").inner_text()
    assert row(page).locator(".state-CompileError").count() == 1


def test_the_log_filter_survives_a_reload_through_the_url(page, session):
    wait_ready(page)
    for word in ("apple", "banana"):
        status, _ = call_function(session, word)
        assert status == 200
    page.goto(session.base + "/?view=logs")
    page.get_by_label("Function").select_option("hello")
    page.get_by_label("Filter (regular expression)").fill("ban+ana")
    log = page.locator("[data-testid=log]")
    wait_until(lambda: "banana" in log.inner_text(), "the filtered line shown", timeout=30)
    assert "apple" not in log.inner_text()
    assert "q=ban%2Bana" in page.url and "fn=hello" in page.url
    page.reload()
    assert page.get_by_label("Filter (regular expression)").input_value() == "ban+ana"
    wait_until(lambda: "banana" in log.inner_text(), "the filtered line shown after the reload", timeout=30)
    assert "apple" not in log.inner_text()


def call_function(session, data):
    """Call `hello` from the dashboard's own API (as the Emit view does): (status, answer)."""
    cookie = session.cookie
    connection = http.client.HTTPConnection("127.0.0.1", session.port, timeout=30)
    body = json.dumps({"data": data})
    headers = {"Cookie": "%s=%s" % (COOKIE, cookie), "Content-Type": "application/json"}
    connection.request("POST", "/api/functions/hello/call", body, headers)
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


@pytest.fixture(autouse=True)
def session_cookie(request):
    """The session's cookie for requests made outside the browser (taken from a logged-in tab)."""
    if "page" in request.fixturenames:
        session = request.getfixturevalue("session")
        session.cookie = cookie_of(request.getfixturevalue("page"))["value"]


def test_the_login_link_sets_the_cookie_and_leaves_no_token_in_the_url(page, session):
    cookie = cookie_of(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["domain"] == "127.0.0.1"
    assert "token" not in page.url
    assert ask(session, urlsplit(session.login)._replace(scheme="", netloc="").geturl())[0] == 401  # spent


def test_the_guard_answers_401_and_403_in_a_real_session(page, session):
    secret = cookie_of(page)["value"]
    assert ask(session, "/api/state")[0] == 401
    assert ask(session, "/")[0] == 401
    assert ask(session, "/api/state", {"Host": "evil.example:%d" % session.port}, cookie=secret)[0] == 403
    assert ask(session, "/api/cron/nightly", {"Origin": "https://evil.example"}, "POST", secret)[0] == 403
    assert ask(session, "/api/state", {"Sec-Fetch-Site": "cross-site"}, cookie=secret)[0] == 403
    assert ask(session, "/api/state", cookie=secret)[0] == 200


def test_a_fresh_browser_without_the_link_gets_401(browser, session):
    context = browser.new_context()
    try:
        answer = context.new_page().goto(session.base + "/")
        assert answer.status == 401
    finally:
        context.close()


def test_every_request_of_the_page_goes_to_127_0_0_1(page, session):
    wait_ready(page)
    for view in VIEWS:
        page.goto(session.base + "/?view=" + view)
        wait_live(page, session)
    hosts = {urlsplit(url).hostname for url in page.requests}
    assert hosts == {"127.0.0.1"}, page.requests
    assert any(url.endswith("/api/events?after=%s" % url.rsplit("=", 1)[-1]) for url in page.requests)


def test_function_output_is_shown_as_text_never_as_html(page, session):
    wait_ready(page)
    page.goto(session.base + "/?view=emit")
    call = page.locator("form", has=page.get_by_role("heading", name="Call a function over HTTP"))
    call.get_by_label("Data", exact=True).fill("<i>x</i>")
    call.get_by_role("button", name="Call").click()
    body = page.get_by_label("answer body")
    body.wait_for(timeout=30_000)
    assert body.inner_text() == "<b>hello</b> <i>x</i>"
    assert body.locator("b, i").count() == 0


def read_events(response, count):
    """The next `count` events of a server-sent stream: (id, kind, data)."""
    events, fields = [], {}
    while len(events) < count:
        line = response.fp.readline().decode().rstrip("\n")
        if line == "":
            if "event" in fields:
                events.append((int(fields.get("id", 0)), fields["event"], fields.get("data")))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def open_stream(session, cookie, last_event_id):
    connection = http.client.HTTPConnection("127.0.0.1", session.port, timeout=30)
    headers = {"Cookie": "%s=%s" % (COOKIE, cookie), "Last-Event-ID": str(last_event_id)}
    connection.request("GET", "/api/events", headers=headers)
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


def log_texts(events):
    return [json.loads(data)["text"] for _, kind, data in events if kind == "log"]


def read_until(response, word):
    """Events of the stream up to the log line that holds `word` (the socket's timeout bounds the wait)."""
    events = []
    while not any(word in text for text in log_texts(events)):
        events += read_events(response, 1)
    return events


def test_a_stream_resumed_with_last_event_id_gets_each_missed_event_exactly_once(page, session):
    wait_ready(page)
    secret = session.cookie
    status = json.loads(ask(session, "/api/state", cookie=secret)[1])
    connection, response = open_stream(session, secret, status["last_id"])
    call_function(session, "one")
    seen = read_until(response, "with one")
    connection.close()
    for word in ("two", "three", "four"):  # printed while no stream is open
        call_function(session, word)
    connection, response = open_stream(session, secret, seen[-1][0])
    call_function(session, "five")
    resumed = read_until(response, "with five")
    connection.close()
    ids = [event_id for event_id, _, _ in seen + resumed]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # consecutive: none missed, none twice
    called = [text.split("with ")[1] for text in log_texts(seen + resumed) if "hello called with" in text]
    assert called == ["one", "two", "three", "four", "five"]


def detail_view(session):
    """The Invocations view showing the newest recorded call (one is made if there is none)."""
    stored = lambda: json.loads(ask(session, "/api/invocations?limit=1", cookie=session.cookie)[1])  # noqa: E731
    if not stored():
        call_function(session, "for the detail")
    wait_until(stored, "the call stored", timeout=30)
    return "invocations&id=" + stored()[0]["id"]


def test_no_serious_or_critical_accessibility_violation_in_any_view(page, session):
    wait_ready(page)
    script = "/__test__/axe.min.js"  # served to the page from its own origin, as the CSP allows
    page.route(session.base + script, lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"))
    found = {}
    for view in [*VIEWS, detail_view(session)]:
        page.goto(session.base + "/?view=" + view)
        wait_live(page, session)
        if "&id=" in view:
            page.get_by_role("button", name="Replay as recorded").click()
            page.locator("[data-testid=replay-diff]").wait_for(timeout=30_000)
        page.add_script_tag(url=session.base + script)
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[view] = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in bad]
    assert found == {}


def test_each_view_is_saved_as_a_screenshot(page, session):
    wait_ready(page)
    call_function(session, "from the screenshot test")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for view in [*VIEWS, detail_view(session)]:
        page.goto(session.base + "/?view=" + view)
        wait_live(page, session)
        if view == "logs":
            page.locator("[data-testid=log]", has_text="from the screenshot test").wait_for()
        if "&id=" in view:
            page.locator("[data-testid=invocation-detail]").wait_for(timeout=30_000)
            view = "invocation-detail"
        path = ARTIFACTS / ("dashboard-%s.png" % view)
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000


def kubeless_local(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "kubeless_local", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_dashboard_command_opens_a_new_login_link_for_the_running_session(browser, session, project):
    done = kubeless_local("dashboard", "--no-browser", cwd=project)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith(session.base + "/?token=") and link != session.login
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(link)
        wait_live(tab, session)
        assert "token" not in tab.url
    finally:
        context.close()


def test_a_read_only_session_shows_but_refuses_actions(browser, project):
    started = Session(project, "--read-only")
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(started.login)
        wait_live(tab, started, "read-only · live")
        tab.goto(started.base + "/?view=cron")
        assert tab.get_by_role("button", name="Fire nightly now").is_disabled()
        secret = cookie_of(tab)["value"]
        assert ask(started, "/api/cron/nightly", method="POST", cookie=secret)[0] == 403
    finally:
        context.close()
        started.stop()


def test_no_dashboard_serves_none_and_the_command_says_so(project):
    started = Session(project, "--no-dashboard", wait_for="Watching")
    try:
        assert "Dashboard:" not in started.output()
        done = kubeless_local("dashboard", "--no-browser", cwd=project)
        assert done.returncode == 2 and "serves no dashboard" in done.stderr and "Traceback" not in done.stderr
    finally:
        started.stop()


def test_a_dead_letter_replayed_from_the_page_is_delivered(page, session, project):
    flag = project.parent / "fail-flag"
    flag.write_text("")
    wait_ready(page)
    page.goto(session.base + "/?view=emit")
    wait_live(page, session)
    publish = page.locator("form", has=page.get_by_role("heading", name="Publish an event (Kafka or NATS)"))
    publish.get_by_label("Topic").fill("orders")
    publish.get_by_label("Content type").fill("text/plain")
    publish.get_by_label("Data", exact=True).fill("fail")
    publish.get_by_role("button", name="Publish").click()
    fanout = page.get_by_label("fan-out")
    wait_until(
        lambda: fanout.count() and "dead-lettered" in fanout.inner_text(),
        lambda: "the fan-out shows the dead letter (the form shows %r)" % publish.inner_text(),
    )
    flag.unlink()
    page.goto(session.base + "/?view=topics")
    wait_live(page, session)
    page.get_by_role("button", name="Replay all of orders").click()
    page.get_by_role("heading", name="Dead letters (0)").wait_for(timeout=30_000)
    page.goto(session.base + "/?view=logs&fn=hello&q=with+fail")
    log = page.locator("[data-testid=log]")
    wait_until(lambda: log.inner_text().count("hello called with fail") == 2, "the replayed event delivered")


def invocation_rows(page):
    return page.locator("[data-testid=invocation]")


def open_invocations(page, session, query=""):
    page.goto(session.base + "/?view=invocations" + query)
    wait_live(page, session)


def test_a_call_adds_a_row_live_and_its_detail_shows_request_answer_and_log_lines(page, session):
    wait_ready(page)
    open_invocations(page, session)
    before = invocation_rows(page).count()
    sent = time.monotonic()
    assert call_function(session, "<i>apple</i>")[1]["status"] == 200
    wait_until(lambda: invocation_rows(page).count() == before + 1, "a row for the call", timeout=30)
    print("the row showed %.3f s after the call returned" % (time.monotonic() - sent))
    newest = invocation_rows(page).first
    assert "hello" in newest.inner_text() and newest.locator("[data-testid=status]").inner_text() == "200"
    newest.get_by_role("link").click()
    detail = page.locator("[data-testid=invocation-detail]")
    detail.wait_for(timeout=30_000)
    assert "id=" in page.url
    assert detail.get_by_label("request body", exact=True).inner_text() == "<i>apple</i>"
    answer = detail.get_by_label("response body", exact=True)
    assert answer.inner_text() == "<b>hello</b> <i>apple</i>" and answer.locator("b, i").count() == 0
    # the lines the recorder kept for the call, as text (which lines it keeps is the recorder's, tested there)
    ident = newest.get_attribute("data-invocation")
    kept = json.loads(ask(session, "/api/invocations/" + ident, cookie=session.cookie)[1])["logs"]
    shown_lines = detail.get_by_label("the call's log lines").inner_text()
    assert shown_lines == ("\n".join(line["text"] for line in kept) or "(none)")
    assert detail.get_by_label("the call's log lines").locator("i").count() == 0
    assert detail.get_by_label("as kubeless-local call").inner_text().startswith("kubeless-local call hello --data")
    detail.get_by_label("Show response body as").select_option("hex")
    assert "<b>hello" in answer.inner_text() and "3c 62 3e" in answer.inner_text()  # "<b>" in hex


def test_replay_as_recorded_and_edited_adds_replay_rows_and_shows_the_diff(page, session):
    wait_ready(page)
    assert call_function(session, "apple")[1]["status"] == 200
    open_invocations(page, session)
    invocation_rows(page).first.get_by_role("link").click()
    detail = page.locator("[data-testid=invocation-detail]")
    detail.get_by_role("button", name="Replay as recorded").click()
    diff = page.locator("[data-testid=replay-diff]")
    diff.wait_for(timeout=30_000)
    assert "the same answer as the original" in diff.inner_text()
    replays = page.locator("[data-testid=invocation]", has_text="replay")
    wait_until(lambda: replays.count() == 1, "a replay row", timeout=30)
    detail.get_by_role("button", name="Edit and replay…").click()
    detail.get_by_label("Body", exact=True).fill("pear")
    detail.get_by_role("button", name="Replay edited").click()
    body_diff = diff.get_by_label("body diff")
    body_diff.wait_for(timeout=30_000)
    assert "the answer differs" in diff.inner_text()
    assert "-<b>hello</b> apple" in body_diff.inner_text() and "+<b>hello</b> pear" in body_diff.inner_text()
    assert diff.locator(".diff-add").inner_text() == "+<b>hello</b> pear"
    wait_until(lambda: replays.count() == 2, "a second replay row", timeout=30)
    diff.get_by_role("link").click()  # the replay's own record
    detail = page.locator("[data-testid=invocation-detail]")
    wait_until(lambda: "replay of" in detail.inner_text(), "the replay's record shown", timeout=30)
    assert detail.get_by_label("request body", exact=True).inner_text() == "pear"


def test_the_invocations_status_filter_survives_a_reload_through_the_url(page, session, project):
    (project.parent / "fail-flag").write_text("")
    wait_ready(page)
    assert call_function(session, "fine")[1]["status"] == 200
    assert call_function(session, "fail")[1]["status"] == 500
    open_invocations(page, session)
    wait_until(lambda: invocation_rows(page).count() >= 2, "both calls listed", timeout=30)
    page.get_by_label("Status").select_option("error")
    assert "status=error" in page.url
    statuses = lambda: invocation_rows(page).locator("[data-testid=status]").all_inner_texts()  # noqa: E731
    wait_until(lambda: statuses() == ["500"], "only the failed call listed", timeout=30)
    page.reload()
    wait_live(page, session)
    assert page.get_by_label("Status").input_value() == "error"
    wait_until(lambda: statuses() == ["500"], "only the failed call listed after the reload", timeout=30)


def test_the_metrics_view_shows_calls_errors_and_durations_live(page, session, project):
    (project.parent / "fail-flag").write_text("")
    wait_ready(page)
    page.goto(session.base + "/?view=metrics")
    wait_live(page, session)
    metrics = page.locator("tr[data-metrics=hello]")
    cell = lambda name: metrics.locator("[data-testid=%s]" % name).inner_text()  # noqa: E731
    wait_until(lambda: cell("calls") == "0", "no calls counted yet", timeout=30)
    for data in ("one", "two", "fail"):
        call_function(session, data)
    wait_until(lambda: (cell("calls"), cell("errors")) == ("3", "1"), "the calls counted live", timeout=30)
    wait_until(lambda: cell("recorded") == "3", "the calls recorded", timeout=30)
    assert cell("error-rate") == "33.3 %"
    assert cell("p50").endswith(" ms") and cell("p95").endswith(" ms")
    assert float(cell("p50").split()[0]) <= float(cell("p95").split()[0])


def test_the_trigger_graph_shows_each_trigger_to_its_functions_and_its_calls_live(page, session, project):
    wait_ready(page)
    page.goto(session.base + "/?view=graph")
    wait_live(page, session)
    cron, kafka = page.locator("tr[data-trigger='cron/nightly']"), page.locator("tr[data-trigger='kafka/orders']")
    assert cron.locator("[data-testid=edges]").inner_text() == "→ hello"
    assert cron.locator("[data-testid=recorded]").inner_text() == "0"
    assert kafka.locator("[data-testid=edges]").inner_text() == "→ hello" and "app=shop" in kafka.inner_text()
    assert "0 3 * * *" in cron.inner_text()
    page.goto(session.base + "/?view=cron")
    wait_live(page, session)
    page.get_by_role("button", name="Fire nightly now").click()
    page.get_by_label("fire result").wait_for(timeout=30_000)
    page.goto(session.base + "/?view=graph")
    wait_live(page, session)
    recorded = cron.locator("[data-testid=recorded]")
    wait_until(lambda: recorded.inner_text() == "1", "the cron run counted", timeout=30)
    manifests = project / "function.yaml"  # a trigger that selects nothing shows as such, live
    manifests.write_text(manifests.read_text().replace("matchLabels: {app: shop}", "matchLabels: {app: none}"))
    edges = kafka.locator("[data-testid=edges]")
    wait_until(lambda: edges.inner_text() == "no function selected", "the new selector shown", timeout=30)


def test_a_call_saved_as_a_pytest_test_passes_with_the_plugin(page, session, project):
    wait_ready(page)
    assert call_function(session, "apple")[1]["status"] == 200
    open_invocations(page, session)
    invocation_rows(page).first.get_by_role("link").click()
    detail = page.locator("[data-testid=invocation-detail]")
    shown = detail.get_by_label("pytest test")
    shown.wait_for(timeout=30_000)
    assert (
        "kubeless.call(" in shown.inner_text() and "assert response.text == '<b>hello</b> apple'" in shown.inner_text()
    )
    detail.get_by_role("button", name=re.compile(r"^Save as tests\/test_hello_\w+\.py$")).click()
    saved = detail.locator("[data-testid=saved-test]")
    saved.wait_for(timeout=30_000)
    path = Path(saved.inner_text().removeprefix("Saved as "))
    assert path.parent == project / "tests" and path.read_text().strip() == shown.inner_text().strip()
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project), str(path)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout + ran.stderr
    detail.get_by_role("button", name=re.compile(r"^Save as tests\/")).click()
    page.get_by_text("exists already").wait_for(timeout=30_000)  # never over the user's file

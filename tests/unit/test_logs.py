"""Log buffers stay bounded: per line, per function, and in the process backend's pump."""

from kubeless_local.emulator import logs
from kubeless_local.emulator.logs import LineSplitter, LogHub, cap_line


def test_a_long_line_is_cut_with_a_visible_marker():
    hub = LogHub()
    hub.emit("f", "x" * 5_000_000)
    (line,) = hub.tail("f")
    assert line.text == "x" * logs.MAX_LINE + " … [truncated 4,983,616 bytes]"
    assert cap_line("short") == "short"


def test_a_cut_inside_a_multibyte_character_stays_valid_text():
    text = cap_line("é" * 100, limit=5)
    assert text == "éé … [truncated 196 bytes]"


def test_each_function_keeps_at_most_max_bytes_oldest_dropped_first():
    hub = LogHub(max_bytes=100_000)
    for n in range(1000):
        hub.emit("big", "%04d" % n + "y" * 9_996)
    hub.emit("small", "kept")
    lines = hub.tail("big")
    assert sum(len(line.text) for line in lines) <= 100_000
    assert len(lines) == 10 and lines[-1].text.startswith("0999") and lines[0].text.startswith("0990")
    assert [line.text for line in hub.tail("small")] == ["kept"]


def test_the_line_count_is_bounded_too():
    hub = LogHub(keep=3)
    for n in range(10):
        hub.emit("f", str(n))
    assert [line.text for line in hub.tail("f")] == ["7", "8", "9"]
    assert [line.text for line in hub.tail("f", 2)] == ["8", "9"] and hub.tail("f", 0) == []


def test_the_splitter_never_holds_more_than_one_capped_line():
    splitter = LineSplitter(limit=1000)
    chunk = b"z" * 65536
    out = []
    for _ in range(800):  # 50 MB without a newline
        out += splitter.feed(chunk)
        assert len(splitter.pending) <= 1000
    out += splitter.feed(b"zz\nnext line\npartial")
    out += splitter.flush()
    assert out == ["z" * 1000 + f" … [truncated {800 * 65536 + 2 - 1000:,} bytes]", "next line", "partial"]
    assert splitter.flush() == []


def test_the_splitter_joins_lines_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == ["hello"]
    assert splitter.feed("ld \u00e9\n".encode()[:-2]) == []
    assert splitter.feed("\u00e9\n".encode()[-2:]) == ["world \u00e9"]


def test_a_long_control_line_stays_whole_and_parseable():
    control = b"@kubeless-local "
    message = control + b'{"event": "load-failed", "generation": 1, "error": "' + b"f" * 100_000 + b'"}'
    splitter = LineSplitter(limit=1000, control=control)
    assert splitter.feed(message + b"\n" + b"x" * 5000 + b"\n") == [
        message.decode(),
        "x" * 1000 + " … [truncated 4,000 bytes]",
    ]


def test_a_long_control_line_after_output_left_without_a_newline_is_the_output_and_the_load_error():
    # The function printed at load without a newline; its load error (a long traceback) followed on that line.
    from kubeless_local.emulator.base import Instance, State, handle_output

    control = b"@kubeless-local "
    error = "handler.js: " + "f" * 100_000
    message = control + b'{"event": "load-failed", "generation": 0, "error": "' + error.encode() + b'"}'
    (line,) = LineSplitter(limit=1000, control=control).feed(b"loading config..." + message + b"\n")
    hub = LogHub()
    instance = Instance(name="f", runtime="nodejs20", port=1)
    handle_output(instance, hub, line, "stdout")
    assert [line.text for line in hub.tail("f")] == ["loading config..."]
    assert (instance.state, instance.error) == (State.COMPILE_ERROR, error)


def test_the_process_backends_pump_caps_a_line_without_newline():
    import os
    import threading
    import types

    from kubeless_local.emulator.base import Instance
    from kubeless_local.emulator.process import ProcessBackend

    hub = LogHub()
    backend = ProcessBackend(hub)
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as out:
            for _ in range(80):  # 5 MB, no newline
                out.write(b"q" * 65536)

    writer = threading.Thread(target=write)
    writer.start()
    prepared = types.SimpleNamespace(map_paths=lambda text: text)
    backend._pump(Instance(name="f", runtime="python3.11", port=1), os.fdopen(read_end, "rb"), "stdout", prepared)
    writer.join()
    (line,) = hub.tail("f")
    assert line.text == "q" * logs.MAX_LINE + f" … [truncated {80 * 65536 - logs.MAX_LINE:,} bytes]"


def drained(q):
    lines = []
    while not q.empty():
        lines.append(q.get_nowait())
    return lines


def test_a_subscriber_that_falls_behind_misses_lines_and_is_told_how_many_where(monkeypatch):
    # A function printing faster than the terminal shows grew `dev` by its whole output (unbounded queues).
    monkeypatch.setattr(logs, "FOLLOW_LINES", 100)
    hub = LogHub()
    q = hub.subscribe()
    for i in range(150):
        hub.emit("fn", "line %d" % i)
    got = [q.get_nowait() for _ in range(30)]  # the reader catches up a little: not yet half way back
    hub.emit("fn", "line 150")
    got += [q.get_nowait() for _ in range(30)]  # now it is
    for i in range(151, 170):
        hub.emit("fn", "line %d" % i)
    rest = drained(q)
    texts = [line.text for line in got + rest]
    assert texts[:100] == ["line %d" % i for i in range(100)]
    assert texts[100].startswith("… 51 log lines not shown here") and (rest[40].function, rest[40].stream) == (
        "dev",
        "system",
    )
    assert texts[101:] == ["line %d" % i for i in range(151, 170)]


def test_a_reader_that_catches_up_after_the_lines_stop_is_told_at_once(monkeypatch):
    monkeypatch.setattr(logs, "FOLLOW_LINES", 10)
    hub = LogHub()
    q = hub.subscribe("fn")
    for i in range(25):
        hub.emit("fn", "line %d" % i)
    texts = [line.text for line in drained(q)]
    assert len(texts) == 11 and texts[-1].startswith("… 15 log lines not shown here")
    assert q.empty()


def test_the_bytes_a_subscriber_falls_behind_are_bounded_too(monkeypatch):
    monkeypatch.setattr(logs, "FOLLOW_BYTES", 1000)
    hub = LogHub()
    q = hub.subscribe()
    for _ in range(30):
        hub.emit("fn", "x" * 100)
    lines = drained(q)
    assert [len(line.text) for line in lines[:10]] == [100] * 10 and "20 log lines not shown" in lines[10].text
    assert q.bytes == 0


def test_a_test_capture_gets_every_line_however_far_behind(monkeypatch):
    monkeypatch.setattr(logs, "FOLLOW_LINES", 10)
    hub = LogHub()
    q = hub.subscribe("fn", bounded=False)
    for i in range(50):
        hub.emit("fn", "line %d" % i)
    assert [line.text for line in drained(q)] == ["line %d" % i for i in range(50)]

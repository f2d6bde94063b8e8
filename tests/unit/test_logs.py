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
    text = cap_line("é" * 10, limit=5)
    assert text.startswith("éé") and "[truncated 16 bytes]" in text


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
    assert out == ["z" * 1000 + " … [truncated {:,} bytes]".format(800 * 65536 + 2 - 1000), "next line", "partial"]
    assert splitter.flush() == []


def test_the_splitter_joins_lines_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == ["hello"]
    assert splitter.feed("ld \u00e9\n".encode()[:-2]) == []
    assert splitter.feed("\u00e9\n".encode()[-2:]) == ["world \u00e9"]

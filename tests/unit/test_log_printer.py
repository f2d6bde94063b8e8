"""`dev`'s log printer (commands/serving.py LogPrinter): every function's lines with its name as prefix, in order,
the lines that wait written in one go; a terminal slower than a function's prints misses lines (emulator/logs.py
Following) and says so, and `dev` does not grow meanwhile."""

import io
import sys
import threading
import time

from kubeless_local.commands import serving
from kubeless_local.emulator import logs
from kubeless_local.emulator.logs import LogHub


class SlowStream(io.StringIO):
    """A terminal: every write is counted."""

    writes = 0

    def write(self, text):
        SlowStream.writes += 1
        return super().write(text)


def test_lines_are_printed_in_order_with_their_function_and_waiting_ones_in_one_write(monkeypatch):
    stream = SlowStream()
    monkeypatch.setattr(sys, "stdout", stream)
    SlowStream.writes = 0
    hub = LogHub()
    printer = serving.LogPrinter(hub)
    for i in range(500):
        hub.emit("fn" if i % 2 else "other", "line %d\nits second line" % i if i == 7 else "line %d" % i)
    hub.emit("dev", "a notice", "system")
    printer.start()
    printer.close()
    printed = stream.getvalue().splitlines()
    assert printed[:3] == ["other    | line 0", "fn       | line 1", "other    | line 2"]
    assert printed[7:9] == ["fn       | line 7", "fn       | its second line"]
    assert printed[-1].startswith("dev      | ") and "a notice" in printed[-1] and len(printed) == 502
    assert SlowStream.writes < 20  # 501 lines waited: written in one go (a few writes), not one a line


def test_a_printer_that_falls_behind_says_how_many_lines_it_did_not_show(monkeypatch):
    monkeypatch.setattr(logs, "FOLLOW_LINES", 50)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    hub = LogHub()
    printer = serving.LogPrinter(hub)
    for i in range(80):  # printed to nobody yet: the printer's thread has not started
        hub.emit("fn", "line %d" % i)
    printer.start()
    printer.close()
    printed = stream.getvalue().splitlines()
    assert printed[:50] == ["fn       | line %d" % i for i in range(50)]
    assert printed[50].startswith("dev      | … 30 log lines not shown here") and len(printed) == 51


class BlockedStream(io.StringIO):
    """A terminal paused with Ctrl-S: a write waits until it is let go."""

    def __init__(self):
        super().__init__()
        self.let_go = threading.Event()

    def write(self, text):
        self.let_go.wait(30)
        return super().write(text)


def test_closing_does_not_wait_long_for_a_terminal_that_takes_nothing(monkeypatch):
    stream = BlockedStream()
    monkeypatch.setattr(sys, "stdout", stream)
    hub = LogHub()
    printer = serving.LogPrinter(hub)
    printer.start()
    hub.emit("fn", "a line the terminal does not take")
    started = time.monotonic()
    printer.close()
    waited = time.monotonic() - started
    stream.let_go.set()
    assert printer.written == 0 and waited < 1.5  # OUTPUT_PATIENCE, not the 2 s a progressing terminal gets


def test_a_write_not_taken_is_given_up_on():
    stream = BlockedStream()
    assert serving.without_waiting(lambda: stream.write("x"), 0.1) is False
    stream.let_go.set()
    assert serving.without_waiting(lambda: stream.write("y"), 5) is True

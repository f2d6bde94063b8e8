"""`serve`'s stop signals (commands/serving.py StopSignals): the first one stops `dev`/`run`, whatever the main thread
was doing when it came. With real processes: tests/e2e/test_stop_signals.py."""

import subprocess
import sys

SCRIPT = r"""
import gc, os, signal, sys
from kubeless_local.commands.serving import Stop, StopSignals

signals = StopSignals()

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # its handler runs here, in __del__, where Python drops what it raises
        for _ in range(1000):
            pass

Finalized()
gc.collect()
assert signals.received == signal.SIGINT, signals.received
try:
    signals.wait()
except Stop as stop:
    print("stopped by", stop.signum, flush=True)
"""


def test_a_stop_whose_exception_python_dropped_still_stops_the_wait():
    """A signal's handler runs in the main thread at its next bytecode, which may be in a __del__ or a weakref
    callback: there Python prints what it raises ("Exception ignored in …") and goes on. Seen once in ~100 `run`s
    stopped right after their first answer: the run then served on, ignoring every further Ctrl-C (the first stop
    was taken, so the later ones were the clean-up's to ignore)."""
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the wait went on after a stop signal whose exception was dropped") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped by %d\n" % 2
    assert "Exception ignored" in done.stderr  # the handler did run in __del__, as in the run that served on

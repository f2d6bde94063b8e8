"""The tests' own wait helper (tests/support/waiting.py): its pauses grow to their cap and stay there for
as long as a wait lasts (they once overflowed a float after ~1,000 looks: a 30-s wait failed at 20 s)."""

import itertools

from waiting import pauses


def test_the_pauses_double_from_5_ms_to_the_interval_and_stay_there_for_ever():
    seen = list(itertools.islice(pauses(0.02), 5000))
    assert seen[:4] == [0.005, 0.01, 0.02, 0.02]
    assert set(seen[3:]) == {0.02}

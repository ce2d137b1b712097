"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from remote_agent.worker import checkrun


@pytest.mark.parametrize(("status", "when", "verdict", "words"), [
    (0, "before", checkrun.PASSES, "already satisfied"),
    (0, "after", checkrun.PASSES, "verified"),
    (1 << 8, "before", checkrun.FAILS, "the command runs"),
    (3 << 8, "after", checkrun.FAILS, "ran, but the check still fails"),
    (9, "before", checkrun.ERROR, "killed by signal 9"),
    (None, "after", checkrun.ERROR, "timed out"),
])
def test_check_verdicts(status, when, verdict, words) -> None:
    got, _, text = checkrun._verdict(status, 5.0, when)
    assert got == verdict and words in text

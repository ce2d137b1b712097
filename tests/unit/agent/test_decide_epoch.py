"""The epoch rows of the start decision table (lifecycle.decide_start), pure: no processes."""

import pytest

from remote_agent.common import vocab
from remote_agent.jobs.decide import SUPERSEDE, decide_start

KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}


def job(status, epoch, acked_at=None):
    return {"job_id": "j1", "status": status, "acked_at": acked_at, "epoch": epoch}


@pytest.mark.parametrize("status", vocab.ACTIVE + vocab.TERMINAL)
def test_other_epoch_supersedes_an_active_or_unacknowledged_job(status: str) -> None:
    latest = job(status, "1:0")
    assert decide_start(latest, True, False, None, KEY, epoch="2:1") == (SUPERSEDE, latest, None)


@pytest.mark.parametrize("status", vocab.TERMINAL)
def test_other_epoch_after_an_acknowledged_job_just_starts(status: str) -> None:
    latest = job(status, "1:0", acked_at=1700000000)
    assert decide_start(latest, True, False, None, KEY, epoch="2:1") == (vocab.STARTED, None, None)


@pytest.mark.parametrize("stored, asked", [("1:0", "1:0"), (None, "2:1"), ("1:0", None), (None, None)])
def test_same_or_missing_epoch_keeps_the_old_rows(stored, asked) -> None:
    active, finished = job(vocab.RUNNING, stored), job(vocab.FAILED, stored)
    assert decide_start(active, True, False, None, KEY, epoch=asked) == (vocab.REATTACHED, active, None)
    assert decide_start(finished, True, False, None, KEY, epoch=asked) == (vocab.ADOPTED, finished, None)


def test_epoch_rows_need_resume_mode_and_a_non_strict_key() -> None:
    active = job(vocab.RUNNING, "1:0")
    assert decide_start(active, False, False, None, KEY, epoch="2:1") == (vocab.REATTACHED, active, None)
    assert decide_start(active, True, True, None, KEY, epoch="2:1") == (vocab.REATTACHED, active, None)
    finished = job(vocab.SUCCEEDED, "1:0", acked_at=1)
    assert decide_start(finished, True, True, None, KEY, epoch="2:1") == (vocab.KEPT, finished, None)


def test_no_job_with_an_epoch_starts() -> None:
    assert decide_start(None, True, False, None, None, "2:1") == (vocab.STARTED, None, None)

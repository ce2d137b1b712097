"""The start decision table (jobs/decide.py decide_start): every row, pure, no processes, no SQLite."""

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_STATE, AgentError
from remote_agent.jobs.decide import StartResult, decide_start


def job(status, acked_at=None, job_id="j1"):
    return {"job_id": job_id, "status": status, "acked_at": acked_at}


KEY = {"run_key": "k", "last_attempt_no": 3, "last_job_id": "j3"}
OVERRIDE = {"run_key": "k", "reason": "fixed input", "used_at": None}


def test_no_job_ever_starts() -> None:
    started = (vocab.STARTED, None, None)
    assert decide_start(None, resume=True, strict=False, override=None, key=None) == started
    assert decide_start(None, resume=False, strict=True, override=None, key=None) == started


@pytest.mark.parametrize("status", vocab.ACTIVE)
@pytest.mark.parametrize("resume", [True, False])
@pytest.mark.parametrize("strict", [True, False])
def test_active_job_is_reattached(status: str, resume: bool, strict: bool) -> None:
    latest = job(status)
    action, row, used = decide_start(latest, resume, strict, OVERRIDE, KEY)
    assert (action, row, used) == (vocab.REATTACHED, latest, None)


@pytest.mark.parametrize("status", vocab.TERMINAL)
def test_terminal_unacknowledged_is_adopted_in_resume_mode(status: str) -> None:
    latest = job(status)
    assert decide_start(latest, True, False, None, KEY) == (vocab.ADOPTED, latest, None)
    # adoption comes before strictness: the unacknowledged result is the one to report
    assert decide_start(latest, True, True, OVERRIDE, KEY) == (vocab.ADOPTED, latest, None)


def test_terminal_unacknowledged_without_resume_starts() -> None:
    assert decide_start(job(vocab.FAILED), False, False, None, KEY) == (vocab.STARTED, None, None)


def test_terminal_acknowledged_starts_a_new_attempt() -> None:
    latest = job(vocab.SUCCEEDED, acked_at=1700000000)
    assert decide_start(latest, True, False, None, KEY) == (vocab.STARTED, None, None)


def test_strict_terminal_is_kept() -> None:
    latest = job(vocab.SUCCEEDED, acked_at=1700000000)
    assert decide_start(latest, True, True, None, KEY) == (vocab.KEPT, latest, None)
    assert decide_start(job(vocab.FAILED), False, True, None, KEY) == (vocab.KEPT, job(vocab.FAILED), None)


def test_strict_with_a_valid_override_starts_and_uses_it() -> None:
    latest = job(vocab.SUCCEEDED, acked_at=1700000000)
    assert decide_start(latest, True, True, OVERRIDE, KEY) == (vocab.STARTED, None, OVERRIDE)
    # a cleaned key with an unlock runs too
    assert decide_start(None, False, True, OVERRIDE, KEY) == (vocab.STARTED, None, OVERRIDE)


def test_non_strict_start_never_consumes_an_override() -> None:
    latest = job(vocab.SUCCEEDED, acked_at=1700000000)
    assert decide_start(latest, True, False, OVERRIDE, KEY) == (vocab.STARTED, None, None)


def test_strict_key_that_was_cleaned_is_wrong_state() -> None:
    with pytest.raises(AgentError) as err:
        decide_start(None, True, True, None, KEY)
    assert err.value.code == EXIT_INVALID_STATE
    assert err.value.message == (
        "run_key already ran (attempt 3, job j3, since cleaned); unlock it to run again")


def test_start_result_existing_follows_the_action() -> None:
    assert not StartResult(vocab.STARTED, job(vocab.STARTING)).existing
    for action in (vocab.REATTACHED, vocab.ADOPTED, vocab.KEPT):
        assert StartResult(action, job(vocab.RUNNING)).existing

"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""


import pytest

from remote_agent.common import vocab
from remote_agent.jobs.decide import StartResult, decide_start
from remote_agent.jobs.liveness import REBOOTED

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process
KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}
OVERRIDE = {"run_key": "k", "reason": "checked: it did not finish", "used_at": None}
UNKNOWN_REASON = "supervisor (pid 7) was killed and the target (pid 8) has ended; exit status unknown"


def lost(reason=UNKNOWN_REASON, target_pid=8, exit_code=None, acked_at=None):
    return {"job_id": "j1", "status": vocab.LOST, "lost_reason": reason, "target_pid": target_pid,
            "exit_code": exit_code, "acked_at": acked_at}


# --- the decision table -------------------------------------------------------------------------


@pytest.mark.parametrize("acked_at", [None, 1700000000])
@pytest.mark.parametrize("strict", [False, True])
def test_unknown_outcome_is_returned_not_rerun(acked_at, strict) -> None:
    latest = lost(acked_at=acked_at)
    assert decide_start(latest, True, strict, None, KEY) == (vocab.UNKNOWN, latest, None)
    # rerun_unknown never bypasses strict: only an unlock does
    expected = (vocab.UNKNOWN, latest, None) if strict else (vocab.STARTED, None, None)
    assert decide_start(latest, True, strict, None, KEY, rerun_unknown=True) == expected


@pytest.mark.parametrize("strict", [False, True])
def test_unknown_outcome_with_an_unlock_starts_and_consumes_it(strict) -> None:
    assert decide_start(lost(), True, strict, OVERRIDE, KEY) == (vocab.STARTED, None, OVERRIDE)


def test_unknown_outcome_outside_resume_mode_keeps_orchesjob_behaviour() -> None:
    assert decide_start(lost(), False, False, None, KEY) == (vocab.STARTED, None, None)
    assert decide_start(lost(), False, True, None, KEY) == (vocab.KEPT, lost(), None)


def test_never_started_or_rebooted_lost_jobs_are_retried_as_before() -> None:
    for latest in (lost(target_pid=None), lost(reason=REBOOTED)):
        assert decide_start(latest, True, False, None, KEY) == (vocab.ADOPTED, latest, None)
        acked = dict(latest, acked_at=1)
        assert decide_start(acked, True, False, None, KEY) == (vocab.STARTED, None, None)


def test_unknown_is_an_action() -> None:
    assert vocab.UNKNOWN == "unknown" and vocab.UNKNOWN in vocab.ACTIONS
    assert StartResult(vocab.UNKNOWN, lost()).existing


# --- hosts --------------------------------------------------------------------------------------


# --- journal mode -------------------------------------------------------------------------------

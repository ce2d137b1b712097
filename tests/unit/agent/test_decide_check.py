"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from remote_agent.common import vocab
from remote_agent.jobs.decide import decide_start

KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}


OVERRIDE = {"run_key": "k", "reason": "fixed", "used_at": None}


def unknown_job():
    return {"job_id": "j1", "status": vocab.LOST, "target_pid": 42, "exit_code": None, "acked_at": None,
            "lost_reason": "supervisor (pid 41) was killed and the target (pid 42) has ended;"
                           " exit status unknown"}


# --- decide_start: the check row -----------------------------------------------------------
def test_a_check_decides_an_unknown_outcome() -> None:
    latest = unknown_job()
    assert decide_start(latest, True, False, None, KEY) == (vocab.UNKNOWN, latest, None)
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)
    # acknowledged or not, the same
    acked = dict(latest, acked_at=5)
    assert decide_start(acked, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)


def test_a_check_does_not_release_a_strict_unknown_outcome() -> None:
    latest = unknown_job()
    assert decide_start(latest, True, True, None, KEY, check=True) == (vocab.UNKNOWN, latest, None)
    # an unlock still does (and is consumed)
    assert decide_start(latest, True, True, OVERRIDE, KEY, check=True) == (vocab.STARTED, None, OVERRIDE)


@pytest.mark.parametrize("status", vocab.ACTIVE)
def test_a_check_never_bypasses_an_active_job(status: str) -> None:
    latest = {"job_id": "j1", "status": status, "acked_at": None}
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.REATTACHED, latest, None)


@pytest.mark.parametrize("status", vocab.TERMINAL)
def test_a_check_changes_nothing_else(status: str) -> None:
    """Unacknowledged results are adopted, strict keys kept: a check only decides unknown outcomes."""
    latest = {"job_id": "j1", "status": status, "acked_at": None, "lost_reason": "supervisor exited"}
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.ADOPTED, latest, None)
    acked = dict(latest, acked_at=3)
    assert decide_start(acked, True, True, None, KEY, check=True) == (vocab.KEPT, acked, None)
    assert decide_start(acked, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)

"""The epoch rows of the start decision table (jobs/decide.py decide_start), pure: no processes."""

import pytest

from remote_agent.common import vocab
from remote_agent.jobs.decide import SUPERSEDE, decide_start

KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}


TI = "dag/task/-1/run-1"


def retry(latest, epoch, task_instance=TI, strict=False):
    """decide_start for a resume start of ``task_instance`` in ``epoch`` (no unlock, no check)."""
    return decide_start(latest, True, strict, None, KEY, epoch=epoch, task_instance=task_instance)


def job(status, epoch, acked_at=None, task_instance=TI):
    return {"job_id": "j1", "status": status, "acked_at": acked_at, "epoch": epoch,
            "task_instance": task_instance}


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


# -- the retry rows: "acknowledged" means Airflow recorded the try's outcome (issue 17) ---------
# The operator acknowledges before Airflow commits the try's state; when that commit fails
# (api-server down, worker killed right after execute returned, heartbeat timeout), Airflow
# retries in the same clear epoch. A retry of a success must adopt it; a retry of a failure runs
# again (that is what Airflow asked for); a clear (new epoch) runs again in every case.
@pytest.mark.parametrize("acked_at", [None, 1700000000])
def test_a_retry_of_the_same_epoch_adopts_a_success_acknowledged_or_not(acked_at) -> None:
    latest = job(vocab.SUCCEEDED, "1:0", acked_at=acked_at)
    assert retry(latest, "1:0") == (vocab.ADOPTED, latest, None)


@pytest.mark.parametrize("status", [vocab.FAILED, vocab.ABORTED, vocab.CANCELLED])
def test_a_retry_of_the_same_epoch_reruns_an_acknowledged_failure(status: str) -> None:
    latest = job(status, "1:0", acked_at=1700000000)
    assert retry(latest, "1:0") == (vocab.STARTED, None, None)


@pytest.mark.parametrize("status", [vocab.FAILED, vocab.ABORTED])
def test_a_retry_of_the_same_epoch_adopts_an_unacknowledged_failure(status: str) -> None:
    latest = job(status, "1:0")
    assert retry(latest, "1:0") == (vocab.ADOPTED, latest, None)


def test_a_clear_reruns_an_acknowledged_success() -> None:
    latest = job(vocab.SUCCEEDED, "1:0", acked_at=1700000000)
    assert retry(latest, "2:1") == (vocab.STARTED, None, None)


@pytest.mark.parametrize("stored, asked", [(None, "1:0"), ("1:0", None), (None, None)])
def test_without_an_epoch_on_either_side_an_acknowledged_success_reruns(stored, asked) -> None:
    """The CLI and jobs of older providers keep the plain ack rule: no epoch, no Airflow retry."""
    latest = job(vocab.SUCCEEDED, stored, acked_at=1700000000)
    assert decide_start(latest, True, False, None, KEY, epoch=asked, task_instance=TI) == (
        vocab.STARTED, None, None)


@pytest.mark.parametrize("stored, asked", [(None, TI), (TI, None), ("dag/task/-1/run-2", TI)])
def test_another_task_instance_on_a_shared_key_reruns_an_acknowledged_success(stored, asked) -> None:
    """Another dag run that shares an explicit run key (same "0:0" epoch) is no retry: the
    acknowledged success is history and it runs anew, as before."""
    latest = job(vocab.SUCCEEDED, "0:0", acked_at=1700000000, task_instance=stored)
    assert decide_start(latest, True, False, None, KEY, epoch="0:0", task_instance=asked) == (
        vocab.STARTED, None, None)


def test_strict_keeps_an_acknowledged_success_of_the_same_epoch() -> None:
    latest = job(vocab.SUCCEEDED, "1:0", acked_at=1700000000)
    assert retry(latest, "1:0", strict=True) == (vocab.KEPT, latest, None)

"""The start decision table, pure (no I/O): ``decide_start`` and what it returns.

Every decision that could start a process is taken inside one ``BEGIN IMMEDIATE``
transaction (ops/start.py), so concurrent starters serialize on the database and exactly one
of them inserts; the partial unique index on active jobs makes a second active job for a key
impossible even if this code were wrong.
"""

from remote_agent.common.errors import wrong_state
from remote_agent.common.vocab import (
    ACTIVE,
    ADOPTED,
    KEPT,
    REATTACHED,
    STARTED,
    SUCCEEDED,
    UNKNOWN,
    outcome_unknown,
)

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


class StartResult(object):
    """The outcome of a start decision: what was done and the job it was done to."""

    def __init__(self, action, row, strict_override_used=False, superseded=None):
        # type: (str, Row, bool, Optional[Row]) -> None
        self.action = action
        self.row = row
        self.strict_override_used = strict_override_used
        #: the key's earlier job this new attempt replaced (epoch rows), as it was before
        self.superseded = superseded

    @property
    def existing(self):
        # type: () -> bool
        return self.action != STARTED


#: decide_start's word for the epoch rows (never a reply action: the reply says STARTED and
#: names the superseded job)
SUPERSEDE = "supersede"


#: the abort reason of a superseded job, and the rerun reason of the attempt that replaced it
SUPERSEDED_REASON = "superseded: the task was cleared in Airflow"


def decide_start(latest, resume, strict, override, key, rerun_unknown=False, epoch=None, check=False,
                 task_instance=None):
    # type: (Optional[Row], bool, bool, Optional[Row], Optional[Row], bool, Optional[str], bool, Optional[str]) -> Tuple[str, Optional[Row], Optional[Row]]
    """The start decision table, pure (no I/O): returns (action, job, override).

    ``latest`` is the key's latest job, already reconciled (None if it never ran or was
    cleaned); ``override`` the key's valid unlock (or None); ``key`` its run_keys row (None
    if it never ran). ``job`` is the existing job the action returns (None for STARTED);
    ``override`` is the unlock a STARTED attempt consumes (None if it consumes none).
    A job of another host (shared state dir) is never reconciled, so while it runs it is
    STARTING/RUNNING here and reattached like a local one.

    ============================  ======================  =====================================
    latest job                    flags                   result
    ============================  ======================  =====================================
    active or not acknowledged    resume, not strict,     SUPERSEDE: abort it if active, ack
    (not an unknown outcome),     request has an epoch    it, then start a new attempt
    stored epoch != request's
    STARTING / RUNNING            any                     REATTACHED to it
    LOST, outcome unknown (1)     resume, an unlock       STARTED, the unlock consumed
    LOST, outcome unknown (1)     resume, rerun_unknown,  STARTED
                                  not strict
    LOST, outcome unknown (1)     resume, the request     STARTED: the new attempt's check
                                  has a check, not strict decides (passes: SUCCEEDED, no run)
    LOST, outcome unknown (1)     resume otherwise        UNKNOWN: not run again (acked or not)
    terminal, not acknowledged    resume                  ADOPTED: its result counts
    SUCCEEDED, acknowledged,      resume, not strict,     ADOPTED: a retry of the same task
    stored epoch and task         the request has both    instance and clear epoch means
    instance == request's                                 Airflow never recorded the success
    terminal                      strict, no unlock       KEPT: its result stands
    none, but the key ran         strict, no unlock       error (exit 4): cleaned, unlock first
    none / terminal otherwise     strict with an unlock   STARTED, the unlock consumed
    none / terminal otherwise     -                       STARTED
    ============================  ======================  =====================================

    (1) ``outcome_unknown``: its target started, then supervisor and target ended with no exit
    status recorded (not a host reboot, not a supervisor that died before the target started).

    The epoch (``start``'s ``epoch``, stored on the job) changes whenever the task is cleared
    in Airflow: a job of another epoch belongs to a run the user has replaced. A job or a
    request without an epoch follows the other rows (older providers, the CLI).

    Why a SUCCEEDED job of the request's own task instance and epoch is adopted even when
    acknowledged (the ack is not proof that Airflow recorded the success): the
    operator acknowledges before Airflow commits the try's state, and that commit can fail
    (api-server down, worker killed after ``execute`` returned, a heartbeat timeout). Airflow
    starts another try of the same epoch only when it did not record a success, so such a try
    must adopt it. A FAILED or ABORTED job it acknowledged starts a new attempt: a retry of a
    failure is what Airflow asked for, recorded or not. Another dag run sharing an explicit run
    key has another ``task_instance``: for it an acknowledged success is history, as before.
    """
    if _other_epoch(latest, resume, strict, epoch):
        return SUPERSEDE, latest, None
    if latest is not None:
        if latest["status"] in ACTIVE:
            return REATTACHED, latest, None
        if resume and outcome_unknown(latest):
            if override is not None:
                return STARTED, None, override
            if (rerun_unknown or check) and not strict:
                return STARTED, None, None
            return UNKNOWN, latest, None
        adopt = latest.get("acked_at") is None or _success_of_this_try(latest, strict, epoch, task_instance)
        if resume and adopt:
            return ADOPTED, latest, None
    if not strict:
        return STARTED, None, None
    if override is None:
        if latest is not None:
            return KEPT, latest, None
        if key is not None:
            raise wrong_state(
                "run_key already ran (attempt {}, job {}, since cleaned); unlock it to run again".format(
                    key["last_attempt_no"], key["last_job_id"]))
    return STARTED, None, override


def _success_of_this_try(latest, strict, epoch, task_instance):
    # type: (Row, bool, Optional[str], Optional[str]) -> bool
    """A SUCCEEDED job started for this request's task instance in its clear epoch, i.e. by an
    earlier try that Airflow retried (see decide_start); a strict key keeps its KEPT row."""
    return (not strict and latest["status"] == SUCCEEDED and epoch is not None
            and task_instance is not None and latest.get("epoch") == epoch
            and latest.get("task_instance") == task_instance)


def _other_epoch(latest, resume, strict, epoch):
    # type: (Optional[Row], bool, bool, Optional[str]) -> bool
    """The epoch rows: the key's job was started before the task's latest clear in Airflow."""
    if latest is None or not resume or strict or epoch is None or latest.get("epoch") is None:
        return False
    if outcome_unknown(latest):
        return False  # a clear does not release an unknown outcome: only an unlock or rerun_unknown
    return latest["epoch"] != epoch and (latest["status"] in ACTIVE or latest.get("acked_at") is None)

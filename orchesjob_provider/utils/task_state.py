"""Why is a task being killed? Its task instance's state tells a user action from a shutdown.

``on_kill`` runs for very different reasons: the user cleared the task or marked it failed or
success (the job must be aborted and its result acknowledged), the try timed out (aborted), or
the worker is shutting down (the job keeps running and the next try reattaches to it). Airflow
tells them apart only through the task instance's state as the scheduler now sees it:

==========================================  ==================================================
state read in on_kill                       meaning, and what happens to the remote job
==========================================  ==================================================
running, deferred, up_for_retry, unknown    worker/triggerer shutdown (or unreadable): keep
restarting (a clear of a running task)      user action: abort and acknowledge
failed, success, skipped, removed, ...      user action (mark failed/success...): abort + ack
None, scheduled, queued (a clear)           user action: abort and acknowledge
any state, when the try timed out           Airflow timeout: abort and acknowledge
==========================================  ==================================================

:func:`read_task_state` (worker) and :func:`read_task_state_async` (triggerer) read it: on
Airflow 3 through the supervisor (``RuntimeTaskInstance.get_task_states``), on Airflow 2 from
the metadata database with a fresh session. A read that fails or hangs gives ``UNKNOWN``.

:func:`clear_epoch` is the other half: a value that changes on every clear, sent with each start,
so the agent never lets a new try reattach to a job that an earlier clear epoch started.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, NamedTuple

from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

#: the state could not be read (no task instance, no supervisor, a timeout, an error)
UNKNOWN = "unknown"
#: what to do with the remote job
ABORT = "abort"
KEEP = "keep"

#: states in which the task instance is still this try's: the kill is a shutdown, not a user's
KEEP_STATES = frozenset({"running", "deferred", "up_for_retry", UNKNOWN})

#: how long on_kill waits for the state (Airflow 3.3 SIGKILLs the task 5 s after SIGTERM)
READ_TIMEOUT = 2.0


class TaskIdent(NamedTuple):
    dag_id: str
    task_id: str
    run_id: str
    map_index: int

    @classmethod
    def of(cls, ti: Any) -> TaskIdent | None:
        """The identity of a task instance (None if it has none, e.g. a bare test double)."""
        try:
            map_index = getattr(ti, "map_index", -1)
            return cls(ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else int(map_index))
        except (AttributeError, TypeError, ValueError):
            return None

    def key(self) -> str:
        """``dag/task/map_index/run_id``: the agent's ``task_instance``, stored with each job it
        starts, so that only a retry of this task instance adopts its acknowledged success."""
        return f"{self.dag_id}/{self.task_id}/{self.map_index}/{self.run_id}"


def kill_action(state: str | None, timed_out: bool = False) -> str:
    """The table above: ``ABORT`` or ``KEEP`` for a state read in on_kill."""
    if timed_out:
        return ABORT
    return KEEP if state in KEEP_STATES else ABORT


def is_task_timeout(exc: BaseException | None) -> bool:
    """True for Airflow's ``AirflowTaskTimeout`` (Airflow 2 and the 3.x task SDK alike)."""
    return exc is not None and any(c.__name__ == "AirflowTaskTimeout" for c in type(exc).__mro__)


def timed_out_now() -> bool:
    """Called in on_kill: Airflow runs it inside the ``except AirflowTaskTimeout`` of a timeout."""
    return is_task_timeout(sys.exc_info()[1])


def _plain(value: Any) -> str | None:
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def _read(ident: TaskIdent) -> str | None:
    """The state, blocking (raises on any failure)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(
            dag_id=ident.dag_id, task_ids=[ident.task_id], run_ids=[ident.run_id], map_index=ident.map_index
        )
        return _plain(states[ident.run_id][ident.task_id])

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        value = (
            session.query(TaskInstance.state)
            .filter(
                TaskInstance.dag_id == ident.dag_id,
                TaskInstance.task_id == ident.task_id,
                TaskInstance.run_id == ident.run_id,
                TaskInstance.map_index == ident.map_index,
            )
            .scalar()
        )
    return _plain(value)


def read_task_state(ident: TaskIdent | None, timeout: float = READ_TIMEOUT, log: Any = None) -> str | None:
    """The task instance's state now, or ``UNKNOWN``; never blocks longer than ``timeout``.

    Read from a helper thread: on Airflow 3 on_kill runs in a signal handler, possibly while the
    task's main thread holds the (not re-entrant) supervisor comms lock.
    """
    if ident is None:
        return UNKNOWN
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["state"] = _read(ident)
        except BaseException as e:  # any failure means "unknown"
            box["error"] = e

    t = threading.Thread(target=run, name="orchesjob-task-state", daemon=True)
    t.start()
    t.join(timeout)
    if "state" in box:
        return box["state"]
    if log is not None:
        why = box.get("error") or f"no answer within {timeout:g}s"
        log.warning("Cannot read the state of task %s: %s", ident.task_id, why)
    return UNKNOWN


async def read_task_state_async(
    ident: TaskIdent | None, timeout: float = READ_TIMEOUT * 5, log: Any = None
) -> str | None:
    """The triggerer's form of :func:`read_task_state` (the read runs in a worker thread)."""
    import asyncio

    if ident is None:
        return UNKNOWN
    from asgiref.sync import sync_to_async

    try:
        return await asyncio.wait_for(sync_to_async(_read)(ident), timeout)
    except Exception as e:
        if log is not None:
            log.warning("Cannot read the state of task %s: %s", ident.task_id, e or type(e).__name__)
        return UNKNOWN


def clear_epoch(context: Any) -> str | None:
    """A value that changes whenever the task is cleared: ``"<max_tries>:<dag run clear_number>"``.

    A clear sets ``max_tries = try_number + retries`` for the next try (Airflow 3.3: for running
    and deferred tasks too), and Airflow 3.2+ counts clears of the dag run in ``clear_number``;
    a retry after a crash, a heartbeat timeout or an orphan reset changes neither. None when the
    context has no task instance with ``max_tries``.
    """
    try:
        ti = context["ti"]
    except (KeyError, TypeError):
        return None
    max_tries = getattr(ti, "max_tries", None)
    if not isinstance(max_tries, int) or isinstance(max_tries, bool):
        return None
    try:
        dag_run = context.get("dag_run")
    except AttributeError:
        dag_run = None
    clear_number = getattr(dag_run, "clear_number", None)
    if not isinstance(clear_number, int) or isinstance(clear_number, bool):
        clear_number = 0
    return f"{max_tries}:{clear_number}"

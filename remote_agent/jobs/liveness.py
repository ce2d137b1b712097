"""Is an active job still alive? ``reconcile`` turns a job whose processes are gone into LOST,
or into its recorded outcome.

A job is alive while its supervisor (the ``worker_pid`` column) or its target runs, judged by
process identity (boot id, pid, start time: see procs.py), never by a bare pid. Only the host
that started a job judges it (host/identity.py): elsewhere its pids and boot id mean nothing.

Its outcome is known once the supervisor wrote the exit record (exitrec.py), which it does
before anything else when the main process ends. From then on the job reads SUCCEEDED or
FAILED with that exit code and time, even while its supervisor still ends leftover processes
or waits for a busy database; a writer stores that outcome, and so does a reader once the
supervisor is gone. Never LOST for lack of a database write.
"""

import os

from remote_agent.common.timeutil import now_ts
from remote_agent.common.vocab import ACTIVE, FAILED, LOST, REBOOTED, SUCCEEDED
from remote_agent.host import procs
from remote_agent.host.identity import is_this_host
from remote_agent.store import jobsql, sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


#: The lost reason of a job whose target's start time was never recorded (see procs.py).
NO_IDENTITY = ("no start time was recorded for the target (pid {}), so that pid cannot be told from"
               " a reused one; its supervisor (pid {}) has ended and left no exit record; exit"
               " status unknown")


def lost_reason(row):
    # type: (Row) -> Optional[str]
    """Why an active job is gone, or None while its supervisor or its target is alive."""
    boot = row.get("boot_id")
    current = procs.boot_id()
    if boot and current and boot != current:
        return REBOOTED
    supervisor_pid = row.get("worker_pid")
    if procs.is_alive(supervisor_pid, row.get("worker_start"), boot):
        return None
    if row.get("target_pid") is None:
        return "supervisor (pid {}) exited before starting the target".format(supervisor_pid)
    if procs.is_alive(row["target_pid"], row.get("target_start"), boot):
        return None
    if row.get("target_start") is None and procs.boot_id():
        return NO_IDENTITY.format(row["target_pid"], supervisor_pid)
    return "supervisor (pid {}) was killed and the target (pid {}) has ended; exit status unknown".format(
        supervisor_pid, row["target_pid"])


def main_ended(row):
    # type: (Row) -> bool
    """The job's main process (target) was started and is no longer running."""
    pid = row.get("target_pid")
    return pid is not None and not procs.is_alive(pid, row.get("target_start"), row.get("boot_id"))


def recorded_outcome(conn, row):
    # type: (sqlite3.Connection, Row) -> Optional[Tuple[int, int]]
    """(exit_code, finished_at) from the job's exit record, or None if there is none."""
    try:
        db_file = conn.execute("PRAGMA database_list").fetchone()["file"]
    except Exception:
        return None
    if not db_file:
        return None
    from remote_agent.store import exitrec  # per active row judged: ~0.3 ms, not for finished jobs

    return exitrec.read(os.path.dirname(db_file), row["job_id"])


def _outcome_values(outcome, row=None):
    # type: (Tuple[int, int], Optional[Row]) -> Dict[str, Any]
    exit_code, finished_at = outcome
    values = {"status": SUCCEEDED if exit_code == 0 else FAILED, "exit_code": exit_code,
              "finished_at": finished_at}  # type: Dict[str, Any]
    if row is not None and row.get("phase") == "rechecking":
        # a rechecked job's exit record is written only once its check passed (worker/checkrun.py)
        values.update(phase="verified", check_exit_code=0)
    return values


def _lost_values(reason):
    # type: (str) -> Dict[str, Any]
    return {"status": LOST, "lost_reason": reason, "finished_at": now_ts()}


def reconcile(conn, row, locked=False, deferred=None):
    # type: (sqlite3.Connection, Row, bool, Optional[List[str]]) -> Row
    """Return the job as it really is: its recorded outcome once its main process ended and
    the exit record exists, else LOST once neither supervisor nor target is alive.

    ``locked``: the caller holds a write transaction on ``conn`` (the outcome is written in
    it). Otherwise - a reader - the common case stays read-only: a job whose supervisor still
    runs is only reported (the supervisor writes it), and a job found gone is written in a
    transaction of its own after re-reading the row; if the database cannot be written the
    caller still sees the outcome (or LOST).

    ``deferred`` (a list): a reader that writes nothing now. The id of every job it reports
    ended (or LOST) is appended to it instead, for one batched write later, even while the
    job's worker is still finishing (watch.py writes the ends of a round in one transaction, so
    a burst of ends costs one commit, not one each; a worker that writes after it finds its row
    ended and keeps only its exit code, as after an abort).
    """
    if row["status"] not in ACTIVE or not is_this_host(row.get("host_id")):
        return row  # another host's job (a shared state dir): only that host can judge it
    reason = lost_reason(row)
    if reason is None:
        if not main_ended(row):
            return row
        outcome = recorded_outcome(conn, row)
        if outcome is None:
            return row
        if not locked:
            if deferred is not None:
                deferred.append(row["job_id"])  # its worker is still finishing: store it anyway
            return dict(row, **_outcome_values(outcome, row))
    else:
        # Read only now that the supervisor is known gone: it writes the record before it ends.
        outcome = recorded_outcome(conn, row)
    if not locked:
        if deferred is None:
            try:
                with sqlite.transaction(conn):
                    return reconcile(conn, jobsql.get_job(conn, row["job_id"]) or row, locked=True)
            except Exception:
                pass
        else:
            deferred.append(row["job_id"])
        values = _outcome_values(outcome, row) if outcome is not None else _lost_values(str(reason))
        return dict(row, **values)
    values = _outcome_values(outcome, row) if outcome is not None else _lost_values(str(reason))
    jobsql.update_job(conn, row["job_id"], ACTIVE, updated_at=now_ts(), **values)
    return jobsql.get_job(conn, row["job_id"]) or row

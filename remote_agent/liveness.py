"""Is an active job still alive? ``reconcile`` turns a job whose processes are gone into LOST.

A job is alive while its supervisor (the ``worker_pid`` column) or its target runs, judged by
process identity (boot id, pid, start time: see procs.py), never by a bare pid. Only the host
that started a job judges it (host.py): elsewhere its pids and boot id mean nothing.
"""

from remote_agent import procs, store
from remote_agent.host import is_this_host
from remote_agent.timeutil import now_ts
from remote_agent.vocab import ACTIVE, LOST

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, Optional  # noqa: F401
    Row = Dict[str, Any]


#: The lost reason of a job whose host rebooted: its target was killed with the host.
REBOOTED = "host rebooted since the job started"


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
    return "supervisor (pid {}) was killed and the target (pid {}) has ended; exit status unknown".format(
        supervisor_pid, row["target_pid"])


def reconcile(conn, row, locked=False):
    # type: (sqlite3.Connection, Row, bool) -> Row
    """Return the job as it really is: LOST once neither supervisor nor target is alive.

    ``locked``: the caller holds a write transaction on ``conn`` (the LOST is written in
    it). Otherwise - a reader - the common case stays read-only: only a job found gone is
    written, in a transaction of its own after re-reading the row, and if the database
    cannot be written the caller still sees the LOST status.
    """
    if row["status"] not in ACTIVE or not is_this_host(row.get("host_id")):
        return row  # another host's job (a shared state dir): only that host can judge it
    reason = lost_reason(row)
    if reason is None:
        return row
    if not locked:
        try:
            with store.transaction(conn):
                return reconcile(conn, store.get_job(conn, row["job_id"]) or row, locked=True)
        except Exception:
            lost = dict(row)
            lost.update(status=LOST, lost_reason=reason, finished_at=now_ts())
            return lost
    now = now_ts()
    store.update_job(conn, row["job_id"], ACTIVE, status=LOST, lost_reason=reason,
                     finished_at=now, updated_at=now)
    return store.get_job(conn, row["job_id"]) or row

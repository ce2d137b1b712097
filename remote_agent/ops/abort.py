"""``abort`` and ``ack``: a job's end decided by its caller, stored first, then signalled."""

from remote_agent.common.errors import wrong_state
from remote_agent.common.timeutil import now_ts
from remote_agent.common.validate import check_job_id, text
from remote_agent.common.vocab import ABORTED, ACTIVE
from remote_agent.host import identity
from remote_agent.host.stop import stop_processes
from remote_agent.jobs.reader import Reader, resolve
from remote_agent.store import db, jobsql, locksql

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


def ack(state_dir, job_id):
    # type: (str, str) -> Row
    """Mark a terminal job's result as consumed: the next resume start runs a new attempt."""
    check_job_id(job_id)
    with db.writing(state_dir) as conn:
        row = resolve(conn, None, job_id, locked=True)
        if row["status"] in ACTIVE:
            raise wrong_state("Cannot ack active job: status={}".format(row["status"]))
        jobsql.ack_job(conn, job_id, now_ts())
        return jobsql.get_job(conn, job_id) or row


def abort(state_dir, run_key, job_id, reason, grace, ack=False):
    # type: (str, Optional[str], Optional[str], Optional[str], float, bool) -> Tuple[Row, Dict[str, bool]]
    """Store ABORTED first, then SIGTERM, then SIGKILL after the grace; identity-checked.

    ``ack``: acknowledge the job in the same transaction (the next resume start runs a new
    attempt); a job that already ended is then acknowledged too, and the error still says it
    was not running.
    """
    with db.writing(state_dir) as conn:
        row = resolve(conn, run_key, job_id, locked=True)
        if row["status"] in ACTIVE and not identity.is_this_host(row.get("host_id")):
            raise wrong_state("Job {} runs on host {} (this is {}): abort it there".format(
                row["job_id"], row["host_id"], identity.host_id()))
        now = now_ts()
        if ack:
            jobsql.ack_job(conn, row["job_id"], now)
        if row["status"] in ACTIVE:
            jobsql.update_job(conn, row["job_id"], ACTIVE, status=ABORTED, finished_at=now,
                             aborted_at=now, updated_at=now, abort_reason=text(reason))
            locksql.mark_releasing(conn, row["job_id"])  # its locks: held until its processes are gone
    if row["status"] not in ACTIVE:
        raise wrong_state("Job is not running: {} status={}{}".format(
            row["job_id"], row["status"], " (its result is now acknowledged)" if ack else ""))
    flags = stop_processes(row, grace)
    reader = Reader(state_dir)
    try:
        final = reader.job(row["job_id"]) or row
    finally:
        reader.close()
    return final, flags

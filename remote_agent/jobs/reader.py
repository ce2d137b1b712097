"""Read access to the state dir: find jobs (reconciled), and wait for one to finish."""

import time

from remote_agent.common.errors import bad_args, not_found
from remote_agent.common.timeutil import now_ts
from remote_agent.common.validate import check_job_id, check_run_key
from remote_agent.common.vocab import ACTIVE, STARTING, TERMINAL
from remote_agent.store import jobsql, sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


def resolve(conn, run_key, job_id, locked=False):
    # type: (Optional[sqlite3.Connection], Optional[str], Optional[str], bool) -> Row
    """The job named by ``job_id``, else the latest of ``run_key``, reconciled.

    ``conn`` None (no database yet) finds nothing; ``locked`` as in ``liveness.reconcile``.
    """
    if job_id:
        check_job_id(job_id)
        row = jobsql.get_job(conn, job_id) if conn is not None else None
        if row is None:
            raise not_found("Job not found: {}".format(job_id))
    elif run_key:
        row = jobsql.latest_job(conn, check_run_key(run_key)) if conn is not None else None
        if row is None:
            raise not_found("run_key not found")
    else:
        raise bad_args("Either --run-key or --job-id is required")
    assert conn is not None
    return as_it_is(conn, row, locked)


def as_it_is(conn, row, locked=False):
    # type: (sqlite3.Connection, Row, bool) -> Row
    """The stored row as it really is: an active job reconciled with its processes
    (``liveness.reconcile``; ``locked`` as there), a STARTING one with the named locks it
    waits for (jobs/lockqueue.py). A finished row is returned as read.

    Both are loaded per row that needs them (test_layers.LAZY): the common read - the status
    of a finished job, or of none - then loads neither liveness with host/ nor the lock queue,
    which keeps the layered agent's start-up at the flat one's (docs/development/benchmarks.md).
    """
    if row["status"] not in ACTIVE:
        return row
    from remote_agent.jobs.liveness import reconcile  # per active row: liveness + host/, ~0.4 ms

    row = reconcile(conn, row, locked)
    if row["status"] != STARTING:
        return row
    from remote_agent.jobs.lockqueue import with_wait_info  # per STARTING row: ~1 ms

    return with_wait_info(conn, row)


class Reader(object):
    """Read access to a state dir; no database at all reads as 'nothing stored'."""

    def __init__(self, state_dir):
        # type: (str) -> None
        self.state_dir = state_dir
        self.conn = sqlite.open_read(state_dir)

    def close(self):
        # type: () -> None
        if self.conn is not None:
            self.conn.close()

    def job(self, job_id):
        # type: (str) -> Optional[Row]
        if self.conn is None:
            return None
        row = jobsql.get_job(self.conn, job_id)
        return as_it_is(self.conn, row) if row else None

    def require_job(self, job_id):
        # type: (str) -> Row
        return resolve(self.conn, None, job_id)

    def latest(self, run_key):
        # type: (str) -> Row
        return resolve(self.conn, run_key, None)

    def resolve(self, run_key, job_id):
        # type: (Optional[str], Optional[str]) -> Row
        return resolve(self.conn, run_key, job_id)

    def history(self, run_key):
        # type: (str) -> List[Row]
        rows = jobsql.key_history(self.conn, check_run_key(run_key)) if self.conn else []
        if not rows:
            raise not_found("No jobs found for run_key: {}".format(run_key))
        assert self.conn is not None
        return [as_it_is(self.conn, r) for r in rows]

    def running(self):
        # type: () -> List[Row]
        if self.conn is None:
            return []
        rows = [as_it_is(self.conn, r) for r in jobsql.active_jobs(self.conn)]
        return [r for r in rows if r["status"] in ACTIVE]

    def override(self, run_key):
        # type: (Optional[str]) -> Optional[Row]
        if self.conn is None or not run_key:
            return None
        return jobsql.valid_override(self.conn, run_key, now_ts())


def wait_for(reader, job_id, timeout, offsets=None, limit=65536):
    # type: (Reader, str, Optional[float], Optional[Dict[str, int]], int) -> Tuple[Row, bool]
    """Poll until the job is terminal (or, with ``offsets``, has new output past them).

    Polling starts at 5 ms and backs off to 100 ms: prompt for short jobs, and an indexed
    read ten times a second costs nothing for long ones. Returns (job, timed_out).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        row = reader.require_job(job_id)
        if row["status"] in TERMINAL:
            return row, False
        if offsets:
            from remote_agent.store.logs import has_output  # per wait for output: ~0.3 ms

            if has_output(reader.state_dir, job_id, offsets, limit):
                return row, False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return row, True
            delay = min(delay, left)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


"""``clean``: delete terminal jobs, their logs, exit records and wake channels."""

import os

from remote_agent.common.validate import check_job_id, check_run_key
from remote_agent.common.vocab import STREAMS
from remote_agent.jobs.liveness import reconcile
from remote_agent.store import db, exitrec, jobsql, paths
from remote_agent.worker.lockwait import remove_channel

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


def clean(state_dir, job_id=None, run_key=None, before=None, after=None, everything=False, dry_run=False,
          keep=None, acked_only=False):
    # type: (str, Optional[str], Optional[str], Optional[int], Optional[int], bool, bool, Optional[int], bool) -> Tuple[List[Row], int]
    """Delete terminal jobs, their logs and exit records; active jobs and run-key history are kept.

    Retention (``keep``: the newest N jobs of each key stay; ``acked_only``): a result no try has
    acknowledged is never deleted by it, since a resume start adopts it (deleting it would run
    the key again).

    The run_keys row survives, so attempt numbers keep counting up and a key that a
    ``--strict`` start consumed stays consumed until ``unlock``. A dry run selects exactly what
    the real run would delete; it reads in a deferred transaction and takes a write lock only to
    store the outcome of a job that ended but is still active in its row (as any reader may).
    """
    if not os.path.exists(paths.db_path(state_dir)):
        return [], 0
    if job_id:
        check_job_id(job_id)
    if run_key:
        check_run_key(run_key)
    if everything or job_id:
        before = after = None
    if dry_run:
        _settle_ended(state_dir)
    with db.writing(state_dir, immediate=not dry_run) as conn:
        if not dry_run:
            # A job that ended can still be active in its row, its outcome in its exit record (a
            # light job whose finisher did not run; a worker still finishing): store it, so the
            # job is cleaned like any ended one.
            for row in jobsql.active_jobs(conn):
                reconcile(conn, row, locked=True)
        rows = jobsql.clean_candidates(conn, job_id, run_key, before, after, keep, acked_only)
        if dry_run or not rows:
            return rows, 0
        jobsql.delete_terminal(conn, [r["job_id"] for r in rows])
    errors = 0
    for r in rows:
        for stream in STREAMS:
            try:
                os.unlink(paths.log_path(state_dir, r["job_id"], stream))
            except FileNotFoundError:
                pass
            except OSError:
                errors += 1
        if not exitrec.remove(state_dir, r["job_id"]):
            errors += 1
        if os.path.isdir(os.path.join(state_dir, "locks")):  # jobs with locks left a wake channel
            remove_channel(state_dir, r["job_id"])
    return rows, errors


def _settle_ended(state_dir):
    # type: (str) -> None
    """What the real run stores first (the outcome of jobs that ended but are active in their
    rows), for a dry run, so that it selects exactly what the real run would delete: looked for
    without a write lock, and written in a transaction of its own only when there is one."""
    ended = []  # type: List[str]
    with db.writing(state_dir, immediate=False) as conn:
        for row in jobsql.active_jobs(conn):
            reconcile(conn, row, deferred=ended)
    if ended:
        with db.writing(state_dir) as conn:
            for job_id in ended:
                stored = jobsql.get_job(conn, job_id)
                if stored is not None:
                    reconcile(conn, stored, locked=True)

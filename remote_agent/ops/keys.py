"""What a user does to a run key after the fact: ``unlock`` (one more strict run) and ``rerun``
(a new attempt with a finished job's command)."""

import json

from remote_agent.common.errors import not_found, wrong_state
from remote_agent.common.timeutil import now_ts
from remote_agent.common.validate import check_run_key, text
from remote_agent.common.vocab import ACTIVE, STARTED
from remote_agent.jobs.decide import StartResult
from remote_agent.jobs.liveness import reconcile
from remote_agent.jobs.reader import resolve
from remote_agent.ops.start import enqueue, launch_and_wait, new_attempt
from remote_agent.store import db, jobsql, locksql

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


def unlock(state_dir, run_key, reason, ttl_seconds):
    # type: (str, str, Optional[str], Optional[int]) -> Dict[str, Any]
    """Allow the next ``start --strict`` of a finished key to run once more."""
    check_run_key(run_key)
    now = now_ts()
    expires = now + ttl_seconds if ttl_seconds is not None else None
    with db.writing(state_dir) as conn:
        latest = jobsql.latest_job(conn, run_key)
        if latest is None and jobsql.run_key_row(conn, run_key) is None:
            raise not_found("run_key not found")
        if latest is not None:
            latest = reconcile(conn, latest, locked=True)
            if latest["status"] in ACTIVE:
                raise wrong_state("Cannot unlock active job: status={}".format(latest["status"]))
        jobsql.allow_override(conn, run_key, now, text(reason), expires)
    return {"unlocked": True, "run_key": run_key, "reason": reason, "allowed_at": now,
            "expires_at": expires}


def rerun(state_dir, run_key, job_id, reason, sync, start_timeout):
    # type: (str, Optional[str], Optional[str], Optional[str], bool, float) -> Tuple[StartResult, Row]
    """A new attempt with a finished job's command; never beside an active job of its key."""
    with db.writing(state_dir) as conn:
        source = resolve(conn, run_key, job_id, locked=True)
        if source["status"] in ACTIVE:
            raise wrong_state("Cannot rerun active job: status={}".format(source["status"]))
        key = source["run_key"]
        latest = reconcile(conn, jobsql.latest_job(conn, key) or source, locked=True)
        if latest["status"] in ACTIVE:
            raise wrong_state("Cannot rerun: run_key has an active job {} status={}".format(
                latest["job_id"], latest["status"]))
        argv, cwd = jobsql.command_of(source), jobsql.cwd_of(source)
        row = new_attempt(conn, jobsql.run_key_row(conn, key), key, argv, cwd, False,
                           source["job_id"], text(reason))
        # the rerun queues for the same locks and slots as the job it repeats
        entry = locksql.lock_entry(conn, source["job_id"])
        queued = None if entry is None else enqueue(conn, row, json.loads(entry["claims"]),
                                                     entry["queue_timeout"])
    result = StartResult(STARTED, row)
    return result, launch_and_wait(state_dir, result, argv, cwd, None, sync, start_timeout, queued)

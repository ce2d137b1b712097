"""``start``: decide (jobs/decide.py) inside one write transaction, then launch the job's
supervisor (worker/supervisor.py) and wait as asked. Also the pieces ``rerun`` shares
(ops/keys.py): a new attempt's row, its place in the lock queue, the launch.

Every decision that could start a process is taken inside one ``BEGIN IMMEDIATE``
transaction (``db.writing``), so concurrent starters serialize on the database and exactly
one of them inserts; the partial unique index on active jobs makes a second active job for a
key impossible even if this code were wrong.
"""

import json
import os
import time

from remote_agent.common.timeutil import now_ts
from remote_agent.common.validate import (
    check_argv,
    check_env_size,
    check_path,
    check_run_key,
    check_seconds,
    new_job_id,
)
from remote_agent.common.vocab import ABORTED, ACTIVE, STARTED, STARTING, outcome_unknown
from remote_agent.host import identity, procs
from remote_agent.jobs.decide import SUPERSEDE, SUPERSEDED_REASON, StartResult, decide_start
from remote_agent.jobs.reader import Reader, wait_for
from remote_agent.store import db, jobsql
from remote_agent.worker import handoff, supervisor

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]
    Launched = Tuple[int, int, float]


def start(state_dir, run_key, argv, cwd=None, env=None, strict=False, resume=False,
          sync=False, start_timeout=10.0, rerun_unknown=False, epoch=None, grace=5.0, check=None,
          claims=None, queue_timeout=None, task_instance=None):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], bool, bool, bool, float, bool, Optional[str], float, Optional[Tuple[List[str], float]], Optional[Dict[str, Any]], Optional[float], Optional[str]) -> Tuple[StartResult, Row]
    """Decide, launch if needed, and wait as asked; returns (decision, job as it now is)."""
    result, launched = begin(state_dir, run_key, argv, cwd, env, strict, resume, sync, start_timeout,
                             rerun_unknown, epoch, grace, check, claims, queue_timeout, task_instance)
    return result, finish(state_dir, result, launched, sync, start_timeout)


def begin(state_dir, run_key, argv, cwd=None, env=None, strict=False, resume=False,
          sync=False, start_timeout=10.0, rerun_unknown=False, epoch=None, grace=5.0, check=None,
          claims=None, queue_timeout=None, task_instance=None):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], bool, bool, bool, float, bool, Optional[str], float, Optional[Tuple[List[str], float]], Optional[Dict[str, Any]], Optional[float], Optional[str]) -> Tuple[StartResult, Optional[Launched]]
    """Decide and launch (``start`` without its wait): (decision, the launch to ``finish``).
    A batch (frontends/rpc_batch.py) begins every start before it waits for the first one's
    supervisor, so the supervisors get ready side by side.

    A superseded active job is stopped (as ``abort`` stops it, ``grace`` s) before the new
    attempt is launched, so the two never run side by side for longer than that.
    ``claims`` (locks.normalize): a new attempt takes its first-come place in the lock queue in
    the same transaction, and its supervisor waits for its turn (``queue_timeout`` s at most)
    before it runs anything; an existing job keeps the claims it was started with.
    """
    check_run_key(run_key)
    check_argv(argv)
    # before anything is stored: a bad value must not create a job or spend a strict key
    check_path("cwd", cwd)
    check_env_size(env)
    start_timeout = check_seconds("start_timeout", start_timeout, allow_none=False)
    grace = check_seconds("grace_seconds", grace, allow_none=False)
    queue_timeout = check_seconds("queue_timeout", queue_timeout)
    with db.writing(state_dir) as conn:
        latest = jobsql.latest_job(conn, run_key)
        if latest is not None and latest["status"] in ACTIVE:  # (a finished row is as it reads)
            from remote_agent.jobs.liveness import reconcile  # per start over an active job: ~0.4 ms

            latest = reconcile(conn, latest, locked=True)
        unknown = resume and latest is not None and outcome_unknown(latest)
        override = jobsql.valid_override(conn, run_key, now_ts()) if strict or unknown else None
        key = jobsql.run_key_row(conn, run_key)
        # Another host's running job (a shared state dir) cannot be stopped from here: a clear
        # does not supersede it (the new try reattaches, as to any running job of the key).
        foreign = (latest is not None and latest["status"] in ACTIVE
                   and not identity.is_this_host(latest.get("host_id")))
        action, job, used = decide_start(latest, resume, strict, override, key, rerun_unknown,
                                         None if foreign else epoch, check is not None, task_instance)
        superseded = None  # type: Optional[Row]
        queued = None  # type: Optional[str]
        if action == SUPERSEDE and job is not None:
            superseded, job = _supersede(conn, job), None
        if job is not None:
            result = StartResult(action, job)
        else:
            reason = SUPERSEDED_REASON if superseded else (used["reason"] if used else None)
            if unknown and reason is None:
                reason = "outcome of {} unknown; run again ({})".format(
                    latest["job_id"] if latest else "?",
                    "unlock" if used else ("rerun_unknown" if rerun_unknown else "the check decides"))
            row = new_attempt(conn, key, run_key, argv, cwd, strict,
                               latest["job_id"] if latest else None, reason, epoch, check, task_instance)
            queued = enqueue(conn, row, claims, queue_timeout)
            if used is not None:
                jobsql.use_override(conn, run_key, now_ts())
            result = StartResult(STARTED, row, strict_override_used=used is not None,
                                 superseded=superseded)
    if superseded is not None and superseded["status"] in ACTIVE:
        from remote_agent.host.stop import stop_processes  # per start that supersedes a running job

        stop_processes(superseded, grace)
    # The writer connection is closed now, before forking: a SQLite handle must never cross a fork.
    return result, launch(state_dir, result, argv, cwd, env, sync, queued)


def enqueue(conn, row, claims, queue_timeout):
    # type: (sqlite3.Connection, Row, Optional[Dict[str, Any]], Optional[float]) -> Optional[str]
    """A new attempt that declared locks or slots takes its place in the lock queue, and its turn
    at once when nothing is in its way (the supervisor then spawns without another transaction):
    "granted", "wait", or None without claims."""
    if claims is None:
        return None
    from remote_agent.jobs.lockqueue import grant_now  # per start with locks or slots: ~1 ms
    from remote_agent.store import locksql  # per start with locks or slots (with the above)

    locksql.enqueue(conn, row["job_id"], claims, time.time(), queue_timeout)
    return "granted" if grant_now(conn, row["job_id"]) else "wait"


def _supersede(conn, row):
    # type: (sqlite3.Connection, Row) -> Row
    """Store an earlier epoch's job as ABORTED (if still active) and acknowledged."""
    now = now_ts()
    if row["status"] in ACTIVE:
        jobsql.update_job(conn, row["job_id"], ACTIVE, status=ABORTED, finished_at=now,
                         aborted_at=now, updated_at=now, abort_reason=SUPERSEDED_REASON)
        from remote_agent.store import locksql  # per start that supersedes a running job: < 0.5 ms

        locksql.mark_releasing(conn, row["job_id"])  # its locks: held until its processes are gone
    jobsql.ack_job(conn, row["job_id"], now)
    return row


def new_attempt(conn, key, run_key, argv, cwd, strict, rerun_of, rerun_reason, epoch=None, check=None,
                task_instance=None):
    # type: (sqlite3.Connection, Optional[Row], str, List[str], Optional[str], bool, Optional[str], Optional[str], Optional[str], Optional[Tuple[List[str], float]], Optional[str]) -> Row
    now = now_ts()
    me = os.getpid()
    row = {
        "job_id": new_job_id(),
        "run_key": run_key,
        "attempt_no": (key["last_attempt_no"] if key else 0) + 1,
        "command": json.dumps(argv),
        # JSON like command: a directory name may hold bytes that are not UTF-8
        "cwd": json.dumps(cwd) if cwd is not None else None,
        "status": STARTING,
        "strict": int(bool(strict)),
        "rerun_of_job_id": rerun_of if rerun_of is not None else (key or {}).get("last_job_id"),
        "rerun_reason": rerun_reason,
        "epoch": epoch,
        "task_instance": task_instance,
        "boot_id": procs.boot_id(),
        "host_id": identity.host_id(),
        # The launcher stands in as the supervisor until the forked one records itself, so a
        # launcher that dies before forking leaves a job that reads as LOST, not a stuck key.
        "worker_pid": me,
        "worker_start": procs.start_time(me),
        "started_at": now,
        "updated_at": now,
    }
    if check is not None:
        from remote_agent.jobs.checkspec import columns  # per start with a check: < 0.5 ms

        row.update(columns(check))
    jobsql.insert_job(conn, row)
    return row


def launch(state_dir, result, argv, cwd, env, sync, queued=None):
    # type: (str, StartResult, List[str], Optional[str], Optional[Dict[str, str]], bool, Optional[str]) -> Optional[Launched]
    """Fork the supervisor of a new attempt: (its pid, the handoff pipe's read end, when)."""
    if result.action != STARTED:
        return None
    supervisor_pid, read_fd = supervisor.launch(state_dir, result.row["job_id"], argv, cwd, env, queued,
                                                light=not sync)
    return supervisor_pid, read_fd, time.monotonic()


def finish(state_dir, result, launched, sync, start_timeout):
    # type: (str, StartResult, Optional[Launched], bool, float) -> Row
    """Wait as asked for a launched supervisor (``start_timeout`` counts from its launch), then
    read the job as it now is."""
    job_id = result.row["job_id"]
    if launched is not None:
        supervisor_pid, read_fd, launched_at = launched
        if sync:
            handoff.wait_finished(read_fd)
        else:
            handoff.wait_ready(read_fd, max(0.0, start_timeout - (time.monotonic() - launched_at)))
        os.close(read_fd)
        _reap(supervisor_pid)
    reader = Reader(state_dir)
    try:
        if sync:
            return wait_for(reader, job_id, None)[0]
        return reader.require_job(job_id)
    finally:
        reader.close()


def launch_and_wait(state_dir, result, argv, cwd, env, sync, start_timeout, queued=None):
    # type: (str, StartResult, List[str], Optional[str], Optional[Dict[str, str]], bool, float, Optional[str]) -> Row
    launched = launch(state_dir, result, argv, cwd, env, sync, queued)
    return finish(state_dir, result, launched, sync, start_timeout)


def _reap(pid):
    # type: (int) -> None
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass



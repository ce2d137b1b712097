"""What the agent does to jobs: start (and its decision table), ack, abort, unlock, rerun, clean.

Every decision that could start a process is taken inside one ``BEGIN IMMEDIATE``
transaction (``store.writing``), so concurrent starters serialize on the database and exactly
one of them inserts; the partial unique index on active jobs makes a second active job for a
key impossible even if this code were wrong.
"""

import json
import os

from remote_agent.common.errors import not_found, wrong_state
from remote_agent.common.timeutil import now_ts
from remote_agent.common.validate import check_argv, check_job_id, check_run_key, new_job_id, text
from remote_agent.common.vocab import (
    ABORTED,
    ACTIVE,
    ADOPTED,
    KEPT,
    LOST,
    REATTACHED,
    STARTED,
    STARTING,
    STREAMS,
    UNKNOWN,
)
from remote_agent.host import identity, procs
from remote_agent.jobs.liveness import REBOOTED, reconcile
from remote_agent.jobs.reader import Reader, resolve, wait_for
from remote_agent.store import locksql, paths, store

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
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


def outcome_unknown(row):
    # type: (Row) -> bool
    """True for a LOST job that may have completed: its target had started, its exit status
    is unknown, and neither a host reboot (which killed the target) nor the orchesjob 1.1.0
    import (whose LOST rows keep their old meaning) explains the loss."""
    reason = row.get("lost_reason") or ""
    return (row["status"] == LOST and row.get("target_pid") is not None and row.get("exit_code") is None
            and bool(reason) and not reason.startswith((REBOOTED, "imported from orchesjob")))




#: decide_start's word for the epoch rows (never a reply action: the reply says STARTED and
#: names the superseded job)
SUPERSEDE = "supersede"
#: the abort reason of a superseded job, and the rerun reason of the attempt that replaced it
SUPERSEDED_REASON = "superseded: the task was cleared in Airflow"


def decide_start(latest, resume, strict, override, key, rerun_unknown=False, epoch=None, check=False):
    # type: (Optional[Row], bool, bool, Optional[Row], Optional[Row], bool, Optional[str], bool) -> Tuple[str, Optional[Row], Optional[Row]]
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
        if resume and latest.get("acked_at") is None:
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


def _other_epoch(latest, resume, strict, epoch):
    # type: (Optional[Row], bool, bool, Optional[str]) -> bool
    """The epoch rows: the key's job was started before the task's latest clear in Airflow."""
    if latest is None or not resume or strict or epoch is None or latest.get("epoch") is None:
        return False
    if outcome_unknown(latest):
        return False  # a clear does not release an unknown outcome: only an unlock or rerun_unknown
    return latest["epoch"] != epoch and (latest["status"] in ACTIVE or latest.get("acked_at") is None)


def start(state_dir, run_key, argv, cwd=None, env=None, strict=False, resume=False,
          sync=False, start_timeout=10.0, rerun_unknown=False, epoch=None, grace=5.0, check=None,
          claims=None, queue_timeout=None):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], bool, bool, bool, float, bool, Optional[str], float, Optional[Tuple[List[str], float]], Optional[Dict[str, Any]], Optional[float]) -> Tuple[StartResult, Row]
    """Decide, launch if needed, and wait as asked; returns (decision, job as it now is).

    A superseded active job is stopped (as ``abort`` stops it, ``grace`` s) before the new
    attempt is launched, so the two never run side by side for longer than that.
    ``claims`` (locks.normalize): a new attempt takes its first-come place in the lock queue in
    the same transaction, and its supervisor waits for its turn (``queue_timeout`` s at most)
    before it runs anything; an existing job keeps the claims it was started with.
    """
    check_run_key(run_key)
    check_argv(argv)
    with store.writing(state_dir) as conn:
        latest = store.latest_job(conn, run_key)
        if latest is not None:
            latest = reconcile(conn, latest, locked=True)
        unknown = resume and latest is not None and outcome_unknown(latest)
        override = store.valid_override(conn, run_key, now_ts()) if strict or unknown else None
        key = store.run_key_row(conn, run_key)
        # Another host's running job (a shared state dir) cannot be stopped from here: a clear
        # does not supersede it (the new try reattaches, as to any running job of the key).
        foreign = (latest is not None and latest["status"] in ACTIVE
                   and not identity.is_this_host(latest.get("host_id")))
        action, job, used = decide_start(latest, resume, strict, override, key, rerun_unknown,
                                         None if foreign else epoch, check is not None)
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
            row = _new_attempt(conn, key, run_key, argv, cwd, strict,
                               latest["job_id"] if latest else None, reason, epoch, check)
            queued = _enqueue(conn, row, claims, queue_timeout)
            if used is not None:
                store.use_override(conn, run_key, now_ts())
            result = StartResult(STARTED, row, strict_override_used=used is not None,
                                 superseded=superseded)
    if superseded is not None and superseded["status"] in ACTIVE:
        from remote_agent.host.stop import stop_processes

        stop_processes(superseded, grace)
    # The writer connection is closed now, before forking: a SQLite handle must never cross a fork.
    return result, _launch_and_wait(state_dir, result, argv, cwd, env, sync, start_timeout, queued)


def _enqueue(conn, row, claims, queue_timeout):
    # type: (sqlite3.Connection, Row, Optional[Dict[str, Any]], Optional[float]) -> Optional[str]
    """A new attempt that declared locks or slots takes its place in the lock queue, and its turn
    at once when nothing is in its way (the supervisor then spawns without another transaction):
    "granted", "wait", or None without claims."""
    if claims is None:
        return None
    import time

    from remote_agent.worker import lockwait

    locksql.enqueue(conn, row["job_id"], claims, time.time(), queue_timeout)
    return "granted" if lockwait.grant_now(conn, row["job_id"]) else "wait"


def _supersede(conn, row):
    # type: (sqlite3.Connection, Row) -> Row
    """Store an earlier epoch's job as ABORTED (if still active) and acknowledged."""
    now = now_ts()
    if row["status"] in ACTIVE:
        store.update_job(conn, row["job_id"], ACTIVE, status=ABORTED, finished_at=now,
                         aborted_at=now, updated_at=now, abort_reason=SUPERSEDED_REASON)
        locksql.mark_releasing(conn, row["job_id"])  # its locks: held until its processes are gone
    store.ack_job(conn, row["job_id"], now)
    return row


def _new_attempt(conn, key, run_key, argv, cwd, strict, rerun_of, rerun_reason, epoch=None, check=None):
    # type: (sqlite3.Connection, Optional[Row], str, List[str], Optional[str], bool, Optional[str], Optional[str], Optional[str], Optional[Tuple[List[str], float]]) -> Row
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
        from remote_agent.jobs.checkspec import columns  # only a start with a check

        row.update(columns(check))
    store.insert_job(conn, row)
    return row


def _launch_and_wait(state_dir, result, argv, cwd, env, sync, start_timeout, queued=None):
    # type: (str, StartResult, List[str], Optional[str], Optional[Dict[str, str]], bool, float, Optional[str]) -> Row
    job_id = result.row["job_id"]
    if result.action == STARTED:
        from remote_agent.worker import (
            handoff,  # only a start needs them (and signal)
            supervisor,
        )

        supervisor_pid, read_fd = supervisor.launch(state_dir, job_id, argv, cwd, env, queued,
                                                    light=not sync)
        if sync:
            handoff.wait_finished(read_fd)
        else:
            handoff.wait_ready(read_fd, max(0.0, start_timeout))
        os.close(read_fd)
        _reap(supervisor_pid)
    reader = Reader(state_dir)
    try:
        if sync:
            return wait_for(reader, job_id, None)[0]
        return reader.require_job(job_id)
    finally:
        reader.close()


def _reap(pid):
    # type: (int) -> None
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass


def ack(state_dir, job_id):
    # type: (str, str) -> Row
    """Mark a terminal job's result as consumed: the next resume start runs a new attempt."""
    check_job_id(job_id)
    with store.writing(state_dir) as conn:
        row = resolve(conn, None, job_id, locked=True)
        if row["status"] in ACTIVE:
            raise wrong_state("Cannot ack active job: status={}".format(row["status"]))
        store.ack_job(conn, job_id, now_ts())
        return store.get_job(conn, job_id) or row


def abort(state_dir, run_key, job_id, reason, grace, ack=False):
    # type: (str, Optional[str], Optional[str], Optional[str], float, bool) -> Tuple[Row, Dict[str, bool]]
    """Store ABORTED first, then SIGTERM, then SIGKILL after the grace; identity-checked.

    ``ack``: acknowledge the job in the same transaction (the next resume start runs a new
    attempt); a job that already ended is then acknowledged too, and the error still says it
    was not running.
    """
    with store.writing(state_dir) as conn:
        row = resolve(conn, run_key, job_id, locked=True)
        if row["status"] in ACTIVE and not identity.is_this_host(row.get("host_id")):
            raise wrong_state("Job {} runs on host {} (this is {}): abort it there".format(
                row["job_id"], row["host_id"], identity.host_id()))
        now = now_ts()
        if ack:
            store.ack_job(conn, row["job_id"], now)
        if row["status"] in ACTIVE:
            store.update_job(conn, row["job_id"], ACTIVE, status=ABORTED, finished_at=now,
                             aborted_at=now, updated_at=now, abort_reason=text(reason))
            locksql.mark_releasing(conn, row["job_id"])  # its locks: held until its processes are gone
    if row["status"] not in ACTIVE:
        raise wrong_state("Job is not running: {} status={}{}".format(
            row["job_id"], row["status"], " (its result is now acknowledged)" if ack else ""))
    from remote_agent.host.stop import stop_processes  # only abort signals anything

    flags = stop_processes(row, grace)
    reader = Reader(state_dir)
    try:
        final = reader.job(row["job_id"]) or row
    finally:
        reader.close()
    return final, flags


def unlock(state_dir, run_key, reason, ttl_seconds):
    # type: (str, str, Optional[str], Optional[int]) -> Dict[str, Any]
    """Allow the next ``start --strict`` of a finished key to run once more."""
    check_run_key(run_key)
    now = now_ts()
    expires = now + ttl_seconds if ttl_seconds is not None else None
    with store.writing(state_dir) as conn:
        latest = store.latest_job(conn, run_key)
        if latest is None and store.run_key_row(conn, run_key) is None:
            raise not_found("run_key not found")
        if latest is not None:
            latest = reconcile(conn, latest, locked=True)
            if latest["status"] in ACTIVE:
                raise wrong_state("Cannot unlock active job: status={}".format(latest["status"]))
        store.allow_override(conn, run_key, now, text(reason), expires)
    return {"unlocked": True, "run_key": run_key, "reason": reason, "allowed_at": now,
            "expires_at": expires}


def rerun(state_dir, run_key, job_id, reason, sync, start_timeout):
    # type: (str, Optional[str], Optional[str], Optional[str], bool, float) -> Tuple[StartResult, Row]
    """A new attempt with a finished job's command; never beside an active job of its key."""
    with store.writing(state_dir) as conn:
        source = resolve(conn, run_key, job_id, locked=True)
        if source["status"] in ACTIVE:
            raise wrong_state("Cannot rerun active job: status={}".format(source["status"]))
        key = source["run_key"]
        latest = reconcile(conn, store.latest_job(conn, key) or source, locked=True)
        if latest["status"] in ACTIVE:
            raise wrong_state("Cannot rerun: run_key has an active job {} status={}".format(
                latest["job_id"], latest["status"]))
        argv, cwd = store.command_of(source), store.cwd_of(source)
        row = _new_attempt(conn, store.run_key_row(conn, key), key, argv, cwd, False,
                           source["job_id"], text(reason))
        # the rerun queues for the same locks and slots as the job it repeats
        entry = locksql.lock_entry(conn, source["job_id"])
        queued = None if entry is None else _enqueue(conn, row, json.loads(entry["claims"]),
                                                     entry["queue_timeout"])
    result = StartResult(STARTED, row)
    return result, _launch_and_wait(state_dir, result, argv, cwd, None, sync, start_timeout, queued)


def clean(state_dir, job_id=None, run_key=None, before=None, after=None, everything=False, dry_run=False):
    # type: (str, Optional[str], Optional[str], Optional[int], Optional[int], bool, bool) -> Tuple[List[Row], int]
    """Delete terminal jobs, their logs and exit records; active jobs and run-key history are kept.

    The run_keys row survives, so attempt numbers keep counting up and a key that a
    ``--strict`` start consumed stays consumed until ``unlock``. A dry run reads in a
    deferred transaction: it takes no write lock.
    """
    if not os.path.exists(paths.db_path(state_dir)):
        return [], 0
    if job_id:
        check_job_id(job_id)
    if run_key:
        check_run_key(run_key)
    if everything or job_id:
        before = after = None
    with store.writing(state_dir, immediate=not dry_run) as conn:
        if not dry_run:
            # A light job that ended without its finisher (light.py) is still RUNNING in its row,
            # its outcome in its exit record: store it, so the job is cleaned like any ended one.
            for row in store.active_jobs(conn):
                reconcile(conn, row, locked=True)
        rows = store.clean_candidates(conn, job_id, run_key, before, after)
        if dry_run or not rows:
            return rows, 0
        store.delete_terminal(conn, [r["job_id"] for r in rows])
    from remote_agent.store import exitrec  # only a clean removes exit records

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
        if os.path.isdir(os.path.join(state_dir, "locks")):
            from remote_agent.worker.lockwait import remove_channel  # jobs with locks left a wake channel

            remove_channel(state_dir, r["job_id"])
    return rows, errors

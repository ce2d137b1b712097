"""Named locks and slots on the host, the waiting part: a queued job's supervisor waits here for
its turn before it spawns the target (the rule: jobs/lockrule.py; the queue's SQL side:
jobs/lockqueue.py).

How a waiter waits without polling. Every queued job's worker keeps a *wake channel* open for
as long as it lives (the supervisor, then the light job's wrapper and its finisher, which it
hands the descriptor to: light.py): a named FIFO ``<state_dir>/locks/<job_id>.fifo`` held open
read-write and ``flock``ed exclusively. A waiter opens the channels of the jobs in its way
read-only and blocks in ``select``: when the last process holding a channel ends (the job ended
and its supervisor exited, or the supervisor was killed, even with -9) the kernel reports
end-of-file to every reader at once. The waiter then re-evaluates the queue in one
``BEGIN IMMEDIATE`` transaction, reconciling every job in it (a dead holder becomes LOST, which
frees what it held), and either takes its grant or blocks again.

The channel only wakes; the job's row decides. When a blocker's channel has no live holder
(its supervisor was killed while its target still runs, a job of another host on a shared
state dir, a supervisor that has not yet opened it, or a future supervisor that does not stay
alive beside its target), the waiter cannot be woken by it and re-reads the queue every
``RECHECK`` seconds instead, until that job's row leaves STARTING/RUNNING. Otherwise it blocks
up to ``SAFETY`` seconds between readings (or until its queue timeout).
"""

import errno
import fcntl
import os
import select
import signal
import time

from remote_agent.common.vocab import CANCELLED, STARTING, STDERR
from remote_agent.jobs import lockrule
from remote_agent.jobs.lockqueue import live_queue
from remote_agent.store import db, jobsql, locksql, paths
from remote_agent.worker.handoff import READY, tell

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]

#: Seconds between readings of the queue while a blocker cannot wake us (see the docstring).
RECHECK = 0.5
#: Longest block between readings of the queue even when every blocker can wake us.
SAFETY = 30.0


class _Stop(Exception):
    """SIGTERM while waiting (an abort, or a plain kill of the supervisor)."""


def channel_path(state_dir, job_id):
    # type: (str, str) -> str
    return os.path.join(state_dir, "locks", job_id + ".fifo")


def open_channel(state_dir, job_id):
    # type: (str, str) -> Optional[int]
    """Create and hold this job's wake channel for the life of the process (None if the state
    dir cannot have one: then waiters re-read the queue every RECHECK seconds).

    The descriptor is not inheritable: the target never keeps it, so a daemon the job leaves
    behind cannot hold waiters back after the job's row has ended.
    """
    path = channel_path(state_dir, job_id)
    old_umask = os.umask(0o077)
    try:
        paths.ensure_subdir(state_dir, "locks")
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
        paths.trusted_fd(fd, path)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waiters probe it: held means "someone will close it"
        return fd
    except OSError:
        return None
    finally:
        os.umask(old_umask)


def remove_channel(state_dir, job_id):
    # type: (str, str) -> None
    """Unlink a cleaned job's channel (clean); a channel never made is fine."""
    try:
        os.unlink(channel_path(state_dir, job_id))
    except OSError:
        pass


# --- the supervisor's side --------------------------------------------------------------------


def take_turn(state_dir, job_id, notify_fd, granted=False):
    # type: (str, str, int, bool) -> bool
    """Wait until this queued job may take its claims; True to spawn the target, False when it
    must not run (aborted or cancelled meanwhile, queue timeout, SIGTERM while waiting).

    The caller holds the job's wake channel (``open_channel``) from before this call to the
    job's end. ``granted``: its turn came in the start transaction: nothing to wait for.
    The first time it has to wait it sends the launcher the READY byte, so an async start
    returns at once with the job WAITING instead of waiting out its start timeout.
    """
    if granted:
        return True

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, stop)
    told = False
    delay = 0.05
    try:
        while True:
            try:
                verdict, blockers, deadline = _evaluate(state_dir, job_id)
                delay = 0.05
            except _Stop:
                raise
            except Exception:
                # the database is busy or failing: try again later, as the supervisor's writes do
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if verdict is not None:
                return verdict
            if not told:
                told = True
                tell(notify_fd, READY)
            _block(state_dir, watch_list(blockers), deadline)
    except _Stop:
        _cancel(state_dir, job_id, "stopped (SIGTERM) while waiting for its locks; it did not run")
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)


def watch_list(blockers):
    # type: (List[Dict[str, Any]]) -> List[str]
    """The jobs whose end can let us start (``lockrule.decide_turn``'s blockers, in queue order).

    For a lock every blocker must be gone, so one wake channel is enough: the latest in the
    queue's, the one that under first-come order ends last (if another is still there when it
    ends, the next reading blocks on that one). Only a slot can be freed by any of its users, so
    a job blocked by slots alone watches them all. This keeps the herd small: when a writer in a
    chain ends, only the job right behind it wakes.
    """
    lock_blockers = [b["job_id"] for b in blockers if b["mode"] != lockrule.SLOT]
    if lock_blockers:
        return lock_blockers[-1:]
    return [b["job_id"] for b in blockers]


def _evaluate(state_dir, job_id):
    # type: (str, str) -> Tuple[Optional[bool], List[Dict[str, Any]], Optional[float]]
    """One reading of the queue, in a write transaction: (True, ...) granted, (False, ...) must
    not run, (None, blockers, deadline) wait."""
    now = time.time()
    message = None
    with db.writing(state_dir) as conn:
        queue = live_queue(conn, locked=True)
        mine = next((e for e in queue if e["job_id"] == job_id), None)
        if mine is None or mine["status"] != STARTING:
            return False, [], None  # aborted (or ended otherwise) while queued
        ok, blockers = lockrule.decide_turn(job_id, queue)
        if ok:
            locksql.grant_locks(conn, job_id, now)
            return True, [], None
        entry = locksql.lock_entry(conn, job_id) or {}
        timeout = entry.get("queue_timeout")
        deadline = entry["queued_at"] + timeout if timeout is not None else None
        if timeout is not None and deadline is not None and now >= deadline:
            message = "queue timeout: waited {:g}s for {}; gave up without running".format(
                timeout, lockrule.describe(blockers))
            jobsql.update_job(conn, job_id, (STARTING,), status=CANCELLED, finished_at=int(now),
                             updated_at=int(now), abort_reason=message)
        else:
            locksql.set_waiting(conn, job_id, now)
    if message is not None:
        _log_line(state_dir, job_id, message)
        return False, [], None
    return None, blockers, deadline


def _cancel(state_dir, job_id, reason):
    # type: (str, str, str) -> None
    try:
        now = int(time.time())
        with db.writing(state_dir) as conn:
            changed = jobsql.update_job(conn, job_id, (STARTING,), status=CANCELLED, finished_at=now,
                                       updated_at=now, abort_reason=reason)
        if changed:
            _log_line(state_dir, job_id, reason)
    except Exception:
        pass  # the row stays STARTING with its supervisor gone: reconcile makes it LOST


def _log_line(state_dir, job_id, message):
    # type: (str, str, str) -> None
    """Say why the job did not run in its stderr log, which the task log shows."""
    try:
        fd = paths.open_log(state_dir, job_id, STDERR)
        try:
            os.write(fd, "orchesjob: {}\n".format(message).encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def _block(state_dir, job_ids, deadline):
    # type: (str, List[str], Optional[float]) -> None
    """Sleep until a blocker's wake channel reports its last holder gone, RECHECK/SAFETY
    seconds pass (see the module docstring), or the deadline."""
    fds = []  # type: List[int]
    unwatched = False
    try:
        for job_id in sorted(set(job_ids)):
            try:
                fd = os.open(channel_path(state_dir, job_id), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:
                unwatched = True  # not made yet, another host's job, or an older agent's
                continue
            try:
                # Opened first, probed second: if a holder has the lock now, its exit comes
                # after our open, so the kernel will report it to us.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    fds.append(fd)
                    continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            unwatched = True  # nobody holds it: only the row can tell us when this job ends
        limit = RECHECK if unwatched else SAFETY
        if deadline is not None:
            limit = max(0.0, min(limit, deadline - time.time()))
        if fds:
            select.select(fds, [], [], limit)
        else:
            time.sleep(limit)
    finally:
        for fd in fds:
            os.close(fd)





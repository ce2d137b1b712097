"""The end of a job: the exit record, the leftovers, the final status stored however long the
database takes. Run by the classic supervisor when its target ends, and by the light wrapper's
*finisher* (``finish_main``: bash exec'd it, same pid, after the target ended; see light.py).

``Db`` is the worker's database handle whose writes are retried until they succeed (up to
WRITE_CEILING); the supervisor uses it from the moment it records itself.
"""

import os
import signal
import time

from remote_agent.common.timeutil import now_ts
from remote_agent.common.vocab import ACTIVE, FAILED, SUCCEEDED
from remote_agent.host import tree
from remote_agent.jobs import checkspec
from remote_agent.store import exitrec, jobsql
from remote_agent.store.db import open_write
from remote_agent.store.sqlite import transaction

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Callable, Dict, List, Optional, Tuple  # noqa: F401


#: How long the supervisor keeps retrying a database write that fails (the write lock held
#: past the busy timeout, a full disk, slow storage) before it gives up: 7 days. The exit
#: record (exitrec.py) carries the outcome meanwhile and afterwards.
WRITE_CEILING = 7 * 24 * 3600.0


#: Retries back off from 50 ms, doubling, to at most this many seconds between attempts.
BACKOFF_MAX = 30.0


class Db(object):
    """The supervisor's database handle, and writes retried until they succeed.

    A write that fails for any reason (locked past the busy timeout, I/O error, full disk)
    closes the handle and is tried again on a fresh one after a pause that doubles from 50 ms
    to BACKOFF_MAX, until WRITE_CEILING has passed.
    """

    def __init__(self, state_dir, conn):
        # type: (str, Optional[sqlite3.Connection]) -> None
        self.state_dir = state_dir
        self.conn = conn

    def run(self, change, before=None):
        # type: (Callable[[sqlite3.Connection], bool], Optional[Callable[[], object]]) -> Optional[bool]
        """``change(conn)`` in a write transaction until it commits: its result, or None if
        the ceiling passed. ``before`` runs ahead of every attempt."""
        delay = 0.05
        deadline = time.monotonic() + WRITE_CEILING
        while True:
            if before is not None:
                before()
            try:
                if self.conn is None:
                    self.conn = open_write(self.state_dir)
                assert self.conn is not None
                with transaction(self.conn):
                    return change(self.conn)
            except Exception:
                self.close()
                if time.monotonic() >= deadline:
                    return None
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def write(self, job_id, only_if, before=None, **values):
        # type: (str, Tuple[str, ...], Optional[Callable[[], object]], **object) -> Optional[bool]
        """Set ``values`` if the job is still in ``only_if`` (True), else False; retried."""
        values["updated_at"] = now_ts()
        return self.run(lambda conn: jobsql.update_job(conn, job_id, only_if, **values), before)

    def keep_exit_code(self, job_id, rc):
        # type: (str, int) -> None
        """The job ended otherwise (aborted, lost): keep its status, record the exit code."""
        def change(conn):
            # type: (sqlite3.Connection) -> bool
            jobsql.set_exit_code_if_unknown(conn, job_id, rc)
            return True

        self.run(change)

    def close(self):
        # type: () -> None
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


class ExitRecord(object):
    """The job's exit record (exitrec.py), written once; a failed write (ENOSPC) is retried
    before every database attempt, but never holds the database write back."""

    def __init__(self, state_dir, job_id, rc, finished_at):
        # type: (str, str, int, int) -> None
        self.args = (state_dir, job_id, rc, finished_at)
        self.done = False

    def __call__(self):
        # type: () -> bool
        if not self.done:
            try:
                exitrec.write(*self.args)
                self.done = True
            except OSError:
                pass
        return self.done


def finish(db, state_dir, job_id, rc, notify, leftovers=None, check_env=None, finished_at=None):
    # type: (Db, str, str, int, Tuple[int, ...], Optional[Callable[[], List[tree.Proc]]], Optional[Tuple[Optional[str], Dict[str, str]]], Optional[int]) -> None
    """The main process ended with ``rc``: record it durably, end the job's other processes,
    wake a sync launcher, then store the final status however long the database takes.
    (Also what the light job's finisher runs, with the end time its wrapper recorded.)

    A job with a check that exited 0 is rechecked first (``check_env``: the job's cwd and
    environment; a finisher without them gets the stored cwd and its own environment, so pass
    them): its exit record waits for the verdict, so until then readers see it RUNNING, and a
    supervisor killed meanwhile leaves an unknown outcome that the next check decides."""
    recheck = checkspec.recheck_of(db.conn, state_dir, job_id) if rc == 0 else None
    if finished_at is None:
        finished_at = now_ts()
    record = ExitRecord(state_dir, job_id, rc, finished_at)
    if recheck is None:
        record()  # first of all: from here on a reader reports this outcome, never LOST
    if leftovers is not None:
        # Like systemd for a one-shot service (KillMode=control-group): processes the main
        # process left behind get SIGTERM, then SIGKILL after the grace.
        tree.end_processes(leftovers, tree.kill_grace(), signal.SIGTERM, signal.SIGKILL, reap=True)
    status = SUCCEEDED if rc == 0 else FAILED
    extra = {}  # type: Dict[str, object]
    if recheck is not None:
        from remote_agent.worker import checkrun  # per job with a recheck: < 1 ms

        cwd, env = check_env or checkrun.fallback_env(recheck, job_id)
        status, extra = checkrun.after_run(db, state_dir, job_id, recheck[0], cwd, env)
        if status == SUCCEEDED:
            record()  # verified: now the exit record may speak for the job
        else:
            record.done = True  # FAILED with exit code 0: no exit record can say that
    for fd in notify:
        os.close(fd)
    stored = db.write(job_id, ACTIVE, before=record, status=status, exit_code=rc,
                      finished_at=finished_at, **extra)
    if stored is False:
        # Aborted (or declared lost) meanwhile: keep that status, but keep the exit code too.
        db.keep_exit_code(job_id, rc)
    db.close()


def finish_main(args):
    # type: (List[str]) -> None
    """The finisher: bash exec'd it (same pid: the job's worker, still its subreaper) after the
    target ended and the exit record was written. Stores the outcome as the classic
    supervisor does (finish), then exits."""
    state_dir, job_id, target, code, grace, busy, reaper, ended = args[:8]
    # bash passed the job's environment on and runs in the job's directory: a recheck runs
    # there with it, as the classic supervisor's does.
    job_env = dict(os.environ)
    # The agent's own settings, not whatever the job's environment says.
    os.environ["ORCHESJOB_KILL_GRACE"] = grace
    os.environ["ORCHESJOB_BUSY_TIMEOUT"] = busy
    os.umask(0o077)

    def ignore(signum, frame):  # type: ignore[no-untyped-def]
        pass  # an abort's SIGTERM finds the target gone: keep storing its status

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, ignore)
    me, group = os.getpid(), int(target)

    def leftovers():
        # type: () -> List[tree.Proc]
        return tree.job_processes(job_id, supervisor_pid=me, group=group, scan_env=reaper != "1")

    from remote_agent.worker.light import FD_NOTIFY  # the finisher is the light wrapper's: loaded

    notify = (FD_NOTIFY,) if is_open(FD_NOTIFY) else ()
    try:
        # Opened before the exit record is written, as the classic supervisor holds its
        # connection: record and final status stay milliseconds apart.
        conn = open_write(state_dir)
    except Exception:
        conn = None  # Db retries the write on a fresh connection
    finish(Db(state_dir, conn), state_dir, job_id, int(code), notify,
                       leftovers, check_env=(None, job_env),
                       finished_at=int(ended) if ended.isdigit() else None)


def is_open(fd):
    # type: (int) -> bool
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False

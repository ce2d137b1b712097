"""Launching a job: the forked supervisor that owns the target process.

The launcher (the ``start`` command) commits the job row as STARTING, closes its database
connection, then forks. The child becomes the supervisor: a new session with stdio on
/dev/null, so neither SIGHUP nor the SSH channel closing reaches it and the SSH command
returns as soon as the launcher prints its reply. Forking instead of exec'ing a second
interpreter saves a whole Python start-up (the largest cost of an async start).

The supervisor tells the launcher what happened through a pipe (handoff.py).

Names: orchesjob called this process the "worker". The code calls it the supervisor
(``supervisor_pid``); the database columns ``worker_pid``/``worker_start``, the job object's
``worker_pid`` and ``pid_kind: "worker"``, and abort's ``sent_*_worker`` flags keep orchesjob's
names (docs/agent/contract.md items 5, 6 and 23). Until the supervisor records itself, the launcher's
own pid stands in (see ops/start.new_attempt).
"""

import gc
import os
import signal
import sys

from remote_agent.common.timeutil import now_ts
from remote_agent.common.vocab import RUNNING, STARTING, STREAMS
from remote_agent.host import procs, tree
from remote_agent.host.spawn import exit_code, reap_into, spawn, unreaped_child, wait_exit
from remote_agent.jobs import checkspec
from remote_agent.store import jobsql, paths
from remote_agent.store.db import open_write
from remote_agent.store.sqlite import transaction
from remote_agent.worker.finish import Db, finish
from remote_agent.worker.handoff import READY, RECORDED, tell

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Callable, Dict, List, Optional, Tuple  # noqa: F401


def launch(state_dir, job_id, argv, cwd, env, queued=None, light=False):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], Optional[str], bool) -> Tuple[int, int]
    """Fork the supervisor for a committed STARTING job; return (its pid, the read end).

    ``queued``: the job declared locks or slots: "granted" (its turn came in the start
    transaction) or "wait" (it waits for its turn first); see lockwait.py.
    ``light``: hand the waiting to a bash wrapper (light.py) where it can keep every guarantee.
    An async start asks for it; a sync start does not, since its launcher (a Python process)
    stays for the whole run anyway and the wrapper's finisher would add a Python start."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    # Objects that exist now are never collected by the supervisor's garbage collector: a
    # collection would write to every inherited object's header and copy every page of the
    # launcher's heap (half the host CPU of a start in a batch, measured). CPython 3.7+.
    if light:  # imported here once, not in every supervisor (a batch forks hundreds)
        from remote_agent.worker import light as _light  # noqa: F401  per async start: ~1 ms
    freeze = getattr(gc, "freeze", None)  # CPython 3.7+
    if freeze is not None:
        freeze()
    supervisor_pid = os.fork()
    if supervisor_pid == 0:  # in the supervisor
        code = 1
        try:
            os.close(read_fd)
            code = _supervise(state_dir, job_id, argv, cwd, env, write_fd, queued, light)
        finally:
            os._exit(code)
    os.close(write_fd)
    return supervisor_pid, read_fd


def _detach():
    # type: () -> None
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def _open_log(state_dir, job_id, stream):
    # type: (str, str, str) -> int
    return paths.open_log(state_dir, job_id, stream)


def _record(conn, job_id, only_if, **values):
    # type: (sqlite3.Connection, str, Tuple[str, ...], **object) -> bool
    values["updated_at"] = now_ts()
    with transaction(conn):
        return jobsql.update_job(conn, job_id, only_if, **values)


def _supervise(state_dir, job_id, argv, cwd, env, notify_fd, queued=None, light=False):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], int, Optional[str], bool) -> int
    _detach()
    # The caller's descriptors (an SSH channel's socket, a pipe) are neither kept here nor
    # inherited by the job.
    tree.close_inherited_fds(keep=(notify_fd,))
    # Orphaned descendants (setsid, double fork) are re-parented to us, not to init.
    subreaper = tree.become_subreaper()
    me = os.getpid()
    target = []  # type: List[int]
    checking = []  # type: List[int]

    def job_processes():
        # type: () -> List[tree.Proc]
        return tree.job_processes(job_id, supervisor_pid=me, group=target[0] if target else None,
                                  scan_env=not subreaper)

    def forward_term(signum, frame):  # type: ignore[no-untyped-def]
        # A plain `kill <supervisor>` stops the job rather than orphaning it: the main
        # process's group gets SIGTERM, and when the main process ends, its leftovers too.
        # Only while the target is our unreaped child: once reaped, its number may be reused by
        # an unrelated process group (a signal handler runs between the main flow's steps, so
        # nothing reaps it between this check and the signal).
        if target and unreaped_child(target[0]):
            procs.send_group(target[0], signal.SIGTERM)
        for pid in checking:  # a check runs: it is stopped like the target would be
            if unreaped_child(pid):
                procs.send_group(pid, signal.SIGTERM)

    def ignore(signum, frame):  # type: ignore[no-untyped-def]
        pass

    # Handlers, not SIG_IGN: exec resets handlers to the default, so the target does not
    # inherit an ignored SIGHUP or SIGINT.
    signal.signal(signal.SIGTERM, forward_term)
    signal.signal(signal.SIGHUP, ignore)
    signal.signal(signal.SIGINT, ignore)

    # A connection of our own, opened after the fork: SQLite handles must never cross one.
    conn = open_write(state_dir)
    if not _record(conn, job_id, (STARTING,), worker_pid=me, worker_start=procs.start_time(me)):
        return 0  # aborted or declared lost before we got here: run nothing
    tell(notify_fd, RECORDED)
    channel = None  # a queued job's wake channel, held by its worker until the job ends
    if queued:  # STARTING -> (WAITING for its locks and slots) -> spawn; see lockwait.py
        from remote_agent.worker import lockwait  # per job with locks or slots: ~1 ms

        channel = lockwait.open_channel(state_dir, job_id)
        if not lockwait.take_turn(state_dir, job_id, notify_fd, granted=queued == "granted"):
            return 0  # aborted, cancelled or timed out in the queue: nothing ran
    db = Db(state_dir, conn)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    full_env[tree.JOB_ENV] = job_id  # every job process carries it (and can read its own id)
    check = checkspec.spec_of(jobsql.get_job(conn, job_id))
    if check is not None:
        from remote_agent.worker import checkrun  # per job with a check: < 1 ms
    if check is not None and not checkrun.before_run(db, state_dir, job_id, check, cwd, full_env,
                                                   checking, notify_fd):
        return 0  # satisfied, a check error, or aborted meanwhile: nothing runs
    out_fd, err_fd = (_open_log(state_dir, job_id, stream) for stream in STREAMS)
    # The light wrapper takes over from here (light.py): it holds our lock-queue wake channel
    # (waiters block on it), and with a check it leaves the exit record to its finisher, which
    # rechecks first.
    if light:
        from remote_agent.worker.light import hand_over  # per async start: the wrapper, ~1 ms

        if hand_over(db, state_dir, job_id, argv, cwd, full_env, out_fd, err_fd, notify_fd,
                     held=channel, record=check is None):
            return 0
    try:
        pid = spawn(argv, cwd, full_env, out_fd, err_fd)
    except OSError as exc:
        message = "orchesjob: cannot start the job: {}\n".format(exc.strerror or exc)
        os.write(err_fd, message.encode("utf-8", "backslashreplace"))
        finish(db, state_dir, job_id, -1, ())
        return 0
    finally:
        os.close(out_fd)
        os.close(err_fd)
    target.append(pid)
    running = db.write(job_id, (STARTING,), status=RUNNING, target_pid=pid,
                       target_start=procs.start_time(pid))
    if running is False:
        # Aborted between launch and record: do not leave the job's processes behind.
        reaped = {}  # type: Dict[int, int]

        def reap_and_find():
            # type: () -> List[tree.Proc]
            reap_into(reaped)
            return job_processes()

        tree.end_processes(reap_and_find, tree.kill_grace(), signal.SIGTERM, signal.SIGKILL)
        db.keep_exit_code(job_id, exit_code(reaped[pid]) if pid in reaped else wait_exit(pid))
        return 0
    if check is None:  # with a check, READY went out when the check started
        tell(notify_fd, READY)
    rc = wait_exit(pid)
    finish(db, state_dir, job_id, rc, (notify_fd,), job_processes, check_env=(cwd, full_env))
    return 0



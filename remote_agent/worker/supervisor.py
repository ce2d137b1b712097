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
names (AGENT_CONTRACT items 5, 6 and 23). Until the supervisor records itself, the launcher's
own pid stands in (see lifecycle._new_attempt).
"""

import os
import signal
import sys
import time

from remote_agent.common.timeutil import now_ts
from remote_agent.common.vocab import ACTIVE, FAILED, RUNNING, STARTING, STREAMS, SUCCEEDED
from remote_agent.host import procs, tree
from remote_agent.jobs import checkspec
from remote_agent.store import exitrec, paths, store
from remote_agent.worker.handoff import READY, RECORDED, tell

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
    return os.open(paths.log_path(state_dir, job_id, stream),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _record(conn, job_id, only_if, **values):
    # type: (sqlite3.Connection, str, Tuple[str, ...], **object) -> bool
    values["updated_at"] = now_ts()
    with store.transaction(conn):
        return store.update_job(conn, job_id, only_if, **values)


class _Db(object):
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
                    self.conn = store.open_db(self.state_dir, write=True)
                assert self.conn is not None
                with store.transaction(self.conn):
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
        return self.run(lambda conn: store.update_job(conn, job_id, only_if, **values), before)

    def keep_exit_code(self, job_id, rc):
        # type: (str, int) -> None
        """The job ended otherwise (aborted, lost): keep its status, record the exit code."""
        def change(conn):
            # type: (sqlite3.Connection) -> bool
            store.set_exit_code_if_unknown(conn, job_id, rc)
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


class _ExitRecord(object):
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
        if target:
            procs.send_group(target[0], signal.SIGTERM)
        for pid in checking:  # a check runs: it is stopped like the target would be
            procs.send_group(pid, signal.SIGTERM)

    def ignore(signum, frame):  # type: ignore[no-untyped-def]
        pass

    # Handlers, not SIG_IGN: exec resets handlers to the default, so the target does not
    # inherit an ignored SIGHUP or SIGINT.
    signal.signal(signal.SIGTERM, forward_term)
    signal.signal(signal.SIGHUP, ignore)
    signal.signal(signal.SIGINT, ignore)

    # A connection of our own, opened after the fork: SQLite handles must never cross one.
    conn = store.open_db(state_dir, write=True)
    assert conn is not None
    if not _record(conn, job_id, (STARTING,), worker_pid=me, worker_start=procs.start_time(me)):
        return 0  # aborted or declared lost before we got here: run nothing
    tell(notify_fd, RECORDED)
    channel = None  # a queued job's wake channel, held by its worker until the job ends
    if queued:  # STARTING -> (WAITING for its locks and slots) -> spawn; see lockwait.py
        from remote_agent.worker import lockwait

        channel = lockwait.open_channel(state_dir, job_id)
        if not lockwait.take_turn(state_dir, job_id, notify_fd, granted=queued == "granted"):
            return 0  # aborted, cancelled or timed out in the queue: nothing ran
    db = _Db(state_dir, conn)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    full_env[tree.JOB_ENV] = job_id  # every job process carries it (and can read its own id)
    check = checkspec.spec_of(store.get_job(conn, job_id))
    if check is not None and not checkspec.before_run(db, state_dir, job_id, check, cwd, full_env,
                                                   checking, notify_fd):
        return 0  # satisfied, a check error, or aborted meanwhile: nothing runs
    out_fd, err_fd = (_open_log(state_dir, job_id, stream) for stream in STREAMS)
    # The light wrapper takes over from here (light.py): it holds our lock-queue wake channel
    # (waiters block on it), and with a check it leaves the exit record to its finisher, which
    # rechecks first.
    if light:
        from remote_agent.worker.light import hand_over

        if hand_over(db, state_dir, job_id, argv, cwd, full_env, out_fd, err_fd, notify_fd,
                     held=channel, record=check is None):
            return 0
    try:
        pid = spawn(argv, cwd, full_env, out_fd, err_fd)
    except OSError as exc:
        message = "orchesjob: cannot start the job: {}\n".format(exc.strerror or exc)
        os.write(err_fd, message.encode("utf-8", "backslashreplace"))
        _finish(db, state_dir, job_id, -1, ())
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
            _reap_into(reaped)
            return job_processes()

        tree.end_processes(reap_and_find, tree.kill_grace(), signal.SIGTERM, signal.SIGKILL)
        db.keep_exit_code(job_id, _exit_code(reaped[pid]) if pid in reaped else wait_exit(pid))
        return 0
    if check is None:  # with a check, READY went out when the check started
        tell(notify_fd, READY)
    rc = wait_exit(pid)
    _finish(db, state_dir, job_id, rc, (notify_fd,), job_processes, check_env=(cwd, full_env))
    return 0


def _finish(db, state_dir, job_id, rc, notify, leftovers=None, check_env=None, finished_at=None):
    # type: (_Db, str, str, int, Tuple[int, ...], Optional[Callable[[], List[tree.Proc]]], Optional[Tuple[Optional[str], Dict[str, str]]], Optional[int]) -> None
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
    record = _ExitRecord(state_dir, job_id, rc, finished_at)
    if recheck is None:
        record()  # first of all: from here on a reader reports this outcome, never LOST
    if leftovers is not None:
        # Like systemd for a one-shot service (KillMode=control-group): processes the main
        # process left behind get SIGTERM, then SIGKILL after the grace.
        tree.end_processes(leftovers, tree.kill_grace(), signal.SIGTERM, signal.SIGKILL, reap=True)
    status = SUCCEEDED if rc == 0 else FAILED
    extra = {}  # type: Dict[str, object]
    if recheck is not None:
        cwd, env = check_env or checkspec.fallback_env(recheck, job_id)
        status, extra = checkspec.after_run(db, state_dir, job_id, recheck[0], cwd, env)
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


def spawn(argv, cwd, env, out_fd, err_fd):
    # type: (List[str], Optional[str], Optional[Dict[str, str]], int, int) -> int
    """fork + exec the target as a new session (its pid is its process group).

    Hand-rolled instead of subprocess.Popen: importing subprocess costs ~5 ms of every
    start. An exec failure comes back through a close-on-exec pipe as an OSError, as
    Popen would raise it.
    """
    err_r, err_w = os.pipe()  # non-inheritable: closed by a successful exec
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; the target must not
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            if cwd:
                try:
                    os.chdir(cwd)
                except OSError as exc:
                    exc.filename = "working directory " + repr(cwd)
                    raise
            if env is None:
                os.execvp(argv[0], argv)
            else:
                os.execvpe(argv[0], argv, env)
        except BaseException as exc:
            where = getattr(exc, "filename", None) or repr(argv[0])
            text = "{}:{}: {}".format(getattr(exc, "errno", 0) or 0, where,
                                      getattr(exc, "strerror", None) or exc)
            os.write(err_w, text.encode("utf-8", "backslashreplace"))
        finally:
            os._exit(127)
    os.close(err_w)
    chunks = []
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(err_r)
    if chunks:
        os.waitpid(pid, 0)
        code, _, text = b"".join(chunks).decode("utf-8", "replace").partition(":")
        raise OSError(int(code) if code.isdigit() else 0, text)
    return pid


def _exit_code(status):
    # type: (int) -> int
    """A wait status as an exit code: the status, or -N if signal N killed it (as Popen)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_exit(pid):
    # type: (int) -> int
    """Exit code of a child (see _exit_code), reaping every other child that ends meanwhile:
    a subreaper's adopted orphans."""
    while True:
        try:
            ended, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return -1  # cannot happen while ``pid`` is our unreaped child
        if ended == pid:
            return _exit_code(status)


def _reap_into(statuses):
    # type: (Dict[int, int]) -> None
    """Collect every exited child without blocking, keeping its wait status by pid."""
    while True:
        try:
            ended, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if ended == 0:
            return
        statuses[ended] = status



"""Launching a job: the forked supervisor that owns the target process.

The launcher (the ``start`` command) commits the job row as STARTING, closes its database
connection, then forks. The child becomes the supervisor: a new session with stdio on
/dev/null, so neither SIGHUP nor the SSH channel closing reaches it and the SSH command
returns as soon as the launcher prints its reply. Forking instead of exec'ing a second
interpreter saves a whole Python start-up (the largest cost of an async start).

The supervisor tells the launcher what happened through a pipe: one byte ``R`` once the
target runs and its pid is stored, and end-of-file when the final status is stored (or the
supervisor died). A sync start therefore wakes the moment the job ends, with no polling.

Names: orchesjob called this process the "worker". The code calls it the supervisor
(``supervisor_pid``); the database columns ``worker_pid``/``worker_start``, the job object's
``worker_pid`` and ``pid_kind: "worker"``, and abort's ``sent_*_worker`` flags keep orchesjob's
names (AGENT_CONTRACT items 5, 6 and 23). Until the supervisor records itself, the launcher's
own pid stands in (see lifecycle._new_attempt).
"""

import os
import signal
import sys

from remote_agent import paths, procs, store
from remote_agent.timeutil import now_ts
from remote_agent.vocab import ABORTED, ACTIVE, FAILED, RUNNING, STARTING, STREAMS, SUCCEEDED

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Dict, List, Optional, Tuple  # noqa: F401


READY = b"R"


def launch(state_dir, job_id, argv, cwd, env):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]]) -> Tuple[int, int]
    """Fork the supervisor for a committed STARTING job; return (its pid, the read end)."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    supervisor_pid = os.fork()
    if supervisor_pid == 0:  # in the supervisor
        code = 1
        try:
            os.close(read_fd)
            code = _supervise(state_dir, job_id, argv, cwd, env, write_fd)
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


def _supervise(state_dir, job_id, argv, cwd, env, notify_fd):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], int) -> int
    _detach()
    target = []  # type: List[int]

    def forward_term(signum, frame):  # type: ignore[no-untyped-def]
        # A plain `kill <supervisor>` stops the job rather than orphaning the target.
        if target:
            procs.send_group(target[0], signal.SIGTERM)

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
    me = os.getpid()
    if not _record(conn, job_id, (STARTING,), worker_pid=me, worker_start=procs.start_time(me)):
        return 0  # aborted or declared lost before we got here: run nothing
    out_fd, err_fd = (_open_log(state_dir, job_id, stream) for stream in STREAMS)
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        pid = spawn(argv, cwd, full_env, out_fd, err_fd)
    except OSError as exc:
        message = "orchesjob: cannot start the job: {}\n".format(exc.strerror or exc)
        os.write(err_fd, message.encode("utf-8", "backslashreplace"))
        _record(conn, job_id, ACTIVE, status=FAILED, exit_code=-1, finished_at=now_ts())
        return 0
    finally:
        os.close(out_fd)
        os.close(err_fd)
    target.append(pid)
    if not _record(conn, job_id, (STARTING,), status=RUNNING, target_pid=pid,
                   target_start=procs.start_time(pid)):
        # Aborted between launch and record: do not leave the target orphaned.
        procs.send_group(pid, signal.SIGTERM)
        rc = wait_exit(pid)
        _record(conn, job_id, (ABORTED,), exit_code=rc)
        return 0
    try:
        os.write(notify_fd, READY)
    except OSError:
        pass  # the launcher is gone (SSH dropped): nothing to tell
    rc = wait_exit(pid)
    status = SUCCEEDED if rc == 0 else FAILED
    if not _record(conn, job_id, ACTIVE, status=status, exit_code=rc, finished_at=now_ts()):
        # Aborted (or declared lost) meanwhile: keep that status, but keep the exit code too.
        store.set_exit_code_if_unknown(conn, job_id, rc)
    return 0


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


def wait_exit(pid):
    # type: (int) -> int
    """Exit code of a child: its status, or -N if signal N killed it (as Popen reports)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_ready(read_fd, timeout):
    # type: (int, Optional[float]) -> bool
    """Wait for the supervisor's READY byte or end-of-file; False on timeout."""
    import select

    ready, _, _ = select.select([read_fd], [], [], timeout)
    if not ready:
        return False
    os.read(read_fd, 1)
    return True


def wait_finished(read_fd):
    # type: (int) -> None
    """Block until the supervisor closed the pipe (final status stored, or it died)."""
    while os.read(read_fd, 4096):
        pass

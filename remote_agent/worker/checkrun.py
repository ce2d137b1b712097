"""Check / run / recheck: a job's check command, run by its supervisor on the target.

A check answers "is the desired state already there?" (exit 0: yes; exit 1-255: no). Run keys
say "this was started"; a check says "this is done". The supervisor runs it before the command
(passes: the job ends SUCCEEDED, phase ``satisfied``, and nothing runs) and again after a
command that exited 0 (still failing: FAILED, phase ``recheck_failed``). A check that cannot
say - it cannot be launched, a signal killed it, or it outlived its timeout - is an error: the
job fails without running, because running a non-idempotent command on an unknown state is
exactly what checks are there to avoid.

The check runs with the job's environment, working directory and user, in a session of its
own (so a timeout ends its whole group), and carries the job's id like every job process (so
``abort`` finds it). Its stdout and stderr both go into the job's *stderr* log between two
marker lines (``==> orchesjob check ...`` / ``<== orchesjob check ...``), so the job's stdout
stays exactly the command's output while ``logs --stream stderr`` and the provider's live log
show the check.

The spec lives on the job row (``check_argv`` JSON, ``check_timeout``), so whoever finishes the
job (the supervisor, or a later finisher) can load it without being handed it: jobs/checkspec.py.
This module runs it (the worker side): ``before_run`` and ``after_run``.
"""

import json
import os
import signal
import time

from remote_agent.common import vocab
from remote_agent.common.timeutil import now_ts
from remote_agent.common.vocab import (
    ACTIVE,
    CHECK_ERROR,
    FAILED,
    RUNNING_PHASE,
    SATISFIED,
    STARTING,
    STDERR,
    STDOUT,
    SUCCEEDED,
)
from remote_agent.host.spawn import spawn
from remote_agent.host.tree import JOB_ENV
from remote_agent.store import paths
from remote_agent.worker.handoff import READY, tell

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Spec = Tuple[List[str], float]

#: The verdicts of one check run.
PASSES = "passes"
FAILS = "fails"
ERROR = "error"
#: Set in the check's environment: "before" (ahead of the run) or "after" (the recheck).
WHEN_ENV = "ORCHESJOB_CHECK"


def _write_line(fd, text):
    # type: (int, str) -> None
    """One marker line, on a line of its own even if the log's last line lacks its newline."""
    data = text.encode("utf-8", "backslashreplace") + b"\n"
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
    except OSError:
        pass
    try:
        os.write(fd, data)
    except OSError:
        pass  # a full disk must not turn a check's verdict into a crash


def _wait(pid, timeout):
    # type: (int, float) -> Optional[int]
    """The check's wait status, or None when it outlived ``timeout`` (its group is killed).

    Reaps every other child that ends meanwhile: the supervisor is a subreaper."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            ended, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if ended == pid:
            return status
        if ended:
            continue
        if time.monotonic() >= deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def run(state_dir, job_id, spec, cwd, env, when, current=None):
    # type: (str, str, Spec, Optional[str], Dict[str, str], str, Optional[List[int]]) -> Tuple[str, Optional[int]]
    """Run the check once; returns (verdict, exit code or None), its output in the stderr log.

    ``when`` is "before" or "after". ``current`` (the supervisor's list of the pid its SIGTERM
    is forwarded to) holds the check's pid while it runs.
    """
    argv, timeout = spec
    fd = paths.open_log(state_dir, job_id, STDERR)
    try:
        _write_line(fd, "==> orchesjob check ({} the run, timeout {:g}s): {}".format(
            when, timeout, json.dumps(argv)))
        check_env = dict(env)
        check_env[WHEN_ENV] = when
        try:
            pid = spawn(argv, cwd, check_env, fd, fd)
        except OSError as exc:
            _write_line(fd, "<== orchesjob check cannot start: {}: an error, the job fails".format(
                exc.strerror or exc))
            return ERROR, None
        if current is not None:
            current.append(pid)
        try:
            status = _wait(pid, timeout)
        finally:
            if current is not None:
                current.remove(pid)
        verdict, rc, words = _verdict(status, timeout, when)
        _write_line(fd, "<== orchesjob check {}".format(words))
        return verdict, rc
    finally:
        os.close(fd)


def _verdict(status, timeout, when):
    # type: (Optional[int], float, str) -> Tuple[str, Optional[int], str]
    if status is None:
        return ERROR, None, "timed out after {:g}s: an error, the job fails".format(timeout)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ERROR, -sig, "killed by signal {}: an error, the job fails".format(sig)
    rc = os.WEXITSTATUS(status)
    if rc == 0:
        return PASSES, 0, ("passed: already satisfied, the command does not run" if when == "before"
                           else "passed: the run is verified")
    return FAILS, rc, ("exited {}: not satisfied, the command runs".format(rc) if when == "before"
                       else "exited {}: ran, but the check still fails".format(rc))


def before_run(db, state_dir, job_id, spec, cwd, env, current, notify_fd):
    # type: (Any, str, str, Spec, Optional[str], Dict[str, str], List[int], int) -> bool
    """The supervisor's step before it spawns the command; True when the command is to run.

    Tells the launcher READY first: a start returns as soon as the check runs (the job reads
    STARTING, phase ``checking``), so a long check never holds an SSH call open, and a retry
    that comes meanwhile reattaches to this job like to a running one.
    """
    tell(notify_fd, READY)
    try:  # both logs exist from the start, as for a job without a check (``logs`` reads them)
        os.close(paths.open_log(state_dir, job_id, STDOUT, append=False))
    except OSError:
        pass
    verdict, rc = run(state_dir, job_id, spec, cwd, env, "before", current)
    if verdict == FAILS:
        # only_if STARTING: an abort during the check leaves it ABORTED and nothing runs
        return db.write(job_id, (STARTING,), phase=RUNNING_PHASE, check_exit_code=rc) is True
    if verdict == PASSES:
        db.write(job_id, ACTIVE, status=SUCCEEDED, phase=SATISFIED, check_exit_code=0, finished_at=now_ts())
    else:
        db.write(job_id, ACTIVE, status=FAILED, phase=CHECK_ERROR, check_exit_code=rc, finished_at=now_ts())
    db.close()
    return False


def after_run(db, state_dir, job_id, spec, cwd, env):
    # type: (Any, str, str, Spec, Optional[str], Dict[str, str]) -> Tuple[str, Dict[str, Any]]
    """The recheck after a command that exited 0: (final status, columns to store with it)."""
    db.write(job_id, ACTIVE, phase=vocab.RECHECKING)
    verdict, rc = run(state_dir, job_id, spec, cwd, env, "after")
    if verdict == PASSES:
        return SUCCEEDED, {"phase": vocab.VERIFIED, "check_exit_code": 0}
    phase = vocab.RECHECK_FAILED if verdict == FAILS else vocab.CHECK_ERROR
    return FAILED, {"phase": phase, "check_exit_code": rc}


def fallback_env(recheck, job_id):
    # type: (Tuple[Spec, Optional[str]], str) -> Tuple[Optional[str], Dict[str, str]]
    """The recheck's cwd and environment for a finisher that was not given the job's (its
    request's env is never stored): the stored cwd and this process's environment."""
    env = dict(os.environ)
    env[JOB_ENV] = job_id
    return recheck[1], env

"""Every descendant of a job is the job's: finding them, keeping them, ending them.

A job's main process runs in a process group of its own, but a descendant can leave that
group (``setsid``, a daemon's double fork) and so escape a signal to the group. Three nets
catch such processes, all without root:

* The supervisor makes itself a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``):
  an orphaned descendant is re-parented to the supervisor instead of to init, so every
  descendant stays in the supervisor's process tree while the supervisor lives.
* Every process of the job inherits ``ORCHESJOB_JOB_ID=<job id>`` in its environment, which
  /proc/<pid>/environ shows to the same user: processes that outlived a killed supervisor are
  still found (unless they cleared their environment on exec).
* The main process's group, as before.

A process is named by (pid, start time) so a pid reused meanwhile is never signalled.
"""

import os
import time

from remote_agent.common.validate import env_seconds
from remote_agent.host.procs import stat_fields

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple  # noqa: F401
    Proc = Tuple[int, int]  # (pid, start time in clock ticks)

#: Environment variable every job process inherits; also tells a job its own id.
JOB_ENV = "ORCHESJOB_JOB_ID"
#: Seconds between SIGTERM and SIGKILL for a job's leftover processes (systemd's KillMode=
#: control-group for a one-shot service); ``ORCHESJOB_KILL_GRACE`` in the agent's environment
#: changes it.
KILL_GRACE_DEFAULT = 5.0
_PR_SET_CHILD_SUBREAPER = 36


def kill_grace():
    # type: () -> float
    return env_seconds("ORCHESJOB_KILL_GRACE", KILL_GRACE_DEFAULT)


def become_subreaper():
    # type: () -> bool
    """Make this process the reaper of its orphaned descendants (Linux 3.4+); False elsewhere."""
    try:
        import ctypes  # ~1.5 ms, paid only by the supervisor, before it starts the job

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError, ImportError):
        return False


def close_inherited_fds(keep=()):
    # type: (Iterable[int]) -> None
    """Close every descriptor above 2 except ``keep``.

    Lists /proc/self/fd rather than closing up to RLIMIT_NOFILE, which can be a million.
    """
    keep = set(keep)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _stat(pid):
    # type: (int) -> Optional[Tuple[int, int, int]]
    """(ppid, process group, start time) of a live, non-zombie pid; None otherwise."""
    fields = stat_fields(pid)
    if not fields or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids():
    # type: () -> List[int]
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def _marked(pid, marker):
    # type: (int, bytes) -> bool
    try:
        with open("/proc/{}/environ".format(pid), "rb") as f:
            env = f.read()
    except OSError:  # another user's process, or gone
        return False
    return env.startswith(marker) or (b"\0" + marker) in env


def job_processes(job_id, supervisor_pid=None, group=None, exclude=(), scan_env=True):
    # type: (str, Optional[int], Optional[int], Iterable[int], bool) -> List[Proc]
    """Live processes of a job: the supervisor's descendants, the main process's group, and
    (``scan_env``) every process of this user whose environment carries the job's id.

    A supervisor that is a subreaper passes ``scan_env=False`` for its own job: while it lives
    no descendant can be anywhere but under it, and reading every process's environment costs
    ~10 us a process.
    """
    if not scan_env and supervisor_pid == os.getpid():
        mine = _own_descendants()
        if mine is not None:
            skip = set(exclude)
            return sorted((pid, st[2]) for pid, st in mine.items() if pid not in skip)
    table = {}  # type: Dict[int, Tuple[int, int, int]]
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            table[pid] = st
    marker = "{}={}\0".format(JOB_ENV, job_id).encode("utf-8", "surrogateescape")
    found = set()  # type: Set[int]
    if supervisor_pid and supervisor_pid in table:
        children = {}  # type: Dict[int, List[int]]
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(children.get(supervisor_pid, ()))
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(children.get(pid, ()))
    for pid, (_, pgrp, _) in table.items():
        if (group and pgrp == group) or (scan_env and pid not in found and _marked(pid, marker)):
            found.add(pid)
    skip = set(exclude)
    skip.update((os.getpid(), supervisor_pid or 0))
    return sorted((pid, table[pid][2]) for pid in found if pid not in skip)


def _own_descendants():
    # type: () -> Optional[Dict[int, Tuple[int, int, int]]]
    """This process's live descendants, walked down /proc/<pid>/task/<tid>/children (Linux
    3.5+); None where those files do not exist.

    For a live subreaper this is every process of its job: orphans are re-parented to it, and
    its session (which holds the target's group) can only hold processes forked below it. It
    reads only the job's own processes, where a scan reads every process on the host: ~40 ms
    per job end on a host running 4,000 processes, the bulk of the host's CPU when a thousand
    jobs end together (benchmarks/fanout_bench.py).
    """
    found = {}  # type: Dict[int, Tuple[int, int, int]]
    todo = [os.getpid()]
    first = True
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir("/proc/{}/task".format(pid))
        except OSError:
            continue  # ended meanwhile
        for tid in tids:
            try:
                with open("/proc/{}/task/{}/children".format(pid, tid), "rb") as f:
                    kids = f.read().split()
            except OSError:
                if first:
                    return None  # no children files here (an older kernel): scan instead
                continue
            for kid in kids:
                child = int(kid)
                st = _stat(child)
                if st is not None and child not in found:
                    found[child] = st
                    todo.append(child)
        first = False
    return found


def signal_all(procs, sig):
    # type: (Iterable[Proc], int) -> int
    """Send ``sig`` to each process that is still the one recorded; return how many got it."""
    sent = 0
    for pid, started in procs:
        st = _stat(pid)
        if st is None or st[2] != started:
            continue
        try:
            os.kill(pid, sig)
            sent += 1
        except OSError:
            pass
    return sent


def alive(procs):
    # type: (Iterable[Proc]) -> List[Proc]
    """The processes of ``procs`` that still run (same pid and start time, not zombies)."""
    out = []
    for pid, started in procs:
        st = _stat(pid)
        if st is not None and st[2] == started:
            out.append((pid, started))
    return out


def reap_children():
    # type: () -> None
    """Collect every exited child (adopted orphans included) without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except OSError:  # ECHILD: none left
            return
        if pid == 0:
            return


def end_processes(find, grace, term, kill, reap=False, termed=None):
    # type: (Callable[[], List[Proc]], float, int, int, bool, Optional[List[Proc]]) -> Tuple[bool, bool]
    """End the processes ``find()`` returns, as systemd stops a unit: SIGTERM to those there now,
    then wait until none is left, and SIGKILL to all that are (forked meanwhile or not) once
    ``grace`` seconds passed; returns (TERM sent to any, KILL sent to any).

    ``termed``: the caller already sent SIGTERM to these (sent no second time); ``reap``: this
    process is a subreaper whose adopted orphans must be collected (a zombie does not count as
    alive). Gives up 5 s after the KILL (a process stuck in the kernel).
    """
    sent_term = sent_kill = False
    if termed is None:
        sent_term = signal_all(find(), term) > 0
    deadline = time.monotonic() + max(0.0, grace)
    while True:
        if reap:
            reap_children()
        found = find()
        if not found:
            break
        now = time.monotonic()
        if now >= deadline:
            sent_kill = signal_all(found, kill) > 0 or sent_kill
            if now >= deadline + 5.0:
                break
        time.sleep(0.05 if now >= deadline else min(0.05, deadline - now))
    if reap:
        reap_children()
    return sent_term, sent_kill

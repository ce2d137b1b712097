"""Stopping an aborted job's processes: SIGTERM to every process of the job and to its
supervisor, SIGKILL to whichever is still there after the grace. Identity-checked (pid and
start time), so a recycled pid never receives a signal. The reply flags keep orchesjob's
``*_worker`` names.
"""

import os
import signal
import time

from remote_agent.host import procs, tree

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional  # noqa: F401
    Row = Dict[str, Any]


def target_group(row):
    # type: (Row) -> Optional[int]
    """The target's process group if it is ours to signal, else None.

    Ours when the recorded target is alive, or when no process has that pid any more but
    the group still has members (the target's children): a pid in use as a group id is
    never handed to a new process, so such a group can only be the target's.
    """
    pid = row.get("target_pid")
    if not pid:
        return None
    if procs.is_alive(pid, row.get("target_start"), row.get("boot_id")):
        return pid
    if procs.start_time(pid) is None and procs.boot_id() == row.get("boot_id") and procs.group_exists(pid):
        return pid
    return None


def live_supervisor(row):
    # type: (Row) -> Optional[int]
    """The job's supervisor (column ``worker_pid``) if it still runs and is not this process."""
    pid = row.get("worker_pid")
    if pid and pid != os.getpid() and procs.is_alive(pid, row.get("worker_start"), row.get("boot_id")):
        return pid
    return None


def stop_processes(row, grace):
    # type: (Row, float) -> Dict[str, bool]
    """TERM now, KILL after ``grace`` seconds; returns orchesjob's sent_* flags.

    The job's processes are all of them (tree.job_processes): the supervisor's descendants,
    the target's group, and whatever carries the job's id in its environment (escapees of a
    supervisor that was killed). ``*_target`` flags tell whether any of them got the signal;
    ``*_worker`` flags the supervisor, which is given until the grace (at least 1 s after the
    job's processes are gone) to store the exit code and end by itself.
    """
    job_id = row["job_id"]

    def find():
        # type: () -> List[tree.Proc]
        return tree.job_processes(job_id, supervisor_pid=live_supervisor(row), group=target_group(row))

    deadline = time.monotonic() + max(0.0, grace)
    first = find()
    sent_term_target = tree.signal_all(first, signal.SIGTERM) > 0
    supervisor_pid = live_supervisor(row)
    sent_term_worker = supervisor_pid is not None and procs.send(supervisor_pid, signal.SIGTERM)
    _, sent_kill_target = tree.end_processes(find, deadline - time.monotonic(), signal.SIGTERM,
                                             procs.kill_signal(), termed=first)
    last_call = max(deadline, time.monotonic() + 1.0)
    while live_supervisor(row) and time.monotonic() < last_call:
        time.sleep(0.02)
    supervisor_pid = live_supervisor(row)
    sent_kill_worker = supervisor_pid is not None and procs.send(supervisor_pid, procs.kill_signal())
    return {
        "sent_term_target": sent_term_target,
        "sent_term_worker": sent_term_worker,
        "sent_kill_target": sent_kill_target,
        "sent_kill_worker": sent_kill_worker,
    }

"""Stopping an aborted job's processes: SIGTERM to the target's group and the supervisor,
SIGKILL to whichever is still there after the grace. Identity-checked (procs.is_alive), so a
recycled pid never receives a signal. The reply flags keep orchesjob's ``*_worker`` names.
"""

import os
import time

from remote_agent import procs

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Optional  # noqa: F401
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
    """TERM now, KILL after ``grace`` seconds; returns orchesjob's sent_* flags."""
    import signal

    group, supervisor_pid = target_group(row), live_supervisor(row)
    flags = {
        "sent_term_target": group is not None and procs.send_group(group, signal.SIGTERM),
        "sent_term_worker": supervisor_pid is not None and procs.send(supervisor_pid, signal.SIGTERM),
        "sent_kill_target": False,
        "sent_kill_worker": False,
    }
    deadline = time.monotonic() + max(0.0, grace)
    while time.monotonic() < deadline and (target_group(row) or live_supervisor(row)):
        time.sleep(0.02)
    group, supervisor_pid = target_group(row), live_supervisor(row)
    if group:
        flags["sent_kill_target"] = procs.send_group(group, procs.kill_signal())
    if supervisor_pid:
        flags["sent_kill_worker"] = procs.send(supervisor_pid, procs.kill_signal())
    return flags

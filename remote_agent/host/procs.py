"""Process identity and signalling.

A bare PID is not an identity: PIDs are reused, and a reboot restarts the numbering. A
process is identified by (boot id, pid, start time in clock ticks since boot), all read from
/proc on Linux. A recorded identity is alive only if all three still match and the process
is not a zombie, so a recycled PID never keeps a job RUNNING and never receives our signals.
Where /proc exists, a pid recorded without its start time (a target reaped before it was read
by an older agent, a row imported from orchesjob 1.1.0) is no identity: it never counts as
alive, so it is never signalled and the job is judged by its worker and its exit record.
Elsewhere (macOS, best effort) the start time is unknown and only the PID is checked.
"""

import errno
import os

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Callable, Optional  # noqa: F401


_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_boot_id_cache = []  # type: list


def boot_id():
    # type: () -> Optional[str]
    """The kernel's random boot id; changes on every boot. None where there is no /proc."""
    if not _boot_id_cache:
        try:
            with open(_BOOT_ID_PATH) as f:
                _boot_id_cache.append(f.read().strip() or None)
        except OSError:
            _boot_id_cache.append(None)
    return _boot_id_cache[0]


def stat_fields(pid):
    # type: (int) -> Optional[list]
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        with open("/proc/{}/stat".format(pid), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def start_time(pid):
    # type: (int) -> Optional[int]
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = stat_fields(pid)
    if not fields or len(fields) < 20:
        return None
    return int(fields[19])


def _pid_exists(pid):
    # type: (int) -> bool
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def is_alive(pid, started, boot):
    # type: (Optional[int], Optional[int], Optional[str]) -> bool
    """True if the process recorded as (pid, started, boot) is still the one running."""
    if not pid:
        return False
    current_boot = boot_id()
    if boot and current_boot and boot != current_boot:
        return False
    fields = stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return False  # Linux: no /proc entry means no process
        return _pid_exists(pid)  # no /proc (macOS): best effort
    if fields[0] in (b"Z", b"X"):
        return False
    if started is None or len(fields) < 20 or int(fields[19]) != started:
        return False  # no start time known: a bare pid may be anybody's by now
    return True


def send(pid, sig):
    # type: (int, int) -> bool
    """Signal one process; False if it is gone."""
    return _deliver(os.kill, pid, sig)


def send_group(pgid, sig):
    # type: (int, int) -> bool
    """Signal a whole process group (the target runs as its own session and group leader)."""
    return _deliver(os.killpg, pgid, sig)


def _deliver(kill, ident, sig):
    # type: (Callable[[int, int], None], int, int) -> bool
    try:
        kill(ident, sig)
        return True
    except OSError:
        return False


def group_exists(pgid):
    # type: (int) -> bool
    return send_group(pgid, 0)


def kill_signal():
    # type: () -> int
    """SIGKILL (SIGTERM where there is none). Imported lazily: the signal module costs ~1 ms
    of start-up (it builds enums), and read commands never signal anything."""
    import signal  # ~1 ms (the enum wrapper): only the commands that signal pay it

    return int(getattr(signal, "SIGKILL", signal.SIGTERM))

"""Process, port and polling helpers (stdlib only, Linux /proc): one copy for the whole kit."""

import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional


class WaitTimeout(AssertionError):
    """wait_until() ran out of time (an AssertionError, so pytest shows it as a test failure)."""


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition", diag: Optional[Callable[[], str]] = None) -> Any:
    """Poll ``pred()`` until it returns a truthy value (returned); raise WaitTimeout at the
    deadline with the last value and, when given, ``diag()`` (e.g. a stack's logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = ("\n" + diag()) if diag else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {message} "
                              f"(last value {value!r}){extra}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5,
              banner: Optional[bytes] = None, read_timeout: Optional[float] = None) -> bool:
    """True when something accepts on host:port within ``timeout`` and, with ``banner``, its
    first bytes start with it (e.g. b"SSH-"; read within ``read_timeout``, default timeout)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if banner is None:
                return True
            s.settimeout(timeout if read_timeout is None else read_timeout)
            return s.recv(len(banner)).startswith(banner)
    except OSError:
        return False


# ------------------------------------------------------------------ /proc
def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _stat_fields(pid: int) -> List[str]:
    """/proc/PID/stat after "pid (comm)" (comm may hold spaces and parens): [state, ppid, ...]."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return stat[stat.rindex(")") + 2:].split()
    except ValueError:
        return []


def proc_cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def proc_state(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def proc_ppid(pid: int) -> Optional[int]:
    try:
        return int(_stat_fields(pid)[1])
    except (IndexError, ValueError):
        return None


def pid_start_time(pid: int) -> Optional[int]:
    """Start time in clock ticks since boot (with the pid, names one process for good)."""
    try:
        return int(_stat_fields(pid)[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: Optional[int]) -> bool:
    """True if pid exists and is not a zombie (False for None / 0 / negative)."""
    if not pid or pid <= 0:
        return False
    state = proc_state(pid)
    if state:
        return state not in ("Z", "X")
    try:  # no /proc entry readable: ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def all_pids() -> List[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid: int) -> List[int]:
    """Every live descendant of pid (breadth first)."""
    children: Dict[int, List[int]] = {}
    for p in all_pids():
        pp = proc_ppid(p)
        if pp is not None:
            children.setdefault(pp, []).append(p)
    out: List[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> List[int]:
    """Send sig to pid and all its descendants (collected first, so none escapes by reparenting)."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout`` for the pid to go, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a (log) file, or a note when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data.splitlines()[-lines:])

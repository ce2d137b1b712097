"""Which host this is, and what kind of filesystem holds the state dir.

A state dir under a home directory is often shared by many hosts (NFS homes on a cluster).
Every job records the host that started it; only that host may judge it (LOST, reconcile) or
signal it, because only there do its process ids and boot id mean anything. The host id is
``<nodename>/<machine-id>``: two machines are the same host only if both match (containers
built from one image often share a machine id; cloned VMs sometimes do; hostnames are unique in a
cluster). ``ORCHESJOB_HOST_ID`` overrides it, for a host whose name changes.

SQLite's WAL mode keeps its index in shared memory, which does not work across the hosts of a
network filesystem; there the agent uses a rollback journal (``journal_mode=DELETE``), which
relies on POSIX locks only. The filesystem type comes from /proc/self/mountinfo.
"""

import os

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import List, Optional, Tuple  # noqa: F401

_MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")


_cache = []  # type: List[str]


def _read_first_line(path):
    # type: (str) -> str
    try:
        with open(path) as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def host_id():
    # type: () -> str
    """This host's id: $ORCHESJOB_HOST_ID, else ``<nodename>/<machine-id>`` (cached)."""
    if not _cache:
        forced = os.environ.get("ORCHESJOB_HOST_ID", "").strip()
        if forced:
            _cache.append(forced)
        else:
            machine = ""
            for path in _MACHINE_ID_PATHS:
                machine = _read_first_line(path)
                if machine:
                    break
            node = os.uname().nodename if hasattr(os, "uname") else ""
            _cache.append("{}/{}".format(node or "?", machine or "?"))
    return _cache[0]


def is_this_host(recorded):
    # type: (Optional[str]) -> bool
    """True if a job recorded with ``recorded`` belongs to this host.

    Jobs written before hosts were recorded (None) count as this host's: that is how every
    earlier release judged them.
    """
    return not recorded or recorded == host_id()



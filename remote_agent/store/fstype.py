"""What kind of filesystem holds the state dir (from /proc/self/mountinfo).

SQLite's WAL mode keeps its index in shared memory, which does not work across the hosts of a
network filesystem; there the agent uses a rollback journal (``journal_mode=DELETE``), which
relies on POSIX locks only. A state dir on a network filesystem can also be shared by several
hosts, so the light wrapper always runs its finisher there (worker/light.py).
"""

import os

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Dict, List, Optional, Tuple  # noqa: F401


MOUNTINFO = "/proc/self/mountinfo"


#: Filesystem types (mountinfo's fstype field) shared between machines over a network.
NETWORK_FS = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs",
    "ncpfs", "beegfs", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.rclone",
    "fuse.gcsfuse", "fuse.juicefs", "fuse.lizardfs", "fuse.moosefs",
))


def _unescape(field):
    # type: (str) -> str
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    # type: (str) -> List[Tuple[str, str]]
    """(mount point, fstype) of every line of a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) >= 5 and rest:
            mounts.append((_unescape(fields[4]), rest[0]))
    return mounts


def fs_type_of(path, mounts):
    # type: (str, List[Tuple[str, str]]) -> Optional[str]
    """The fstype of the mount that holds ``path`` (the longest mount point prefix; last wins)."""
    best = None  # type: Optional[Tuple[int, str]]
    for point, fstype in mounts:
        prefix = point if point.endswith("/") else point + "/"
        if path == point or path.startswith(prefix):
            if best is None or len(point) >= best[0]:
                best = (len(point), fstype)
    return best[1] if best else None


def _existing_ancestor(path):
    # type: (str) -> str
    path = os.path.realpath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return os.path.realpath(path)


_known = {}  # type: Dict[str, Optional[str]]


def state_fs_type(state_dir):
    # type: (str) -> Optional[str]
    """The filesystem type of ``state_dir`` (or of its nearest existing parent); None if unknown.
    Found once per process and state dir (an agent process lives for one request: a batch of
    starts asks once per start, its supervisors inherit the answer)."""
    if state_dir in _known:
        return _known[state_dir]
    try:
        with open(MOUNTINFO) as f:
            text = f.read()
    except OSError:
        return None
    fstype = _known[state_dir] = fs_type_of(_existing_ancestor(state_dir), parse_mountinfo(text))
    return fstype


def is_network_fs(fstype):
    # type: (Optional[str]) -> bool
    if not fstype:
        return False
    return fstype in NETWORK_FS or fstype.split(".")[0] in ("nfs", "cifs")


def network_fs_type(state_dir):
    # type: (str) -> Optional[str]
    """The state dir's filesystem type if it is a network one (no WAL there), else None."""
    fstype = state_fs_type(state_dir)
    return fstype if is_network_fs(fstype) else None

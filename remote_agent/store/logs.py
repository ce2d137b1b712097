"""Reading job logs in chunks (for poll and wait) without tearing lines."""

import os

from remote_agent.store import paths

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict  # noqa: F401


def read_chunk(state_dir, job_id, stream, offset, limit, terminal):
    # type: (str, str, str, int, int, bool) -> Dict[str, Any]
    """Bytes of a log from ``offset``: at most ``limit``, ending at a line end while running."""
    path = paths.log_path(state_dir, job_id, stream)
    data = b""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset < size:
                f.seek(offset)
                data = f.read(min(limit, size - offset))
    except OSError:
        size = 0
    if data and not terminal:
        cut = data.rfind(b"\n") + 1
        if cut:
            data = data[:cut]
        elif len(data) < limit:
            data = b""  # half a line: wait until it is complete
    next_offset = offset + len(data)
    return {
        "offset": offset,
        "next_offset": next_offset,
        "size": size,
        "data_b64": b64(data),
        "eof": terminal and next_offset >= size,
    }


def b64(data):
    # type: (bytes) -> str
    import binascii  # not needed by the commands that read no logs

    return binascii.b2a_base64(data).decode("ascii").rstrip("\n")


def log_size(state_dir, job_id, stream):
    # type: (str, str, str) -> int
    try:
        return os.stat(paths.log_path(state_dir, job_id, stream)).st_size
    except OSError:
        return 0


def has_output(state_dir, job_id, offsets, limit):
    # type: (str, str, Dict[str, int], int) -> bool
    """True if a log chunk from ``offsets`` would now return bytes (a whole line, or a full limit)."""
    for stream, offset in offsets.items():
        if log_size(state_dir, job_id, stream) > offset:
            if read_chunk(state_dir, job_id, stream, offset, limit, False)["next_offset"] > offset:
                return True
    return False


def copy_out(f, out):
    # type: (Any, Any) -> None
    """Copy an open log file to ``out`` (a binary stream) from where it stands, 1 MiB at a time."""
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        out.write(block)
    out.flush()

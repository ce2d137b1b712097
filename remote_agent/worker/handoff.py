"""The pipe between a launcher (the ``start`` command) and the supervisor it forked.

The supervisor writes one byte ``W`` once it has recorded itself as the job's worker, one byte
``R`` once the target runs and its pid is stored (or, for a job with a check or locks, once it
starts checking or waiting), and the pipe reaches end-of-file when the final status is stored
or the supervisor died. A sync start therefore wakes the moment the job ends, with no polling.

An async start always waits for ``W``, even with ``start_timeout`` 0. Until then the row names
the launcher as the job's worker (ops/start.new_attempt), so a launcher gone before the
supervisor recorded itself let any reader declare the healthy job LOST ("exited before
starting the target"), and the supervisor then ran nothing (seen in CI under load).
"""

import os
import select
import time

MYPY = False
if MYPY:
    from typing import Optional  # noqa: F401

RECORDED = b"W"
READY = b"R"
#: The most an async start waits for the supervisor to record itself (the write lock held by
#: others past the busy timeout): then it answers STARTING, as before this wait existed.
RECORD_WAIT = 30.0


def tell(notify_fd, byte):
    # type: (int, bytes) -> None
    """In the supervisor: one byte to the launcher, if it still listens."""
    try:
        os.write(notify_fd, byte)
    except OSError:
        pass  # the launcher is gone (SSH dropped): nothing to tell


def wait_ready(read_fd, timeout):
    # type: (int, float) -> bool
    """In an async launcher: wait for ``W`` (up to RECORD_WAIT, whatever ``timeout``), then for
    ``R`` or end-of-file up to ``timeout``; False on timeout."""
    deadline = time.monotonic() + timeout
    byte = _next_byte(read_fd, max(timeout, RECORD_WAIT))
    if byte == RECORDED:
        byte = _next_byte(read_fd, max(0.0, deadline - time.monotonic()))
    return byte is not None


def wait_finished(read_fd):
    # type: (int) -> None
    """In a sync launcher: block until the supervisor closed the pipe (final status stored, or
    it died)."""
    while os.read(read_fd, 4096):
        pass


def _next_byte(read_fd, timeout):
    # type: (int, float) -> Optional[bytes]
    """The pipe's next byte (b"" at end-of-file), or None on timeout."""
    ready, _, _ = select.select([read_fd], [], [], timeout)
    return os.read(read_fd, 1) if ready else None

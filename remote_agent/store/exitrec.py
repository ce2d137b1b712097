"""The exit status of a job, recorded durably before the database is written.

The supervisor knows a job's exit status once, when the job's main process ends. If the
database cannot take the final write at that moment (another process holds the write lock past
the busy timeout, slow or full storage) and the status lived only in memory, a supervisor that
then dies would leave a job that reads LOST with an unknown exit status although it finished,
and a retry would run it again. So the status first goes to a small file beside the job's logs,
written to a temporary name, fsynced, renamed, and the directory fsynced; then the database
write is retried until it succeeds. Whoever reconciles a job whose processes are gone reads
this file before declaring it LOST.

Format, one line: ``v1 <exit_code> <finished_at>`` (a shell wrapper can write it too).
"""

import os

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Optional, Tuple  # noqa: F401


def path(state_dir, job_id):
    # type: (str, str) -> str
    return os.path.join(state_dir, "logs", "{}.exit".format(job_id))


def _fsync_dir(directory):
    # type: (str) -> None
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def write(state_dir, job_id, exit_code, finished_at):
    # type: (str, str, int, int) -> None
    """Record the exit status durably; raises OSError (e.g. ENOSPC) if it could not."""
    final = path(state_dir, job_id)
    data = "v1 {:d} {:d}\n".format(exit_code, finished_at).encode("ascii")
    while True:  # an unpredictable name, created new, never through a symlink
        tmp = "{}.tmp.{}".format(final, os.urandom(6).hex())  # bytes.hex: no binascii to load
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            break
        except FileExistsError:
            continue
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    _fsync_dir(os.path.dirname(final))


def read(state_dir, job_id):
    # type: (str, str) -> Optional[Tuple[int, int]]
    """(exit_code, finished_at) if the supervisor recorded them, else None."""
    try:
        fd = os.open(path(state_dir, job_id), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None  # not written by this user: never an outcome
        fields = os.read(fd, 64).split()
    finally:
        os.close(fd)
    if len(fields) != 3 or fields[0] != b"v1":
        return None
    try:
        return int(fields[1]), int(fields[2])
    except ValueError:
        return None


def remove(state_dir, job_id):
    # type: (str, str) -> bool
    """Delete the record (with the job's logs); False if it could not be removed."""
    for name in (path(state_dir, job_id), path(state_dir, job_id) + ".tmp"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True

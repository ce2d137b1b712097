"""What the agent does to jobs: the decisions shared by the CLI and the rpc protocol.

Every decision that could start a process is taken inside one ``BEGIN IMMEDIATE``
transaction, so concurrent starters serialize on the database and exactly one of them
inserts; the partial unique index on active jobs makes a second active job for a key
impossible even if this code were wrong.
"""

import json
import os
import time

from remote_agent import procs, store
from remote_agent.errors import AgentError, bad_args, not_found, wrong_state
from remote_agent.timeutil import now_ts

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Row = Dict[str, Any]


MAX_RUN_KEY = 2048


# --- validation ----------------------------------------------------------------------

def check_run_key(run_key):
    # type: (Any) -> str
    if not isinstance(run_key, str) or not run_key:
        raise bad_args("run_key is required")
    if len(run_key) > MAX_RUN_KEY:
        raise bad_args("run_key is too long ({} characters; the limit is {})".format(
            len(run_key), MAX_RUN_KEY))
    if any(ord(c) < 32 or ord(c) == 127 for c in run_key):
        raise bad_args("run_key must not contain control characters (newline, tab, ...)")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in run_key):
        raise bad_args("run_key must be valid UTF-8 text")
    return run_key


def text(value):
    # type: (Optional[str]) -> Optional[str]
    """Free text from a command line (reasons) as storable UTF-8: undecodable bytes become U+FFFD."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_job_id(job_id):
    # type: (Any) -> str
    if not isinstance(job_id, str) or not job_id:
        raise bad_args("job_id is required")
    if "/" in job_id or "\\" in job_id:
        raise bad_args("Invalid job_id: contains path separator")
    if len(job_id) > 200 or any(ord(c) < 32 for c in job_id):
        raise bad_args("Invalid job_id: {!r}".format(job_id[:60]))
    return job_id


def check_argv(argv):
    # type: (Any) -> List[str]
    if not argv:
        raise bad_args("command is required (provide it after --)")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise bad_args("command must be a list of strings")
    if any("\0" in a for a in argv):
        raise bad_args("command arguments must not contain NUL bytes")
    return argv


def new_job_id():
    # type: () -> str
    """A random (version 4) UUID, without importing uuid (it costs start-up time)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = bytes(b).hex()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


# --- liveness --------------------------------------------------------------------------

def lost_reason(row):
    # type: (Row) -> Optional[str]
    """Why an active job is gone, or None while its supervisor or its target is alive."""
    boot = row.get("boot_id")
    current = procs.boot_id()
    if boot and current and boot != current:
        return "host rebooted since the job started"
    if procs.is_alive(row.get("worker_pid"), row.get("worker_start"), boot):
        return None
    if row.get("target_pid") is None:
        return "supervisor (pid {}) exited before starting the target".format(row.get("worker_pid"))
    if procs.is_alive(row["target_pid"], row.get("target_start"), boot):
        return None
    return "supervisor (pid {}) was killed and the target (pid {}) has ended; exit status unknown".format(
        row.get("worker_pid"), row["target_pid"])


def reconcile(conn, row):
    # type: (Any, Row) -> Row
    """Return the job as it really is: LOST once neither supervisor nor target is alive.

    Reads stay read-only in the common case; only a job found gone is written, and if the
    database cannot be written the caller still sees the LOST status.
    """
    if row["status"] not in store.ACTIVE:
        return row
    reason = lost_reason(row)
    if reason is None:
        return row
    try:
        return store.in_transaction(
            conn, lambda: reconcile_locked(conn, store.get_job(conn, row["job_id"]) or row))
    except Exception:
        lost = dict(row)
        lost.update(status="LOST", lost_reason=reason, finished_at=now_ts())
        return lost


# --- reading ---------------------------------------------------------------------------

class Reader(object):
    """Read access to a state dir; no database at all reads as 'nothing stored'."""

    def __init__(self, home):
        # type: (str) -> None
        self.home = home
        self.conn = store.open_db(home, write=False)

    def close(self):
        # type: () -> None
        if self.conn is not None:
            self.conn.close()

    def job(self, job_id):
        # type: (str) -> Optional[Row]
        if self.conn is None:
            return None
        row = store.get_job(self.conn, job_id)
        return reconcile(self.conn, row) if row else None

    def require_job(self, job_id):
        # type: (str) -> Row
        row = self.job(check_job_id(job_id))
        if row is None:
            raise not_found("Job not found: {}".format(job_id))
        return row

    def latest(self, run_key):
        # type: (str) -> Row
        row = store.latest_job(self.conn, check_run_key(run_key)) if self.conn else None
        if row is None:
            raise not_found("run_key not found")
        return reconcile(self.conn, row)

    def resolve(self, run_key, job_id):
        # type: (Optional[str], Optional[str]) -> Row
        if job_id:
            return self.require_job(job_id)
        if run_key:
            return self.latest(run_key)
        raise bad_args("Either --run-key or --job-id is required")

    def history(self, run_key):
        # type: (str) -> List[Row]
        rows = store.key_history(self.conn, check_run_key(run_key)) if self.conn else []
        if not rows:
            raise not_found("No jobs found for run_key: {}".format(run_key))
        return [reconcile(self.conn, r) for r in rows]

    def running(self):
        # type: () -> List[Row]
        if self.conn is None:
            return []
        rows = [reconcile(self.conn, r) for r in store.active_jobs(self.conn)]
        return [r for r in rows if r["status"] in store.ACTIVE]

    def override(self, run_key):
        # type: (Optional[str]) -> Optional[Row]
        if self.conn is None or not run_key:
            return None
        return store.valid_override(self.conn, run_key, now_ts())


def read_chunk(home, job_id, stream, offset, limit, terminal):
    # type: (str, str, str, int, int, bool) -> Dict[str, Any]
    """Bytes of a log from ``offset``: at most ``limit``, ending at a line end while running."""
    path = store.log_path(home, job_id, stream)
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
        "data_b64": _b64(data),
        "eof": terminal and next_offset >= size,
    }


def _b64(data):
    # type: (bytes) -> str
    import binascii  # not needed by the commands that read no logs

    return binascii.b2a_base64(data).decode("ascii").rstrip("\n")


def log_size(home, job_id, stream):
    # type: (str, str, str) -> int
    try:
        return os.stat(store.log_path(home, job_id, stream)).st_size
    except OSError:
        return 0


def has_output(home, job_id, offsets, limit):
    # type: (str, str, Dict[str, int], int) -> bool
    """True if a log chunk from ``offsets`` would now return bytes (a whole line, or a full limit)."""
    for stream, offset in offsets.items():
        if log_size(home, job_id, stream) > offset:
            if read_chunk(home, job_id, stream, offset, limit, False)["next_offset"] > offset:
                return True
    return False


def wait_for(reader, job_id, timeout, offsets=None, limit=65536):
    # type: (Reader, str, Optional[float], Optional[Dict[str, int]], int) -> Tuple[Row, bool]
    """Poll until the job is terminal (or, with ``offsets``, has new output past them).

    Polling starts at 5 ms and backs off to 100 ms: prompt for short jobs, and an indexed
    read ten times a second costs nothing for long ones. Returns (job, timed_out).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        row = reader.require_job(job_id)
        if row["status"] in store.TERMINAL:
            return row, False
        if offsets and has_output(reader.home, job_id, offsets, limit):
            return row, False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return row, True
            delay = min(delay, left)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


# --- writing ---------------------------------------------------------------------------

class StartResult(object):
    """The outcome of a start decision: what was done and the job it was done to."""

    def __init__(self, action, row, strict_override_used=False):
        # type: (str, Row, bool) -> None
        self.action = action
        self.row = row
        self.strict_override_used = strict_override_used

    @property
    def existing(self):
        # type: () -> bool
        return self.action != "started"


def _new_attempt(conn, run_key, argv, cwd, strict, rerun_of, rerun_reason):
    # type: (Any, str, List[str], Optional[str], bool, Optional[str], Optional[str]) -> Row
    keyrow = store.run_key_row(conn, run_key)
    now = now_ts()
    me = os.getpid()
    row = {
        "job_id": new_job_id(),
        "run_key": run_key,
        "attempt_no": (keyrow["last_attempt_no"] if keyrow else 0) + 1,
        "command": json.dumps(argv),
        # JSON like command: a directory name may hold bytes that are not UTF-8
        "cwd": json.dumps(cwd) if cwd is not None else None,
        "status": "STARTING",
        "strict": int(bool(strict)),
        "rerun_of_job_id": rerun_of if rerun_of is not None else (keyrow or {}).get("last_job_id"),
        "rerun_reason": rerun_reason,
        "boot_id": procs.boot_id(),
        # The launcher stands in as the supervisor until the forked one records itself, so a
        # launcher that dies before forking leaves a job that reads as LOST, not a stuck key.
        "worker_pid": me,
        "worker_start": procs.start_time(me),
        "started_at": now,
        "updated_at": now,
    }
    store.insert_job(conn, row)
    return row


def _decide_start(conn, run_key, argv, cwd, strict, resume):
    # type: (Any, str, List[str], Optional[str], bool, bool) -> StartResult
    latest = store.latest_job(conn, run_key)
    if latest is not None:
        latest = reconcile_locked(conn, latest)
        if latest["status"] in store.ACTIVE:
            return StartResult("reattached", latest)
        if resume and latest.get("acked_at") is None:
            return StartResult("adopted", latest)
    override = store.valid_override(conn, run_key, now_ts()) if strict else None
    if strict and override is None:
        if latest is not None:
            return StartResult("kept", latest)
        keyrow = store.run_key_row(conn, run_key)
        if keyrow is not None:
            raise wrong_state(
                "run_key already ran (attempt {}, job {}, since cleaned); unlock it to run again".format(
                    keyrow["last_attempt_no"], keyrow["last_job_id"]))
    row = _new_attempt(conn, run_key, argv, cwd, strict,
                       latest["job_id"] if latest else None,
                       override["reason"] if override else None)
    if override is not None:
        conn.execute("UPDATE strict_overrides SET used_at = ? WHERE run_key = ? AND used_at IS NULL",
                     (now_ts(), run_key))
    return StartResult("started", row, strict_override_used=override is not None)


def reconcile_locked(conn, row):
    # type: (Any, Row) -> Row
    """``reconcile`` inside a transaction the caller already holds."""
    if row["status"] not in store.ACTIVE:
        return row
    reason = lost_reason(row)
    if reason is None:
        return row
    now = now_ts()
    store.update_job(conn, row["job_id"], store.ACTIVE, status="LOST", lost_reason=reason,
                     finished_at=now, updated_at=now)
    return store.get_job(conn, row["job_id"]) or row


def start(home, run_key, argv, cwd=None, env=None, strict=False, resume=False,
          sync=False, start_timeout=10.0):
    # type: (str, str, List[str], Optional[str], Optional[Dict[str, str]], bool, bool, bool, float) -> Tuple[StartResult, Row]
    """Decide, launch if needed, and wait as asked; returns (decision, job as it now is)."""
    check_run_key(run_key)
    check_argv(argv)
    conn = store.open_db(home, write=True)
    assert conn is not None
    try:
        result = store.in_transaction(
            conn, lambda: _decide_start(conn, run_key, argv, cwd, strict, resume))
    except Exception as exc:
        conn.close()
        raise _translate(exc, home) from None
    conn.close()  # before forking: a SQLite handle must never cross a fork
    return result, _launch_and_wait(home, result, argv, cwd, env, sync, start_timeout)


def _launch_and_wait(home, result, argv, cwd, env, sync, start_timeout):
    # type: (str, StartResult, List[str], Optional[str], Optional[Dict[str, str]], bool, float) -> Row
    job_id = result.row["job_id"]
    pid = read_fd = None
    if result.action == "started":
        from remote_agent import supervisor  # only a start needs it (and its signal import)

        pid, read_fd = supervisor.launch(home, job_id, argv, cwd, env)
        if sync:
            supervisor.wait_finished(read_fd)
        else:
            supervisor.wait_ready(read_fd, max(0.0, start_timeout))
        os.close(read_fd)
        _reap(pid)
    reader = Reader(home)
    try:
        if sync:
            return wait_for(reader, job_id, None)[0]
        return reader.require_job(job_id)
    finally:
        reader.close()


def _reap(pid):
    # type: (int) -> None
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass


def _translate(exc, home):
    # type: (Exception, str) -> Exception
    if isinstance(exc, AgentError):
        return exc
    import sqlite3

    if isinstance(exc, sqlite3.IntegrityError):
        return wrong_state("run_key already has an active job")
    if isinstance(exc, sqlite3.Error):
        return store.db_error(exc, home)
    return exc


def _writer(home):
    # type: (str) -> Any
    conn = store.open_db(home, write=True)
    assert conn is not None
    return conn


def _resolve_locked(conn, run_key, job_id):
    # type: (Any, Optional[str], Optional[str]) -> Row
    if job_id:
        row = store.get_job(conn, check_job_id(job_id))
        if row is None:
            raise not_found("Job not found: {}".format(job_id))
    elif run_key:
        row = store.latest_job(conn, check_run_key(run_key))
        if row is None:
            raise not_found("run_key not found")
    else:
        raise bad_args("Either --run-key or --job-id is required")
    return reconcile_locked(conn, row)


def ack(home, job_id):
    # type: (str, str) -> Row
    """Mark a terminal job's result as consumed: the next resume start runs a new attempt."""
    check_job_id(job_id)
    conn = _writer(home)
    try:
        def do():
            # type: () -> Row
            row = _resolve_locked(conn, None, job_id)
            if row["status"] in store.ACTIVE:
                raise wrong_state("Cannot ack active job: status={}".format(row["status"]))
            conn.execute("UPDATE jobs SET acked_at = ? WHERE job_id = ? AND acked_at IS NULL",
                         (now_ts(), job_id))
            return store.get_job(conn, job_id) or row
        return store.in_transaction(conn, do)
    except Exception as exc:
        raise _translate(exc, home) from None
    finally:
        conn.close()


def abort(home, run_key, job_id, reason, grace):
    # type: (str, Optional[str], Optional[str], Optional[str], float) -> Tuple[Row, Dict[str, bool]]
    """Store ABORTED first, then SIGTERM, then SIGKILL after the grace; identity-checked."""
    conn = _writer(home)
    try:
        def do():
            # type: () -> Row
            row = _resolve_locked(conn, run_key, job_id)
            if row["status"] not in store.ACTIVE:
                raise wrong_state("Job is not running: {} status={}".format(row["job_id"], row["status"]))
            now = now_ts()
            store.update_job(conn, row["job_id"], store.ACTIVE, status="ABORTED", finished_at=now,
                             aborted_at=now, updated_at=now, abort_reason=text(reason))
            return row
        row = store.in_transaction(conn, do)
    except Exception as exc:
        conn.close()
        raise _translate(exc, home) from None
    flags = _stop_processes(row, grace)
    try:
        final = store.get_job(conn, row["job_id"]) or row
    finally:
        conn.close()
    return final, flags


def _target_group(row):
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


def _worker(row):
    # type: (Row) -> Optional[int]
    pid = row.get("worker_pid")
    if pid and pid != os.getpid() and procs.is_alive(pid, row.get("worker_start"), row.get("boot_id")):
        return pid
    return None


def _stop_processes(row, grace):
    # type: (Row, float) -> Dict[str, bool]
    import signal

    group, worker = _target_group(row), _worker(row)
    flags = {
        "sent_term_target": group is not None and procs.send_group(group, signal.SIGTERM),
        "sent_term_worker": worker is not None and procs.send(worker, signal.SIGTERM),
        "sent_kill_target": False,
        "sent_kill_worker": False,
    }
    deadline = time.monotonic() + max(0.0, grace)
    while time.monotonic() < deadline and (_target_group(row) or _worker(row)):
        time.sleep(0.02)
    group, worker = _target_group(row), _worker(row)
    if group:
        flags["sent_kill_target"] = procs.send_group(group, procs.kill_signal())
    if worker:
        flags["sent_kill_worker"] = procs.send(worker, procs.kill_signal())
    return flags


def unlock(home, run_key, reason, ttl_seconds):
    # type: (str, str, Optional[str], Optional[int]) -> Dict[str, Any]
    """Allow the next ``start --strict`` of a finished key to run once more."""
    check_run_key(run_key)
    conn = _writer(home)
    now = now_ts()
    expires = now + ttl_seconds if ttl_seconds is not None else None
    try:
        def do():
            # type: () -> None
            latest = store.latest_job(conn, run_key)
            if latest is None and store.run_key_row(conn, run_key) is None:
                raise not_found("run_key not found")
            if latest is not None:
                latest = reconcile_locked(conn, latest)
                if latest["status"] in store.ACTIVE:
                    raise wrong_state("Cannot unlock active job: status={}".format(latest["status"]))
            conn.execute(
                "INSERT OR REPLACE INTO strict_overrides (run_key, allowed_at, used_at, reason, expires_at)"
                " VALUES (?, ?, NULL, ?, ?)", (run_key, now, text(reason), expires))
        store.in_transaction(conn, do)
    except Exception as exc:
        raise _translate(exc, home) from None
    finally:
        conn.close()
    return {"unlocked": True, "run_key": run_key, "reason": reason, "allowed_at": now,
            "expires_at": expires}


def rerun(home, run_key, job_id, reason, sync, start_timeout):
    # type: (str, Optional[str], Optional[str], Optional[str], bool, float) -> Tuple[StartResult, Row]
    """A new attempt with a finished job's command; never beside an active job of its key."""
    conn = _writer(home)
    try:
        def do():
            # type: () -> Tuple[StartResult, Row]
            source = _resolve_locked(conn, run_key, job_id)
            if source["status"] in store.ACTIVE:
                raise wrong_state("Cannot rerun active job: status={}".format(source["status"]))
            latest = reconcile_locked(conn, store.latest_job(conn, source["run_key"]) or source)
            if latest["status"] in store.ACTIVE:
                raise wrong_state("Cannot rerun: run_key has an active job {} status={}".format(
                    latest["job_id"], latest["status"]))
            argv = store.command_of(source)
            row = _new_attempt(conn, source["run_key"], argv, store.cwd_of(source),
                               False, source["job_id"], text(reason))
            return StartResult("started", row), source
        result, source = store.in_transaction(conn, do)
    except Exception as exc:
        conn.close()
        raise _translate(exc, home) from None
    conn.close()
    argv = store.command_of(source)
    return result, _launch_and_wait(home, result, argv, store.cwd_of(source), None, sync, start_timeout)


def clean(home, job_id=None, run_key=None, before=None, after=None, everything=False, dry_run=False):
    # type: (str, Optional[str], Optional[str], Optional[int], Optional[int], bool, bool) -> Tuple[List[Row], int]
    """Delete terminal jobs and their logs; active jobs and run-key history are kept.

    The run_keys row survives, so attempt numbers keep counting up and a key that a
    ``--strict`` start consumed stays consumed until ``unlock``.
    """
    if not os.path.exists(store.db_path(home)):
        return [], 0
    conn = _writer(home)
    clauses = ["status IN ('SUCCEEDED', 'FAILED', 'LOST', 'CANCELLED', 'ABORTED')"]
    params = []  # type: List[Any]
    if job_id:
        clauses.append("job_id = ?")
        params.append(check_job_id(job_id))
    if run_key:
        clauses.append("run_key = ?")
        params.append(check_run_key(run_key))
    if not everything and not job_id:
        if before is not None:
            clauses.append("COALESCE(finished_at, started_at) < ?")
            params.append(before)
        if after is not None:
            clauses.append("COALESCE(finished_at, started_at) >= ?")
            params.append(after)
    sql = "SELECT job_id, run_key, finished_at, started_at FROM jobs WHERE {} ORDER BY started_at".format(
        " AND ".join(clauses))
    try:
        rows = conn.execute(sql, params).fetchall()
        if dry_run or not rows:
            return rows, 0

        def delete():
            # type: () -> None
            conn.executemany("DELETE FROM jobs WHERE job_id = ? AND status NOT IN ('STARTING', 'RUNNING')",
                             [(r["job_id"],) for r in rows])
        store.in_transaction(conn, delete)
    except Exception as exc:
        raise _translate(exc, home) from None
    finally:
        conn.close()
    errors = 0
    for r in rows:
        for stream in ("stdout", "stderr"):
            try:
                os.unlink(store.log_path(home, r["job_id"], stream))
            except FileNotFoundError:
                pass
            except OSError:
                errors += 1
    return rows, errors

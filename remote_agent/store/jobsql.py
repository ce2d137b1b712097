"""Every SQL statement on the ``jobs``, ``run_keys`` and ``strict_overrides`` tables: the
reads of one job or key, the writes (inside a transaction the caller holds) and the stored
values. Statuses reach SQL as bound parameters from ``vocab``, never as literals. The
``worker_pid`` and ``worker_start`` columns hold the job's supervisor (see worker/supervisor.py):
the names are orchesjob's and stay, in the database and in the JSON job object.
"""

import json

from remote_agent.common.vocab import ACTIVE, STDERR, STDOUT, TERMINAL
from remote_agent.store.sqlite import placeholders, words

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    import sqlite3  # noqa: F401
    from typing import Any, Dict, Iterable, List, Optional, Sequence  # noqa: F401
    Row = Dict[str, Any]


def get_job(conn, job_id):
    # type: (sqlite3.Connection, str) -> Optional[Row]
    return conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


def latest_job(conn, run_key):
    # type: (sqlite3.Connection, str) -> Optional[Row]
    return conn.execute(
        "SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC LIMIT 1", (run_key,)
    ).fetchone()


def key_history(conn, run_key):
    # type: (sqlite3.Connection, str) -> List[Row]
    return conn.execute(
        "SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC", (run_key,)
    ).fetchall()


_ACTIVE_JOBS_SQL = "SELECT * FROM jobs WHERE status IN {} ORDER BY started_at, attempt_no".format(
    words(ACTIVE))


def active_jobs(conn):
    # type: (sqlite3.Connection) -> List[Row]
    """The STARTING/RUNNING jobs, through the partial index jobs_active."""
    return conn.execute(_ACTIVE_JOBS_SQL).fetchall()


def run_key_row(conn, run_key):
    # type: (sqlite3.Connection, str) -> Optional[Row]
    return conn.execute("SELECT * FROM run_keys WHERE run_key = ?", (run_key,)).fetchone()


def valid_override(conn, run_key, now):
    # type: (sqlite3.Connection, str, int) -> Optional[Row]
    return conn.execute(
        "SELECT * FROM strict_overrides WHERE run_key = ? AND used_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (run_key, now),
    ).fetchone()


def clean_candidates(conn, job_id=None, run_key=None, before=None, after=None, keep=None, acked_only=False):
    # type: (sqlite3.Connection, Optional[str], Optional[str], Optional[int], Optional[int], Optional[int], bool) -> List[Row]
    """Terminal jobs to clean, oldest first; ``before`` exclusive, ``after`` inclusive; ``keep``:
    not the newest N attempts of their key (a seek on jobs_run_key_attempt per row: no window
    functions before SQLite 3.25); ``acked_only``: acknowledged results only."""
    clauses = ["status IN " + placeholders(TERMINAL)]
    params = list(TERMINAL)  # type: List[Any]
    if job_id:
        clauses.append("job_id = ?")
        params.append(job_id)
    if run_key:
        clauses.append("run_key = ?")
        params.append(run_key)
    if before is not None:
        clauses.append("COALESCE(finished_at, started_at) < ?")
        params.append(before)
    if after is not None:
        clauses.append("COALESCE(finished_at, started_at) >= ?")
        params.append(after)
    if acked_only:
        clauses.append("acked_at IS NOT NULL")
    if keep is not None:
        clauses.append("(SELECT COUNT(*) FROM jobs AS newer WHERE newer.run_key = jobs.run_key"
                       " AND newer.attempt_no > jobs.attempt_no) >= ?")
        params.append(keep)
    sql = "SELECT job_id, run_key, finished_at, started_at FROM jobs WHERE {} ORDER BY started_at".format(
        " AND ".join(clauses))
    return conn.execute(sql, params).fetchall()


def insert_job(conn, job):
    # type: (sqlite3.Connection, Row) -> None
    """Insert a STARTING job and advance its key's attempt counter."""
    cols = sorted(job)
    conn.execute(
        "INSERT INTO jobs ({}) VALUES ({})".format(", ".join(cols), ", ".join("?" * len(cols))),
        [job[c] for c in cols],
    )
    # INSERT OR REPLACE rather than an upsert: SQLite 3.22 (Ubuntu 18.04) has no ON CONFLICT.
    conn.execute(
        "INSERT OR REPLACE INTO run_keys (run_key, last_attempt_no, last_job_id) VALUES (?, ?, ?)",
        (job["run_key"], job["attempt_no"], job["job_id"]),
    )


def update_job(conn, job_id, only_if_status, **values):
    # type: (sqlite3.Connection, str, Sequence[str], **Any) -> bool
    """Set columns on a job if it is still in one of ``only_if_status``; True if it was."""
    cols = sorted(values)
    sql = "UPDATE jobs SET {} WHERE job_id = ? AND status IN {}".format(
        ", ".join("{} = ?".format(c) for c in cols), placeholders(only_if_status))
    cur = conn.execute(sql, [values[c] for c in cols] + [job_id] + list(only_if_status))
    return cur.rowcount > 0


def set_exit_code_if_unknown(conn, job_id, exit_code):
    # type: (sqlite3.Connection, str, int) -> None
    """Keep a target's exit code on a job that already ended otherwise (aborted, lost)."""
    conn.execute("UPDATE jobs SET exit_code = ? WHERE job_id = ? AND exit_code IS NULL",
                 (exit_code, job_id))


def ack_job(conn, job_id, now):
    # type: (sqlite3.Connection, str, int) -> None
    """Mark a job's result as consumed (the first ack counts)."""
    conn.execute("UPDATE jobs SET acked_at = ? WHERE job_id = ? AND acked_at IS NULL", (now, job_id))


def record_shown(conn, job_id, offsets):
    # type: (sqlite3.Connection, str, Dict[str, int]) -> None
    """Remember the log offsets a watcher has shown; they only ever move forward."""
    conn.execute(
        "UPDATE jobs SET stdout_shown = MAX(stdout_shown, ?), stderr_shown = MAX(stderr_shown, ?)"
        " WHERE job_id = ?", (offsets.get(STDOUT, 0), offsets.get(STDERR, 0), job_id))


def allow_override(conn, run_key, now, reason, expires_at):
    # type: (sqlite3.Connection, str, int, Optional[str], Optional[int]) -> None
    """Store (or replace) a key's unlock: the next strict start may run once more."""
    conn.execute(
        "INSERT OR REPLACE INTO strict_overrides (run_key, allowed_at, used_at, reason, expires_at)"
        " VALUES (?, ?, NULL, ?, ?)", (run_key, now, reason, expires_at))


def use_override(conn, run_key, now):
    # type: (sqlite3.Connection, str, int) -> None
    conn.execute("UPDATE strict_overrides SET used_at = ? WHERE run_key = ? AND used_at IS NULL",
                 (now, run_key))


def delete_terminal(conn, job_ids):
    # type: (sqlite3.Connection, Iterable[str]) -> None
    """Delete jobs that are still terminal (a job never leaves ACTIVE by being deleted)."""
    ids = list(job_ids)
    conn.executemany(
        "DELETE FROM jobs WHERE job_id = ? AND status NOT IN " + placeholders(ACTIVE),
        [(job_id, *ACTIVE) for job_id in ids])
    # their places in the lock queue (schema level 7) go with them
    conn.executemany(
        "DELETE FROM lock_queue WHERE job_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM jobs WHERE jobs.job_id = lock_queue.job_id)", [(job_id,) for job_id in ids])


def command_of(row):
    # type: (Row) -> List[str]
    return json.loads(row["command"])


def cwd_of(row):
    # type: (Row) -> Optional[str]
    return json.loads(row["cwd"]) if row.get("cwd") is not None else None

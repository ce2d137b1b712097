"""The store's SQL for named locks and slots (schema level 7): jobs/lockrule.py decides,
worker/lockwait.py waits.
Part of the store (sqlite.py holds the connections and transactions, jobsql.py the jobs' SQL); every
statement runs inside the caller's transaction (``db.writing``) or read connection.
"""

import json
import sqlite3

from remote_agent.common.vocab import ACTIVE
from remote_agent.store.sqlite import words

MYPY = False
if MYPY:  # the hints (type comments) are for mypy only, as in sqlite.py
    from typing import Any, Dict, List, Optional, Sequence  # noqa: F401
    Row = Dict[str, Any]


def enqueue(conn, job_id, claims, queued_at, queue_timeout):
    # type: (sqlite3.Connection, str, Dict[str, Any], float, Optional[float]) -> None
    """Give a new job its first-come place in the lock queue (inside its start transaction)."""
    conn.execute(
        "INSERT INTO lock_queue (job_id, claims, queued_at, queue_timeout) VALUES (?, ?, ?, ?)",
        (job_id, json.dumps(claims, sort_keys=True), queued_at, queue_timeout))


# Active jobs through the partial index jobs_active, each joined to its queue row by job_id.
_LOCK_QUEUE_SQL = (
    "SELECT j.*, q.seq AS lock_seq, q.claims AS lock_claims, q.queued_at AS lock_queued_at,"
    " q.queue_timeout AS lock_queue_timeout, q.waiting_since AS lock_waiting_since,"
    " q.granted_at AS lock_granted_at FROM jobs j JOIN lock_queue q ON q.job_id = j.job_id"
    " WHERE j.status IN {} ORDER BY q.seq").format(words(ACTIVE))


def lock_queue(conn):
    # type: (sqlite3.Connection) -> List[Row]
    """Every queued job that still holds its run key, first come first, with its queue row."""
    return conn.execute(_LOCK_QUEUE_SQL).fetchall()


# Aborted holders whose processes may still run, through the partial index lock_queue_releasing.
_LOCK_RELEASING_SQL = _LOCK_QUEUE_SQL.split(" WHERE ")[0] + " WHERE q.releasing = 1 ORDER BY q.seq"


def lock_releasing(conn):
    # type: (sqlite3.Connection) -> List[Row]
    return conn.execute(_LOCK_RELEASING_SQL).fetchall()


def mark_releasing(conn, job_id):
    # type: (sqlite3.Connection, str) -> None
    """An aborted job keeps what it holds until its processes are gone (abort, supersede).
    A no-op for a job without claims, and on a file without the lock queue."""
    try:
        conn.execute("UPDATE lock_queue SET releasing = 1 WHERE job_id = ? AND granted_at IS NOT NULL",
                     (job_id,))
    except sqlite3.OperationalError:
        pass  # no lock queue in this file (a newer agent's level it does not have): nothing held


def lock_released(conn, job_id):
    # type: (sqlite3.Connection, str) -> None
    conn.execute("UPDATE lock_queue SET releasing = NULL WHERE job_id = ?", (job_id,))


def lock_entry(conn, job_id):
    # type: (sqlite3.Connection, str) -> Optional[Row]
    return conn.execute("SELECT * FROM lock_queue WHERE job_id = ?", (job_id,)).fetchone()


def grant_locks(conn, job_id, now):
    # type: (sqlite3.Connection, str, float) -> None
    conn.execute("UPDATE lock_queue SET granted_at = ?, waiting_since = NULL"
                 " WHERE job_id = ? AND granted_at IS NULL", (now, job_id))


def set_waiting(conn, job_id, now):
    # type: (sqlite3.Connection, str, float) -> None
    """The job's first verdict was "wait": it reads as WAITING from now on until its grant."""
    conn.execute("UPDATE lock_queue SET waiting_since = ? WHERE job_id = ? AND waiting_since IS NULL"
                 " AND granted_at IS NULL", (now, job_id))

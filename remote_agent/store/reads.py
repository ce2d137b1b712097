"""The store's SQL for the read-only views: ``orchesjob list`` (listing.py) and the watch op
(watch.py). Part of the store (sqlite.py holds the connections and transactions, jobsql.py the jobs' SQL);
split out so no module outgrows a screenful of concerns. Reads only: no statement here writes.
"""

import sqlite3

from remote_agent.common.vocab import ACTIVE, TERMINAL
from remote_agent.store.sqlite import placeholders, words

MYPY = False
if MYPY:  # the hints (type comments) are for mypy only, as in sqlite.py
    from typing import Any, Dict, List, Optional, Sequence  # noqa: F401
    Row = Dict[str, Any]


def count_key_range(conn, low, high, cap):
    # type: (sqlite3.Connection, str, str, int) -> int
    """How many jobs have a run key in [low, high), counting at most ``cap`` (an index walk)."""
    return int(conn.execute(
        "SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs WHERE run_key >= ? AND run_key < ? LIMIT ?)",
        (low, high, cap)).fetchone()["n"])


def list_jobs(conn, statuses, key_glob=None, since=None, until=None, limit=None, key_range=None):
    # type: (sqlite3.Connection, Sequence[str], Optional[str], Optional[int], Optional[int], Optional[int], Optional[Sequence[str]]) -> List[Row]
    """``orchesjob list``: jobs in ``statuses``, newest first (started_at, then insertion order).

    ``key_glob`` is SQLite GLOB (case-sensitive); ``since`` inclusive, ``until`` exclusive.
    Newest-first with a limit walks the index jobs_started_at backwards and stops at ``limit``
    rows, whatever the history's size. ``key_range`` ([low, high) of the glob's literal prefix)
    makes the run-key index find few matching keys first (then they are sorted); without it the
    glob is only a filter on that walk (``+run_key``: SQLite would otherwise pick the run-key
    index for a prefix that matches most of the history, and sort all of it).
    """
    if set(statuses) == set(TERMINAL):  # every finished job: walk started_at, skip active rows
        clauses = ["status NOT IN " + words(ACTIVE)]
        params = []  # type: List[Any]
    else:  # one status: jobs_status_started_at in order; several: their rows sorted
        clauses = ["status IN " + placeholders(statuses)]
        params = list(statuses)
    if key_range is not None:
        clauses.append("run_key >= ? AND run_key < ?")
        params.extend(key_range)
    if key_glob is not None:
        clauses.append("run_key GLOB ?" if key_range is not None else "+run_key GLOB ?")
        params.append(key_glob)
    if since is not None:
        clauses.append("started_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("started_at < ?")
        params.append(until)
    sql = "SELECT *, rowid AS seq FROM jobs WHERE {} ORDER BY started_at DESC, rowid DESC".format(
        " AND ".join(clauses))
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return conn.execute(sql, params).fetchall()
# --- the watch op (remote_agent/frontends/watch.py) ----------------------------------------------------

def data_version(conn):
    # type: (sqlite3.Connection) -> int
    """SQLite's ``PRAGMA data_version``: changes when another connection commits to the file.
    One open connection asks it in microseconds, so a watcher re-reads jobs only after a write."""
    return conn.execute("PRAGMA data_version").fetchone()["data_version"]


def change_seq(conn):
    # type: (sqlite3.Connection) -> Optional[int]
    """The newest ``change_seq`` (schema level 9; 0 before any change), or None on a file
    without it (not migrated yet): the watcher then re-reads every subscribed row."""
    try:
        row = conn.execute("SELECT IFNULL(MAX(change_seq), 0) AS seq FROM jobs").fetchone()
    except sqlite3.OperationalError:
        return None
    return row["seq"]


def jobs_changed_since(conn, seq):
    # type: (sqlite3.Connection, int) -> List[Row]
    """The rows whose status changed after ``seq``, oldest change first (an index range scan:
    the cost is the changes', not the table's or the watcher's subscriptions')."""
    return list(conn.execute("SELECT * FROM jobs WHERE change_seq > ? ORDER BY change_seq", (seq,)))


def jobs_by_ids(conn, job_ids):
    # type: (sqlite3.Connection, Sequence[str]) -> List[Row]
    """The rows of many jobs by id, in chunks under SQLite's old 999-parameter limit."""
    rows = []  # type: List[Row]
    ids = list(job_ids)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        rows.extend(conn.execute("SELECT * FROM jobs WHERE job_id IN {}".format(placeholders(part)), part))
    return rows

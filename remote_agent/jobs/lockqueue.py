"""The lock queue as the database holds it: each queued job's entry, the live queue (every job
in it reconciled first), a new job's turn taken in its start transaction, and what the readers
show (``with_wait_info`` for status, ``listing`` for ``orchesjob locks``). The rule that decides
a turn is lockrule.py (pure); the waiting itself is worker/lockwait.py.
"""

import json
import sqlite3
import time

from remote_agent.common.vocab import ACTIVE
from remote_agent.jobs import lockrule
from remote_agent.jobs.liveness import lost_reason, reconcile
from remote_agent.store import locksql

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional  # noqa: F401
    Row = Dict[str, Any]


def entry_of(row):
    # type: (Row) -> Dict[str, Any]
    """A ``locksql.lock_queue`` row as ``lockrule.decide_turn`` reads it."""
    return {"job_id": row["job_id"], "run_key": row["run_key"], "claims": json.loads(row["lock_claims"]),
            "seq": row["lock_seq"],
            "granted": row.get("lock_granted_at") is not None, "status": row["status"],
            "queued_at": row.get("lock_queued_at"), "granted_at": row.get("lock_granted_at"),
            "waiting_since": row.get("lock_waiting_since")}


def live_queue(conn, locked):
    # type: (sqlite3.Connection, bool) -> List[Dict[str, Any]]
    """The queue, every job reconciled first (``locked`` as in liveness.reconcile): a job found
    ended or LOST drops out, and with it whatever it held.

    An aborted holder stays in it (holding, status ABORTED) while any of its processes runs:
    abort stores ABORTED before its TERM-then-KILL, and the next holder must not start beside a
    target that is still ending. A writer (``locked``) clears the mark once they are gone."""
    out = []
    for row in locksql.lock_releasing(conn):
        if lost_reason(row) is None:  # its supervisor or its target is still alive
            out.append(entry_of(row))
        elif locked:
            locksql.lock_released(conn, row["job_id"])
    for row in locksql.lock_queue(conn):
        now = reconcile(conn, row, locked)
        if now["status"] in ACTIVE:
            out.append(entry_of(row))
    out.sort(key=lambda e: e["seq"])
    return out


def grant_now(conn, job_id):
    # type: (sqlite3.Connection, str) -> bool
    """In the start transaction: take the new job's turn at once when nothing is in its way,
    else mark it waiting (so it reads as WAITING from its first commit, before its supervisor runs)."""
    if not lockrule.decide_turn(job_id, live_queue(conn, locked=True))[0]:
        locksql.set_waiting(conn, job_id, time.time())
        return False
    locksql.grant_locks(conn, job_id, time.time())
    return True


def with_wait_info(conn, row):
    # type: (sqlite3.Connection, Row) -> Row
    """A STARTING job that waits for its turn, with ``lock_waiting`` and ``waiting_for``
    (render shows it as WAITING); any other row unchanged. Read-only; a file without the lock
    queue (an older schema level) has no waiting jobs."""
    try:
        entry = locksql.lock_entry(conn, row["job_id"])
        if entry is None or entry["granted_at"] is not None or entry["waiting_since"] is None:
            return row
        queue = live_queue(conn, locked=False)
    except sqlite3.OperationalError:
        return row
    out = dict(row)
    out["lock_waiting"] = True
    if any(e["job_id"] == row["job_id"] for e in queue):
        out["waiting_for"] = lockrule.decide_turn(row["job_id"], queue)[1]
    else:
        out["waiting_for"] = []
    out["queued_at"] = entry["queued_at"]
    timeout = entry["queue_timeout"]
    out["queue_deadline"] = entry["queued_at"] + timeout if timeout is not None else None
    return out


def listing(conn):
    # type: (Optional[sqlite3.Connection]) -> List[Dict[str, Any]]
    """``orchesjob locks``: holders and waiters of every resource and slot (read-only)."""
    if conn is None:
        return []
    try:
        return lockrule.listing(live_queue(conn, locked=False))
    except sqlite3.OperationalError:
        return []  # no lock queue in this file yet

"""The database schema: its DDL, the forward migrations, and the orchesjob 1.1.0 import.

Only writers load this module (``store.open_db(write=True)`` when the file's
``PRAGMA user_version`` is not ``store.SCHEMA_VERSION``); read commands never do. The
partial indexes spell the active statuses from ``vocab``, so the words live in one place.
"""

import sqlite3

from remote_agent import store
from remote_agent.vocab import ACTIVE, LOST, TERMINAL

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional  # noqa: F401


_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    run_key         TEXT NOT NULL,
    attempt_no      INTEGER NOT NULL,
    command         TEXT NOT NULL,
    cwd             TEXT,
    status          TEXT NOT NULL,
    exit_code       INTEGER,
    strict          INTEGER NOT NULL DEFAULT 0,
    rerun_of_job_id TEXT,
    rerun_reason    TEXT,
    abort_reason    TEXT,
    lost_reason     TEXT,
    boot_id         TEXT,
    worker_pid      INTEGER,
    worker_start    INTEGER,
    target_pid      INTEGER,
    target_start    INTEGER,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    updated_at      INTEGER NOT NULL,
    aborted_at      INTEGER,
    acked_at        INTEGER
);
-- History of a key, newest first, and its latest attempt: one index seek.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_run_key_attempt ON jobs (run_key, attempt_no);
-- The database itself refuses a second active job for one run key.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active_per_key ON jobs (run_key)
    WHERE status IN {active};
-- status --running reads only active rows, however long the history.
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (status) WHERE status IN {active};
-- One row per key ever started: attempt numbering and strict consumption survive clean.
CREATE TABLE IF NOT EXISTS run_keys (
    run_key         TEXT PRIMARY KEY,
    last_attempt_no INTEGER NOT NULL,
    last_job_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strict_overrides (
    run_key    TEXT PRIMARY KEY,
    allowed_at INTEGER NOT NULL,
    used_at    INTEGER,
    reason     TEXT,
    expires_at INTEGER
);
""".format(active=store.words(ACTIVE))

# Version 2: how far a watcher (the provider) has shown each log, so a retry that
# reattaches continues the task log where the previous try stopped.
_V2 = """
ALTER TABLE jobs ADD COLUMN stdout_shown INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stderr_shown INTEGER NOT NULL DEFAULT 0
"""

# Version 3: the Airflow clear epoch a job was started under (``start``'s ``epoch``): a resume
# start with another epoch supersedes the key's job instead of reattaching to it.
_V3 = """
ALTER TABLE jobs ADD COLUMN epoch TEXT
"""

#: Index i migrates ``PRAGMA user_version`` i -> i + 1; a release that changes the schema
#: appends one entry and bumps ``store.SCHEMA_VERSION``.
_MIGRATIONS = [_V1, _V2, _V3]
assert len(_MIGRATIONS) == store.SCHEMA_VERSION


def migrate(conn, version):
    # type: (sqlite3.Connection, int) -> None
    """Apply forward migrations in one transaction; concurrent migrators serialize here."""
    _switch_to_wal(conn)
    with store.transaction(conn):
        version = store.user_version(conn)
        legacy = version == 0 and store.has_table(conn, "jobs")
        if legacy:
            for table in _LEGACY_TABLES:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                    conn.execute("ALTER TABLE {0} RENAME TO orchesjob_legacy_{0}".format(table))
        for script in _MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if legacy:
            _import_legacy(conn)
        conn.execute("PRAGMA user_version={:d}".format(store.SCHEMA_VERSION))


def _switch_to_wal(conn):
    # type: (sqlite3.Connection) -> None
    """Turn a new (or orchesjob 1.1.0, rollback-journal) file into WAL, waiting out other writers.

    The switch reads the header and then upgrades to a write lock. SQLite refuses that upgrade
    at once, without calling the busy handler, while another connection holds RESERVED (the
    deadlock rule for readers that want to write): many starters creating one database hit it.
    So this one statement retries on its own, within the same busy timeout as every other wait.
    """
    import time

    deadline = time.monotonic() + store.busy_timeout()
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# --- the orchesjob 1.1.0 import -------------------------------------------------------------

_LEGACY_TABLES = ("jobs", "run_keys", "strict_overrides", "schema_meta")


def _ts(value):
    # type: (Any) -> Optional[int]
    """orchesjob stored integer seconds (older releases: ISO text); normalise to seconds."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    from remote_agent.timeutil import parse_datetime

    try:
        return parse_datetime(str(value))
    except ValueError:
        return None


def _import_legacy(conn):
    # type: (sqlite3.Connection) -> None
    """Copy an orchesjob 1.1.0 database into this schema; its tables stay as orchesjob_legacy_*.

    Finished jobs count as already reported (acked), so a resume start never adopts an old
    result. Where orchesjob's LOST bug left two active jobs for one key, only the newest stays
    active: the others become LOST with a reason.
    """
    cols = {r["name"] for r in conn.execute("PRAGMA table_info(orchesjob_legacy_jobs)")}

    def col(name):
        # type: (str) -> str
        return name if name in cols else "NULL AS " + name

    names = ("worker_pid", "target_pid", "attempt_no", "strict", "rerun_of_job_id", "rerun_reason",
             "abort_reason", "started_at", "finished_at", "updated_at", "aborted_at")
    rows = conn.execute(
        "SELECT job_id, run_key, command, status, exit_code, {} FROM orchesjob_legacy_jobs"
        " WHERE run_key IS NOT NULL ORDER BY run_key, {}".format(
            ", ".join(col(n) for n in names),
            "attempt_no, started_at" if "attempt_no" in cols else "rowid")).fetchall()
    by_key = {}  # type: Dict[str, List[Dict[str, Any]]]
    for r in rows:
        by_key.setdefault(r["run_key"], []).append(r)
    for key, history in by_key.items():
        active = [r for r in history if r["status"] in ACTIVE]
        for n, r in enumerate(history, 1):
            started = _ts(r["started_at"]) or 0
            job = {
                "job_id": r["job_id"], "run_key": key, "attempt_no": n, "command": r["command"],
                "status": r["status"], "exit_code": r["exit_code"], "strict": int(bool(r["strict"])),
                "rerun_of_job_id": r["rerun_of_job_id"], "rerun_reason": r["rerun_reason"],
                "abort_reason": r["abort_reason"], "worker_pid": r["worker_pid"],
                "target_pid": r["target_pid"], "started_at": started,
                "finished_at": _ts(r["finished_at"]), "updated_at": _ts(r["updated_at"]) or started,
                "aborted_at": _ts(r["aborted_at"]),
            }
            if r["status"] in ACTIVE and r is not active[-1]:
                job.update(status=LOST, finished_at=job["updated_at"],
                           lost_reason="imported from orchesjob 1.1.0 beside a newer active job of its key")
            if job["status"] in TERMINAL:
                job["acked_at"] = job["finished_at"] or job["updated_at"]
            store.insert_job(conn, job)
    legacy_overrides = "orchesjob_legacy_strict_overrides"
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (legacy_overrides,)).fetchone():
        conn.execute(
            "INSERT OR REPLACE INTO strict_overrides (run_key, allowed_at, used_at, reason, expires_at)"
            " SELECT run_key, allowed_at, used_at, reason, expires_at FROM orchesjob_legacy_strict_overrides")

"""SQLite storage: where state lives, the schema, its migrations, and the queries.

Writers open the database with ``open_db(write=True)``, which creates and migrates it; the
read commands (status, logs, poll, wait) use ``open_db(write=False)``, which never creates a
file, never migrates and takes no write lock, so reads cost the same at any history size
and keep working while a writer holds the database.
"""

import json
import os
import sqlite3

from remote_agent.errors import EXIT_ERROR, EXIT_LOCK_ERROR, AgentError

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Sequence  # noqa: F401


#: ``PRAGMA user_version`` of the current schema. Each entry of ``_MIGRATIONS`` moves the
#: database one version forward; a release that changes the schema appends one.
SCHEMA_VERSION = 2

ACTIVE = ("STARTING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")

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
    WHERE status IN ('STARTING', 'RUNNING');
-- status --running reads only active rows, however long the history.
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (status) WHERE status IN ('STARTING', 'RUNNING');
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
"""

# Version 2: how far a watcher (the provider) has shown each log, so a retry that
# reattaches continues the task log where the previous try stopped.
_V2 = """
ALTER TABLE jobs ADD COLUMN stdout_shown INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stderr_shown INTEGER NOT NULL DEFAULT 0
"""

_MIGRATIONS = [_V1, _V2]  # index i migrates user_version i -> i + 1

BUSY_TIMEOUT_DEFAULT = 10.0


def default_home():
    # type: () -> str
    """State dir: $ORCHESJOB_HOME, else /var/lib/orchesjob for root, else the XDG state dir.

    orchesjob 1.1.0 always used /var/lib/orchesjob, which a non-root SSH user cannot
    create; root keeps that path so existing scripts find their state.
    """
    env = os.environ.get("ORCHESJOB_HOME")
    if env:
        return env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/orchesjob"
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "orchesjob")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "orchesjob")


def db_path(home):
    # type: (str) -> str
    return os.path.join(home, "orchesjob.db")


def log_path(home, job_id, stream):
    # type: (str, str, str) -> str
    return os.path.join(home, "logs", "{}.{}".format(job_id, stream))


def busy_timeout():
    # type: () -> float
    raw = os.environ.get("ORCHESJOB_BUSY_TIMEOUT")
    try:
        return max(0.0, float(raw)) if raw else BUSY_TIMEOUT_DEFAULT
    except ValueError:
        return BUSY_TIMEOUT_DEFAULT


def db_error(exc, home):
    # type: (Exception, str) -> AgentError
    """Translate a sqlite3 exception into one actionable line and its exit code."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return AgentError(
            "database is locked: another orchesjob process held {} for more than {:g} s".format(
                db_path(home), busy_timeout()),
            EXIT_LOCK_ERROR,
        )
    if "readonly" in text or "read-only" in text:
        return AgentError("database is read-only: {}".format(db_path(home)), EXIT_ERROR)
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return AgentError(
            "database file is damaged ({}): {}; it was left untouched".format(text, db_path(home)),
            EXIT_ERROR,
        )
    if "unable to open" in text:
        return AgentError("cannot open database {}: {}".format(db_path(home), text), EXIT_ERROR)
    return AgentError("database error ({}): {}".format(text, db_path(home)), EXIT_ERROR)


def _ensure_dirs(home):
    # type: (str) -> None
    try:
        os.makedirs(os.path.join(home, "logs"), mode=0o700, exist_ok=True)
        os.chmod(home, 0o700)
    except OSError as exc:
        raise AgentError("cannot use state dir {}: {}".format(home, exc.strerror or exc)) from None


def _connect(path, readonly, immutable=False):
    # type: (str, bool, bool) -> sqlite3.Connection
    query = "?mode=ro&immutable=1" if immutable else ("?mode=ro" if readonly else "")
    uri = "file:{}{}".format(path.replace("%", "%25").replace("?", "%3f").replace("#", "%23"), query)
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout(), isolation_level=None)
    conn.row_factory = _dict_row
    return conn


def _dict_row(cursor, values):
    # type: (sqlite3.Cursor, tuple) -> Dict[str, Any]
    return dict(zip([c[0] for c in cursor.description], values))


def open_db(home, write):
    # type: (str, bool) -> Optional[sqlite3.Connection]
    """Open the state database; for reads, None when nothing was ever stored."""
    path = db_path(home)
    if not write:
        if not os.path.exists(path):
            return None
        try:
            try:
                conn = _connect(path, readonly=not os.access(path, os.W_OK))
                version = _user_version(conn)
            except sqlite3.OperationalError:
                if os.access(home, os.W_OK):
                    raise
                # A read-only directory (e.g. a read-only mount) cannot hold WAL's shared-memory
                # file; nobody can write there either, so reading the file as immutable is exact.
                conn = _connect(path, readonly=True, immutable=True)
                version = _user_version(conn)
        except sqlite3.Error as exc:
            raise db_error(exc, home) from None
        if version == 0 and not _has_table(conn, "jobs"):
            conn.close()
            return None  # being created by a concurrent writer: nothing stored yet
        _check_version(version, home, reading=True)
        return conn
    _ensure_dirs(home)
    old_umask = os.umask(0o077)
    try:
        conn = _connect(path, readonly=False)
        version = _user_version(conn)
        if version != SCHEMA_VERSION:
            _check_version(version, home, reading=False)
            _migrate(conn, version)
    except sqlite3.Error as exc:
        raise db_error(exc, home) from None
    finally:
        os.umask(old_umask)
    return conn


def _user_version(conn):
    # type: (sqlite3.Connection) -> int
    return int(conn.execute("PRAGMA user_version").fetchone()["user_version"])


def _has_table(conn, name):
    # type: (sqlite3.Connection, str) -> bool
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _check_version(version, home, reading):
    # type: (int, str, bool) -> None
    if version > SCHEMA_VERSION:
        raise AgentError(
            "database {} has schema {} from a newer agent (this one knows {}); upgrade the agent".format(
                db_path(home), version, SCHEMA_VERSION))
    if reading and version < SCHEMA_VERSION:
        raise AgentError(
            "database {} has an older schema ({}); any write command (e.g. start) migrates it".format(
                db_path(home), version))


def _migrate(conn, version):
    # type: (sqlite3.Connection, int) -> None
    """Apply forward migrations in one transaction; concurrent migrators serialize here."""
    _switch_to_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _user_version(conn)
        legacy = version == 0 and _has_table(conn, "jobs")
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
        conn.execute("PRAGMA user_version={:d}".format(SCHEMA_VERSION))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _switch_to_wal(conn):
    # type: (sqlite3.Connection) -> None
    """Turn a new (or orchesjob 1.1.0, rollback-journal) file into WAL, waiting out other writers.

    The switch reads the header and then upgrades to a write lock. SQLite refuses that upgrade
    at once, without calling the busy handler, while another connection holds RESERVED (the
    deadlock rule for readers that want to write): many starters creating one database hit it.
    So this one statement retries on its own, within the same busy timeout as every other wait.
    """
    import time

    deadline = time.monotonic() + busy_timeout()
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
                job.update(status="LOST", finished_at=job["updated_at"],
                           lost_reason="imported from orchesjob 1.1.0 beside a newer active job of its key")
            if job["status"] in TERMINAL:
                job["acked_at"] = job["finished_at"] or job["updated_at"]
            insert_job(conn, job)
    legacy_overrides = "orchesjob_legacy_strict_overrides"
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (legacy_overrides,)).fetchone():
        conn.execute(
            "INSERT OR REPLACE INTO strict_overrides (run_key, allowed_at, used_at, reason, expires_at)"
            " SELECT run_key, allowed_at, used_at, reason, expires_at FROM orchesjob_legacy_strict_overrides")


# --- queries -------------------------------------------------------------------------

def get_job(conn, job_id):
    # type: (sqlite3.Connection, str) -> Optional[Dict[str, Any]]
    return conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


def latest_job(conn, run_key):
    # type: (sqlite3.Connection, str) -> Optional[Dict[str, Any]]
    return conn.execute(
        "SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC LIMIT 1", (run_key,)
    ).fetchone()


def key_history(conn, run_key):
    # type: (sqlite3.Connection, str) -> List[Dict[str, Any]]
    return conn.execute(
        "SELECT * FROM jobs WHERE run_key = ? ORDER BY attempt_no DESC", (run_key,)
    ).fetchall()


def active_jobs(conn):
    # type: (sqlite3.Connection) -> List[Dict[str, Any]]
    return conn.execute(
        "SELECT * FROM jobs WHERE status IN ('STARTING', 'RUNNING') ORDER BY started_at, attempt_no"
    ).fetchall()


def run_key_row(conn, run_key):
    # type: (sqlite3.Connection, str) -> Optional[Dict[str, Any]]
    return conn.execute("SELECT * FROM run_keys WHERE run_key = ?", (run_key,)).fetchone()


def valid_override(conn, run_key, now):
    # type: (sqlite3.Connection, str, int) -> Optional[Dict[str, Any]]
    return conn.execute(
        "SELECT * FROM strict_overrides WHERE run_key = ? AND used_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (run_key, now),
    ).fetchone()


def insert_job(conn, job):
    # type: (sqlite3.Connection, Dict[str, Any]) -> None
    """Insert a STARTING job and advance its key's attempt counter (inside a transaction)."""
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
    sql = "UPDATE jobs SET {} WHERE job_id = ? AND status IN ({})".format(
        ", ".join("{} = ?".format(c) for c in cols), ", ".join("?" * len(only_if_status)))
    cur = conn.execute(sql, [values[c] for c in cols] + [job_id] + list(only_if_status))
    return cur.rowcount > 0


def command_of(row):
    # type: (Dict[str, Any]) -> List[str]
    return json.loads(row["command"])


def record_shown(conn, job_id, offsets):
    # type: (sqlite3.Connection, str, Dict[str, int]) -> None
    """Remember the log offsets a watcher has shown; they only ever move forward."""
    conn.execute(
        "UPDATE jobs SET stdout_shown = MAX(stdout_shown, ?), stderr_shown = MAX(stderr_shown, ?)"
        " WHERE job_id = ?", (offsets.get("stdout", 0), offsets.get("stderr", 0), job_id))


def cwd_of(row):
    # type: (Dict[str, Any]) -> Optional[str]
    return json.loads(row["cwd"]) if row.get("cwd") is not None else None


def in_transaction(conn, fn, immediate=True):
    # type: (sqlite3.Connection, Any, bool) -> Any
    """Run ``fn()`` inside BEGIN IMMEDIATE ... COMMIT, rolling back on any error."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        result = fn()
        conn.execute("COMMIT")
        return result
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise

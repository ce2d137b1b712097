"""The database schema: its DDL, the forward migrations, and the orchesjob 1.1.0 import.

Only writers load this module (db.py: ``open_write`` migrates when the file was last migrated
by another agent version, or never); readers word their errors with sqlite.version_error. The
partial indexes spell the active statuses from ``vocab``, so the words live in one place.
"""

import sqlite3
import time

from remote_agent import __version__
from remote_agent.common.errors import AgentError
from remote_agent.common.timeutil import parse_datetime
from remote_agent.common.vocab import ACTIVE, LOST, TERMINAL
from remote_agent.store import jobsql, sqlite
from remote_agent.store.paths import db_path

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, NoReturn, Optional  # noqa: F401


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
""".format(active=sqlite.words(ACTIVE))

# Version 2: how far a watcher (the provider) has shown each log, so a retry that
# reattaches continues the task log where the previous try stopped.
_V2 = """
ALTER TABLE jobs ADD COLUMN stdout_shown INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stderr_shown INTEGER NOT NULL DEFAULT 0
"""

# Level 3 (additive): which level the file is at and which agent put it there. user_version
# stays the "compatible since" number (sqlite.SCHEMA_VERSION), so agent 0.1.0 still uses the file.
_V3 = """
CREATE TABLE IF NOT EXISTS agent_schema (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    level            INTEGER NOT NULL,
    compatible_since INTEGER NOT NULL,
    agent_version    TEXT NOT NULL,
    migrated_at      INTEGER NOT NULL
)
"""

#: The schema's history: entry i takes a file from level i to level i + 1. Entries past
#: ``sqlite.SCHEMA_VERSION`` are additive and appending one is the whole change: new columns
#: nullable or with a DEFAULT (the previous release inserts rows without them, and this one's
#: reads of a file not yet migrated see them absent: use ``row.get``), new tables or indexes
#: the previous release can ignore. A change older agents cannot live with (a rename, a new
#: NOT NULL column, a constraint they could violate) is appended the same way and also sets
#: ``sqlite.SCHEMA_VERSION`` to its level: older agents then refuse the file, naming both.
# Level 4 (additive): the host that started the job (host/identity.host_id()); only that host judges
# (LOST) or signals it. NULL on older rows: they count as this host's, as every earlier release
# judged them.
_V4 = """
ALTER TABLE jobs ADD COLUMN host_id TEXT
"""

# Level 5 (additive): the Airflow clear epoch a job was started under (``start``'s ``epoch``): a
# resume start with another epoch supersedes the key's job instead of reattaching to it.
_V5 = """
ALTER TABLE jobs ADD COLUMN epoch TEXT
"""

# Level 6 (additive): check / run / recheck (jobs/checkspec.py, worker/checkrun.py) - the job's
# check command (JSON argv) and timeout, its phase (vocab.PHASES; NULL without a check) and its
# check's last exit code; and the indexes of ``orchesjob list``: newest first (started_at), and
# newest first of one status.
_V6 = """
ALTER TABLE jobs ADD COLUMN phase TEXT;
ALTER TABLE jobs ADD COLUMN check_argv TEXT;
ALTER TABLE jobs ADD COLUMN check_timeout REAL;
ALTER TABLE jobs ADD COLUMN check_exit_code INTEGER;
CREATE INDEX IF NOT EXISTS jobs_started_at ON jobs (started_at);
CREATE INDEX IF NOT EXISTS jobs_status_started_at ON jobs (status, started_at)
"""

# Level 7 (additive): named locks and slots (jobs/lockrule.py, worker/lockwait.py). One row per job that
# declared claims: ``seq`` is its first-come place, ``claims`` the JSON of locks.normalize,
# ``granted_at`` set once it may run. Holding is derived from the job's row (STARTING/RUNNING
# and granted), so nothing here needs releasing when a job ends; ``clean`` deletes the row
# with its job. One exception: an aborted holder (ABORTED is stored before its processes are
# signalled) is marked ``releasing`` and keeps its claims while any of its processes still runs.
# An older agent ignores the table (and so does not honour the locks).
_V7 = """
CREATE TABLE IF NOT EXISTS lock_queue (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL UNIQUE,
    claims        TEXT NOT NULL,
    queued_at     REAL NOT NULL,
    queue_timeout REAL,
    waiting_since REAL,
    granted_at    REAL,
    releasing     INTEGER
);
CREATE INDEX IF NOT EXISTS lock_queue_releasing ON lock_queue (job_id) WHERE releasing = 1
"""

# Level 8 (additive): the Airflow task instance a job was started for (``start``'s
# ``task_instance``: dag/task/map index/run id). A retry of the same task instance and clear epoch
# adopts its SUCCEEDED job even when acknowledged (jobs/decide.py); another dag run that
# shares an explicit run key does not. NULL on older rows and CLI starts: the plain ack rule.
_V8 = """
ALTER TABLE jobs ADD COLUMN task_instance TEXT
"""

# Level 9 (additive): a change sequence for the watch op (frontends/watch.py). Every change of a
# job's status gives its row the next ``change_seq``, so a watcher re-reads only the rows changed
# since its last round (one index range scan) instead of every subscribed row. A trigger keeps it,
# so writers need no change and an older agent's writes count too. A tuple: the trigger's body
# holds semicolons (the other levels are split on them).
_V9 = (
    "ALTER TABLE jobs ADD COLUMN change_seq INTEGER",
    "CREATE INDEX IF NOT EXISTS jobs_change_seq ON jobs (change_seq)",
    """CREATE TRIGGER IF NOT EXISTS jobs_status_change AFTER UPDATE OF status ON jobs
    WHEN NEW.status IS NOT OLD.status
    BEGIN
        UPDATE jobs SET change_seq = (SELECT IFNULL(MAX(change_seq), 0) + 1 FROM jobs)
        WHERE job_id = NEW.job_id;
    END""",
)

_MIGRATIONS = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9]  # type: List[Any]
LEVEL = len(_MIGRATIONS)
assert 0 < sqlite.SCHEMA_VERSION <= LEVEL == sqlite.SCHEMA_LEVEL


def migrate(conn, state_dir, journal_mode="WAL"):
    # type: (sqlite3.Connection, str, Optional[str]) -> None
    """Bring the file to this agent's level in one transaction (nothing to do when it is there
    or past it: a newer agent's additive levels are left alone); concurrent migrators serialize.

    ``journal_mode``: WAL, or None to leave it (a state dir on a network filesystem keeps the
    rollback journal, see store/fstype.py and db.open_write).
    """
    if sqlite.user_version(conn) == sqlite.SCHEMA_VERSION and sqlite.schema_level(conn) > LEVEL:
        return  # a newer agent's file: its additive levels are not ours to touch
    if journal_mode:
        set_journal_mode(conn, journal_mode)
    with sqlite.transaction(conn):
        version = sqlite.user_version(conn)
        if version > sqlite.SCHEMA_VERSION:
            sqlite.version_error(conn, version, state_dir)
        level = sqlite.schema_level(conn)
        if version == sqlite.SCHEMA_VERSION and level >= LEVEL:
            if level == LEVEL and sqlite.migrated_by(conn) != __version__:
                set_schema_meta(conn, level, int(time.time()))
            return  # else a concurrent migrator did it
        legacy = version == 0 and sqlite.has_table(conn, "jobs")
        if legacy:
            for table in _LEGACY_TABLES:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                    conn.execute("ALTER TABLE {0} RENAME TO orchesjob_legacy_{0}".format(table))
        for script in _MIGRATIONS[level:]:
            for statement in script if isinstance(script, tuple) else script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if legacy:
            _import_legacy(conn)
        conn.execute("PRAGMA user_version={:d}".format(sqlite.SCHEMA_VERSION))
        set_schema_meta(conn, LEVEL, int(time.time()))


def set_schema_meta(conn, level, now):
    # type: (sqlite3.Connection, int, int) -> None
    conn.execute(
        "INSERT OR REPLACE INTO agent_schema (id, level, compatible_since, agent_version, migrated_at)"
        " VALUES (1, ?, ?, ?, ?)", (level, sqlite.SCHEMA_VERSION, __version__, now))


def set_journal_mode(conn, mode):
    # type: (sqlite3.Connection, str) -> str
    """Set the file's journal mode (WAL for a new or orchesjob 1.1.0 file, or DELETE on a network
    filesystem), waiting out other writers; returns the mode SQLite reports afterwards.

    The switch reads the header and then upgrades to a write lock. SQLite refuses that upgrade
    at once, without calling the busy handler, while another connection holds RESERVED (the
    deadlock rule for readers that want to write): many starters creating one database hit it.
    So this one statement retries on its own, within the same busy timeout as every other wait.
    """
    deadline = time.monotonic() + sqlite.busy_timeout()
    delay = 0.002
    while True:
        try:
            pragma = "PRAGMA journal_mode={}".format("WAL" if mode == "WAL" else "DELETE")
            row = conn.execute(pragma).fetchone()
            return str(row["journal_mode"]).lower()
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
    try:
        return parse_datetime(str(value))
    except ValueError:
        return None


#: The lost reason of a job imported active from orchesjob 1.1.0. It does not start with
#: "imported from orchesjob": its outcome is unknown (common/vocab.py outcome_unknown).
LEGACY_NO_IDENTITY = ("no process identity: the job was active in orchesjob 1.1.0's database, which"
                      " recorded bare pids without start times, so whether it still runs cannot be"
                      " told from a reused pid; it was imported as LOST, exit status unknown:"
                      " check the host, then rerun or unlock its run key")


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
            elif r["status"] in ACTIVE:
                # orchesjob 1.1.0 recorded bare pids: no start time, so no process identity
                # (host/procs.py); whether it still runs cannot be told from a reused pid.
                job.update(status=LOST, finished_at=job["updated_at"], lost_reason=LEGACY_NO_IDENTITY)
            if job["status"] in TERMINAL:
                job["acked_at"] = job["finished_at"] or job["updated_at"]
            jobsql.insert_job(conn, job)
    legacy_overrides = "orchesjob_legacy_strict_overrides"
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (legacy_overrides,)).fetchone():
        conn.execute(
            "INSERT OR REPLACE INTO strict_overrides (run_key, allowed_at, used_at, reason, expires_at)"
            " SELECT run_key, allowed_at, used_at, reason, expires_at FROM orchesjob_legacy_strict_overrides")


def leave_wal(conn, state_dir, fstype):
    # type: (sqlite3.Connection, str, Optional[str]) -> None
    """On a network filesystem, switch a WAL database back to the rollback journal.

    WAL's shared-memory index does not work between the hosts of a network filesystem. The
    switch needs the database to itself: while another process keeps it open in WAL mode (an
    older agent's supervisor, say), it fails, and so does this write, with the fix in the message.
    """
    if sqlite.journal_mode(conn) != "wal":
        return
    try:
        mode = set_journal_mode(conn, "DELETE")
    except sqlite3.OperationalError:
        mode = "wal"
    if mode != "delete":
        raise AgentError(
            "state dir {} is on a network filesystem ({}) and its database {} is in WAL mode, which "
            "is unsafe there; it could not be switched to journal_mode=DELETE while another process "
            "holds it open: wait for its jobs to end and retry, or use a local state_dir that only "
            "you can write: unset ORCHESJOB_HOME for the default ~/.local/state/orchesjob when "
            "your home is on a local filesystem, which the agent creates 0700 (never a predictable "
            "name in a shared dir such as /var/tmp: another user could create it first)".format(
                state_dir, fstype, db_path(state_dir)))

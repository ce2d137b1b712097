"""SQLite storage: where state lives, every SQL statement of the agent, and its transactions.

Writers use ``with writing(state_dir) as conn:``, which opens the database (creating and
migrating it, see schema.py), runs the block inside ``BEGIN IMMEDIATE ... COMMIT`` and turns
sqlite3 errors into the agent's errors. The read commands (status, logs, poll, wait) use
``open_db(write=False)``, which never creates a file, never migrates and takes no write lock,
so reads cost the same at any history size and keep working while a writer holds the database.

Statuses reach SQL as bound parameters from ``vocab``, never as literals. The ``worker_pid``
and ``worker_start`` columns hold the job's supervisor (see supervisor.py): the names are
orchesjob's and stay, in the database and in the JSON job object.
"""

import json
import os
import sqlite3

from remote_agent import __version__
from remote_agent.common.errors import EXIT_ERROR, EXIT_LOCK_ERROR, AgentError, wrong_state
from remote_agent.common.vocab import ACTIVE, STDERR, STDOUT, TERMINAL
from remote_agent.store.paths import db_path, ensure_state_dir

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Type  # noqa: F401
    Row = Dict[str, Any]


#: ``PRAGMA user_version`` means "compatible since": the oldest schema an agent must understand
#: to use the file. Additive migrations (schema.py) leave it alone, so the previous release keeps
#: working on a file a newer agent migrated; only a breaking migration raises it (to its level).
#: The actual level and the agent that last migrated live in the ``agent_schema`` table.
SCHEMA_VERSION = 2
#: The oldest ``user_version`` reads understand without migrating (later columns read as absent).
READABLE_SINCE = 1

BUSY_TIMEOUT_DEFAULT = 10.0


def busy_timeout():
    # type: () -> float
    raw = os.environ.get("ORCHESJOB_BUSY_TIMEOUT")
    try:
        return max(0.0, float(raw)) if raw else BUSY_TIMEOUT_DEFAULT
    except ValueError:
        return BUSY_TIMEOUT_DEFAULT


def db_error(exc, state_dir):
    # type: (Exception, str) -> AgentError
    """Translate a sqlite3 exception into one actionable line and its exit code."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return AgentError(
            "database is locked: another orchesjob process held {} for more than {:g} s".format(
                db_path(state_dir), busy_timeout()),
            EXIT_LOCK_ERROR,
        )
    if "readonly" in text or "read-only" in text:
        return AgentError("database is read-only: {}".format(db_path(state_dir)), EXIT_ERROR)
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return AgentError(
            "database file is damaged ({}): {}; it was left untouched".format(text, db_path(state_dir)),
            EXIT_ERROR,
        )
    if "unable to open" in text:
        return AgentError("cannot open database {}: {}".format(db_path(state_dir), text), EXIT_ERROR)
    return AgentError("database error ({}): {}".format(text, db_path(state_dir)), EXIT_ERROR)


def _ensure_dirs(state_dir):
    # type: (str) -> None
    try:
        ensure_state_dir(state_dir)
    except OSError as exc:
        raise AgentError("cannot use state dir {}: {}".format(state_dir, exc.strerror or exc)) from None


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


def open_db(state_dir, write):
    # type: (str, bool) -> Optional[sqlite3.Connection]
    """Open the state database; for reads, None when nothing was ever stored."""
    path = db_path(state_dir)
    if not write:
        if not os.path.exists(path):
            return None
        try:
            try:
                conn = _connect(path, readonly=not os.access(path, os.W_OK))
                version = user_version(conn)
            except sqlite3.OperationalError:
                if os.access(state_dir, os.W_OK):
                    raise
                # A read-only directory (e.g. a read-only mount) cannot hold WAL's shared-memory
                # file; nobody can write there either, so reading the file as immutable is exact.
                conn = _connect(path, readonly=True, immutable=True)
                version = user_version(conn)
        except sqlite3.Error as exc:
            raise db_error(exc, state_dir) from None
        if version == 0 and not has_table(conn, "jobs"):
            conn.close()
            return None  # being created by a concurrent writer: nothing stored yet
        if not READABLE_SINCE <= version <= SCHEMA_VERSION:
            from remote_agent.store import schema  # only on the error path

            schema.version_error(conn, version, state_dir)
        return conn
    _ensure_dirs(state_dir)
    old_umask = os.umask(0o077)
    try:
        conn = _connect(path, readonly=False)
        version = user_version(conn)
        from remote_agent.host.identity import network_fs_type  # writers only: reads keep the journal mode

        fstype = network_fs_type(state_dir)
        if version != SCHEMA_VERSION or fstype or migrated_by(conn) != __version__:
            # only a writer meeting another agent's file, or a state dir on a network filesystem
            from remote_agent.store import schema

            if version > SCHEMA_VERSION:
                schema.version_error(conn, version, state_dir)
            # a network filesystem keeps SQLite's default rollback journal; leave_wal() below
            # switches a WAL file back, with a clear error while someone holds it open
            schema.migrate(conn, state_dir, None if fstype else "WAL")
            if fstype:
                try:
                    schema.leave_wal(conn, state_dir, fstype)
                except AgentError:
                    conn.close()
                    raise
    except sqlite3.Error as exc:
        raise db_error(exc, state_dir) from None
    finally:
        os.umask(old_umask)
    return conn


def journal_mode(conn):
    # type: (sqlite3.Connection) -> str
    return str(conn.execute("PRAGMA journal_mode").fetchone()["journal_mode"]).lower()


def user_version(conn):
    # type: (sqlite3.Connection) -> int
    return int(conn.execute("PRAGMA user_version").fetchone()["user_version"])


def has_table(conn, name):
    # type: (sqlite3.Connection, str) -> bool
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def migrated_by(conn):
    # type: (sqlite3.Connection) -> Optional[str]
    """The agent version that last migrated the file; None before agent 0.2.0 (no table)."""
    try:
        row = conn.execute("SELECT agent_version FROM agent_schema WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return row["agent_version"] if row else None


# --- transactions ---------------------------------------------------------------------------
# Small classes rather than contextlib.contextmanager: where nothing imported it yet (the
# ``orchesjob`` console script, ``python -c``), contextlib costs ~0.5 ms of start-up on its
# own and ~1 ms with what it pulls in (python -X importtime, CPython 3.11); these cost nothing.

class transaction(object):
    """``with transaction(conn):`` runs the block in BEGIN IMMEDIATE ... COMMIT on an open
    connection and rolls back on any exception (which propagates untranslated).

    The one implementation of begin/commit/rollback: ``writing`` uses it, and so does the
    supervisor on the connection it keeps for the life of its job.
    """

    def __init__(self, conn, immediate=True):
        # type: (sqlite3.Connection, bool) -> None
        self.conn = conn
        self.immediate = immediate

    def __enter__(self):
        # type: () -> sqlite3.Connection
        self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        # type: (Optional[Type[BaseException]], Optional[BaseException], Any) -> None
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self):
        # type: () -> None
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class writing(object):
    """``with writing(state_dir) as conn:`` - the writer's way into the database.

    Opens the writer connection (creating and migrating the database), runs the block in one
    transaction (``BEGIN IMMEDIATE`` unless ``immediate=False``), commits or rolls back, and
    closes. A sqlite3 error leaves as an AgentError with its exit code (see ``translate``).
    """

    def __init__(self, state_dir, immediate=True):
        # type: (str, bool) -> None
        self.state_dir = state_dir
        self.immediate = immediate
        self.conn = None  # type: Optional[sqlite3.Connection]
        self.tx = None  # type: Optional[transaction]

    def __enter__(self):
        # type: () -> sqlite3.Connection
        conn = open_db(self.state_dir, write=True)
        assert conn is not None
        try:
            self.tx = transaction(conn, self.immediate)
            self.tx.__enter__()
        except BaseException as exc:
            conn.close()
            raise translate(exc, self.state_dir) from None
        self.conn = conn
        return conn

    def __exit__(self, exc_type, exc, tb):
        # type: (Optional[Type[BaseException]], Optional[BaseException], Any) -> None
        assert self.conn is not None and self.tx is not None
        try:
            self.tx.__exit__(exc_type, exc, tb)
        except BaseException as commit_error:
            exc = commit_error
        finally:
            self.conn.close()
        if exc is None:
            return
        translated = translate(exc, self.state_dir)
        if translated is not exc:
            raise translated from None
        if exc_type is None:
            raise exc  # a failed COMMIT that is not a database error
        # else the block's own exception propagates unchanged


def translate(exc, state_dir):
    # type: (BaseException, str) -> BaseException
    """A sqlite3 error as the agent's error; anything else unchanged.

    A unique-index violation can only be the partial index on active jobs: a second active
    job for a key (exit 4). Other database errors go through ``db_error`` (busy: exit 5).
    """
    if isinstance(exc, sqlite3.IntegrityError):
        return wrong_state("run_key already has an active job")
    if isinstance(exc, sqlite3.Error):
        return db_error(exc, state_dir)
    return exc


# --- queries --------------------------------------------------------------------------------

def _marks(values):
    # type: (Sequence[Any]) -> str
    """``(?, ?, ...)`` for an ``IN`` list of bound parameters."""
    return "({})".format(", ".join("?" * len(values)))


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


def words(values):
    # type: (Sequence[str]) -> str
    """``('A', 'B')``: an SQL list of vocab constants, never of user input.

    For the statements that must match a partial index: SQLite uses a partial index only
    when the query spells its WHERE terms as literals (bound parameters make it scan).
    """
    return "({})".format(", ".join("'{}'".format(w) for w in values))


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


def clean_candidates(conn, job_id=None, run_key=None, before=None, after=None):
    # type: (sqlite3.Connection, Optional[str], Optional[str], Optional[int], Optional[int]) -> List[Row]
    """Terminal jobs to clean, oldest first; ``before`` exclusive, ``after`` inclusive."""
    clauses = ["status IN " + _marks(TERMINAL)]
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
    sql = "SELECT job_id, run_key, finished_at, started_at FROM jobs WHERE {} ORDER BY started_at".format(
        " AND ".join(clauses))
    return conn.execute(sql, params).fetchall()


# --- writes (inside a transaction the caller holds) -----------------------------------------

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
        ", ".join("{} = ?".format(c) for c in cols), _marks(only_if_status))
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
        "DELETE FROM jobs WHERE job_id = ? AND status NOT IN " + _marks(ACTIVE),
        [(job_id, *ACTIVE) for job_id in ids])
    # their places in the lock queue (schema level 7) go with them
    conn.executemany(
        "DELETE FROM lock_queue WHERE job_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM jobs WHERE jobs.job_id = lock_queue.job_id)", [(job_id,) for job_id in ids])


# --- stored values --------------------------------------------------------------------------

def command_of(row):
    # type: (Row) -> List[str]
    return json.loads(row["command"])


def cwd_of(row):
    # type: (Row) -> Optional[str]
    return json.loads(row["cwd"]) if row.get("cwd") is not None else None

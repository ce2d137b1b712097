"""The SQLite mechanics every other store module builds on: connections, pragmas, the schema
version numbers, the busy timeout, transactions, error translation, SQL list helpers, and the
read side's ``open_read``.

The read commands (status, logs, poll, wait) use ``open_read``, which never creates a file,
never migrates and takes no write lock, so reads cost the same at any history size and keep
working while a writer holds the database. Writers go through db.py (``writing``), which alone
loads the migrations (schema.py).
"""

import os
import sqlite3

from remote_agent import __version__
from remote_agent.common.errors import EXIT_ERROR, EXIT_LOCK_ERROR, AgentError, wrong_state
from remote_agent.common.validate import env_seconds
from remote_agent.store.paths import check_state_dir, db_path

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, NoReturn, Optional, Sequence, Type  # noqa: F401


#: ``PRAGMA user_version`` means "compatible since": the oldest schema an agent must understand
#: to use the file. Additive migrations (schema.py) leave it alone, so the previous release keeps
#: working on a file a newer agent migrated; only a breaking migration raises it (to its level).
#: The actual level and the agent that last migrated live in the ``agent_schema`` table.
SCHEMA_VERSION = 2
#: how many of schema.py's migrations this agent's file has (schema.LEVEL, which asserts it):
#: here so that a writer finds its file current without loading the migrations
SCHEMA_LEVEL = 9
#: The oldest ``user_version`` reads understand without migrating (later columns read as absent).
READABLE_SINCE = 1

BUSY_TIMEOUT_DEFAULT = 10.0


def busy_timeout():
    # type: () -> float
    return env_seconds("ORCHESJOB_BUSY_TIMEOUT", BUSY_TIMEOUT_DEFAULT)


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


def connect(path, readonly, immutable=False):
    # type: (str, bool, bool) -> sqlite3.Connection
    query = "?mode=ro&immutable=1" if immutable else ("?mode=ro" if readonly else "")
    uri = "file:{}{}".format(path.replace("%", "%25").replace("?", "%3f").replace("#", "%23"), query)
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout(), isolation_level=None)
    conn.row_factory = dict_row
    return conn


def dict_row(cursor, values):
    # type: (sqlite3.Cursor, tuple) -> Dict[str, Any]
    return dict(zip([c[0] for c in cursor.description], values))


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


# --- SQL lists ------------------------------------------------------------------------------

def placeholders(values):
    # type: (Sequence[Any]) -> str
    """``(?, ?, ...)`` for an ``IN`` list of bound parameters."""
    return "({})".format(", ".join("?" * len(values)))


def words(values):
    # type: (Sequence[str]) -> str
    """``('A', 'B')``: an SQL list of vocab constants, never of user input.

    For the statements that must match a partial index: SQLite uses a partial index only
    when the query spells its WHERE terms as literals (bound parameters make it scan).
    """
    return "({})".format(", ".join("'{}'".format(w) for w in values))


# --- the schema's version, for reads and migrations -------------------------------------------


def schema_level(conn):
    # type: (sqlite3.Connection) -> int
    """How many migrations the file has had; files older than agent_schema: its user_version."""
    try:
        row = conn.execute("SELECT level FROM agent_schema WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    return int(row["level"]) if row else user_version(conn)


def version_error(conn, version, state_dir):
    # type: (sqlite3.Connection, int, str) -> NoReturn
    """Fail on a file this agent cannot use, naming both agents and schemas (closes ``conn``)."""
    if version > SCHEMA_VERSION:
        by, level = migrated_by(conn) or "unknown (newer)", schema_level(conn)
        conn.close()
        raise AgentError(
            "database {} needs an agent that understands schema {} (it is at level {}, last"
            " migrated by agent {}); this agent {} understands up to schema {}: upgrade the agent"
            " on this host".format(db_path(state_dir), version, level, by, __version__, SCHEMA_VERSION))
    conn.close()
    raise AgentError(
        "database {} has an older schema ({}); any write command (e.g. start) migrates it".format(
            db_path(state_dir), version))


def open_read(state_dir):
    # type: (str) -> Optional[sqlite3.Connection]
    """Open the state database for reading; None when nothing was ever stored."""
    path = db_path(state_dir)
    if not check_state_dir(state_dir) or not os.path.exists(path):
        return None
    try:
        try:
            conn = connect(path, readonly=not os.access(path, os.W_OK))
            version = user_version(conn)
        except sqlite3.OperationalError:
            if os.access(state_dir, os.W_OK):
                raise
            # A read-only directory (e.g. a read-only mount) cannot hold WAL's shared-memory
            # file; nobody can write there either, so reading the file as immutable is exact.
            conn = connect(path, readonly=True, immutable=True)
            version = user_version(conn)
    except sqlite3.Error as exc:
        raise db_error(exc, state_dir) from None
    if version == 0 and not has_table(conn, "jobs"):
        conn.close()
        return None  # being created by a concurrent writer: nothing stored yet
    if not READABLE_SINCE <= version <= SCHEMA_VERSION:
        version_error(conn, version, state_dir)
    return conn

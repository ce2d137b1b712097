"""The writer's way into the database: ``with writing(state_dir) as conn:`` opens the writer
connection (creating the state dir and the file, migrating it through schema.py when another
agent last touched it), runs the block inside ``BEGIN IMMEDIATE ... COMMIT`` and turns sqlite3
errors into the agent's errors. Readers need none of this: sqlite.open_read.
"""

import os
import sqlite3

from remote_agent import __version__
from remote_agent.common.errors import AgentError
from remote_agent.store.fstype import network_fs_type
from remote_agent.store.paths import db_path, ensure_state_dir
from remote_agent.store.sqlite import (
    SCHEMA_LEVEL,
    SCHEMA_VERSION,
    connect,
    db_error,
    migrated_by,
    schema_level,
    transaction,
    translate,
    user_version,
    version_error,
)

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Optional, Type  # noqa: F401


def ensure_dirs(state_dir):
    # type: (str) -> None
    try:
        ensure_state_dir(state_dir)
    except OSError as exc:
        raise AgentError("cannot use state dir {}: {}".format(state_dir, exc.strerror or exc)) from None


def open_write(state_dir):
    # type: (str) -> sqlite3.Connection
    """The writer's connection: creates the state dir and the file, migrates it when needed."""
    path = db_path(state_dir)
    ensure_dirs(state_dir)
    old_umask = os.umask(0o077)
    try:
        conn = connect(path, readonly=False)
        version = user_version(conn)
        fstype = network_fs_type(state_dir)  # writers only: reads keep the journal mode
        # the level too, not only who migrated last: two builds that share a version number
        # (a development checkout) must not leave a file without this one's columns
        if (version != SCHEMA_VERSION or fstype or migrated_by(conn) != __version__
                or schema_level(conn) < SCHEMA_LEVEL):
            # only a writer meeting another agent's file, or a state dir on a network filesystem
            if version > SCHEMA_VERSION:
                version_error(conn, version, state_dir)
            from remote_agent.store import schema  # per writer meeting another agent's file: ~1 ms

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
        conn = open_write(self.state_dir)
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

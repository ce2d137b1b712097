"""The store's writer context manager and SQL, on a real SQLite file in tmp_path."""

import sqlite3
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_STATE, EXIT_LOCK_ERROR, AgentError
from remote_agent.store import db, jobsql, paths, schema, sqlite
from tests.unit.agent.rows import count, job, new_state


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return new_state(tmp_path)


def test_writing_creates_migrates_and_commits(state_dir: str) -> None:
    conn = sqlite.open_read(state_dir)
    assert conn is not None and sqlite.user_version(conn) == sqlite.SCHEMA_VERSION
    assert sqlite.SCHEMA_VERSION <= len(schema._MIGRATIONS) == sqlite.schema_level(conn)
    conn.close()
    with db.writing(state_dir) as conn:
        assert conn.in_transaction
        jobsql.insert_job(conn, job("a"))
    assert count(state_dir) == 1


def test_writing_rolls_back_on_an_exception_and_lets_it_through(state_dir: str) -> None:
    with pytest.raises(KeyError):
        with db.writing(state_dir) as conn:
            jobsql.insert_job(conn, job("a"))
            raise KeyError("boom")
    assert count(state_dir) == 0
    with pytest.raises(AgentError) as err:
        with db.writing(state_dir) as conn:
            jobsql.insert_job(conn, job("a"))
            raise AgentError("mine", 3)
    assert (err.value.code, err.value.message) == (3, "mine")
    assert count(state_dir) == 0


def test_second_active_job_of_a_key_is_wrong_state(state_dir: str) -> None:
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, job("a"))
    with pytest.raises(AgentError) as err:
        with db.writing(state_dir) as conn:
            jobsql.insert_job(conn, job("b", attempt_no=2, status=vocab.RUNNING))
    assert (err.value.code, err.value.message) == (EXIT_INVALID_STATE, "run_key already has an active job")
    assert count(state_dir) == 1


def test_busy_database_is_exit_5(state_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0")
    holder = sqlite3.connect(paths.db_path(state_dir), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AgentError) as err:
            with db.writing(state_dir) as conn:
                jobsql.insert_job(conn, job("a"))
        assert err.value.code == EXIT_LOCK_ERROR
        assert err.value.message.startswith("database is locked: another orchesjob process held")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count(state_dir) == 0


def test_deferred_writing_reads_without_the_write_lock(state_dir: str) -> None:
    holder = sqlite3.connect(paths.db_path(state_dir), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with db.writing(state_dir, immediate=False) as conn:
            assert jobsql.clean_candidates(conn) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_transaction_on_an_open_connection(state_dir: str) -> None:
    conn = db.open_write(state_dir)
    assert conn is not None
    with sqlite.transaction(conn):
        jobsql.insert_job(conn, job("a"))
    with pytest.raises(ValueError):
        with sqlite.transaction(conn):
            assert jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.RUNNING)
            raise ValueError
    assert jobsql.get_job(conn, "a")["status"] == vocab.STARTING
    assert not conn.in_transaction
    conn.close()


def test_a_file_one_level_behind_is_migrated_even_if_the_same_version_migrated_it(tmp_path: Path) -> None:
    """Two builds can share a version number (a development checkout, a helper's branch): the
    writer compares the level too, so a file left at level LEVEL - 1 "by this version" still gets
    the last level's columns (seen: 'table jobs has no column named task_instance')."""
    state_dir = str(tmp_path / "state")
    paths.ensure_state_dir(state_dir)
    conn = sqlite3.connect(paths.db_path(state_dir), isolation_level=None)
    for script in schema._MIGRATIONS[:-1]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version={sqlite.SCHEMA_VERSION:d}")
    schema.set_schema_meta(conn, schema.LEVEL - 1, 1700000000)  # "migrated by" this very version
    conn.close()
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, dict(job("j1"), task_instance="d/t/-1/r"))
    conn = sqlite.open_read(state_dir)
    assert conn is not None and sqlite.schema_level(conn) == schema.LEVEL
    conn.close()

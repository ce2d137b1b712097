"""The store's writer context manager and SQL, on a real SQLite file in tmp_path."""

import sqlite3
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_STATE, EXIT_LOCK_ERROR, AgentError
from remote_agent.store import paths, schema, store


def job(job_id: str, run_key: str = "k", attempt_no: int = 1, status: str = vocab.STARTING):
    return {"job_id": job_id, "run_key": run_key, "attempt_no": attempt_no, "command": '["true"]',
            "status": status, "started_at": 1700000000, "updated_at": 1700000000}


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    path = str(tmp_path / "state")
    with store.writing(path):  # creates and migrates
        pass
    return path


def count(state_dir: str) -> int:
    conn = store.open_db(state_dir, write=False)
    assert conn is not None
    try:
        return conn.execute("SELECT COUNT(*) AS n FROM jobs").fetchone()["n"]
    finally:
        conn.close()


def test_writing_creates_migrates_and_commits(state_dir: str) -> None:
    conn = store.open_db(state_dir, write=False)
    assert conn is not None and store.user_version(conn) == store.SCHEMA_VERSION
    assert store.SCHEMA_VERSION <= len(schema._MIGRATIONS) == schema.schema_level(conn)
    conn.close()
    with store.writing(state_dir) as conn:
        assert conn.in_transaction
        store.insert_job(conn, job("a"))
    assert count(state_dir) == 1


def test_writing_rolls_back_on_an_exception_and_lets_it_through(state_dir: str) -> None:
    with pytest.raises(KeyError):
        with store.writing(state_dir) as conn:
            store.insert_job(conn, job("a"))
            raise KeyError("boom")
    assert count(state_dir) == 0
    with pytest.raises(AgentError) as err:
        with store.writing(state_dir) as conn:
            store.insert_job(conn, job("a"))
            raise AgentError("mine", 3)
    assert (err.value.code, err.value.message) == (3, "mine")
    assert count(state_dir) == 0


def test_second_active_job_of_a_key_is_wrong_state(state_dir: str) -> None:
    with store.writing(state_dir) as conn:
        store.insert_job(conn, job("a"))
    with pytest.raises(AgentError) as err:
        with store.writing(state_dir) as conn:
            store.insert_job(conn, job("b", attempt_no=2, status=vocab.RUNNING))
    assert (err.value.code, err.value.message) == (EXIT_INVALID_STATE, "run_key already has an active job")
    assert count(state_dir) == 1


def test_busy_database_is_exit_5(state_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0")
    holder = sqlite3.connect(paths.db_path(state_dir), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AgentError) as err:
            with store.writing(state_dir) as conn:
                store.insert_job(conn, job("a"))
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
        with store.writing(state_dir, immediate=False) as conn:
            assert store.clean_candidates(conn) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_transaction_on_an_open_connection(state_dir: str) -> None:
    conn = store.open_db(state_dir, write=True)
    assert conn is not None
    with store.transaction(conn):
        store.insert_job(conn, job("a"))
    with pytest.raises(ValueError):
        with store.transaction(conn):
            assert store.update_job(conn, "a", vocab.ACTIVE, status=vocab.RUNNING)
            raise ValueError
    assert store.get_job(conn, "a")["status"] == vocab.STARTING
    assert not conn.in_transaction
    conn.close()


def test_status_guarded_updates_and_clean_selection(state_dir: str) -> None:
    with store.writing(state_dir) as conn:
        store.insert_job(conn, job("a"))
        store.insert_job(conn, job("b", run_key="other"))
        assert store.update_job(conn, "a", vocab.ACTIVE, status=vocab.FAILED, exit_code=1, finished_at=5)
        assert not store.update_job(conn, "a", vocab.ACTIVE, status=vocab.LOST)
        store.set_exit_code_if_unknown(conn, "a", 9)
        store.ack_job(conn, "a", 10)
        store.ack_job(conn, "a", 20)
    with store.writing(state_dir) as conn:
        a = store.get_job(conn, "a")
        assert (a["status"], a["exit_code"], a["acked_at"]) == (vocab.FAILED, 1, 10)
        assert [r["job_id"] for r in store.active_jobs(conn)] == ["b"]
        assert [r["job_id"] for r in store.clean_candidates(conn)] == ["a"]
        assert store.clean_candidates(conn, before=5) == []
        assert [r["job_id"] for r in store.clean_candidates(conn, after=5)] == ["a"]
        store.delete_terminal(conn, ["a", "b"])  # b is active: kept
    assert count(state_dir) == 1


def test_overrides_are_used_once(state_dir: str) -> None:
    with store.writing(state_dir) as conn:
        store.allow_override(conn, "k", 100, "why", None)
        assert store.valid_override(conn, "k", 101)["reason"] == "why"
        store.use_override(conn, "k", 102)
        assert store.valid_override(conn, "k", 103) is None
        store.allow_override(conn, "k", 200, None, 250)
        assert store.valid_override(conn, "k", 249) is not None
        assert store.valid_override(conn, "k", 250) is None


def test_running_query_uses_the_partial_index(state_dir: str) -> None:
    conn = store.open_db(state_dir, write=False)
    assert conn is not None
    plan = " ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + store._ACTIVE_JOBS_SQL))
    conn.close()
    assert "jobs_active" in plan

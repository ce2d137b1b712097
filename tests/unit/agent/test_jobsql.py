"""The store's writer context manager and SQL, on a real SQLite file in tmp_path."""

from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.store import db, jobsql, sqlite
from tests.unit.agent.rows import count, job, new_state


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return new_state(tmp_path)


def test_status_guarded_updates_and_clean_selection(state_dir: str) -> None:
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, job("a"))
        jobsql.insert_job(conn, job("b", run_key="other"))
        assert jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.FAILED, exit_code=1, finished_at=5)
        assert not jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.LOST)
        jobsql.set_exit_code_if_unknown(conn, "a", 9)
        jobsql.ack_job(conn, "a", 10)
        jobsql.ack_job(conn, "a", 20)
    with db.writing(state_dir) as conn:
        a = jobsql.get_job(conn, "a")
        assert (a["status"], a["exit_code"], a["acked_at"]) == (vocab.FAILED, 1, 10)
        assert [r["job_id"] for r in jobsql.active_jobs(conn)] == ["b"]
        assert [r["job_id"] for r in jobsql.clean_candidates(conn)] == ["a"]
        assert jobsql.clean_candidates(conn, before=5) == []
        assert [r["job_id"] for r in jobsql.clean_candidates(conn, after=5)] == ["a"]
        jobsql.delete_terminal(conn, ["a", "b"])  # b is active: kept
    assert count(state_dir) == 1


def test_overrides_are_used_once(state_dir: str) -> None:
    with db.writing(state_dir) as conn:
        jobsql.allow_override(conn, "k", 100, "why", None)
        assert jobsql.valid_override(conn, "k", 101)["reason"] == "why"
        jobsql.use_override(conn, "k", 102)
        assert jobsql.valid_override(conn, "k", 103) is None
        jobsql.allow_override(conn, "k", 200, None, 250)
        assert jobsql.valid_override(conn, "k", 249) is not None
        assert jobsql.valid_override(conn, "k", 250) is None


def test_running_query_uses_the_partial_index(state_dir: str) -> None:
    conn = sqlite.open_read(state_dir)
    assert conn is not None
    plan = " ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + jobsql._ACTIVE_JOBS_SQL))
    conn.close()
    assert "jobs_active" in plan

"""liveness.reconcile (inside a held transaction and outside one) and reader.resolve, in-process."""

import os
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_ARGS, EXIT_NOT_FOUND, AgentError
from remote_agent.jobs import reader
from remote_agent.store import db, jobsql
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state

job = local_job


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return new_state(tmp_path, job("alive", os.getpid()), job("gone", NO_SUCH_PID),
                     job("gone2", NO_SUCH_PID, vocab.RUNNING, target_pid=NO_SUCH_PID),
                     job("done", NO_SUCH_PID, vocab.SUCCEEDED))


def test_resolve_messages_without_a_database() -> None:
    for args, code, message in [
        ((None, None), EXIT_INVALID_ARGS, "Either --run-key or --job-id is required"),
        (("k", None), EXIT_NOT_FOUND, "run_key not found"),
        ((None, "j1"), EXIT_NOT_FOUND, "Job not found: j1"),
        ((None, "a/b"), EXIT_INVALID_ARGS, "Invalid job_id: contains path separator"),
    ]:
        with pytest.raises(AgentError) as err:
            reader.resolve(None, *args)
        assert (err.value.code, err.value.message) == (code, message)


def test_resolve_prefers_the_job_id_and_finds_the_latest_attempt(state_dir: str) -> None:
    with db.writing(state_dir) as conn:
        later = dict(job("later", NO_SUCH_PID, vocab.FAILED), run_key="k-done", attempt_no=2)
        jobsql.insert_job(conn, later)
        assert reader.resolve(conn, "k-done", None, locked=True)["job_id"] == "later"
        assert reader.resolve(conn, "k-done", "done", locked=True)["job_id"] == "done"

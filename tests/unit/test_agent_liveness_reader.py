"""liveness.reconcile (inside a held transaction and outside one) and reader.resolve, in-process."""

import os
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_ARGS, EXIT_NOT_FOUND, AgentError
from remote_agent.host import procs
from remote_agent.jobs import reader
from remote_agent.jobs.liveness import lost_reason, reconcile
from remote_agent.store import store

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process


def job(job_id: str, supervisor_pid: int, status: str = vocab.STARTING, target_pid=None):
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": status, "started_at": 1, "updated_at": 1, "boot_id": procs.boot_id(),
            "worker_pid": supervisor_pid, "worker_start": procs.start_time(supervisor_pid),
            "target_pid": target_pid}


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    path = str(tmp_path / "state")
    with store.writing(path) as conn:
        store.insert_job(conn, job("alive", os.getpid()))
        store.insert_job(conn, job("gone", NO_SUCH_PID))
        store.insert_job(conn, job("gone2", NO_SUCH_PID, vocab.RUNNING, target_pid=NO_SUCH_PID))
        store.insert_job(conn, job("done", NO_SUCH_PID, vocab.SUCCEEDED))
    return path


def test_lost_reason() -> None:
    assert lost_reason(job("a", os.getpid())) is None
    assert lost_reason(job("a", NO_SUCH_PID)) == (
        f"supervisor (pid {NO_SUCH_PID}) exited before starting the target")
    assert "has ended; exit status unknown" in lost_reason(job("a", NO_SUCH_PID, target_pid=NO_SUCH_PID))
    assert lost_reason(job("a", NO_SUCH_PID, target_pid=os.getpid())) is None
    rebooted = dict(job("a", os.getpid()), boot_id="another-boot")
    assert lost_reason(rebooted) == "host rebooted since the job started"


def test_reader_reconciles_and_stores_lost(state_dir: str) -> None:
    r = reader.Reader(state_dir)
    try:
        assert r.job("alive")["status"] == vocab.STARTING
        assert r.job("done")["status"] == vocab.SUCCEEDED
        gone = r.job("gone")
        assert gone["status"] == vocab.LOST and gone["lost_reason"].startswith("supervisor (pid")
        assert [j["job_id"] for j in r.running()] == ["alive"]
    finally:
        r.close()
    conn = store.open_db(state_dir, write=False)
    assert conn is not None
    assert store.get_job(conn, "gone")["status"] == vocab.LOST  # written, not only reported
    assert store.get_job(conn, "gone2")["status"] == vocab.LOST  # by running()
    conn.close()


def test_reconcile_inside_a_held_transaction(state_dir: str) -> None:
    with store.writing(state_dir) as conn:
        row = reconcile(conn, store.get_job(conn, "gone"), locked=True)
        assert row["status"] == vocab.LOST and row["finished_at"] is not None
        assert reconcile(conn, store.get_job(conn, "alive"), locked=True)["status"] == vocab.STARTING


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
    with store.writing(state_dir) as conn:
        later = dict(job("later", NO_SUCH_PID, vocab.FAILED), run_key="k-done", attempt_no=2)
        store.insert_job(conn, later)
        assert reader.resolve(conn, "k-done", None, locked=True)["job_id"] == "later"
        assert reader.resolve(conn, "k-done", "done", locked=True)["job_id"] == "done"

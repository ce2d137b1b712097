"""liveness.reconcile (inside a held transaction and outside one) and reader.resolve, in-process."""

import os
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.host import procs
from remote_agent.jobs import reader
from remote_agent.jobs.liveness import NO_IDENTITY, lost_reason, reconcile
from remote_agent.store import db, jobsql, sqlite
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state

job = local_job


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return new_state(tmp_path, job("alive", os.getpid()), job("gone", NO_SUCH_PID),
                     job("gone2", NO_SUCH_PID, vocab.RUNNING, target_pid=NO_SUCH_PID),
                     job("done", NO_SUCH_PID, vocab.SUCCEEDED))


def test_lost_reason() -> None:
    assert lost_reason(job("a", os.getpid())) is None
    assert lost_reason(job("a", NO_SUCH_PID)) == (
        f"supervisor (pid {NO_SUCH_PID}) exited before starting the target")
    assert "has ended; exit status unknown" in lost_reason(
        job("a", NO_SUCH_PID, target_pid=NO_SUCH_PID, target_start=1))
    me = procs.start_time(os.getpid())
    assert lost_reason(job("a", NO_SUCH_PID, target_pid=os.getpid(), target_start=me)) is None
    # a live pid without a start time is no identity (issue 18): never "alive", never RUNNING
    assert lost_reason(job("a", NO_SUCH_PID, target_pid=os.getpid())) == NO_IDENTITY.format(
        os.getpid(), NO_SUCH_PID)
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
    conn = sqlite.open_read(state_dir)
    assert conn is not None
    assert jobsql.get_job(conn, "gone")["status"] == vocab.LOST  # written, not only reported
    assert jobsql.get_job(conn, "gone2")["status"] == vocab.LOST  # by running()
    conn.close()


def test_reconcile_inside_a_held_transaction(state_dir: str) -> None:
    with db.writing(state_dir) as conn:
        row = reconcile(conn, jobsql.get_job(conn, "gone"), locked=True)
        assert row["status"] == vocab.LOST and row["finished_at"] is not None
        assert reconcile(conn, jobsql.get_job(conn, "alive"), locked=True)["status"] == vocab.STARTING

"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""

from pathlib import Path

from remote_agent.common import vocab
from remote_agent.frontends import render
from remote_agent.host import identity
from remote_agent.jobs.liveness import REBOOTED, reconcile
from remote_agent.store import db, jobsql, sqlite
from tests.unit.agent.rows import foreign_job

row = foreign_job


def test_reconcile_leaves_another_hosts_job_alone(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, row("theirs", "elsewhere/0123"))
        jobsql.insert_job(conn, row("mine", identity.host_id()))
        jobsql.insert_job(conn, row("legacy", None))
    with db.writing(state_dir) as conn:
        assert reconcile(conn, jobsql.get_job(conn, "theirs"), locked=True)["status"] == vocab.RUNNING
        assert reconcile(conn, jobsql.get_job(conn, "mine"), locked=True)["lost_reason"] == REBOOTED
        assert reconcile(conn, jobsql.get_job(conn, "legacy"), locked=True)["status"] == vocab.LOST
    conn = sqlite.open_read(state_dir)
    assert conn is not None
    assert jobsql.get_job(conn, "theirs")["status"] == vocab.RUNNING  # nothing written either
    assert render.job_object(jobsql.get_job(conn, "theirs"), state_dir)["host_id"] == "elsewhere/0123"
    conn.close()

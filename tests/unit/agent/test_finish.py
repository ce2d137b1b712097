"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os

import pytest

from remote_agent.common import vocab
from remote_agent.host import procs
from remote_agent.store import db, exitrec, jobsql, sqlite
from remote_agent.worker import finish

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process


def _row(job_id, supervisor_pid):
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": vocab.RUNNING, "started_at": 1, "updated_at": 1, "boot_id": procs.boot_id(),
            "worker_pid": supervisor_pid, "worker_start": procs.start_time(supervisor_pid),
            "target_pid": NO_SUCH_PID}


@pytest.fixture
def state(tmp_path):
    path = str(tmp_path / "state")
    with db.writing(path) as conn:
        jobsql.insert_job(conn, _row("orphan", NO_SUCH_PID))  # supervisor and target gone
        jobsql.insert_job(conn, _row("retrying", os.getpid()))  # supervisor alive, target gone
    return path


def _stored(state, job_id):
    conn = sqlite.open_read(state)
    try:
        return jobsql.get_job(conn, job_id)
    finally:
        conn.close()


def test_supervisor_write_is_retried_until_the_lock_is_released(state, monkeypatch):
    import sqlite3

    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0.2")
    holder = sqlite3.connect(os.path.join(state, "orchesjob.db"), isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    calls = []

    def before():  # called before each attempt: the second one lets the lock go first
        calls.append(1)
        if len(calls) == 2:
            holder.execute("ROLLBACK")

    db = finish.Db(state, None)
    ok = db.write("retrying", vocab.ACTIVE, before=before, status=vocab.SUCCEEDED, exit_code=0, finished_at=2)
    db.close()
    holder.close()
    # a count, not a time: the first attempt failed under the lock, the retry after it succeeded
    assert ok is True and len(calls) == 2
    assert _stored(state, "retrying")["status"] == vocab.SUCCEEDED


def test_exit_record_write_is_retried_after_a_failure(tmp_path):
    record = finish.ExitRecord(str(tmp_path), "j9", 5, 9)
    assert record() is False  # no logs/ directory yet (as with ENOSPC): nothing recorded
    (tmp_path / "logs").mkdir()
    assert record() is True and exitrec.read(str(tmp_path), "j9") == (5, 9)

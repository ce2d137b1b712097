"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os

import pytest

from remote_agent.common import vocab
from remote_agent.store import exitrec
from remote_agent.worker import finish
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state, stored


def _row(job_id, supervisor_pid):
    return local_job(job_id, supervisor_pid, vocab.RUNNING, target_pid=NO_SUCH_PID)


@pytest.fixture
def state(tmp_path):
    return new_state(tmp_path, _row("orphan", NO_SUCH_PID),  # supervisor and target gone
                     _row("retrying", os.getpid()))  # supervisor alive, target gone


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
    assert stored(state, "retrying")["status"] == vocab.SUCCEEDED


def test_exit_record_write_is_retried_after_a_failure(tmp_path):
    record = finish.ExitRecord(str(tmp_path), "j9", 5, 9)
    assert record() is False  # no logs/ directory yet (as with ENOSPC): nothing recorded
    (tmp_path / "logs").mkdir()
    assert record() is True and exitrec.read(str(tmp_path), "j9") == (5, 9)

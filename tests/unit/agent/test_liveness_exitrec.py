"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os

import pytest

from remote_agent.common import vocab
from remote_agent.jobs import liveness
from remote_agent.store import db, exitrec, jobsql, sqlite
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state, stored


def _row(job_id, supervisor_pid):
    return local_job(job_id, supervisor_pid, vocab.RUNNING, target_pid=NO_SUCH_PID)


@pytest.fixture
def state(tmp_path):
    return new_state(tmp_path, _row("orphan", NO_SUCH_PID),  # supervisor and target gone
                     _row("retrying", os.getpid()))  # supervisor alive, target gone


def test_reconcile_turns_an_exit_record_into_the_outcome_not_lost(state):
    exitrec.write(state, "orphan", 7, 1700000007)
    conn = sqlite.open_read(state)
    try:
        seen = liveness.reconcile(conn, jobsql.get_job(conn, "orphan"))
    finally:
        conn.close()
    assert (seen["status"], seen["exit_code"], seen["finished_at"]) == (vocab.FAILED, 7, 1700000007)
    assert seen["lost_reason"] is None
    row = stored(state, "orphan")  # the supervisor is gone: the reader wrote it
    assert row is not None and (row["status"], row["exit_code"]) == (vocab.FAILED, 7)
    # without a record the same job would have been LOST
    with db.writing(state) as conn:
        jobsql.insert_job(conn, dict(_row("orphan2", NO_SUCH_PID), run_key="k-x"))
        assert liveness.reconcile(conn, jobsql.get_job(conn, "orphan2"), locked=True)["status"] == vocab.LOST


def test_reconcile_reports_a_live_supervisors_record_and_leaves_the_write_to_writers(state):
    exitrec.write(state, "retrying", 0, 1700000000)
    conn = sqlite.open_read(state)
    try:
        seen = liveness.reconcile(conn, jobsql.get_job(conn, "retrying"))
    finally:
        conn.close()
    assert (seen["status"], seen["exit_code"]) == (vocab.SUCCEEDED, 0)
    assert stored(state, "retrying")["status"] == vocab.RUNNING  # a reader did not write
    with db.writing(state) as conn:  # a writer (start, abort, unlock) stores it
        seen = liveness.reconcile(conn, jobsql.get_job(conn, "retrying"), locked=True)
    assert stored(state, "retrying")["status"] == vocab.SUCCEEDED == seen["status"]

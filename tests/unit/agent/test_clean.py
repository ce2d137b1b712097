"""ops.clean: a dry run selects exactly what the real run deletes, also for a job that ended while
its worker is still storing the outcome (its row still RUNNING, its exit record written)."""

from __future__ import annotations

import os
from pathlib import Path

from remote_agent.common import vocab
from remote_agent.ops import clean
from remote_agent.store import exitrec
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state, stored


def test_a_dry_run_selects_a_job_whose_worker_is_still_finishing(tmp_path: Path) -> None:
    # supervisor alive (this process), target gone, exit record written: the worker's final
    # write has not happened yet (a sync start's reply can come first: tests/agent test_27)
    state = new_state(tmp_path, local_job("finishing", os.getpid(), vocab.RUNNING, target_pid=NO_SUCH_PID))
    exitrec.write(state, "finishing", 0, 1700000000)
    dry, _ = clean.clean(state, before=1800000000, dry_run=True)
    assert [r["job_id"] for r in dry] == ["finishing"]
    row = stored(state, "finishing")
    assert row is not None and row["status"] == vocab.SUCCEEDED  # stored, as any reader may
    real, errors = clean.clean(state, before=1800000000)
    assert [r["job_id"] for r in real] == ["finishing"] and errors == 0
    assert stored(state, "finishing") is None


def test_a_dry_run_of_a_running_job_selects_nothing_and_writes_nothing(tmp_path: Path) -> None:
    state = new_state(tmp_path, local_job("running", os.getpid(), vocab.RUNNING, target_pid=os.getpid()))
    dry, _ = clean.clean(state, before=1800000000, dry_run=True)
    assert dry == []
    row = stored(state, "running")
    assert row is not None and row["status"] == vocab.RUNNING

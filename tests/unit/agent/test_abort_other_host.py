"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""

from pathlib import Path

import pytest

from remote_agent.common.errors import AgentError
from remote_agent.ops import abort
from remote_agent.store import db, jobsql
from tests.unit.agent.rows import foreign_job

row = foreign_job


def test_abort_of_another_hosts_job_is_refused_naming_it(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, row("theirs", "elsewhere/0123"))
    with pytest.raises(AgentError) as info:
        abort.abort(state_dir, None, "theirs", None, 0.1)
    assert info.value.code == 4 and "elsewhere/0123" in info.value.message

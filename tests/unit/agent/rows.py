"""Job rows and state dirs the agent's unit tests share: real SQLite files under tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remote_agent.common import vocab
from remote_agent.host import procs
from remote_agent.store import db, jobsql, sqlite

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process


def job(job_id: str, run_key: str = "k", attempt_no: int = 1, status: str = vocab.STARTING) -> dict[str, Any]:
    """A minimal stored row (no process identity)."""
    return {"job_id": job_id, "run_key": run_key, "attempt_no": attempt_no, "command": '["true"]',
            "status": status, "started_at": 1700000000, "updated_at": 1700000000}


def local_job(job_id: str, supervisor_pid: int, status: str = vocab.STARTING, target_pid: int | None = None,
              target_start: int | None = None) -> dict[str, Any]:
    """A job of this host and boot whose supervisor is ``supervisor_pid`` (alive or not)."""
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": status, "started_at": 1, "updated_at": 1, "boot_id": procs.boot_id(),
            "worker_pid": supervisor_pid, "worker_start": procs.start_time(supervisor_pid),
            "target_pid": target_pid, "target_start": target_start}


def foreign_job(job_id: str, host_id: str, status: str = vocab.RUNNING) -> dict[str, Any]:
    """A job another host started (a state dir shared over a network filesystem)."""
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": status, "started_at": 1, "updated_at": 1, "boot_id": "another-boot",
            "worker_pid": NO_SUCH_PID, "target_pid": NO_SUCH_PID, "host_id": host_id}


def new_state(tmp_path: Path, *rows: dict[str, Any]) -> str:
    """A migrated state dir holding ``rows``."""
    path = str(tmp_path / "state")
    with db.writing(path) as conn:  # creates and migrates
        for row in rows:
            jobsql.insert_job(conn, row)
    return path


def stored(state_dir: str, job_id: str) -> dict[str, Any] | None:
    conn = sqlite.open_read(state_dir)
    assert conn is not None
    try:
        return jobsql.get_job(conn, job_id)
    finally:
        conn.close()


def count(state_dir: str) -> int:
    conn = sqlite.open_read(state_dir)
    assert conn is not None
    try:
        return conn.execute("SELECT COUNT(*) AS n FROM jobs").fetchone()["n"]
    finally:
        conn.close()

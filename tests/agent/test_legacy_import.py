"""An orchesjob 1.1.0 state dir keeps working: the first write command imports it in place."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.beyond_orchesjob

# orchesjob 1.1.0's schema (orchesjob/state.py, SCHEMA_VERSION 2)
LEGACY_SCHEMA = """
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, run_key TEXT, worker_pid INTEGER, target_pid INTEGER,
  command TEXT NOT NULL, status TEXT NOT NULL, exit_code INTEGER, stdout_file TEXT, stderr_file TEXT,
  started_at INTEGER, finished_at INTEGER, updated_at INTEGER, aborted_at INTEGER, abort_reason TEXT,
  rerun_of_job_id TEXT, attempt_no INTEGER NOT NULL DEFAULT 1, rerun_reason TEXT,
  strict INTEGER NOT NULL DEFAULT 0);
CREATE TABLE run_keys (run_key TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(job_id),
  created_at INTEGER NOT NULL);
CREATE TABLE strict_overrides (run_key TEXT PRIMARY KEY, allowed_at INTEGER NOT NULL, used_at INTEGER,
  reason TEXT, expires_at INTEGER);
CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO schema_meta VALUES ('schema_version', '2');
"""


def agent(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESJOB_HOME=str(home), PYTHONPATH=str(ROOT))
    python = os.environ.get("AGENT_PYTHON", sys.executable)
    return subprocess.run([python, "-m", "remote_agent", *args], env=env, capture_output=True,
                          timeout=60)


def sleeper_alive(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1].split()[0] not in ("Z", "X")


def legacy_row(run_key: str, attempt: int, status: str, **extra: object) -> dict:
    row = {"job_id": str(uuid.uuid4()), "run_key": run_key, "command": json.dumps(["true"]),
           "status": status, "exit_code": 0 if status == "SUCCEEDED" else None, "attempt_no": attempt,
           "started_at": 1700000000 + attempt, "finished_at": 1700000100 + attempt,
           "updated_at": 1700000100 + attempt, "strict": 0}
    row.update(extra)
    return row


@pytest.fixture
def legacy_home(tmp_path: Path) -> tuple[Path, dict]:
    home = tmp_path / "state"
    home.mkdir()
    conn = sqlite3.connect(str(home / "orchesjob.db"))
    conn.executescript(LEGACY_SCHEMA)
    sleeper = subprocess.Popen(["sleep", "60"])
    rows = {
        "old1": legacy_row("nightly", 1, "FAILED", exit_code=3),
        "old2": legacy_row("nightly", 2, "SUCCEEDED"),
        "strict": legacy_row("billing", 1, "SUCCEEDED", strict=1),
        # orchesjob's LOST bug left two "active" jobs for one key; the newer one really runs
        "stale": legacy_row("dup", 1, "RUNNING", worker_pid=sleeper.pid, finished_at=None),
        "live": legacy_row("dup", 2, "RUNNING", worker_pid=sleeper.pid, target_pid=sleeper.pid,
                           finished_at=None),
    }
    for row in rows.values():
        cols = sorted(row)
        conn.execute(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [row[c] for c in cols])
    for key, name in (("nightly", "old2"), ("billing", "strict"), ("dup", "live")):
        conn.execute("INSERT INTO run_keys VALUES (?, ?, ?)", (key, rows[name]["job_id"], 1700000000))
    conn.commit()
    conn.close()
    yield home, rows
    sleeper.kill()
    sleeper.wait()


def test_first_write_imports_history_and_keeps_the_legacy_tables(legacy_home) -> None:
    home, rows = legacy_home
    before = agent(home, "status", "--run-key", "nightly")
    assert before.returncode == 1 and b"older schema" in before.stderr  # reads never migrate

    started = agent(home, "start", "--run-key", "nightly", "--sync", "--", "true")
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert job["attempt_no"] == 3 and job["rerun_of_job_id"] == rows["old2"]["job_id"]

    history = json.loads(agent(home, "status", "--run-key", "nightly", "--all").stdout)
    assert [j["job_id"] for j in history[1:]] == [rows["old2"]["job_id"], rows["old1"]["job_id"]]
    # old results count as reported
    assert history[2]["exit_code"] == 3 and history[2]["acked_at"] is not None

    conn = sqlite3.connect(str(home / "orchesjob.db"))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "orchesjob_legacy_jobs" in tables  # nothing stored is lost
    assert conn.execute("SELECT COUNT(*) FROM orchesjob_legacy_jobs").fetchone()[0] == len(rows)


def test_imported_strict_key_stays_consumed_and_duplicate_active_jobs_collapse(legacy_home) -> None:
    home, rows = legacy_home
    strict = agent(home, "start", "--run-key", "billing", "--strict", "--", "true")
    assert strict.returncode == 0, strict.stderr
    assert json.loads(strict.stdout)["existing"] is True  # not run again

    # orchesjob 1.1.0 recorded bare pids: an imported active job has no process identity, so it
    # is LOST with a reason that says so (outcome unknown), never "RUNNING" because some
    # process now has its pid (issue 18 item 2); the sleeper that has that pid is not signalled
    live = json.loads(agent(home, "status", "--job-id", rows["live"]["job_id"]).stdout)
    assert live["status"] == "LOST" and live["lost_reason"].startswith("no process identity"), live
    assert "orchesjob 1.1.0" in live["lost_reason"] and live["exit_code"] is None
    assert sleeper_alive(rows["live"]["target_pid"])
    stale = json.loads(agent(home, "status", "--job-id", rows["stale"]["job_id"]).stdout)
    assert stale["status"] == "LOST" and "newer active job" in stale["lost_reason"]

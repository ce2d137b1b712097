"""Forward migrations: a database written by an older schema version keeps its data."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from remote_agent.store import schema, sqlite  # noqa: E402

pytestmark = pytest.mark.beyond_orchesjob


def agent(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESJOB_HOME=str(home), PYTHONPATH=str(ROOT))
    python = os.environ.get("AGENT_PYTHON", sys.executable)
    return subprocess.run([python, "-m", "remote_agent", *args], env=env, input=stdin,
                          capture_output=True, timeout=60)


def test_v1_database_migrates_forward_on_first_write_and_reads_never_migrate(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir()
    conn = sqlite3.connect(str(home / "orchesjob.db"))
    for statement in schema._MIGRATIONS[0].split(";"):  # exactly the schema release 1 created
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (job_id, run_key, attempt_no, command, status, exit_code, started_at, updated_at)"
        " VALUES ('j1', 'k', 1, ?, 'SUCCEEDED', 0, 1700000000, 1700000000)", (json.dumps(["true"]),))
    conn.execute("INSERT INTO run_keys VALUES ('k', 1, 'j1')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    read = agent(home, "status", "--run-key", "k")  # reads cope with the missing columns
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["log_shown"] == {"stdout": 0, "stderr": 0}
    assert sqlite3.connect(str(home / "orchesjob.db")).execute("PRAGMA user_version").fetchone()[0] == 1

    assert agent(home, "start", "--run-key", "other", "--sync", "--", "true").returncode == 0
    conn = sqlite3.connect(str(home / "orchesjob.db"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite.SCHEMA_VERSION
    status = json.loads(agent(home, "status", "--run-key", "k").stdout)
    assert status["job_id"] == "j1" and status["exit_code"] == 0
    assert status["log_shown"] == {"stdout": 0, "stderr": 0}


def test_log_cursor_is_recorded_only_when_asked_and_only_moves_forward(tmp_path: Path) -> None:
    home = tmp_path / "state"
    started = agent(home, "start", "--run-key", "c", "--sync", "--", "sh", "-c", "echo hello; echo oops >&2")
    job_id = json.loads(started.stdout)["job_id"]

    def wait(offsets: dict, record: bool) -> dict:
        req = {"op": "wait", "job_id": job_id, "timeout": 1, "offsets": offsets, "record": record}
        res = agent(home, "rpc", stdin=json.dumps(req).encode())
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["job"]["log_shown"]

    assert wait({"stdout": 3, "stderr": 0}, record=False) == {"stdout": 0, "stderr": 0}
    assert wait({"stdout": 3, "stderr": 2}, record=True) == {"stdout": 3, "stderr": 2}
    assert wait({"stdout": 1, "stderr": 5}, record=True) == {"stdout": 3, "stderr": 5}  # max, never back
    poll = {"op": "poll", "record": True, "jobs": [{"job_id": job_id, "offsets": {"stdout": 6, "stderr": 5}}]}
    res = json.loads(agent(home, "rpc", stdin=json.dumps(poll).encode()).stdout)
    assert res["jobs"][0]["job"]["log_shown"] == {"stdout": 6, "stderr": 5}


def test_rpc_status_by_run_key_is_null_for_an_unknown_key(tmp_path: Path) -> None:
    home = tmp_path / "state"
    req = json.dumps({"op": "status", "run_key": "not-yet"}).encode()
    unknown = agent(home, "rpc", stdin=req)
    assert unknown.returncode == 0 and json.loads(unknown.stdout)["job"] is None
    started = json.loads(agent(home, "start", "--run-key", "not-yet", "--sync", "--", "true").stdout)
    known = json.loads(agent(home, "rpc", stdin=req).stdout)
    assert known["job"]["job_id"] == started["job_id"] and known["job"]["status"] == "SUCCEEDED"
    bad = agent(home, "rpc", stdin=json.dumps({"op": "status", "run_key": "a\nb"}).encode())
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["kind"] == "bad_request"


def test_read_of_a_database_being_created_is_not_found_not_an_error(tmp_path: Path) -> None:
    """A reader racing the first writer sees an empty SQLite file (user_version 0, no tables)."""
    home = tmp_path / "state"
    home.mkdir()
    sqlite3.connect(str(home / "orchesjob.db")).close()  # the file exists, the schema not yet
    res = agent(home, "status", "--run-key", "k")
    assert res.returncode == 3 and res.stderr == b"orchesjob: run_key not found\n"
    res = agent(home, "rpc", stdin=json.dumps({"op": "status", "run_key": "k"}).encode())
    assert res.returncode == 0 and json.loads(res.stdout)["job"] is None

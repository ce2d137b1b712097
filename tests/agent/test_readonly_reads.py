"""Read commands are read-only: no writes, no write lock, no migration, no file creation."""

import hashlib
import os
import time

import pytest
from agent_helpers import wait_until

pytestmark = pytest.mark.beyond_orchesjob


def _fingerprint(agent):
    st = os.stat(str(agent.db_path))
    with open(str(agent.db_path), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return digest, st.st_mtime_ns, st.st_size


def _data_version(agent):
    conn = agent.db()
    try:
        return conn.execute("PRAGMA data_version").fetchone()[0], conn
    except Exception:
        conn.close()
        raise


def _reads(agent, job, key):
    return [
        ("status", "--job-id", job["job_id"]),
        ("status", "--run-key", key),
        ("status", "--run-key", key, "--all"),
        ("status", "--running"),
        ("logs", "--run-key", key),
        ("logs", "--job-id", job["job_id"], "--stream", "stderr"),
    ]


def _rpc_reads(job):
    return [
        {
            "protocol": 1,
            "op": "poll",
            "jobs": [{"job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}}],
        },
        {"protocol": 1, "op": "wait", "job_id": job["job_id"], "timeout": 5},
        {"protocol": 1, "op": "ping"},
    ]


@pytest.mark.smoke
def test_reads_do_not_write(agent):
    key = agent.key()
    agent.start_ok(key, "true", sync=True)
    job = agent.start_ok(key, "sh", "-c", "echo out; echo err >&2", sync=True)
    agent.ok("status", "--running")  # let any deferred checkpoint happen now
    time.sleep(0.05)
    before = _fingerprint(agent)
    version, conn = _data_version(agent)
    try:
        for args in _reads(agent, job, key):
            res = agent.run(*args)
            assert res.code == 0, (args, res)
        for req in _rpc_reads(job):
            code, _ = agent.rpc(req)
            assert code == 0, agent.last_rpc
        assert conn.execute("PRAGMA data_version").fetchone()[0] == version, (
            "a read command wrote to the database"
        )
    finally:
        conn.close()
    assert _fingerprint(agent) == before


@pytest.mark.smoke
def test_schema_version(agent):
    agent.start_ok(agent.key(), "true", sync=True)
    conn = agent.db()
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] > 0
    finally:
        conn.close()


@pytest.mark.parametrize("lock", ["IMMEDIATE", "EXCLUSIVE"])
def test_reads_while_a_writer_holds_the_lock(agent, lock):
    key = agent.key()
    job = agent.start_ok(key, "sh", "-c", "echo out", sync=True)
    conn = agent.db(timeout=1)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if lock == "EXCLUSIVE" and mode.lower() != "wal":
        conn.close()
        pytest.skip(f"BEGIN EXCLUSIVE blocks readers outside WAL mode (journal_mode={mode})")
    conn.execute(f"BEGIN {lock}")
    conn.execute("UPDATE jobs SET rerun_reason = 'uncommitted' WHERE job_id = ?", (job["job_id"],))
    # A read that waited for the writer would wait as long as the test holds the lock (here:
    # until the run's 60 s ceiling kills it, a hang); a busy timeout far past that ceiling means
    # the read cannot give up and answer either. So a prompt answer is the only way to pass.
    env = {"ORCHESJOB_BUSY_TIMEOUT": "600"}
    try:
        for args in _reads(agent, job, key):
            res = agent.run(*args, env=env)
            assert res.code == 0, (args, res)
            if args[0] == "status" and res.json and isinstance(res.json, dict):
                assert res.json["rerun_reason"] is None
        for req in _rpc_reads(job):
            code, _ = agent.rpc(req, env=env)
            assert code == 0, agent.last_rpc
    finally:
        conn.rollback()
        conn.close()


def test_reads_on_a_fresh_home_create_nothing(agent):
    assert not agent.home.exists()
    assert agent.ok("status", "--running") == []
    res = agent.run("status", "--run-key", "k")
    assert res.code == 3 and res.stderr == b"orchesjob: run_key not found\n", res
    res = agent.run("logs", "--job-id", "00000000-0000-4000-8000-000000000000")
    assert res.code == 3, res
    code, rep = agent.rpc(
        {"protocol": 1, "op": "poll", "jobs": [{"job_id": "00000000-0000-4000-8000-000000000000"}]}
    )
    assert code == 0 and rep["jobs"][0]["job"] is None, agent.last_rpc
    assert not agent.home.exists(), os.listdir(str(agent.home))


def test_status_of_running_job_does_not_write(agent):
    key = agent.key()
    job = agent.start_ok(key, "sh", "-c", "echo hi; sleep 30")
    wait_until(lambda: os.path.getsize(job["stdout_file"]) > 0, message="output")
    version, conn = _data_version(agent)
    try:
        for _ in range(3):
            assert agent.status(job["job_id"])["status"] == "RUNNING"
            assert len(agent.ok("status", "--running")) == 1
        assert conn.execute("PRAGMA data_version").fetchone()[0] == version
    finally:
        conn.close()
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")

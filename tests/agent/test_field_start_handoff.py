"""An async start answers only once the supervisor has recorded itself (remote_agent/worker/handoff.py).

Until then the job row names the launcher as its worker. With ``--start-timeout 0`` the launcher
used to answer and exit at once; a reader that came before the slow supervisor recorded itself
found neither worker nor target alive and declared the job LOST, and the supervisor then ran
nothing (a CI failure under load). Here the supervisor is made slow on purpose: the test takes
the database's write lock the moment the STARTING row is committed.
"""

import sqlite3
import subprocess
import time

import pytest
from agent_helpers import wait_until

pytestmark = pytest.mark.beyond_orchesjob


def _hold_the_lock_before_the_supervisor(agent, key, launcher):
    """BEGIN IMMEDIATE as soon as ``key``'s row exists; the connection if the row still names
    the launcher as its worker (the supervisor has not recorded itself), else None."""
    conn = sqlite3.connect(str(agent.db_path), timeout=0, isolation_level=None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # the launcher's start transaction holds it
            continue
        row = conn.execute("SELECT worker_pid FROM jobs WHERE run_key = ?", (key,)).fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            continue
        if row[0] == launcher.pid:
            return conn
        conn.execute("ROLLBACK")
        conn.close()
        return None  # the supervisor was quicker than us: try again
    raise AssertionError("the start's row never appeared")


def test_a_zero_start_timeout_waits_for_the_supervisor_to_record_itself(agent):
    agent.start_ok(agent.key("init"), "true")  # the database exists before the race
    for attempt in range(20):
        key, runs = agent.key(f"k{attempt}"), agent.workdir / f"runs-{attempt}"  # one per attempt
        launcher = agent.popen_bg(
            [*agent.argv, "start", "--run-key", key, "--start-timeout", "0", "--",
             "sh", "-c", f"echo run >> '{runs}'; exec sleep 60"],
            env=agent.make_env({"ORCHESJOB_BUSY_TIMEOUT": "20"}), cwd=str(agent.workdir),
            stdout=subprocess.PIPE)
        holder = _hold_the_lock_before_the_supervisor(agent, key, launcher)
        if holder is not None:
            break
        launcher.wait(timeout=30)  # the race was lost: this attempt's job runs; stop it
        agent.ok("abort", "--run-key", key, "--grace-seconds", "1")
    else:
        pytest.fail("the supervisor recorded itself before the test could hold the lock, 20 times")
    try:
        time.sleep(1.0)
        # the launcher waits for its supervisor, so the row's worker is alive: not LOST
        seen = agent.status(run_key=key)
        assert seen["status"] == "STARTING", seen
        assert launcher.poll() is None, "the launcher answered before its supervisor recorded itself"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, out
    job = agent.wait_status(agent.status(run_key=key)["job_id"], statuses={"RUNNING"}, timeout=15)
    wait_until(runs.exists, message="the job ran")
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert runs.read_text() == "run\n"

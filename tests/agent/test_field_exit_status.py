"""Issue 8 item 1: a finished job never turns LOST for lack of a database write.

Another process (a separate Python holding ``BEGIN IMMEDIATE``, like an admin's ``sqlite3``
shell or a long ``clean``) holds the database's write lock across the job's end for longer than
the agent's busy timeout (ORCHESJOB_BUSY_TIMEOUT=1). The supervisor records the exit status in
``logs/<job_id>.exit`` first, then retries its database write until the lock is released.
Every job appends to a side-effect file, so each test counts how many times it really ran.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from agent_helpers import ACTIVE, pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob

BUSY = {"ORCHESJOB_BUSY_TIMEOUT": "1"}
#: These tests are about the worker that stores the final status (the light job's finisher):
#: a job that ends cleanly on a local disk would not start one (test_light_quick_end.py).
FINISHER = dict(BUSY, ORCHESJOB_QUICK_END="0")

HOLD_LOCK = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
sys.stdout.write("locked\n")
sys.stdout.flush()
sys.stdin.read()  # hold the write lock until the test closes our stdin
conn.execute("ROLLBACK")
"""


class WriteLock:
    """The database's write lock, held by a separate process until ``release``."""

    def __init__(self, agent):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(agent.db_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        agent.spawned.append(self.proc)
        assert self.proc.stdout.readline() == b"locked\n"

    def release(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


def gated_job(agent, code):
    """A job that appends to ``runs``, waits for the file ``go``, prints done and exits ``code``."""
    runs, go = agent.workdir / "runs", agent.workdir / "go"
    cmd = ["sh", "-c", f"echo run >> '{runs}'; while [ ! -e '{go}' ]; do sleep 0.02; done; "
                       f"echo done; exit {code}"]
    return cmd, runs, go


def db_status(agent, job_id):
    conn = agent.db()
    try:
        row = conn.execute("SELECT status, exit_code, finished_at FROM jobs WHERE job_id = ?",
                           (job_id,)).fetchone()
        return dict(row)
    finally:
        conn.close()


def end_under_lock(agent, code):
    """Start the gated job, take the write lock, let the job end, and wait until the
    supervisor's first write has failed (it is still alive, retrying)."""
    cmd, runs, go = gated_job(agent, code)
    job = agent.start_ok(agent.key(), *cmd, env=FINISHER)
    wait_until(runs.exists, message="job ran")
    lock = WriteLock(agent)
    go.touch()
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=10, message="main process ended")
    time.sleep(2.5)  # > busy timeout (1 s): the supervisor's first final write has failed
    assert pid_alive(job["worker_pid"]), "the supervisor gave up instead of retrying"
    assert db_status(agent, job["job_id"])["status"] == "RUNNING"  # the lock really held
    return job, lock, runs


@pytest.mark.parametrize("code, status", [(0, "SUCCEEDED"), (7, "FAILED")])
def test_status_survives_a_held_write_lock(agent, code, status):
    job, lock, runs = end_under_lock(agent, code)
    # While locked: readers report the recorded outcome, never LOST.
    for read in (lambda: agent.status(job["job_id"], env=BUSY),
                 lambda: agent.rpc_ok({"protocol": 1, "op": "poll", "jobs": [{"job_id": job["job_id"]}]},
                                      env=BUSY)["jobs"][0]["job"]):
        seen = read()
        assert seen["status"] == status and seen["exit_code"] == code, seen
        assert seen["finished_at"] is not None
    recorded = (agent.home / "logs" / f"{job['job_id']}.exit").read_text().split()
    assert recorded[:2] == ["v1", str(code)]
    lock.release()
    # The supervisor's retry (backoff, at most 30 s) stores the final status itself.
    wait_until(lambda: db_status(agent, job["job_id"])["status"] != "RUNNING", timeout=40,
               interval=0.2, message="supervisor stored the final status")
    row = db_status(agent, job["job_id"])
    assert row == {"status": status, "exit_code": code, "finished_at": int(recorded[2])}, row
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=5, message="supervisor exited")
    assert agent.run("logs", "--job-id", job["job_id"]).stdout == b"done\n"
    assert runs.read_text() == "run\n"


def test_supervisor_killed_while_retrying_then_adopted_not_rerun(agent):
    job, lock, runs = end_under_lock(agent, 0)
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=5, message="supervisor gone")
    # Supervisor and target gone, database still locked: the exit record decides.
    seen = agent.status(job["job_id"], env=BUSY)
    assert seen["status"] == "SUCCEEDED" and seen["exit_code"] == 0, seen
    assert seen["lost_reason"] is None
    lock.release()
    seen = agent.status(job["job_id"])
    assert seen["status"] == "SUCCEEDED" and seen["exit_code"] == 0, seen
    assert db_status(agent, job["job_id"])["status"] == "SUCCEEDED"  # written by the reader
    cmd, _, _ = gated_job(agent, 0)
    rep = agent.rpc_ok({"protocol": 1, "op": "start", "run_key": job["run_key"], "argv": cmd,
                        "mode": "resume"})
    assert rep["action"] == "adopted" and rep["job"]["job_id"] == job["job_id"], rep
    assert rep["job"]["status"] == "SUCCEEDED"
    time.sleep(0.3)
    assert runs.read_text() == "run\n"  # one execution


def test_dead_supervisor_and_ended_target_without_record_is_still_lost(agent):
    """The record is what decides: without one, a vanished supervisor still means LOST."""
    cmd, runs, go = gated_job(agent, 0)
    job = agent.start_ok(agent.key(), *cmd)
    wait_until(runs.exists, message="job ran")
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=5, message="supervisor gone")
    assert agent.status(job["job_id"])["status"] in ACTIVE
    go.touch()
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=10, message="target ended")
    seen = agent.status(job["job_id"])
    assert seen["status"] == "LOST" and "exit status unknown" in seen["lost_reason"], seen
    assert not (agent.home / "logs" / f"{job['job_id']}.exit").exists()


def test_clean_removes_the_exit_record(agent):
    job = agent.start_ok(agent.key(), "sh", "-c", "exit 3", sync=True)
    assert job["status"] == "FAILED" and job["exit_code"] == 3
    record = agent.home / "logs" / f"{job['job_id']}.exit"
    assert record.read_text().split()[:2] == ["v1", "3"]
    rep = agent.ok("clean", "--job-id", job["job_id"])
    assert rep["deleted"] == 1 and rep["errors"] == 0, rep
    assert not record.exists()
    assert os.listdir(agent.home / "logs") == []

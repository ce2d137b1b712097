"""Issue 10, the light job's quick end: a job that ends cleanly on a local disk leaves nothing
running (no Python finisher); its exit record is its outcome and the next reader stores it.

Every job appends to a side-effect file, so each test counts how many times it really ran;
the database row is read directly (no reconcile) to tell "stored" from "reported".
"""

import os
import signal
import time

import pytest
from agent_helpers import pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob


def counted(agent, tail):
    runs = agent.workdir / "runs"
    return ["sh", "-c", f"echo run >> '{runs}'; {tail}"], runs


def gated(agent, code):
    """A counted job that exits ``code`` once the test opens its gate: it ends after the start
    returned (the launcher reads the job once more, and would store an end it met)."""
    gate = agent.workdir / "gate"
    cmd, runs = counted(agent, f"while [ ! -e '{gate}' ]; do sleep 0.02; done; exit {code}")
    return cmd, runs, gate


def end_unread(agent, code):
    """Start a gated job, let it end, and wait for its wrapper to be gone."""
    cmd, runs, gate = gated(agent, code)
    job = agent.start_ok(agent.key(), *cmd)
    gate.touch()
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=10, message="wrapper exited")
    return job, cmd, runs


def stored(agent, job_id):
    return agent.job_row(job_id)["status"]


def record(agent, job_id):
    return (agent.home / "logs" / f"{job_id}.exit").read_text().split()


def resume(agent, key, argv):
    return agent.rpc_ok({"protocol": 1, "op": "start", "run_key": key, "argv": argv, "mode": "resume"})


def test_a_clean_end_leaves_nothing_running_and_the_next_reader_stores_it(agent):
    job, cmd, runs = end_unread(agent, 3)
    assert record(agent, job["job_id"])[:2] == ["v1", "3"]
    time.sleep(0.3)  # a finisher, had one started, would have stored the row by now
    assert stored(agent, job["job_id"]) == "RUNNING", "a finisher stored it: no quick end"
    seen = agent.status(job["job_id"])
    assert seen["status"] == "FAILED" and seen["exit_code"] == 3 and seen["lost_reason"] is None, seen
    row = agent.job_row(job["job_id"])
    assert row["status"] == "FAILED" and row["exit_code"] == 3, row
    assert row["finished_at"] == int(record(agent, job["job_id"])[2])
    rep = resume(agent, job["run_key"], cmd)
    assert rep["action"] == "adopted" and rep["job"]["job_id"] == job["job_id"], rep
    time.sleep(0.2)
    assert runs.read_text() == "run\n"


def test_a_resume_stores_and_adopts_an_end_nobody_read(agent):
    job, cmd, runs = end_unread(agent, 0)
    assert stored(agent, job["job_id"]) == "RUNNING"
    rep = resume(agent, job["run_key"], cmd)
    assert rep["action"] == "adopted" and rep["job"]["status"] == "SUCCEEDED", rep
    assert stored(agent, job["job_id"]) == "SUCCEEDED"  # the start's transaction stored it
    time.sleep(0.2)
    assert runs.read_text() == "run\n"


def test_a_leftover_process_makes_the_finisher_end_it_and_store_the_row(agent):
    pidfile = agent.workdir / "leftover.pid"
    cmd, runs = counted(agent, f"sleep 60 & echo $! > '{pidfile}'; exit 0")
    job = agent.start_ok(agent.key(), *cmd, env={"ORCHESJOB_KILL_GRACE": "0.5"})
    wait_until(pidfile.exists, timeout=10, message="leftover started")
    leftover = int(pidfile.read_text())
    # no reader: the finisher stores the row itself once the leftover is gone
    wait_until(lambda: stored(agent, job["job_id"]) == "SUCCEEDED", timeout=15, message="finisher stored it")
    assert not pid_alive(leftover), "the leftover survived the job"
    assert runs.read_text() == "run\n"


def test_a_target_killed_by_a_signal_runs_the_finisher(agent):
    pidfile = agent.workdir / "target.pid"
    cmd, runs = counted(agent, f"echo $$ > '{pidfile}'; exec sleep 60")
    job = agent.start_ok(agent.key(), *cmd)
    wait_until(pidfile.exists, timeout=10, message="target started")
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    wait_until(lambda: stored(agent, job["job_id"]) == "FAILED", timeout=15, message="finisher stored it")
    assert agent.job_row(job["job_id"])["exit_code"] == -9
    assert runs.read_text() == "run\n"


def test_quick_end_off_keeps_the_finisher(agent):
    cmd, runs, gate = gated(agent, 0)
    job = agent.start_ok(agent.key(), *cmd, env={"ORCHESJOB_QUICK_END": "0"})
    gate.touch()
    # nobody reads the job: only its finisher can store the row
    wait_until(lambda: stored(agent, job["job_id"]) == "SUCCEEDED", timeout=15, message="finisher stored it")
    row = agent.job_row(job["job_id"])
    assert (row["exit_code"], row["finished_at"]) == (0, int(record(agent, job["job_id"])[2])), row
    assert runs.read_text() == "run\n"


def test_clean_stores_then_deletes_an_end_nobody_read(agent):
    job, _, _ = end_unread(agent, 0)
    assert stored(agent, job["job_id"]) == "RUNNING"
    rep = agent.ok("clean", "--job-id", job["job_id"])
    assert rep["deleted"] == 1 and rep["errors"] == 0, rep
    assert not (agent.home / "logs" / f"{job['job_id']}.exit").exists()


def test_a_running_job_is_not_cleaned(agent):
    """The reconcile in clean stores only ends: a job still running stays, with its row."""
    cmd, _ = counted(agent, "sleep 30")
    job = agent.start_ok(agent.key(), *cmd)
    rep = agent.ok("clean", "--all")
    assert rep["deleted"] == 0, rep
    assert stored(agent, job["job_id"]) == "RUNNING" and pid_alive(job["worker_pid"])


def test_abort_of_an_end_nobody_read_keeps_its_outcome(agent):
    """abort reconciles first: a job that ended without a finisher is not running, whatever its
    row still says, and its outcome stays (exit code 4 of the wrapper's record)."""
    job, _, runs = end_unread(agent, 4)
    assert stored(agent, job["job_id"]) == "RUNNING"
    res = agent.run("abort", "--job-id", job["job_id"])
    assert res.code == 4 and "not running" in res.err, res
    row = agent.job_row(job["job_id"])
    assert (row["status"], row["exit_code"], row["aborted_at"]) == ("FAILED", 4, None), row
    assert runs.read_text() == "run\n"

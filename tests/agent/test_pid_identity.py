"""Issue 18 item 2: a pid without a start time is no process identity.

A job row whose target has no recorded start time (a fast target reaped before an older agent
read it; a row imported from orchesjob 1.1.0) must never read RUNNING because some unrelated
process now has that pid, and abort must never signal that process or its group. Made
deterministic by forging the row's ``target_pid`` to a live process of ours, in its own
session and process group (as a target would be), with ``target_start`` NULL.

And the light wrapper records every target's start time, even of a target that ends at once.
"""

import signal
import sqlite3
import subprocess

import pytest
from agent_helpers import wait_until

pytestmark = pytest.mark.beyond_orchesjob

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process


def stat_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1].split()


def alive(pid):
    try:
        return stat_of(pid)[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def bystander():
    """An unrelated process of the test user's, leader of its own session and group."""
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield p
    p.kill()
    p.wait()


def forge(agent, job_id, **values):
    conn = sqlite3.connect(str(agent.db_path))
    sets = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])
    conn.commit()
    conn.close()


def finished_job(agent):
    """A finished job whose worker is gone: a start answers as soon as the outcome is known, and
    the worker may still be storing it; a row forged before then would be overwritten (ci24)."""
    job = agent.start_ok(agent.key(), "true", sync=True)
    assert job["status"] == "SUCCEEDED"
    conn = sqlite3.connect(str(agent.db_path))
    (worker_pid,) = conn.execute("SELECT worker_pid FROM jobs WHERE job_id = ?", [job["job_id"]]).fetchone()
    conn.close()
    if worker_pid:
        wait_until(lambda: not alive(worker_pid), timeout=60, interval=0.02)
    return job


def test_a_reused_pid_without_start_time_neither_keeps_the_job_running_nor_gets_signalled(agent, bystander):
    job = finished_job(agent)
    record = agent.home / "logs" / (job["job_id"] + ".exit")
    record.unlink()  # no exit record: the job can only be judged by its processes
    forge(agent, job["job_id"], status="RUNNING", exit_code=None, finished_at=None, acked_at=None,
          worker_pid=NO_SUCH_PID, worker_start=None, target_pid=bystander.pid, target_start=None)
    now = agent.status(job["job_id"])
    assert now["status"] == "LOST", now
    assert now["lost_reason"].startswith("no start time was recorded for the target"), now
    assert str(bystander.pid) in now["lost_reason"]
    res = agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert res.code == 4, res  # already LOST: nothing to abort
    assert alive(bystander.pid) and bystander.poll() is None


def test_with_an_exit_record_the_job_reads_its_outcome(agent, bystander):
    job = finished_job(agent)
    forge(agent, job["job_id"], status="RUNNING", exit_code=None, finished_at=None, acked_at=None,
          worker_pid=NO_SUCH_PID, worker_start=None, target_pid=bystander.pid, target_start=None)
    now = agent.status(job["job_id"])
    assert now["status"] == "SUCCEEDED" and now["exit_code"] == 0, now
    assert bystander.poll() is None


def test_abort_of_a_running_job_never_signals_a_target_pid_without_start_time(agent, bystander):
    """The worker is alive (with its identity): the job is RUNNING, abort stops the worker, and
    the process that now has the target's number, and its group, receive nothing."""
    job = finished_job(agent)
    worker = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        wait_until(lambda: len(stat_of(worker.pid)) > 19, timeout=10, interval=0.02)
        forge(agent, job["job_id"], status="RUNNING", exit_code=None, finished_at=None, acked_at=None,
              worker_pid=worker.pid, worker_start=int(stat_of(worker.pid)[19]),
              target_pid=bystander.pid, target_start=None)
        (agent.home / "logs" / (job["job_id"] + ".exit")).unlink()
        assert agent.status(job["job_id"])["status"] == "RUNNING"
        res = agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
        assert res.code == 0, res
        assert res.json["sent_term_worker"] is True, res
        assert res.json["sent_term_target"] is False and res.json["sent_kill_target"] is False, res
        assert worker.wait(timeout=30) == -signal.SIGTERM
        assert alive(bystander.pid) and bystander.poll() is None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_the_light_wrapper_records_the_start_time_of_targets_that_end_at_once(agent):
    """Many /bin/true light jobs: every one stores its target's start time (an older agent read
    it after bash could have reaped the target: about 1 in 30 stored NULL)."""
    ids = [agent.start_ok(agent.key("t"), "/bin/true", env={"ORCHESJOB_LIGHT": "1"})["job_id"]
           for _ in range(60)]
    for job_id in ids:
        assert agent.wait_status(job_id, timeout=60)["status"] == "SUCCEEDED"
    conn = sqlite3.connect(str(agent.db_path))
    rows = conn.execute("SELECT target_pid, target_start, worker_pid FROM jobs WHERE job_id IN ({})".format(
        ", ".join("?" * len(ids))), ids).fetchall()
    conn.close()
    assert len(rows) == 60
    assert [r for r in rows if r[1] is None] == []
    # the start time is the target's own: after the wrapper's (its parent's), in clock ticks
    assert all(isinstance(r[1], int) and r[1] > 0 for r in rows)


def test_the_light_target_start_is_its_own(agent):
    job = agent.start_ok(agent.key(), "sleep", "30", env={"ORCHESJOB_LIGHT": "1"})
    try:
        conn = sqlite3.connect(str(agent.db_path))
        pid, start = conn.execute("SELECT target_pid, target_start FROM jobs WHERE job_id = ?",
                                  (job["job_id"],)).fetchone()
        conn.close()
        assert int(stat_of(pid)[19]) == start
        assert agent.status(job["job_id"])["status"] == "RUNNING"
    finally:
        agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")

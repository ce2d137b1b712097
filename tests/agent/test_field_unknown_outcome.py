"""Issue 8 item 8: a job whose outcome is unknown is not run again by a resume start.

The supervisor is SIGKILLed, the target then ends on its own: nobody recorded its exit status,
the job may have completed. A resume start (what every Airflow try sends) returns it with the
action ``unknown`` and runs nothing, acknowledged or not; ``orchesjob unlock`` (consumed) or
``"rerun_unknown": true`` lets the next start run attempt 2. A job whose supervisor died before
starting the target was never run: it is retried as before. A side-effect file counts runs.
"""

import os
import signal

import pytest
from agent_helpers import pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob


def kill9(pid):
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=5, message=f"pid {pid} gone")


def resume(agent, key, argv, **extra):
    req = {"protocol": 1, "op": "start", "run_key": key, "argv": argv, "mode": "resume"}
    req.update(extra)
    return agent.rpc_ok(req)


def runs(marker):
    return marker.read_text().count("run\n") if marker.exists() else 0


def lost_unknown(agent, key, marker, gate):
    """Start a job, SIGKILL its supervisor, let its target end: LOST with unknown exit status."""
    argv = ["sh", "-c", f"echo run >> '{marker}'; while [ ! -e '{gate}' ]; do sleep 0.05; done"]
    rep = resume(agent, key, argv)
    assert rep["action"] == "started", rep
    job = rep["job"]
    wait_until(lambda: runs(marker) == 1, message="target ran")
    kill9(job["worker_pid"])
    gate.write_text("")
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=10, message="target ended")
    st = agent.status(job["job_id"])
    assert st["status"] == "LOST" and st["exit_code"] is None, st
    assert "unknown" in st["lost_reason"], st
    return argv, job


@pytest.mark.parametrize("acked", [False, True])
def test_unknown_outcome_is_not_rerun_until_unlocked(agent, acked):
    key = agent.key()
    marker, gate = agent.workdir / "runs", agent.workdir / "gate"
    argv, job = lost_unknown(agent, key, marker, gate)
    if acked:
        agent.ok("ack", "--job-id", job["job_id"])
    for _ in range(2):  # every retry gets the same answer
        rep = resume(agent, key, argv)
        assert rep["action"] == "unknown", rep
        assert rep["job"]["job_id"] == job["job_id"] and rep["job"]["status"] == "LOST", rep
    # explicit, strict-less: still unknown with strict (strict never bypasses unlock)
    assert resume(agent, key, argv, strict=True)["action"] == "unknown"
    assert resume(agent, key, argv, strict=True, rerun_unknown=True)["action"] == "unknown"
    assert runs(marker) == 1, "a start ran a job whose outcome is unknown"
    agent.ok("unlock", "--run-key", key, "--reason", "checked by hand: did not finish")
    rep = resume(agent, key, argv)
    assert rep["action"] == "started" and rep["strict_override_used"] is True, rep
    new = agent.wait_status(rep["job"]["job_id"], statuses={"SUCCEEDED"})
    assert new["attempt_no"] == 2 and new["rerun_reason"] == "checked by hand: did not finish", new
    assert runs(marker) == 2
    # the unlock was consumed: attempt 2 SUCCEEDED and is adopted, nothing more runs
    assert resume(agent, key, argv)["action"] == "adopted"
    assert runs(marker) == 2


def test_rerun_unknown_request_runs_it_again(agent):
    key = agent.key()
    marker, gate = agent.workdir / "runs", agent.workdir / "gate"
    argv, job = lost_unknown(agent, key, marker, gate)
    rep = resume(agent, key, argv, rerun_unknown=True)
    assert rep["action"] == "started" and rep["strict_override_used"] is False, rep
    assert rep["job"]["attempt_no"] == 2 and rep["job"]["rerun_of_job_id"] == job["job_id"], rep
    assert "unknown" in rep["job"]["rerun_reason"], rep
    agent.wait_status(rep["job"]["job_id"], statuses={"SUCCEEDED"})
    assert runs(marker) == 2


def test_cli_start_keeps_orchesjob_behaviour(agent):
    """``orchesjob start`` (no resume mode) starts a new attempt after any terminal job, as
    orchesjob 1.1.0 does: a person typing it means to run the command."""
    key = agent.key()
    marker, gate = agent.workdir / "runs", agent.workdir / "gate"
    argv, _job = lost_unknown(agent, key, marker, gate)
    new = agent.start_ok(key, *argv, sync=True)
    assert new["attempt_no"] == 2 and runs(marker) == 2, new


def test_supervisor_dead_before_target_is_retried(agent):
    """The launcher stands in as supervisor until the target starts; a job whose supervisor is
    gone with no target ever started never ran: a resume start runs it (attempt 2)."""
    key = agent.key()
    marker = agent.workdir / "runs"
    argv = ["sh", "-c", f"echo run >> '{marker}'"]
    rep = resume(agent, key, argv)
    job = rep["job"]
    agent.wait_status(job["job_id"], statuses={"SUCCEEDED"})
    # Readers report the outcome from the exit record at once; the job's worker may still be
    # storing it (the light job's finisher is a Python start later): let it finish first.
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=10, message="worker exited")
    conn = agent.db()
    try:  # as a launcher killed before the supervisor started the target leaves it
        conn.execute("UPDATE jobs SET status = 'STARTING', exit_code = NULL, finished_at = NULL,"
                     " target_pid = NULL, target_start = NULL, worker_pid = 999999999, acked_at = NULL"
                     " WHERE job_id = ?", (job["job_id"],))
    finally:
        conn.close()
    # ... and with no exit record: a target that never started leaves none (exitrec.py)
    (agent.home / "logs" / "{}.exit".format(job["job_id"])).unlink()
    st = agent.status(job["job_id"])
    assert st["status"] == "LOST" and "before starting the target" in st["lost_reason"], st
    rep = resume(agent, key, argv)
    # not acknowledged: adopted (a LOST result, the operator fails it and acks); acked: started
    assert rep["action"] == "adopted", rep
    agent.ok("ack", "--job-id", job["job_id"])
    rep = resume(agent, key, argv)
    assert rep["action"] == "started" and rep["job"]["attempt_no"] == 2, rep
    agent.wait_status(rep["job"]["job_id"], statuses={"SUCCEEDED"})
    assert runs(marker) == 2

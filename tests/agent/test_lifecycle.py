"""Process identity, LOST only when gone, no stuck STARTING, strict keys survive clean."""

import os
import signal
import subprocess
import time

import pytest
from agent_helpers import ACTIVE, TERMINAL, pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob


def kill9(pid):
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=5, message=f"pid {pid} gone")


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def update_job(agent, job_id, **cols):
    conn = agent.db()
    try:
        names = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}
        missing = set(cols) - names
        assert not missing, f"jobs table lacks columns {sorted(missing)} (has {sorted(names)})"
        sets = ", ".join(f"{k} = ?" for k in cols)
        cur = conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*list(cols.values()), job_id])
        assert cur.rowcount == 1
    finally:
        conn.close()


def test_reused_pid_is_not_running_and_abort_spares_it(agent):
    key = agent.key()
    job = agent.start_ok(key, "sleep", "60")
    kill9(job["worker_pid"])
    kill9(job["target_pid"])
    # two unrelated live processes now "own" the recorded pids
    s1 = agent.popen_bg(["sleep", "100"], start_new_session=True)
    s2 = agent.popen_bg(["sleep", "100"], start_new_session=True)
    update_job(
        agent,
        job["job_id"],
        status="RUNNING",
        worker_pid=s1.pid,
        target_pid=s2.pid,
        finished_at=None,
        exit_code=None,
    )
    st = agent.status(job["job_id"])
    assert st["status"] != "RUNNING", st
    assert st["status"] in TERMINAL
    assert agent.ok("status", "--running") == []
    # even if something stored it as RUNNING again, abort must not signal the strangers
    update_job(agent, job["job_id"], status="RUNNING", finished_at=None, exit_code=None)
    res = agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "0.5")
    assert res.code in (0, 4), res
    if res.code == 0:
        assert not any(
            res.json[k]
            for k in ("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker")
        ), res
    time.sleep(0.3)
    assert s1.poll() is None and s2.poll() is None, "abort signalled an unrelated process"
    # and the key is free again
    new = agent.start_ok(key, "true", sync=True)
    assert new["accepted"] is True and new["job_id"] != job["job_id"]


def test_boot_id_change_makes_running_job_lost(agent):
    key = agent.key()
    job = agent.start_ok(key, "sleep", "60")
    update_job(agent, job["job_id"], boot_id="some-other-boot")
    st = agent.status(job["job_id"])
    assert st["status"] == "LOST", st
    # the processes are "from another boot": abort must not signal them
    res = agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "0.5")
    assert res.code in (0, 4), res
    time.sleep(0.2)
    assert pid_alive(job["target_pid"]), "abort signalled a pid recorded under another boot"
    new = agent.start_ok(key, "true", sync=True)
    assert new["accepted"] is True and new["attempt_no"] == 2


@pytest.mark.smoke
def test_killed_supervisor_keeps_job_active(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    cmd = ["sh", "-c", f"echo run >> '{marker}'; sleep 60"]
    job = agent.start_ok(key, *cmd)
    wait_until(marker.exists, message="target ran")
    kill9(job["worker_pid"])
    assert pid_alive(job["target_pid"])
    st = agent.status(job["job_id"])
    assert st["status"] in ACTIVE, st
    assert [j["job_id"] for j in agent.ok("status", "--running")] == [job["job_id"]]
    again = agent.start_ok(key, *cmd)
    assert again["existing"] is True and again["job_id"] == job["job_id"]
    code, rep = agent.rpc({"protocol": 1, "op": "start", "run_key": key, "argv": cmd, "mode": "resume"})
    assert code == 0 and rep["action"] == "reattached", agent.last_rpc
    time.sleep(0.3)
    assert marker.read_text() == "run\n"
    ab = agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "2")
    assert ab["status"] == "ABORTED" and ab["sent_term_target"] is True
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=5, message="target stopped by abort")


def test_target_ending_without_supervisor_becomes_terminal(agent):
    key = agent.key()
    gate = agent.workdir / "gate"  # the target ends when the test says, not after 1 s
    job = agent.start_ok(key, "sh", "-c", f"while [ ! -e '{gate}' ]; do sleep 0.02; done; exit 3")
    kill9(job["worker_pid"])
    assert agent.status(job["job_id"])["status"] in ACTIVE
    gate.touch()
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=10, message="target ended")
    st = agent.wait_status(job["job_id"], timeout=10)
    assert st["status"] in ("LOST", "FAILED"), st
    code, rep = agent.rpc({"protocol": 1, "op": "poll", "jobs": [{"job_id": job["job_id"]}]})
    assert code == 0, agent.last_rpc
    rj = rep["jobs"][0]["job"]
    if rj["status"] == "LOST":
        assert rj["lost_reason"], rj
    else:
        assert rj["exit_code"] == 3
    new = agent.start_ok(key, "true", sync=True)
    assert new["accepted"] is True and new["attempt_no"] == 2


@pytest.mark.parametrize("worker", ["dead-pid", "no-pid"])
def test_stuck_starting_does_not_pin_key(agent, worker):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    row = agent.job_row(job["job_id"])
    update_job(
        agent,
        job["job_id"],
        status="STARTING",
        exit_code=None,
        finished_at=None,
        target_pid=None,
        target_start=None,
        worker_pid=dead_pid() if worker == "dead-pid" else None,
        worker_start=row["worker_start"] if worker == "dead-pid" else None,
        started_at=row["started_at"] - 3600,
        updated_at=row["updated_at"] - 3600,
    )
    new = agent.start_ok(key, "true", sync=True)
    assert new["accepted"] is True and new["job_id"] != job["job_id"], new
    assert new["status"] == "SUCCEEDED"
    old = agent.status(job["job_id"])
    assert old["status"] in TERMINAL, old


def test_clean_keeps_strict_key_consumed(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    cmd = ["sh", "-c", f"echo run >> '{marker}'"]
    agent.start_ok(key, *cmd, sync=True, strict=True)
    agent.ok("clean", "--all")
    res = agent.start(key, *cmd, sync=True, strict=True)
    assert res.code in (0, 4), res
    time.sleep(0.2)
    assert marker.read_text() == "run\n", "clean let a strict key run again"
    agent.ok("unlock", "--run-key", key, "--reason", "really")
    again = agent.start_ok(key, *cmd, sync=True, strict=True)
    assert again["accepted"] is True and again["strict_override_used"] is True
    assert marker.read_text() == "run\nrun\n"

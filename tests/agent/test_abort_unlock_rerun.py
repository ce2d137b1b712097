"""docs/agent/contract.md items 23-26: abort, unlock, rerun."""

import json
import time

import pytest
from agent_helpers import TARGET_PYTHON, assert_error, assert_job_shape, pid_alive, wait_until

# Target that, on SIGTERM, asks the agent for its own status (so the test sees what was stored
# before the signal arrived), writes it to a file and exits.
STATUS_ON_TERM = r"""
import json, signal, subprocess, sys, time
out, key, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def handler(sig, frame):
    r = subprocess.run(argv + ["status", "--run-key", key], stdout=subprocess.PIPE)
    with open(out, "wb") as f:
        f.write(r.stdout)
    sys.exit(0)
signal.signal(signal.SIGTERM, handler)
open(out + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


@pytest.mark.smoke
def test_23_abort_stores_aborted_before_signal(agent):
    key = agent.key()
    out = agent.workdir / "status_at_term.json"
    script = agent.script("term.py", STATUS_ON_TERM)
    job = agent.start_ok(key, TARGET_PYTHON, script, str(out), key, json.dumps(agent.argv))
    wait_until(lambda: (agent.workdir / "status_at_term.json.ready").exists(), message="target ready")
    res = agent.run("abort", "--run-key", key, "--reason", "operator said so", "--grace-seconds", "10")
    assert res.code == 0, res
    rep = res.json
    assert_job_shape(rep)
    assert rep["aborted"] is True and rep["status"] == "ABORTED"
    assert rep["abort_reason"] == "operator said so"
    assert isinstance(rep["aborted_at"], int) and rep["finished_at"] is not None
    assert rep["sent_term_target"] is True and rep["sent_kill_target"] is False
    for k in ("sent_term_worker", "sent_kill_worker"):
        assert isinstance(rep[k], bool)
    seen = json.loads(out.read_bytes())
    assert seen["job_id"] == job["job_id"] and seen["status"] == "ABORTED"
    assert not pid_alive(job["target_pid"])
    st = agent.status(job["job_id"])
    assert st["status"] == "ABORTED" and st["abort_reason"] == "operator said so"


def test_23_abort_kills_process_group_and_escalates(agent):
    key = agent.key()
    child_pid_file = agent.workdir / "child.pid"
    job = agent.start_ok(key, "sh", "-c", f"trap '' TERM; sleep 300 & echo $! > '{child_pid_file}'; wait")
    child = int(
        wait_until(
            lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), message="child pid"
        )
    )
    assert pid_alive(child)
    rep = agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "0.5")  # the run's 60 s ceiling
    assert rep["sent_term_target"] is True and rep["sent_kill_target"] is True
    wait_until(
        lambda: not pid_alive(child) and not pid_alive(job["target_pid"]),
        timeout=5,
        message="process group killed",
    )
    assert rep["abort_reason"] is None


def test_23_abort_terminal_job_exit_4(agent):
    job = agent.start_ok(agent.key(), "false", sync=True)
    assert_error(
        agent.run("abort", "--job-id", job["job_id"]),
        4,
        exact="Job is not running: {} status=FAILED".format(job["job_id"]),
    )
    assert_error(
        agent.run("abort", "--run-key", job["run_key"]),
        4,
        exact="Job is not running: {} status=FAILED".format(job["job_id"]),
    )


def test_24_unlock_reply_and_ttl_forms(agent):
    key = agent.key()
    agent.start_ok(key, "true", sync=True, strict=True)
    rep = agent.ok("unlock", "--run-key", key, "--reason", "why")
    assert list(rep) == [
        "unlocked",
        "run_key",
        "reason",
        "allowed_at",
        "allowed_at_iso",
        "expires_at",
        "expires_at_iso",
    ]
    assert rep["unlocked"] is True and rep["run_key"] == key and rep["reason"] == "why"
    assert isinstance(rep["allowed_at"], int) and rep["expires_at"] is None and rep["expires_at_iso"] is None
    for ttl, seconds in (("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600), ("1d", 86400), ("2H", 7200)):
        rep = agent.ok("unlock", "--run-key", key, "--ttl", ttl)
        assert rep["expires_at"] - rep["allowed_at"] == seconds, (ttl, rep)
        assert rep["reason"] is None


def test_24_unlock_errors(agent):
    assert_error(agent.run("unlock", "--run-key", "nope"), 3, exact="run_key not found")
    key = agent.key()
    job = agent.start_ok(key, "sleep", "30")
    assert_error(agent.run("unlock", "--run-key", key), 4, exact="Cannot unlock active job: status=RUNNING")
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert_error(agent.run("unlock", "--run-key", key, "--ttl", "0"), 2, exact="ttl must be positive")
    assert_error(agent.run("unlock", "--run-key", key, "--ttl", "0m"), 2, exact="ttl must be positive")
    assert_error(
        agent.run("unlock", "--run-key", key, "--ttl", "5x"),
        2,
        exact="Invalid ttl: '5x'. Use seconds or suffix s/m/h/d",
    )
    assert_error(agent.run("unlock", "--run-key", key, "--ttl", "xm"), 2, exact="Invalid ttl: 'xm'")
    assert_error(agent.run("unlock"), 2, contains="--run-key")


@pytest.mark.smoke
def test_25_unlock_consumed_by_strict_start_only(agent):
    key = agent.key()
    first = agent.start_ok(key, "true", sync=True, strict=True)
    agent.ok("unlock", "--run-key", key, "--reason", "data fixed")
    plain = agent.start_ok(key, "true", sync=True)  # not strict: runs, does not consume
    assert plain["accepted"] is True and plain["strict_override_used"] is False
    assert plain["rerun_reason"] is None and plain["rerun_of_job_id"] == first["job_id"]
    assert agent.status(run_key=key)["strict_override"]["reason"] == "data fixed"
    strict = agent.start_ok(key, "true", sync=True, strict=True)
    assert strict["accepted"] is True and strict["existing"] is False
    assert strict["strict_override_used"] is True and strict["rerun_reason"] == "data fixed"
    assert strict["attempt_no"] == 3 and strict["rerun_of_job_id"] == plain["job_id"]
    assert agent.status(run_key=key)["strict_override"] is None
    kept = agent.start_ok(key, "true", sync=True, strict=True)
    assert kept["existing"] is True and kept["job_id"] == strict["job_id"]
    assert kept["strict_override_used"] is False


def test_25_expired_unlock_is_not_used(agent):
    key = agent.key()
    first = agent.start_ok(key, "true", sync=True, strict=True)
    rep = agent.ok("unlock", "--run-key", key, "--ttl", "1")
    wait_until(lambda: time.time() >= rep["expires_at"] + 1, timeout=5, interval=0.05, message="ttl expiry")
    kept = agent.start_ok(key, "true", strict=True)
    assert kept["existing"] is True and kept["job_id"] == first["job_id"]
    assert agent.status(run_key=key)["strict_override"] is None


@pytest.mark.smoke
def test_26_rerun(agent):
    key = agent.key()
    first = agent.start_ok(key, "sh", "-c", "echo ran >> '%s'" % (agent.workdir / "runs"), sync=True)
    rep = agent.ok("rerun", "--run-key", key, "--sync", "--reason", "again")
    assert_job_shape(rep)
    assert rep["rerun"] is True and rep["status"] == "SUCCEEDED" and rep["mode"] == "sync"
    assert rep["accepted"] is True and rep["existing"] is False
    assert rep["command"] == first["command"]
    assert rep["rerun_of_job_id"] == first["job_id"] and rep["rerun_reason"] == "again"
    assert rep["attempt_no"] == 2 and rep["job_id"] != first["job_id"]
    rep2 = agent.ok("rerun", "--job-id", first["job_id"])
    assert rep2["rerun"] is True and rep2["mode"] == "async" and rep2["rerun_of_job_id"] == first["job_id"]
    assert rep2["attempt_no"] == 3 and rep2["rerun_reason"] is None
    agent.wait_status(rep2["job_id"])
    assert (agent.workdir / "runs").read_text() == "ran\n" * 3


def test_26_rerun_errors(agent):
    key = agent.key()
    job = agent.start_ok(key, "sleep", "30")
    assert_error(agent.run("rerun", "--run-key", key), 4, exact="Cannot rerun active job: status=RUNNING")
    assert_error(
        agent.run("rerun", "--job-id", job["job_id"]), 4, exact="Cannot rerun active job: status=RUNNING"
    )
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert_error(agent.run("rerun", "--run-key", "nope"), 3, exact="run_key not found")
    jid = "00000000-0000-4000-8000-000000000000"
    assert_error(agent.run("rerun", "--job-id", jid), 3, exact=f"Job not found: {jid}")
    assert_error(agent.run("rerun"), 2)

"""docs/agent/contract.md items 9-17: start."""

import json
import subprocess

import pytest
from agent_helpers import assert_error, pid_alive


def test_09_start_reply_fields(agent):
    key = agent.key()
    sync = agent.start_ok(key, "true", sync=True)
    assert sync["accepted"] is True and sync["existing"] is False
    assert sync["mode"] == "sync" and sync["strict"] is False and sync["strict_override_used"] is False
    asyn = agent.start_ok(agent.key(), "true", strict=True)
    assert asyn["mode"] == "async" and asyn["strict"] is True and asyn["accepted"] is True
    assert asyn["strict_override_used"] is False
    assert asyn["attempt_no"] == 1 and asyn["rerun_of_job_id"] is None


@pytest.mark.smoke
@pytest.mark.parametrize(
    "cmd, status, exit_code",
    [
        (["true"], "SUCCEEDED", 0),
        (["sh", "-c", "exit 7"], "FAILED", 7),
        (["sh", "-c", "kill -TERM $$"], "FAILED", -15),
        (["sh", "-c", "kill -KILL $$"], "FAILED", -9),
    ],
    ids=["true", "exit7", "sigterm", "sigkill"],
)
def test_10_sync_result(agent, cmd, status, exit_code):
    res = agent.start(agent.key(), *cmd, sync=True)
    assert res.code == 0, res  # the CLI itself succeeds whatever the job did
    assert res.json["status"] == status, res
    assert res.json["exit_code"] == exit_code, res
    assert res.json["finished_at"] is not None


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_11_unlaunchable_command_fails_with_minus_one(agent, sync):
    key = agent.key()
    res = agent.start(key, "/nonexistent/dir/cmd", "arg", sync=sync)
    assert res.code == 0, res
    job = res.json if sync else agent.wait_status(res.json["job_id"])
    assert job["status"] == "FAILED" and job["exit_code"] == -1, job


@pytest.mark.smoke
def test_12_async_start_returns_running_with_target_pid(agent):
    # an async start answers while the job runs: a start that waited for a 600 s job would
    # hang past the run's 60 s ceiling
    job = agent.start_ok(agent.key(), "sleep", "600")
    assert job["status"] == "RUNNING" and job["mode"] == "async"
    assert job["target_pid"] and pid_alive(job["target_pid"])
    with open("/proc/{}/cmdline".format(job["target_pid"]), "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"600"]
    agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")


def test_12_quick_command_async_may_already_be_terminal(agent):
    job = agent.start_ok(agent.key(), "true", start_timeout=5)
    assert job["status"] in ("RUNNING", "SUCCEEDED"), job
    assert job["target_pid"] is not None


@pytest.mark.smoke
def test_13_active_key_returns_existing_job(agent):
    key = agent.key()
    first = agent.start_ok(key, "sleep", "30")
    for args in ((), ("--strict",)):
        again = agent.start_ok(key, "echo", "other", extra=args)
        assert again["existing"] is True and again["accepted"] is False
        assert again["job_id"] == first["job_id"]
        assert again["command"] == ["sleep", "30"]
        assert again["status"] == "RUNNING"
    assert len(agent.ok("status", "--run-key", key, "--all")) == 1
    agent.run("abort", "--job-id", first["job_id"], "--grace-seconds", "1")


@pytest.mark.smoke
def test_14_terminal_key_runs_new_attempt(agent):
    key = agent.key()
    first = agent.start_ok(key, "false", sync=True)
    second = agent.start_ok(key, "echo", "two", sync=True)
    assert second["accepted"] is True and second["existing"] is False
    assert second["job_id"] != first["job_id"]
    assert second["attempt_no"] == 2 and second["rerun_of_job_id"] == first["job_id"]
    assert second["command"] == ["echo", "two"]
    third = agent.start_ok(key, "true", sync=True)
    assert third["attempt_no"] == 3 and third["rerun_of_job_id"] == second["job_id"]


def test_15_strict_returns_terminal_job_at_once(agent):
    key = agent.key()
    first = agent.start_ok(key, "true", sync=True, strict=True)
    # at once: a start that ran `sleep 600` would hang past the run's 60 s ceiling
    again = agent.start_ok(key, "sleep", "600", sync=True, strict=True)
    assert again["existing"] is True and again["accepted"] is False
    assert again["job_id"] == first["job_id"] and again["status"] == "SUCCEEDED"
    assert again["strict_override_used"] is False
    # even a failed strict job is kept
    k2 = agent.key()
    f = agent.start_ok(k2, "false", sync=True, strict=True)
    assert agent.start_ok(k2, "true", strict=True)["job_id"] == f["job_id"]


def test_16_concurrent_starts_one_accepted(agent):
    key = agent.key()
    marker = agent.workdir / "ran.txt"
    gate = agent.workdir / "gate"  # the job runs until every start has answered (not for 1 s)
    cmd = ["sh", "-c", f"echo x >> '{marker}'; while [ ! -e '{gate}' ]; do sleep 0.02; done"]
    procs = [
        subprocess.Popen(
            [*agent.argv, "start", "--run-key", key, "--", *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=agent.env,
            cwd=str(agent.workdir),
        )
        for _ in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)
        results.append(json.loads(out))
    assert sum(1 for r in results if r["accepted"]) == 1
    assert len({r["job_id"] for r in results}) == 1
    gate.touch()
    agent.wait_status(results[0]["job_id"])
    assert marker.read_text() == "x\n"


@pytest.mark.smoke
def test_17_missing_command_or_run_key(agent):
    assert_error(agent.run("start", "--run-key", "k"), 2, exact="command is required (provide it after --)")
    assert_error(
        agent.run("start", "--run-key", "k", "--"), 2, exact="command is required (provide it after --)"
    )
    assert_error(agent.run("start", "--", "true"), 2, contains="--run-key")
    assert_error(agent.run("start", "true"), 2, contains="--run-key")
    assert not agent.db_path.exists() or agent.ok("status", "--running") == []

"""docs/agent/contract.md items 18-22: status and logs."""

import pytest
from agent_helpers import TARGET_PYTHON, assert_error, assert_job_shape, wait_until


def test_18_status_by_key_and_job_id(agent):
    key = agent.key()
    a1 = agent.start_ok(key, "true", sync=True)
    a2 = agent.start_ok(key, "false", sync=True)
    by_key = agent.status(run_key=key)
    by_id = agent.status(a1["job_id"])
    assert by_key["job_id"] == a2["job_id"] and by_key["status"] == "FAILED"
    assert by_id["job_id"] == a1["job_id"] and by_id["status"] == "SUCCEEDED"
    for obj in (by_key, by_id):
        assert_job_shape(obj)
        assert obj["strict_override"] is None
    unlock = agent.ok("unlock", "--run-key", key, "--reason", "fix deployed", "--ttl", "1h")
    so = agent.status(run_key=key)["strict_override"]
    assert so == {
        "allowed_at": unlock["allowed_at"],
        "allowed_at_iso": unlock["allowed_at_iso"],
        "used_at": None,
        "used_at_iso": None,
        "reason": "fix deployed",
        "expires_at": unlock["expires_at"],
        "expires_at_iso": unlock["expires_at_iso"],
    }
    assert list(so) == [
        "allowed_at",
        "allowed_at_iso",
        "used_at",
        "used_at_iso",
        "reason",
        "expires_at",
        "expires_at_iso",
    ]


@pytest.mark.smoke
def test_19_status_all_newest_first(agent):
    key = agent.key()
    ids = [agent.start_ok(key, "true", sync=True)["job_id"] for _ in range(3)]
    agent.start_ok(agent.key(), "true", sync=True)  # another key is not listed
    hist = agent.ok("status", "--run-key", key, "--all")
    assert isinstance(hist, list)
    assert [j["job_id"] for j in hist] == ids[::-1]
    assert [j["attempt_no"] for j in hist] == [3, 2, 1]
    for j in hist:
        assert_job_shape(j)
        assert "strict_override" in j


def test_19_status_all_requires_run_key(agent):
    agent.start_ok("k", "true", sync=True)
    job_id = agent.status(run_key="k")["job_id"]
    assert_error(agent.run("status", "--all", "--job-id", job_id), 2, exact="status --all requires --run-key")
    assert_error(agent.run("status", "--all"), 2)


def test_19_status_all_unknown_key(agent):
    agent.start_ok("k", "true", sync=True)
    assert_error(
        agent.run("status", "--run-key", "nope", "--all"), 3, exact="No jobs found for run_key: nope"
    )


@pytest.mark.smoke
def test_20_status_running(agent):
    assert agent.ok("status", "--running") == []
    agent.start_ok(agent.key(), "true", sync=True)
    job = agent.start_ok(agent.key(), "sleep", "30")
    running = agent.ok("status", "--running")
    assert [j["job_id"] for j in running] == [job["job_id"]]
    assert running[0]["status"] == "RUNNING"
    assert_job_shape(running[0])
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert agent.ok("status", "--running") == []


def test_21_not_found_and_bad_job_id(agent):
    agent.start_ok("k", "true", sync=True)
    assert_error(agent.run("status", "--run-key", "nope"), 3, exact="run_key not found")
    jid = "7d1f0e0e-1111-4222-8333-444455556666"
    assert_error(agent.run("status", "--job-id", jid), 3, exact=f"Job not found: {jid}")
    assert_error(agent.run("logs", "--job-id", jid), 3, exact=f"Job not found: {jid}")
    for bad in ("a/b", "..\\x", "/etc/passwd"):
        assert_error(agent.run("status", "--job-id", bad), 2, exact="Invalid job_id: contains path separator")
        assert_error(agent.run("logs", "--job-id", bad), 2, exact="Invalid job_id: contains path separator")


@pytest.mark.smoke
def test_22_logs_raw_bytes(agent):
    key = agent.key()
    payload = b"line1\n\xff\xfe raw \x00 bytes\r\nno newline at end"
    script = agent.script(
        "emit.py",
        (f"import sys\nsys.stdout.buffer.write({payload!r})\nsys.stderr.buffer.write(b'to stderr\\n')\n"),
    )
    job = agent.start_ok(key, TARGET_PYTHON, script, sync=True)
    assert job["status"] == "SUCCEEDED"
    for args in (("--run-key", key), ("--job-id", job["job_id"]), ("--run-key", key, "--stream", "stdout")):
        res = agent.run("logs", *args)
        assert res.code == 0 and res.stdout == payload and res.stderr == b"", res
    res = agent.run("logs", "--run-key", key, "--stream", "stderr")
    assert res.code == 0 and res.stdout == b"to stderr\n", res
    assert_error(agent.run("logs", "--run-key", key, "--stream", "both"), 2, contains="both")


def test_22_logs_while_running_and_empty(agent):
    key = agent.key()
    job = agent.start_ok(key, "sh", "-c", "echo started; sleep 30")
    wait_until(lambda: agent.run("logs", "--run-key", key).stdout == b"started\n", message="log line")
    assert agent.status(job["job_id"])["status"] == "RUNNING"
    empty = agent.run("logs", "--run-key", key, "--stream", "stderr")
    assert empty.code == 0 and empty.stdout == b"" and empty.stderr == b"", empty
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    silent = agent.start_ok(agent.key(), "true", sync=True)
    res = agent.run("logs", "--job-id", silent["job_id"])
    assert res.code == 0 and res.stdout == b"" and res.stderr == b"", res

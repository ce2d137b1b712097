"""docs/agent/contract.md items 1-8: output format, errors, --version, timestamps, the job record."""

import json
import os
import re
import signal
import uuid
from datetime import datetime

import pytest
from agent_helpers import (
    ALL_STATUSES,
    JOB_KEYS,
    UNDER_ORCHESJOB,
    assert_error,
    assert_job_shape,
    pid_alive,
    wait_until,
)


@pytest.mark.smoke
def test_01_reply_is_one_indented_ascii_json_document(agent):
    key = "ジョブ-é-" + uuid.uuid4().hex[:6]
    res = agent.start(key, "echo", "héllo ✓", sync=True)
    assert res.code == 0, res
    for r in (
        res,
        agent.run("status", "--run-key", key),
        agent.run("status", "--running"),
        agent.run("status", "--run-key", key, "--all"),
    ):
        assert r.code == 0, r
        assert r.json is not None, r
        # exactly json.dumps(indent=2) (ASCII-escaped) plus one trailing newline
        assert r.stdout == (json.dumps(r.json, indent=2) + "\n").encode("ascii"), r
        assert all(b < 128 for b in r.stdout)
    assert res.json["run_key"] == key
    assert res.json["command"] == ["echo", "héllo ✓"]
    assert "\\u30b8" in res.stdout.decode("ascii")  # "ジ" is escaped


@pytest.mark.parametrize(
    "args, code, exact, contains",
    [
        (
            ["status", "--job-id", "0c1d6a60-0000-4000-8000-000000000000"],
            3,
            "Job not found: 0c1d6a60-0000-4000-8000-000000000000",
            None,
        ),
        (["status", "--run-key", "no-such-key"], 3, "run_key not found", None),
        (["logs", "--run-key", "no-such-key"], 3, "run_key not found", None),
        (["abort", "--run-key", "no-such-key"], 3, "run_key not found", None),
        (["start", "--run-key", "k"], 2, "command is required (provide it after --)", None),
        (["start", "--run-key", "k", "--"], 2, "command is required (provide it after --)", None),
        (["status", "--job-id", "../etc/passwd"], 2, "Invalid job_id: contains path separator", None),
        (["status", "--run-key", "k", "--bogus-flag"], 2, None, "--bogus-flag"),
        (["no-such-command"], 2, None, "no-such-command"),
        ([], 2, None, None),
    ],
    ids=[
        "unknown-job",
        "unknown-key",
        "logs-unknown-key",
        "abort-unknown-key",
        "no-command",
        "no-command-after-dashdash",
        "job-id-path",
        "bad-flag",
        "bad-command",
        "no-args",
    ],
)
def test_02_errors_one_line_documented_exit_code(agent, args, code, exact, contains):
    res = agent.run(*args)
    assert_error(res, code, exact=exact, contains=contains)


def test_02_wrong_state_exit_4(agent):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    assert_error(
        agent.run("abort", "--job-id", job["job_id"]),
        4,
        exact="Job is not running: {} status=SUCCEEDED".format(job["job_id"]),
    )


@pytest.mark.smoke
def test_03_version(agent):
    res = agent.run("--version")
    assert res.code == 0, res
    assert re.match(rb"^orchesjob \d+\.\d+\.\d+\S*\n$", res.stdout), res
    if not UNDER_ORCHESJOB:
        code, reply = agent.rpc({"protocol": 1, "op": "ping"})
        assert code == 0, agent.last_rpc
        assert res.stdout == ("orchesjob {}\n".format(reply["agent_version"])).encode()


@pytest.mark.smoke
@pytest.mark.parametrize(
    "tz, offset", [("Asia/Tokyo", "+09:00"), ("UTC", "+00:00"), ("America/Sao_Paulo", "-03:00")]
)
def test_04_timestamps_int_and_iso_in_callers_offset(agent, tz, offset):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True, env={"TZ": tz})
    st = agent.status(job["job_id"], env={"TZ": tz})
    for obj in (job, st):
        for field in ("started_at", "finished_at", "updated_at"):
            assert isinstance(obj[field], int) and not isinstance(obj[field], bool), obj
            iso = obj[field + "_iso"]
            assert iso.endswith(offset), obj
            assert int(datetime.fromisoformat(iso).timestamp()) == obj[field], obj
        assert obj["aborted_at"] is None and obj["aborted_at_iso"] is None


@pytest.mark.smoke
def test_05_job_object_key_order(agent):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    assert_job_shape(job)
    for extra in ("accepted", "existing", "mode", "strict_override_used"):
        assert extra in job
    st = agent.status(job["job_id"])
    assert_job_shape(st)
    assert "strict_override" in st
    assert [k for k in st if k in JOB_KEYS] == JOB_KEYS


def test_06_pid_is_target_pid_when_known(agent):
    key = agent.key()
    job = agent.start_ok(key, "sleep", "30")
    assert job["status"] == "RUNNING"
    assert job["target_pid"] and job["pid"] == job["target_pid"] and job["pid_kind"] == "target"
    # a command that never launched has no target pid: pid falls back to the worker
    bad = agent.start_ok(agent.key(), f"/nonexistent/command-{uuid.uuid4().hex}", sync=True)
    assert bad["target_pid"] is None
    assert bad["pid"] == bad["worker_pid"]
    assert bad["pid_kind"] == ("worker" if bad["worker_pid"] is not None else None)
    agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")


def test_07_statuses(agent):
    seen = set()
    ok = agent.start_ok(agent.key(), "true", sync=True)
    seen.add(ok["status"])
    assert ok["status"] == "SUCCEEDED"
    bad = agent.start_ok(agent.key(), "false", sync=True)
    assert bad["status"] == "FAILED"
    running = agent.start_ok(agent.key(), "sleep", "30")
    assert running["status"] == "RUNNING"
    aborted = agent.ok("abort", "--job-id", running["job_id"], "--grace-seconds", "1")
    assert aborted["status"] == "ABORTED"
    # worker and target both gone without a result: LOST
    lost = agent.start_ok(agent.key(), "sleep", "30")
    os.kill(lost["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(lost["worker_pid"]), message="worker gone")
    os.kill(lost["target_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(lost["target_pid"]), message="target gone")
    assert agent.wait_status(lost["job_id"], timeout=10)["status"] == "LOST"
    for j in (ok, bad, running, aborted):
        assert j["status"] in ALL_STATUSES


@pytest.mark.smoke
def test_08_job_id_uuid_and_file_layout(agent):
    key = agent.key()
    job = agent.start_ok(key, "sh", "-c", "echo out; echo err >&2", sync=True)
    assert str(uuid.UUID(job["job_id"])) == job["job_id"]
    home = os.path.realpath(str(agent.home))
    assert os.path.realpath(job["stdout_file"]) == os.path.join(home, "logs", job["job_id"] + ".stdout")
    assert os.path.realpath(job["stderr_file"]) == os.path.join(home, "logs", job["job_id"] + ".stderr")
    with open(job["stdout_file"], "rb") as f:
        assert f.read() == b"out\n"
    with open(job["stderr_file"], "rb") as f:
        assert f.read() == b"err\n"
    assert agent.db_path.is_file()

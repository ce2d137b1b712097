"""Issue 9 item 1: check / run / recheck, decided by the agent on the target.

Every test counts how many times the command really ran (a line per run in a side-effect
file) and how many times the check ran, with the real agent, real processes and signals.
"""

import json
import os
import signal
import subprocess

import pytest
from agent_helpers import pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob


def count(path, word):
    return path.read_text().count(word + "\n") if path.exists() else 0


class Files:
    """A job that appends ``run`` and creates ``done``; a check that appends ``check`` and tests
    ``done`` (optionally waiting for ``gate`` first)."""

    def __init__(self, agent):
        w = agent.workdir
        self.log, self.done, self.gate = w / "log", w / "done", w / "gate"

    def argv(self, creates_done=True):
        touch = f"; touch '{self.done}'" if creates_done else ""
        return ["sh", "-c", f"echo run >> '{self.log}'{touch}"]

    def check(self, wait_gate=False, timeout=None):
        gate = f"while [ ! -e '{self.gate}' ]; do sleep 0.05; done; " if wait_gate else ""
        spec = {"argv": ["sh", "-c", f"echo check >> '{self.log}'; echo checking $ORCHESJOB_CHECK; "
                                     f"{gate}test -e '{self.done}'"]}
        if timeout is not None:
            spec["timeout"] = timeout
        return spec

    @property
    def runs(self):
        return count(self.log, "run")

    @property
    def checks(self):
        return count(self.log, "check")


def resume(agent, key, argv, **extra):
    req = {"protocol": 1, "op": "start", "run_key": key, "argv": argv, "mode": "resume"}
    req.update(extra)
    return agent.rpc_ok(req)


def stderr_log(job):
    with open(job["stderr_file"], "rb") as f:
        return f.read().decode()


def test_check_passes_nothing_runs(agent):
    f = Files(agent)
    f.done.write_text("")
    rep = resume(agent, agent.key(), f.argv(), check=f.check())
    assert rep["action"] == "started", rep
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["status"] == "SUCCEEDED" and job["phase"] == "satisfied", job
    assert job["exit_code"] is None and job["target_pid"] is None, job
    assert job["check"]["exit_code"] == 0 and job["check"]["argv"][0] == "sh", job
    assert (f.runs, f.checks) == (0, 1)
    log = stderr_log(job)
    assert "==> orchesjob check (before the run" in log and "checking before" in log, log
    assert "<== orchesjob check passed: already satisfied" in log, log
    assert os.path.getsize(job["stdout_file"]) == 0  # the job's stdout is only the command's
    # visible in history, and the satisfied job is adopted like any finished one
    assert agent.ok("status", "--run-key", job["run_key"], "--all")[0]["phase"] == "satisfied"
    assert resume(agent, job["run_key"], f.argv(), check=f.check())["action"] == "adopted"
    assert f.runs == 0


def test_check_fails_then_run_then_recheck_passes(agent):
    f = Files(agent)
    rep = resume(agent, agent.key(), f.argv(), check=f.check())
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["status"] == "SUCCEEDED" and job["phase"] == "verified" and job["exit_code"] == 0, job
    assert (f.runs, f.checks) == (1, 2)
    log = stderr_log(job)
    assert "exited 1: not satisfied, the command runs" in log and "checking after" in log, log
    assert "<== orchesjob check passed: the run is verified" in log, log


def test_check_still_fails_after_the_run(agent):
    f = Files(agent)
    rep = resume(agent, agent.key(), f.argv(creates_done=False), check=f.check())
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["status"] == "FAILED" and job["phase"] == "recheck_failed", job
    assert job["exit_code"] == 0 and job["check"]["exit_code"] == 1, job
    assert (f.runs, f.checks) == (1, 2)
    assert "ran, but the check still fails" in stderr_log(job)


def test_failing_command_is_not_rechecked(agent):
    f = Files(agent)
    argv = ["sh", "-c", f"echo run >> '{f.log}'; exit 7"]
    job = agent.wait_status(resume(agent, agent.key(), argv, check=f.check())["job"]["job_id"])
    assert job["status"] == "FAILED" and job["exit_code"] == 7 and job["phase"] == "running", job
    assert (f.runs, f.checks) == (1, 1)


def test_check_timeout_is_an_error_and_nothing_runs(agent):
    f = Files(agent)
    rep = resume(agent, agent.key(), f.argv(), check=f.check(wait_gate=True, timeout=0.5))
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["status"] == "FAILED" and job["phase"] == "check_error", job
    assert f.runs == 0
    assert "timed out after 0.5s" in stderr_log(job)


def test_check_that_cannot_start_is_an_error(agent):
    f = Files(agent)
    check = {"argv": [str(agent.workdir / "no-such-check")]}
    job = agent.wait_status(resume(agent, agent.key(), f.argv(), check=check)["job"]["job_id"])
    assert job["status"] == "FAILED" and job["phase"] == "check_error" and f.runs == 0, job
    assert "check cannot start" in stderr_log(job)


def lost_unknown(agent, key, f):
    """A job whose supervisor is SIGKILLed while its target runs; the target then ends."""
    argv = ["sh", "-c", f"echo run >> '{f.log}'; while [ ! -e '{f.gate}' ]; do sleep 0.05; done"]
    job = resume(agent, key, argv)["job"]
    wait_until(lambda: f.runs == 1, message="target ran")
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=5)
    f.gate.write_text("")
    wait_until(lambda: not pid_alive(job["target_pid"]), timeout=10, message="target ended")
    st = agent.status(job["job_id"])
    assert st["status"] == "LOST" and "unknown" in st["lost_reason"], st
    assert resume(agent, key, argv)["action"] == "unknown"  # without a check: not run again
    return job


@pytest.mark.parametrize("completed", [True, False])
def test_check_decides_an_unknown_outcome(agent, completed):
    f = Files(agent)
    key = agent.key()
    old = lost_unknown(agent, key, f)
    if completed:
        f.done.write_text("")  # the lost run did its work
    rep = resume(agent, key, f.argv(), check=f.check())
    assert rep["action"] == "started", rep
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["attempt_no"] == 2 and job["rerun_of_job_id"] == old["job_id"], job
    assert "the check decides" in job["rerun_reason"], job
    assert job["status"] == "SUCCEEDED", job
    assert job["phase"] == ("satisfied" if completed else "verified"), job
    assert f.runs == (1 if completed else 2)
    # strict keys are not released by a check (only by an unlock)
    assert resume(agent, key, f.argv(), check=f.check(), strict=True)["action"] in ("adopted", "kept")


def test_client_killed_during_check_retry_reattaches(agent):
    f = Files(agent)
    key = agent.key()
    check = json.dumps(f.check(wait_gate=True)["argv"])
    argv = [*agent.argv, "start", "--run-key", key, "--sync", "--check-argv-json", check, "--", *f.argv()]
    proc = agent.popen_bg(argv, env=agent.make_env(), cwd=str(agent.workdir))
    wait_until(lambda: f.checks == 1, message="check started")
    proc.kill()  # the caller (an Airflow worker's SSH call) dies while the agent checks
    proc.wait()
    rep = resume(agent, key, f.argv(), check=f.check(wait_gate=True))
    assert rep["action"] == "reattached", rep
    job = rep["job"]
    assert job["status"] == "STARTING" and job["phase"] == "checking", job
    f.gate.write_text("")
    job = agent.wait_status(job["job_id"])
    assert job["status"] == "SUCCEEDED" and job["phase"] == "verified", job
    assert (f.runs, f.checks) == (1, 2), "the retry must not run a second check or a second copy"


def test_supervisor_killed_during_check(agent):
    """Nothing ran: the job is LOST like one whose supervisor died before the target started,
    and the next start's check decides again."""
    f = Files(agent)
    key = agent.key()
    job = resume(agent, key, f.argv(), check=f.check(wait_gate=True))["job"]
    wait_until(lambda: f.checks == 1, message="check started")
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=5)
    st = agent.status(job["job_id"])
    assert st["status"] == "LOST" and "before starting the target" in st["lost_reason"], st
    f.gate.write_text("")
    # like any LOST job: adopted until its result is reported (the try fails and acks it) ...
    assert resume(agent, key, f.argv(), check=f.check())["action"] == "adopted"
    agent.ok("ack", "--job-id", job["job_id"])
    # ... then the retry starts a new attempt, whose check decides again
    rep = resume(agent, key, f.argv(), check=f.check(wait_gate=True))
    assert rep["action"] == "started", rep
    new = agent.wait_status(rep["job"]["job_id"])
    assert new["status"] == "SUCCEEDED" and new["phase"] == "verified", new
    assert f.runs == 1


def test_abort_during_check_runs_nothing(agent):
    f = Files(agent)
    job = resume(agent, agent.key(), f.argv(), check=f.check(wait_gate=True))["job"]
    wait_until(lambda: f.checks == 1, message="check started")
    out = agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    assert out["status"] == "ABORTED", out
    wait_until(lambda: not pid_alive(job["worker_pid"]), timeout=10, message="supervisor ended")
    f.gate.write_text("")
    assert agent.status(job["job_id"])["status"] == "ABORTED"
    assert f.runs == 0


def test_cli_check_flags(agent):
    f = Files(agent)
    f.done.write_text("")
    job = agent.start_ok(agent.key(), *f.argv(), sync=True,
                         extra=["--check-shell", f"test -e '{f.done}'", "--check-timeout", "5"])
    assert job["status"] == "SUCCEEDED" and job["phase"] == "satisfied", job
    assert job["check"]["argv"][:2] == ["/bin/sh", "-c"] and job["check"]["timeout"] == 5.0, job
    assert f.runs == 0
    table = agent.run("list", "--format", "table").stdout.decode().splitlines()
    assert table[0].split()[3:5] == ["STATUS", "PHASE"], table
    assert table[1].split()[3:5] == ["SUCCEEDED", "satisfied"], table
    plain = agent.start_ok(agent.key(), "true", sync=True)  # no check: tables keep their columns
    res = agent.run("status", "--job-id", plain["job_id"], "--format", "table")
    assert res.code == 0 and "PHASE" not in res.stdout.decode(), res
    for extra, words in ((["--check-timeout", "5"], "needs --check-shell"),
                         (["--check-argv-json", "[1]"], "check.argv"),
                         (["--check-argv-json", "{"], "not valid JSON"),
                         (["--check-shell", "true", "--check-argv-json", '["true"]'], "not allowed with")):
        res = agent.start(agent.key(), "true", extra=extra)
        assert res.code == 2 and words in res.err and res.stdout == b"", (extra, res)
    assert f.runs == 0


def test_rpc_rejects_a_bad_check(agent):
    for check in ({"argv": []}, {"argv": ["true"], "timeout": -1}, {"argv": ["true"], "x": 1}, "true"):
        code, reply = agent.rpc({"protocol": 1, "op": "start", "run_key": agent.key(), "argv": ["true"],
                                 "check": check})
        assert code == 2 and reply["error"]["kind"] == "bad_request", (check, reply)


def test_check_gets_the_jobs_env_and_cwd(agent):
    f = Files(agent)
    check = {"argv": ["sh", "-c", "echo \"$SECRET_THING $(pwd) $ORCHESJOB_JOB_ID\" > seen; exit 1"]}
    rep = resume(agent, agent.key(), ["true"], check=check, env={"SECRET_THING": "s3"},
                 cwd=str(agent.workdir))
    job = agent.wait_status(rep["job"]["job_id"])
    assert job["status"] == "FAILED" and job["phase"] == "recheck_failed", job
    seen = (agent.workdir / "seen").read_text().split()
    assert seen == ["s3", str(agent.workdir), job["job_id"]], seen
    assert f.runs == 0
    assert subprocess.run(["grep", "-q", "s3", str(agent.db_path)]).returncode != 0  # env never stored


def test_a_finisher_without_the_jobs_env_still_rechecks(agent):
    """_finish is the one place the outcome is decided; a finisher that was not handed the job's
    cwd and env (a short-lived finisher process) rechecks with the stored cwd and its own env."""
    f = Files(agent)
    f.done.write_text("")
    job = agent.start_ok(agent.key(), "true", sync=True)  # a real row to copy: the db exists
    # a sync start returns at the exit record; its supervisor stores the row a moment later
    wait_until(lambda: not pid_alive(job["worker_pid"]), message="the supervisor's exit")
    conn = agent.db()
    try:
        conn.execute("UPDATE jobs SET status = 'RUNNING', finished_at = NULL, exit_code = NULL,"
                     " phase = 'running', check_argv = ?, check_timeout = 10, cwd = ? WHERE job_id = ?",
                     (json.dumps(["sh", "-c", "echo \"$FALLBACK $(pwd)\" > seen; test -e done"]),
                      json.dumps(str(agent.workdir)), job["job_id"]))
    finally:
        conn.close()
    code = ("import sys; from remote_agent.worker import finish as f; "
            "f.finish(f.Db(sys.argv[1], None), sys.argv[1], sys.argv[2], 0, ())")
    env = agent.make_env({"FALLBACK": "from-finisher"})
    subprocess.run([agent.argv[0], "-c", code, str(agent.home), job["job_id"]], env=env, check=True,
                   cwd="/", timeout=60)
    got = agent.status(job["job_id"])
    assert got["status"] == "SUCCEEDED" and got["phase"] == "verified", got
    assert (agent.workdir / "seen").read_text().split() == ["from-finisher", str(agent.workdir)]

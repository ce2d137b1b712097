"""Issue 10: a light job on the host. While a job runs, what stays alive besides the job itself
is one bash process (the wrapper, remote_agent/worker/light.py): at most 1 MB of proportional memory
(Pss, /proc/<pid>/smaps_rollup) and no CPU while it waits, with the classic supervisor's
guarantees. Real processes, signals and SQLite; every job counts its runs in a side-effect file.
"""

import fcntl
import os
import shutil
import signal
import time

import pytest
from agent_helpers import AGENT_PYTHON, REPO_ROOT, pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob

CLASSIC = {"ORCHESJOB_LIGHT": "0"}


def proc_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(name)


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise KeyError("Pss")


def wakeups(pid):
    """Voluntary context switches: how often ``pid`` slept and was woken (a count load cannot
    raise; a process blocked in wait/select adds none, a poller one per poll)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise KeyError("voluntary_ctxt_switches")


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def exe(pid):
    return os.path.basename(os.readlink(f"/proc/{pid}/exe"))


def gated(agent, code="exit 0", name="runs"):
    runs, go = agent.workdir / name, agent.workdir / (name + ".go")
    cmd = ["sh", "-c", f"echo run >> '{runs}'; while [ ! -e '{go}' ]; do sleep 0.05; done; {code}"]
    return cmd, runs, go


def test_ten_waiting_jobs_hold_at_most_1mb_each_and_no_cpu(agent):
    jobs = [agent.start_ok(agent.key(), "sleep", "300") for _ in range(10)]
    held = {}
    for job in jobs:
        worker, target = job["worker_pid"], job["target_pid"]
        assert exe(worker) == "bash" and children(worker) == [target], job
        held[worker] = pss_kb(worker)
    # nothing else of the start stays: no process still carries a run key on its command line
    # (a launcher that answered is on its way out: on a loaded machine it may take a moment)
    keys = [job["run_key"].encode() for job in jobs]

    def starters():
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if any(k in cmdline for k in keys):
                found.append((entry, cmdline))
        return found

    wait_until(lambda: not starters(), timeout=10, message="every launcher exited")
    assert starters() == []
    assert max(held.values()) <= 1024, held
    before = {w: wakeups(w) for w in held}
    time.sleep(3)
    assert {w: wakeups(w) for w in held} == before  # waiting wakes nobody: no poll, no CPU
    for job in jobs:
        agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")


@pytest.mark.parametrize("code, status, exit_code", [
    ("exit 0", "SUCCEEDED", 0), ("exit 7", "FAILED", 7), ("kill -9 $$", "FAILED", -9),
    ("kill -TERM $$", "FAILED", -15),
])
def test_exit_codes_are_kept(agent, code, status, exit_code):
    cmd, runs, go = gated(agent, code)
    job = agent.start_ok(agent.key(), *cmd)
    wait_until(runs.exists, message="job ran")
    assert exe(job["worker_pid"]) == "bash"
    go.touch()
    final = agent.wait_status(job["job_id"])
    assert (final["status"], final["exit_code"]) == (status, exit_code), final
    record = (agent.home / "logs" / f"{job['job_id']}.exit").read_text().split()
    assert record[:2] == ["v1", str(exit_code)]
    assert runs.read_text() == "run\n"


def test_kill_of_the_worker_stops_the_job_and_hup_does_not(agent):
    cmd, runs, _ = gated(agent)
    job = agent.start_ok(agent.key(), *cmd)
    wait_until(runs.exists, message="job ran")
    worker = job["worker_pid"]
    assert exe(worker) == "bash"
    os.kill(worker, signal.SIGHUP)
    os.kill(worker, signal.SIGINT)
    time.sleep(0.5)
    assert pid_alive(job["target_pid"]) and agent.status(job["job_id"])["status"] == "RUNNING"
    os.kill(worker, signal.SIGTERM)  # forwarded to the target's process group
    final = agent.wait_status(job["job_id"])
    assert (final["status"], final["exit_code"]) == ("FAILED", -15), final
    wait_until(lambda: not pid_alive(worker), timeout=10, message="worker exited")
    assert runs.read_text() == "run\n"


def test_job_survives_a_killed_launcher(agent):
    """The launcher and everything in its session's process group (what an SSH session's end
    takes down) is killed as soon as the job runs: the job goes on and ends normally."""
    cmd, runs, go = gated(agent)
    key = agent.key()
    launcher = agent.popen_bg([*agent.argv, "start", "--run-key", key, "--", *cmd],
                              env=agent.make_env(), cwd=str(agent.workdir), start_new_session=True)
    wait_until(runs.exists, message="job ran")
    for sig in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(launcher.pid, sig)
        except ProcessLookupError:
            pass  # the launcher had answered and exited already
    launcher.wait(timeout=5)

    def running():
        # the target can run its first command before the supervisor's RUNNING commit lands
        # (seen once on 3.7: STARTING right after the kill); a killed supervisor never commits it
        row = agent.status(run_key=key)
        return row if row["status"] == "RUNNING" else None

    job = wait_until(running, timeout=30, message="the job's supervisor recorded RUNNING")
    assert exe(job["worker_pid"]) == "bash", job
    go.touch()
    final = agent.wait_status(job["job_id"])
    assert final["status"] == "SUCCEEDED" and final["exit_code"] == 0, final
    assert runs.read_text() == "run\n"


def test_target_starts_as_under_the_classic_supervisor(agent):
    """Same environment, same ignored and blocked signals (bash must not leave SIGINT/SIGQUIT
    ignored as a shell does for a background job, nor SIGPIPE as Python does), its own
    process group."""
    seen = {}
    for mode, env in (("light", {}), ("classic", CLASSIC)):
        out = agent.workdir / f"env-{mode}"
        job = agent.start_ok(agent.key(), "sh", "-c", f"env > '{out}'; exec sleep 300",
                             env={**env, "SHLVL": "4", "OLDPWD": "/nonexistent", "odd-name": "1"})
        target = job["target_pid"]
        assert exe(job["worker_pid"]) == ("bash" if mode == "light" else os.path.basename(
            os.path.realpath(AGENT_PYTHON))), job
        wait_until(lambda o=out: o.exists() and o.read_text().endswith("\n"), message="env written")
        wait_until(lambda t=target: exe(t) == "sleep", message="target exec'd sleep")
        env_lines = sorted(line for line in out.read_text().splitlines()
                           # "_": bash drops the last command's path a shell may have left
                           if not line.startswith(("ORCHESJOB_JOB_ID=", "ORCHESJOB_LIGHT=", "_=")))
        seen[mode] = (env_lines, proc_field(target, "SigIgn"), proc_field(target, "SigBlk"),
                      os.getpgid(target) == target)
        agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    light, classic = set(seen["light"][0]), set(seen["classic"][0])
    assert (sorted(light - classic), sorted(classic - light)) == ([], [])
    assert seen["light"] == seen["classic"]
    assert seen["light"][3] is True


def test_exit_record_when_the_finisher_cannot_start(agent, tmp_path):
    """The agent's directory is gone when the job ends (pruned, say): bash has written the
    exit record before exec'ing the finisher, so the outcome is still known, not LOST."""
    copy = tmp_path / "agent-copy"
    shutil.copytree(REPO_ROOT / "remote_agent", copy / "remote_agent")
    cmd, runs, go = gated(agent, "exit 7")
    job = agent.start_ok(agent.key(), *cmd, env={"PYTHONPATH": str(copy)})
    wait_until(runs.exists, message="job ran")
    assert exe(job["worker_pid"]) == "bash"
    shutil.rmtree(copy)
    go.touch()
    worker = job["worker_pid"]
    wait_until(lambda: not pid_alive(worker), timeout=10, message="the finisher failed and exited")
    record = (agent.home / "logs" / f"{job['job_id']}.exit").read_text().split()
    assert record[:2] == ["v1", "7"], record
    final = agent.status(job["job_id"])
    assert (final["status"], final["exit_code"], final["lost_reason"]) == ("FAILED", 7, None), final
    assert runs.read_text() == "run\n"


def test_unusual_targets_keep_the_classic_supervisor(agent):
    """A script without ``#!`` would run under bash's rules instead of failing as exec does:
    the classic supervisor starts it (and reports exit code -1 as before)."""
    script = agent.workdir / "no-shebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    for argv in ([str(script)], ["/nonexistent/prog"]):
        job = agent.wait_status(agent.start_ok(agent.key(), *argv)["job_id"])
        assert (job["status"], job["exit_code"]) == ("FAILED", -1), job


def test_a_sync_start_keeps_the_classic_supervisor(agent):
    """``start --sync``: the launcher (a Python process) stays for the whole run anyway, so the
    classic supervisor runs the job (no second Python start at its end)."""
    out = agent.workdir / "parent"
    job = agent.start_ok(agent.key(), "sh", "-c", f"cat /proc/$PPID/comm > '{out}'", sync=True)
    assert job["status"] == "SUCCEEDED", job
    assert out.read_text().strip() != "bash"
    job = agent.start_ok(agent.key(), "sh", "-c", f"cat /proc/$PPID/comm > '{out}'")
    agent.wait_status(job["job_id"])
    assert out.read_text().strip() == "bash"


def test_a_job_with_a_check_runs_light_and_its_record_waits_for_the_recheck(agent):
    """The check runs in the supervisor, then the wrapper takes over; at the end the wrapper
    writes no exit record: its finisher rechecks with the job's environment, then records."""
    runs, gate, done = agent.workdir / "runs", agent.workdir / "gate", agent.workdir / "done"
    check_gate = agent.workdir / "check-gate"
    argv = ["sh", "-c", f"echo run >> '{runs}'; while [ ! -e '{gate}' ]; do sleep 0.02; done; touch '{done}'"]
    # the recheck waits for its own gate (once the job has created `done`), and checks that it
    # sees the job's environment, which only the request carries
    wait_gate = f"while [ ! -e '{check_gate}' ]; do sleep 0.02; done"
    check = {"argv": ["sh", "-c", f"if [ -e '{done}' ]; then {wait_gate}; fi; "
                                  f"[ \"$MY_JOB_VAR\" = yes ] && test -e '{done}'"]}
    req = {"protocol": 1, "op": "start", "run_key": agent.key(), "argv": argv, "mode": "resume",
           "check": check, "env": {"MY_JOB_VAR": "yes"}}
    job = agent.rpc_ok(req)["job"]
    wait_until(runs.exists, message="job ran")
    worker = agent.status(job["job_id"])["worker_pid"]
    assert exe(worker) == "bash"
    gate.touch()
    wait_until(lambda: exe(worker) != "bash", timeout=10, message="the finisher took over")
    time.sleep(0.3)  # the recheck is blocked on its gate: no record may exist yet
    assert not (agent.home / "logs" / f"{job['job_id']}.exit").exists()
    assert agent.status(job["job_id"])["status"] == "RUNNING"
    check_gate.touch()
    final = agent.wait_status(job["job_id"])
    assert (final["status"], final["phase"], final["exit_code"]) == ("SUCCEEDED", "verified", 0), final
    assert runs.read_text() == "run\n"


def test_a_job_with_a_lock_runs_light_and_its_waiter_wakes_when_it_ends(agent):
    cmd, runs, go = gated(agent)
    holder = agent.start_ok(agent.key("h"), *cmd, extra=["--lock-write", "R"])
    wait_until(runs.exists, message="holder ran")
    assert exe(holder["worker_pid"]) == "bash"
    # the wake channel is held (flock) by the wrapper now that the supervisor is gone: waiters
    # block on it instead of re-reading the queue every 0.5 s (lockwait.py)
    fd = os.open(agent.home / "locks" / f"{holder['job_id']}.fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    marker = agent.workdir / "second"
    waiter = agent.start_ok(agent.key("w"), "sh", "-c", f"echo ran > '{marker}'", extra=["--lock-write", "R"])
    assert agent.status(waiter["job_id"])["status"] == "WAITING"
    time.sleep(0.5)
    assert not marker.exists(), "the waiter ran beside the holder"
    go.touch()
    wait_until(marker.exists, timeout=10, message="the waiter ran")
    assert agent.status(holder["job_id"])["status"] == "SUCCEEDED"
    assert runs.read_text() == "run\n"

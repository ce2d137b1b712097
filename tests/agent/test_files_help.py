"""File modes, the default state dir, table output, --help examples, prompt --sync."""

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time

import pytest
from agent_helpers import AGENT_PYTHON, REPO_ROOT, wait_until

pytestmark = pytest.mark.beyond_orchesjob


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.mark.smoke
@pytest.mark.parametrize("umask", ["022", "000"])
def test_state_dir_0700_db_and_logs_0600(agent, umask):
    prefix = ["sh", "-c", f'umask {umask}; exec "$@"', "sh", *agent.argv]
    res = agent.run(
        "start", "--run-key", "k", "--sync", "--", "sh", "-c", "echo o; echo e >&2", prefix=prefix
    )
    assert res.code == 0, res
    job = res.json
    assert mode(agent.home) == 0o700
    assert mode(agent.home / "logs") == 0o700
    assert mode(agent.db_path) == 0o600
    for suffix in ("-wal", "-shm", "-journal"):
        p = str(agent.db_path) + suffix
        try:
            found = mode(p)
        except FileNotFoundError:
            # none, or removed meanwhile: a sync start answers at the exit record, and its
            # supervisor's last write and close (which deletes the WAL) may come just after
            continue
        assert found == 0o600, p
    assert mode(job["stdout_file"]) == 0o600
    assert mode(job["stderr_file"]) == 0o600
    code, rep = agent.rpc({"protocol": 1, "op": "start", "run_key": "k2", "argv": ["true"]})
    assert code == 0
    assert mode(rep["job"]["stdout_file"]) == 0o600


def test_default_home_for_root_without_orchesjob_home(agent):
    if os.geteuid() != 0:
        pytest.skip("root only")
    code, rep = agent.rpc({"protocol": 1, "op": "ping"}, env={"ORCHESJOB_HOME": ""})
    assert code == 0 and rep["home"] == "/var/lib/orchesjob", agent.last_rpc


def _nobody_python(tmpdir, pythonpath):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the agent as nobody")
    for py in (AGENT_PYTHON, shutil.which("python3"), "/usr/bin/python3"):
        if not py:
            continue
        r = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                py,
                "-c",
                "import sys; assert sys.version_info >= (3, 6); import remote_agent",
            ],
            env={"PYTHONPATH": pythonpath, "PATH": os.environ["PATH"]},
            cwd=tmpdir,
            capture_output=True,
        )
        if r.returncode == 0:
            return py
    pytest.skip("no Python the nobody user can run with the agent importable")


@pytest.mark.parametrize("xdg", [False, True], ids=["home", "xdg"])
def test_default_home_for_non_root_user(agent, xdg):
    tmp = tempfile.mkdtemp(prefix="ojnobody-")
    try:
        os.chmod(tmp, 0o777)
        # the agent copied where nobody can read it: the clone itself may sit in a private dir
        # (a fresh clone under `mktemp -d`, 0700, made the test skip: ci41)
        src = os.path.join(tmp, "src")
        shutil.copytree(str(REPO_ROOT / "remote_agent"), os.path.join(src, "remote_agent"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for root, _dirs, files in os.walk(src):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        py = _nobody_python(tmp, src)
        env = {"PATH": os.environ["PATH"], "HOME": tmp, "PYTHONPATH": src, "LANG": "C.UTF-8"}
        if xdg:
            env["XDG_STATE_HOME"] = os.path.join(tmp, "xdg")
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", py, "-m", "remote_agent"]
        r = subprocess.run(
            [*argv, "start", "--run-key", "k", "--sync", "--", "echo", "hi"],
            env=env,
            cwd=tmp,
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, r
        expected = (
            os.path.join(tmp, "xdg", "orchesjob")
            if xdg
            else os.path.join(tmp, ".local", "state", "orchesjob")
        )
        import json

        job = json.loads(r.stdout)
        assert job["status"] == "SUCCEEDED"
        assert job["stdout_file"] == os.path.join(expected, "logs", job["job_id"] + ".stdout")
        assert os.path.isfile(os.path.join(expected, "orchesjob.db"))
        assert mode(expected) == 0o700
        assert os.stat(expected).st_uid == 65534 or os.stat(expected).st_uid != 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_status_table_format(agent):
    key = agent.key()
    a = agent.start_ok(key, "true", sync=True)
    b = agent.start_ok(key, "sleep", "30")
    res = agent.run("status", "--running", "--format", "table")
    assert res.code == 0 and res.json is None, res
    assert b["job_id"] in res.out and "RUNNING" in res.out and key in res.out
    assert len(res.out.strip().splitlines()) >= 2  # header + a row
    res = agent.run("status", "--all", "--run-key", key, "--format", "table")
    assert res.code == 0 and res.json is None, res
    assert a["job_id"] in res.out and b["job_id"] in res.out and "SUCCEEDED" in res.out
    assert res.out.index(b["job_id"]) < res.out.index(a["job_id"])  # newest first
    agent.ok("abort", "--job-id", b["job_id"], "--grace-seconds", "1")
    res = agent.run("status", "--running", "--format", "table")
    assert res.code == 0 and b["job_id"] not in res.out, res
    assert agent.ok("status", "--running", "--format", "json") == []


@pytest.mark.parametrize(
    "command", [[], ["start"], ["status"], ["logs"], ["clean"], ["abort"], ["unlock"], ["rerun"], ["rpc"]]
)
def test_help_has_examples(agent, command):
    res = agent.run(*([*command, "--help"]))
    assert res.code == 0, res
    assert "example" in res.out.lower(), res
    assert res.stderr == b""
    assert not agent.home.exists()


def test_sync_returns_promptly(agent):
    """--sync notices the end at once (orchesjob polls every 0.5 s): a sync start blocks on the
    supervisor's pipe, so while its job runs it is never woken (a count: voluntary context
    switches, which load cannot raise; a 0.5 s poll would add two a second). Then it answers
    once the test opens the job's gate. How long --sync takes against an async start is
    measured in benchmarks/agent_bench.py (`start --sync true` against `start (async)`)."""
    gate = agent.workdir / "gate"
    key = agent.key("s")
    starter = subprocess.Popen(
        [*agent.argv, "start", "--run-key", key, "--sync", "--", "sh", "-c",
         f"while [ ! -e '{gate}' ]; do sleep 0.05; done"],
        env=agent.make_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    agent.spawned.append(starter)
    wait_until(lambda: agent.run("status", "--run-key", key).code == 0
               and agent.status(run_key=key)["status"] == "RUNNING", timeout=60, message="job running")
    before = _wakeups(starter.pid)
    time.sleep(1.5)
    woke = _wakeups(starter.pid) - before
    assert starter.poll() is None and woke <= 1, woke
    gate.touch()
    out, err = starter.communicate(timeout=60)  # a ceiling for a hang
    assert starter.returncode == 0, (out, err)
    assert json.loads(out)["status"] == "SUCCEEDED"


def _wakeups(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise KeyError("voluntary_ctxt_switches")

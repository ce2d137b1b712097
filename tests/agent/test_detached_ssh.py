"""Detached for real: a job started over SSH outlives the session; ssh returns at once.

Uses the loopback sshd (`sshd` session fixture of tests/conftest.py). The agent is shipped the
way the provider ships it: a zipapp run as ``python3 -I -S agent.pyz ...``.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
import zipapp

import pytest
from agent_helpers import REPO_ROOT

pytestmark = [pytest.mark.ssh, pytest.mark.beyond_orchesjob]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    src = tmp_path_factory.mktemp("pyzsrc")
    shutil.copytree(
        str(REPO_ROOT / "remote_agent"),
        str(src / "remote_agent"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (src / "__main__.py").write_text(
        "import runpy\nrunpy.run_module('remote_agent', run_name='__main__', alter_sys=True)\n"
    )
    out = tmp_path_factory.mktemp("pyz") / "agent.pyz"
    zipapp.create_archive(str(src), str(out))
    return out.read_bytes()


@pytest.fixture(scope="module")
def remote(request, pyz):
    try:
        sshd = request.getfixturevalue("sshd")
    except pytest.FixtureLookupError:
        pytest.skip("no sshd fixture (tests/conftest.py)")
    name = f"ojtest-agent-{hashlib.sha256(pyz).hexdigest()[:16]}.pyz"
    r = sshd.run(f"mkdir -p ~/.ojtest && cat > ~/.ojtest/{name}", input=pyz, text=False, timeout=60)
    assert r.returncode == 0, r
    py = getattr(sshd, "target_python", None) or "python3"
    return sshd, f"{shlex.quote(py)} -I -S ~/.ojtest/{name}"


def _remote_json(sshd, cmd, timeout=30):
    r = sshd.run(cmd, timeout=timeout, text=False)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def _ssh_out(sshd, cmd, tty):
    """The output of one ssh command; fails if ssh is still open after 120 s (the job it
    starts waits for a gate the test opens later: an agent that kept the session open would
    hold ssh until then, i.e. past this ceiling)."""
    p = sshd.popen(cmd, tty=tty, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"ssh did not return while the job runs (tty={tty}): the agent kept the session open")
    assert p.returncode == 0, (cmd, tty, out, err)
    return out


def test_job_outlives_ssh_session(remote):
    """`start` over ssh returns while the job runs, with or without a tty: the job waits for a
    gate file the test creates only after both ssh sessions have returned (an order, not a
    stopwatch: no comparison with the time of `ssh true`)."""
    sshd, agent = remote
    tag = uuid.uuid4().hex
    gate = f"~/.ojtest/gate-{tag}"
    job_cmd = shlex.quote(f"while [ ! -e {gate} ]; do sleep 0.05; done")
    keys = {"plain": f"detach-{tag}", "tty": f"detach-tty-{tag}"}
    jobs = {}
    for kind, key in keys.items():
        out = _ssh_out(sshd, f"{agent} start --run-key {key} -- sh -c {job_cmd}", kind == "tty")
        text = out.decode()
        job = json.loads(text[text.index("{") :])  # a tty may add \r
        assert job["status"] == "RUNNING", job
        jobs[kind] = job
    for kind, job in jobs.items():
        st = _remote_json(sshd, "{} status --job-id {}".format(agent, job["job_id"]))
        assert st["status"] == "RUNNING", (kind, st)
    r = sshd.run(f"touch {gate}", timeout=60)
    assert r.returncode == 0, r
    deadline = time.monotonic() + 120  # a ceiling for a hang
    for kind, job in jobs.items():
        while True:
            st = _remote_json(sshd, "{} status --job-id {}".format(agent, job["job_id"]))
            if st["status"] not in ("STARTING", "RUNNING"):
                break
            assert time.monotonic() < deadline, (kind, st)
            time.sleep(0.3)
        assert st["status"] == "SUCCEEDED" and st["exit_code"] == 0, (kind, st)
    sshd.run(f"rm -f {gate}", timeout=60)


def test_rpc_over_ssh(remote):
    sshd, agent = remote
    req = {
        "protocol": 1,
        "op": "start",
        "run_key": f"rpc-{uuid.uuid4().hex}",
        "argv": ["sh", "-c", 'echo "$OJ_VAL"'],
        "env": {"OJ_VAL": "a b; $(c)"},
    }
    r = sshd.run(f"{agent} rpc", input=json.dumps(req), timeout=30)
    assert r.returncode == 0, r
    rep = json.loads(r.stdout)
    assert rep["ok"] is True and rep["action"] == "started"
    wait = {
        "protocol": 1,
        "op": "wait",
        "job_id": rep["job"]["job_id"],
        "timeout": 20,
        "offsets": {"stdout": 0},
    }
    r = sshd.run(f"{agent} rpc", input=json.dumps(wait), timeout=40)
    assert r.returncode == 0, r
    rep = json.loads(r.stdout)
    assert rep["job"]["status"] == "SUCCEEDED"
    import base64

    assert base64.b64decode(rep["logs"]["stdout"]["data_b64"]) == b"a b; $(c)\n"
    assert os.path.basename(rep["job"]["stdout_file"]).endswith(".stdout")

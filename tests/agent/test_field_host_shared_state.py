"""Issue 8 item 2: two hosts sharing one state dir (an NFS home) never judge each other's jobs.

"Host B" is this machine seen from new pid + mount + UTS namespaces (``unshare``, as root): another
hostname (so another host id), a fake boot id bind-mounted over /proc/sys/kernel/random/boot_id,
its own /proc (host A's pids do not exist there, and B's pids mean other processes on A). Both
hosts run the agent on ONE state dir. Before hosts were recorded, B read A's running job as LOST
("host rebooted") and a start on B ran a second copy. A side-effect file counts executions.
"""

import json
import os
import shutil
import uuid

import pytest
from agent_helpers import assert_error, wait_until

pytestmark = [
    pytest.mark.beyond_orchesjob,
    # needs root for namespaces; under CI=true a skip of this proof fails the run
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                       reason="needs root, unshare and nsenter (util-linux)"),
]

HOST_B = "ojtest-host-b"


@pytest.fixture
def host_b(agent, tmp_path):
    """A namespace "host" kept alive by a holder process; returns the argv prefix to run in it."""
    fake_boot = tmp_path / "fake_boot_id"
    fake_boot.write_text(str(uuid.uuid4()) + "\n")
    ready = tmp_path / "b-ready"
    holder = agent.popen_bg([
        "unshare", "--fork", "--pid", "--mount", "--uts", "--mount-proc", "sh", "-c",
        f"hostname {HOST_B} && mount --bind '{fake_boot}' /proc/sys/kernel/random/boot_id"
        f" && touch '{ready}' && exec sleep 600"])
    wait_until(lambda: ready.exists() or holder.poll() is not None, timeout=10, message="host B up")
    assert holder.poll() is None, "unshare failed"
    # the holder's child (pid 1 of the new pid namespace) is the process to enter
    inner = int(open(f"/proc/{holder.pid}/task/{holder.pid}/children").read().split()[0])
    prefix = ["nsenter", "-t", str(inner), "-p", "-m", "-u", "--", *agent.argv]
    yield prefix
    holder.kill()  # pid 1 of B goes with it, and every process of B (its jobs) with it
    holder.wait(timeout=5)


def resume(agent, key, argv, prefix=None):
    req = {"protocol": 1, "op": "start", "run_key": key, "argv": argv, "mode": "resume"}
    # A state dir shared by two hosts on a local disk (simulated here) is what
    # ORCHESJOB_QUICK_END=0 is for: on a network filesystem the job's host always stores the end.
    res = agent.run("rpc", input=json.dumps(req).encode(), prefix=prefix, env={"ORCHESJOB_QUICK_END": "0"})
    assert res.code == 0, res
    return res.json


def ping(agent, prefix=None):
    res = agent.run("rpc", input=b'{"protocol": 1, "op": "ping"}', prefix=prefix)
    assert res.code == 0, res
    return res.json


def runs(marker):
    return marker.read_text().count("run\n") if marker.exists() else 0


@pytest.mark.parametrize("owner", ["A", "B"])
def test_a_job_is_judged_only_by_its_host(agent, host_b, owner):
    me = ping(agent)
    them = ping(agent, host_b)
    assert me["host_id"] != them["host_id"] and them["host_id"].startswith(HOST_B + "/"), (me, them)
    assert me["boot_id"] != them["boot_id"], "the fake boot id is not in place"
    owner_prefix, other_prefix = (None, host_b) if owner == "A" else (host_b, None)
    owner_id = (me if owner == "A" else them)["host_id"]

    key = agent.key()
    marker, gate = agent.workdir / "runs", agent.workdir / "gate"
    argv = ["sh", "-c", f"echo run >> '{marker}'; while [ ! -e '{gate}' ]; do sleep 0.05; done"]
    rep = resume(agent, key, argv, owner_prefix)
    assert rep["action"] == "started", rep
    job = rep["job"]
    assert job["host_id"] == owner_id, job
    wait_until(lambda: runs(marker) == 1, message="target ran")

    # the other host: reads leave it running (no LOST, no "host rebooted")
    st = agent.run("status", "--run-key", key, prefix=other_prefix).json
    assert st["status"] == "RUNNING" and st["lost_reason"] is None, st
    running = agent.run("status", "--running", prefix=other_prefix).json
    assert [j["job_id"] for j in running] == [job["job_id"]], running
    # a start for the key returns the job instead of launching a second copy
    again = resume(agent, key, argv, other_prefix)
    assert again["action"] == "reattached" and again["job"]["job_id"] == job["job_id"], again
    cli = agent.run("start", "--run-key", key, "--", *argv, prefix=other_prefix)
    assert cli.code == 0 and cli.json["existing"] is True and cli.json["job_id"] == job["job_id"], cli
    # abort from the wrong host: refused, naming the host where it runs; nothing signalled
    ab = agent.run("abort", "--job-id", job["job_id"], prefix=other_prefix)
    assert_error(ab, 4, contains=owner_id)
    assert agent.run("status", "--job-id", job["job_id"], prefix=owner_prefix).json["status"] == "RUNNING"
    assert runs(marker) == 1, "a second copy ran"

    # its own host still watches it, and it ends normally
    gate.write_text("")
    wait_until(lambda: agent.run("status", "--job-id", job["job_id"], prefix=owner_prefix).json["status"]
               == "SUCCEEDED", timeout=15, message="job finished on its host")
    # The owner reads the outcome from the exit record as soon as it exists; the other host
    # sees it once the job's worker stored it in the database (the light job's finisher starts
    # a Python for that: tens of milliseconds later, more on a loaded machine).
    wait_until(lambda: agent.run("status", "--job-id", job["job_id"], prefix=other_prefix).json["status"]
               == "SUCCEEDED", timeout=10, message="the other host sees the stored outcome")
    assert runs(marker) == 1


def test_a_job_of_the_other_host_is_lost_only_there(agent, host_b):
    """The owner still judges its own job: B's job whose processes are gone is LOST on B, while
    A never marks it (it stays RUNNING from A's view until B looks)."""
    key = agent.key()
    rep = resume(agent, key, ["sleep", "60"], host_b)
    job = rep["job"]
    # kill B's job from outside (host pids): supervisor and target are gone
    for pid in _b_processes(agent.token):
        os.kill(pid, 9)
    wait_until(lambda: not _b_processes(agent.token), timeout=5, message="B's job gone")
    assert agent.status(job["job_id"])["status"] == "RUNNING", "A judged B's job"
    st = agent.run("status", "--job-id", job["job_id"], prefix=host_b).json
    assert st["status"] == "LOST", st


def _b_processes(token):
    """Host pids of processes carrying the test token whose command is the job's sleep."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if f"OJTEST_TOKEN={token}".encode() in env and (b"sleep\x0060" in cmd or b"remote_agent" in cmd):
            out.append(int(entry))
    return out

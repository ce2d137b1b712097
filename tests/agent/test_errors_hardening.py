"""Failures are one `orchesjob: ...` line with a documented exit code; stored jobs survive."""

import json
import os
import subprocess
import time

import pytest
from agent_helpers import TARGET_PYTHON, assert_error, pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob

WRITE_COMMANDS = [
    ["start", "--run-key", "k2", "--", "true"],
    ["abort", "--run-key", "k"],
    ["unlock", "--run-key", "k"],
    ["rerun", "--run-key", "k"],
    ["clean", "--all"],
]


def _stored(agent):
    """A finished job, and its supervisor gone: a sync start returns once the exit record is
    written, and the supervisor stores the row a moment later; a test that then replaces the
    database file must not race that write (seen on CI: the late write zeroed the garbage)."""
    job = agent.start_ok("k", "true", sync=True)
    wait_until(lambda: not pid_alive(job["worker_pid"]), message="the supervisor's exit")
    return job


def test_locked_database_exit_5(agent):
    job = _stored(agent)
    conn = agent.db(timeout=1)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        for args in WRITE_COMMANDS:
            res = agent.run(*args, env={"ORCHESJOB_BUSY_TIMEOUT": "0.5"})  # the run's 60 s ceiling
            assert_error(res, 5)
            assert "lock" in res.err, res
        code, rep = agent.rpc(
            {"protocol": 1, "op": "start", "run_key": "k3", "argv": ["true"]},
            env={"ORCHESJOB_BUSY_TIMEOUT": "0.5"},
        )
        assert code == 5 and rep["error"]["kind"] == "busy", agent.last_rpc
    finally:
        conn.rollback()
        conn.close()
    assert agent.status(job["job_id"])["status"] == "SUCCEEDED"
    assert agent.ok("status", "--run-key", "k", "--all")[0]["job_id"] == job["job_id"]


@pytest.mark.parametrize("home", ["/etc/passwd/x", "/proc/self/nope"])
def test_unusable_state_dir_exit_1(agent, home):
    res = agent.run("start", "--run-key", "k", "--", "true", env={"ORCHESJOB_HOME": home})
    assert_error(res, 1)
    code, rep = agent.rpc({"protocol": 1, "op": "start", "home": home, "run_key": "k", "argv": ["true"]})
    assert code == 1 and rep["error"]["kind"] == "error", agent.last_rpc


@pytest.fixture
def ro_mount(tmp_path):
    """A directory on a read-only bind mount (root only)."""
    src = tmp_path / "rosrc"
    src.mkdir()
    mnt = tmp_path / "romnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "--bind", str(src), str(mnt)], stderr=subprocess.PIPE)
    if r.returncode != 0:
        pytest.skip("cannot bind-mount here: {}".format(r.stderr.decode(errors="replace").strip()))

    def make_ro():
        # EBUSY ("mount point is busy") while a file is open for writing there: a job that has
        # just answered may still have its database open for a moment (seen in CI); wait for it
        deadline = time.monotonic() + 60  # a ceiling: the job's handle closes when it ends
        while True:
            r = subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], stderr=subprocess.PIPE)
            err = r.stderr.decode(errors="replace").strip()
            if r.returncode == 0:
                return
            if "busy" not in err or time.monotonic() > deadline:
                pytest.skip(f"cannot remount read-only: {err}")
            time.sleep(0.1)

    yield mnt, make_ro
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.fault
def test_read_only_state_dir(agent, ro_mount):
    mnt, make_ro = ro_mount
    home = str(mnt / "home")
    env = {"ORCHESJOB_HOME": home}
    job = agent.start_ok("k", "sh", "-c", "echo kept", sync=True, env=env)
    make_ro()
    assert_error(agent.run("start", "--run-key", "k2", "--", "true", env=env), 1)
    assert_error(agent.run("unlock", "--run-key", "k", env=env), 1)
    # reads keep working on a read-only file system
    assert agent.status(job["job_id"], env=env)["status"] == "SUCCEEDED"
    assert agent.ok("status", "--run-key", "k", "--all", env=env)[0]["job_id"] == job["job_id"]
    assert agent.ok("status", "--running", env=env) == []
    res = agent.run("logs", "--run-key", "k", env=env)
    assert res.code == 0 and res.stdout == b"kept\n", res
    code, rep = agent.rpc({"protocol": 1, "op": "poll", "home": home, "jobs": [{"job_id": job["job_id"]}]})
    assert code == 0 and rep["jobs"][0]["job"]["status"] == "SUCCEEDED", agent.last_rpc


@pytest.mark.fault
def test_missing_state_dir_on_read_only_fs(agent, ro_mount):
    mnt, make_ro = ro_mount
    make_ro()
    res = agent.run("start", "--run-key", "k", "--", "true", env={"ORCHESJOB_HOME": str(mnt / "nope")})
    assert_error(res, 1)


@pytest.mark.smoke
def test_corrupt_database_is_reported_and_left_alone(agent):
    _stored(agent)
    for suffix in ("-wal", "-shm"):
        p = str(agent.db_path) + suffix
        if os.path.exists(p):
            os.unlink(p)
    garbage = b"this is not a database\n" * 400
    agent.db_path.write_bytes(garbage)
    before = sorted(os.listdir(str(agent.home)))
    for args in [
        *WRITE_COMMANDS,
        ["status", "--run-key", "k"],
        ["status", "--running"],
        ["status", "--run-key", "k", "--all"],
        ["logs", "--run-key", "k"],
        ["status", "--job-id", "00000000-0000-4000-8000-000000000000"],
    ]:
        res = agent.run(*args)
        assert_error(res, 1)
        assert agent.db_path.read_bytes() == garbage, args
    code, _rep = agent.rpc({"protocol": 1, "op": "poll", "jobs": [{"job_id": "x"}]})
    assert code == 1, agent.last_rpc
    assert agent.db_path.read_bytes() == garbage
    after = sorted(n for n in os.listdir(str(agent.home)) if not n.endswith(("-wal", "-shm", "-journal")))
    assert after == [n for n in before if not n.endswith(("-wal", "-shm", "-journal"))]


@pytest.mark.parametrize(
    "run_key, why", [("a\nb", "newline"), ("x" * 10240, "10 kB"), ("", "empty"), ("a\rb", "carriage return")]
)
def test_bad_run_keys_exit_2(agent, run_key, why):
    job = _stored(agent)
    for args in (
        ["start", "--run-key", run_key, "--", "true"],
        ["status", "--run-key", run_key],
        ["unlock", "--run-key", run_key],
    ):
        assert_error(agent.run(*args), 2)
    code, rep = agent.rpc({"protocol": 1, "op": "start", "run_key": run_key, "argv": ["true"]})
    assert code == 2 and rep["error"]["kind"] == "bad_request", agent.last_rpc
    assert agent.ok("status", "--running") == []
    assert agent.status(job["job_id"])["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--run-key", "k", "--job-id", "x"],
        ["status", "--running", "--run-key", "k"],
        ["start", "--run-key", "k", "--start-timeout", "soon", "--", "true"],
        ["abort", "--run-key", "k", "--grace-seconds", "x"],
        ["logs", "--run-key"],
        ["status", "--format", "xml", "--running"],
        ["clean", "--before", "2026-02-30"],
        ["clean", "--after", "\x00"[:0] + "2026-01-01T25:00"],
        ["unlock", "--run-key", "k", "--ttl", "-5"],
        ["rerun"],
        ["--bogus"],
    ],
)
def test_bad_arguments_exit_2_one_line(agent, args):
    job = _stored(agent)
    assert_error(agent.run(*args), 2)
    assert agent.status(job["job_id"])["status"] == "SUCCEEDED"


def test_hostile_cli_argv_reaches_target(agent):
    dump = agent.script(
        "dump.py",
        (
            "import json, os, sys\n"
            "json.dump([os.fsencode(a).hex() for a in sys.argv[2:]], open(sys.argv[1], 'w'))\n"
        ),
    )
    out = agent.workdir / "argv.json"
    hostile = [
        b"it's",
        b'"dq"',
        b"$(touch /tmp/ojpwned2)",
        b"a; rm -rf /",
        b"l1\nl2",
        b"\xff\xfe raw",
        "ünï ✓".encode(),
        b"",
        b"--",
        b"--sync",
    ]
    res = agent.run(
        "start", "--run-key", agent.key(), "--sync", "--", TARGET_PYTHON, dump, str(out), *hostile
    )
    assert res.code == 0 and res.json["status"] == "SUCCEEDED", res
    assert [bytes.fromhex(h) for h in json.loads(out.read_text())] == hostile
    assert res.json["command"][3:] == [os.fsdecode(h) for h in hostile]
    assert not os.path.exists("/tmp/ojpwned2")
    again = agent.status(res.json["job_id"])
    assert again["command"] == res.json["command"]


def test_launch_error_lands_in_stderr_log(agent):
    job = agent.start_ok(agent.key(), "/nonexistent/dir/prog-xyz", sync=True)
    assert job["status"] == "FAILED" and job["exit_code"] == -1
    res = agent.run("logs", "--job-id", job["job_id"], "--stream", "stderr")
    assert res.code == 0 and b"/nonexistent/dir/prog-xyz" in res.stdout, res
    d = agent.workdir / "cwd-gone"
    code, rep = agent.rpc(
        {"protocol": 1, "op": "start", "run_key": agent.key(), "argv": ["true"], "cwd": str(d)}
    )
    assert code == 0, agent.last_rpc
    jid = rep["job"]["job_id"]
    final = agent.wait_status(jid)
    assert final["status"] == "FAILED" and final["exit_code"] == -1
    assert str(d).encode() in agent.run("logs", "--job-id", jid, "--stream", "stderr").stdout

"""Issue 8 item 2: a state dir on a real network filesystem is not kept in WAL mode.

The loopback sshd's user home is mounted with sshfs (FUSE, fstype ``fuse.sshfs``: a network
filesystem in host.NETWORK_FS) and the agent keeps its state there: a new database uses the
rollback journal (no -wal/-shm files), and a WAL database made on a local disk and moved there is
switched back to ``journal_mode=DELETE`` by the first write, nothing stored lost.
"""

import os
import shutil
import sqlite3
import subprocess
import uuid

import pytest
from agent_helpers import Agent

from testkit import prereqs
from testkit.ci import in_ci

pytestmark = [pytest.mark.beyond_orchesjob, pytest.mark.ssh]


@pytest.fixture
def sshfs_dir(sshd, tmp_path):
    if os.geteuid() != 0 or not prereqs.find("sshfs"):
        reason = prereqs.missing_message("sshfs") if os.geteuid() == 0 else "needs root (FUSE mount)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    remote_dir = f"{sshd.home}/oj-sshfs-{uuid.uuid4().hex[:8]}"
    sshd.run(f"mkdir -p {remote_dir}", timeout=30)
    mount = tmp_path / "nfs"
    mount.mkdir()
    subprocess.run(
        ["sshfs", f"{sshd.user}@{sshd.host}:{remote_dir}", str(mount), "-p", str(sshd.port),
         "-o", f"IdentityFile={sshd.key_path}", "-o", f"UserKnownHostsFile={sshd.known_hosts_path}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
         # the remote user's files show as the local user's (as when one mounts one's own
         # files): the agent trusts only a state dir of its own user (issue 18)
         "-o", "idmap=user"],
        check=True, capture_output=True, timeout=30)
    yield mount, remote_dir
    subprocess.run(["fusermount", "-u", "-z", str(mount)], capture_output=True, timeout=30)
    sshd.run(f"rm -rf {remote_dir}", timeout=30)


def journal_mode(db):
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    finally:
        conn.close()


def test_new_state_dir_on_sshfs_uses_the_rollback_journal(sshfs_dir, tmp_path):
    mount, _ = sshfs_dir
    agent = Agent(mount / "state", tmp_path)
    try:
        ping = agent.rpc_ok({"protocol": 1, "op": "ping"})
        assert ping["state_fs"] == "fuse.sshfs" and ping["journal_mode"] == "delete", ping
        job = agent.start_ok("k", "echo", "hi", sync=True)
        assert job["status"] == "SUCCEEDED", job
        assert agent.run("logs", "--job-id", job["job_id"]).stdout == b"hi\n"
    finally:
        agent.kill_leftovers()
    assert journal_mode(mount / "state" / "orchesjob.db") == "delete"
    assert sorted(os.listdir(mount / "state")) == ["logs", "orchesjob.db"]


def test_existing_wal_database_moved_to_sshfs_is_switched_back(sshfs_dir, sshd, tmp_path):
    mount, remote_dir = sshfs_dir
    local = Agent(tmp_path / "local-state", tmp_path)
    try:
        first = local.start_ok("k", "true", sync=True)
    finally:
        local.kill_leftovers()
    assert journal_mode(tmp_path / "local-state" / "orchesjob.db") == "wal"
    shutil.copytree(str(tmp_path / "local-state"), str(mount / "state"))  # as the remote user
    assert journal_mode(mount / "state" / "orchesjob.db") == "wal"
    agent = Agent(mount / "state", tmp_path)
    try:
        second = agent.start_ok("k2", "true", sync=True)
        assert second["status"] == "SUCCEEDED"
        assert agent.status(first["job_id"])["status"] == "SUCCEEDED"  # nothing lost
    finally:
        agent.kill_leftovers()
    assert journal_mode(mount / "state" / "orchesjob.db") == "delete"
    # on the server's disk too: no -wal / -shm beside the database
    assert sshd.run(f"ls {remote_dir}/state").stdout.split() == ["logs", "orchesjob.db"]

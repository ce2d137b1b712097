"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from remote_agent import exitrec, host, liveness, procs, store, supervisor, tree, vocab

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /home rw,relatime - nfs4 filer:/export/home rw,vers=4.2
41 40 0:51 / /home/alice/local\040dir rw - ext4 /dev/sdb1 rw
42 27 0:52 / /mnt/sshfs rw,nosuid - fuse.sshfs user@h:/x rw
"""


def test_mountinfo_longest_prefix_wins():
    mounts = host.parse_mountinfo(MOUNTINFO)
    assert ("/home/alice/local dir", "ext4") in mounts  # \040 unescaped
    assert host.fs_type_of("/home/alice/.local/state/orchesjob", mounts) == "nfs4"
    assert host.fs_type_of("/home/alice/local dir/state", mounts) == "ext4"
    assert host.fs_type_of("/homeless/x", mounts) == "ext4"  # /home is not a prefix of /homeless
    assert host.fs_type_of("/mnt/sshfs/state", mounts) == "fuse.sshfs"
    assert host.fs_type_of("/", mounts) == "ext4"


@pytest.mark.parametrize(
    "fstype, network",
    [("nfs", True), ("nfs4", True), ("cifs", True), ("fuse.sshfs", True), ("ext4", False),
     ("xfs", False), ("tmpfs", False), ("overlay", False), (None, False)],
)
def test_network_filesystems(fstype, network):
    assert host.is_network_fs(fstype) is network


def test_state_fs_type_of_a_missing_dir_is_its_parents(tmp_path):
    expected = host.state_fs_type(str(tmp_path))
    assert expected  # this machine has /proc/self/mountinfo
    assert host.state_fs_type(str(tmp_path / "not" / "yet")) == expected


def test_host_id_env_override_and_legacy_rows(monkeypatch):
    monkeypatch.setattr(host, "_cache", [])
    monkeypatch.setenv("ORCHESJOB_HOST_ID", "batch-7")
    assert host.host_id() == "batch-7"
    assert host.is_this_host("batch-7") and host.is_this_host(None)
    assert not host.is_this_host("batch-8")
    monkeypatch.setattr(host, "_cache", [])
    monkeypatch.delenv("ORCHESJOB_HOST_ID")
    assert host.host_id().startswith(os.uname().nodename + "/")


def test_exit_record_roundtrip_is_private_and_removable(tmp_path):
    (tmp_path / "logs").mkdir()
    assert exitrec.read(str(tmp_path), "j1") is None
    exitrec.write(str(tmp_path), "j1", -9, 1700000000)
    assert exitrec.read(str(tmp_path), "j1") == (-9, 1700000000)
    assert os.stat(exitrec.path(str(tmp_path), "j1")).st_mode & 0o777 == 0o600
    assert not os.path.exists(exitrec.path(str(tmp_path), "j1") + ".tmp")
    assert exitrec.remove(str(tmp_path), "j1") and exitrec.read(str(tmp_path), "j1") is None


def test_exit_record_rejects_garbage(tmp_path):
    (tmp_path / "logs").mkdir()
    with open(exitrec.path(str(tmp_path), "j2"), "w") as f:
        f.write("v1 zero 12\n")
    assert exitrec.read(str(tmp_path), "j2") is None


def test_exit_record_write_fails_loudly_without_room(tmp_path):
    with pytest.raises(OSError):  # no logs/ directory: the caller must retry, not lose it
        exitrec.write(str(tmp_path), "j3", 0, 1)


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_job_processes_finds_setsid_and_marked_escapees(tmp_path):
    job_id = "unit-" + os.urandom(4).hex()
    env = dict(os.environ, **{tree.JOB_ENV: job_id})
    pidfile = tmp_path / "escapee"
    # The main process (own group) starts a child that leaves the group with setsid.
    main = subprocess.Popen(
        ["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & exec sleep 30"],
        env=env, start_new_session=True,
    )
    try:
        escapee = int(_wait(lambda: (pidfile.exists() and pidfile.read_text().strip()) or None))
        found = dict(tree.job_processes(job_id, group=main.pid))
        assert main.pid in found and escapee in found  # group member + environment marker
        assert dict(tree.job_processes(job_id, group=main.pid, scan_env=False)).keys() == {main.pid}
        assert tree.signal_all(tree.job_processes(job_id, group=main.pid), signal.SIGKILL) == 2
        _wait(lambda: not tree.alive(list(found.items())) or None)
    finally:
        main.kill()
        main.wait()


def test_pid_reuse_is_never_signalled():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        started = tree.alive([(sleeper.pid, 0)])
        assert started == []  # wrong start time: not the recorded process
        assert tree.signal_all([(sleeper.pid, 1)], signal.SIGKILL) == 0
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux only")
def test_subreaper_adopts_a_double_forked_grandchild():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the would-be supervisor
        code = 1
        try:
            os.close(r)
            ok = tree.become_subreaper()
            child = subprocess.Popen(
                ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE
            )
            grandchild = int(child.stdout.readline().strip())
            child.wait()  # the grandchild is now an orphan
            with open(f"/proc/{grandchild}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            os.kill(grandchild, signal.SIGKILL)
            os.waitpid(grandchild, 0)  # ours to reap: it was adopted
            os.write(w, f"{int(ok)} {int(ppid == os.getpid())}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = os.read(r, 100).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and out == "1 1", out


def test_close_inherited_fds_keeps_only_what_is_asked():
    r, w = os.pipe()
    extra = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(extra, True)
    pid = os.fork()
    if pid == 0:
        tree.close_inherited_fds(keep=(w,))
        closed = []
        for fd in (r, extra, w):
            try:
                os.fstat(fd)
            except OSError:
                closed.append(fd)
        os.write(w, " ".join(map(str, closed)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    closed = [int(x) for x in os.read(r, 1000).split()]
    os.close(r)
    os.close(extra)
    assert closed == [r, extra]  # w was kept; everything else above 2 is gone


IGNORES_TERM = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"


def _start_of(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


def test_end_processes_terms_once_then_kills_after_the_grace():
    obeys = subprocess.Popen(["sleep", "30"])
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout.readline() == b"ready\n"
        procs = [(p.pid, _start_of(p.pid)) for p in (obeys, stubborn)]
        t0 = time.monotonic()

        def find():
            for p in (obeys, stubborn):
                p.poll()  # reap, as the supervisor does with reap=True
            return tree.alive(procs)

        sent_term, sent_kill = tree.end_processes(find, 0.5, signal.SIGTERM, signal.SIGKILL)
        took = time.monotonic() - t0
        assert (sent_term, sent_kill) == (True, True)
        assert obeys.wait(1) == -signal.SIGTERM and stubborn.wait(1) == -signal.SIGKILL
        assert took >= 0.5, took  # the grace was waited out (a lower bound: load only lengthens it)
    finally:
        for p in (obeys, stubborn):
            p.kill()
            p.wait()


def test_end_processes_sends_no_second_term_to_what_the_caller_termed():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        procs = [(sleeper.pid, _start_of(sleeper.pid))]

        def find():
            sleeper.poll()
            return tree.alive(procs)

        # termed=[...]: the caller already sent SIGTERM (here it did not), so only the KILL comes.
        assert tree.end_processes(find, 0.2, signal.SIGTERM, signal.SIGKILL, termed=procs) == (False, True)
        assert sleeper.wait(1) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_grace_from_the_environment(monkeypatch):
    monkeypatch.delenv("ORCHESJOB_KILL_GRACE", raising=False)
    assert tree.kill_grace() == tree.KILL_GRACE_DEFAULT == 5.0
    monkeypatch.setenv("ORCHESJOB_KILL_GRACE", "1.5")
    assert tree.kill_grace() == 1.5
    monkeypatch.setenv("ORCHESJOB_KILL_GRACE", "soon")
    assert tree.kill_grace() == 5.0


# --- reconcile with an exit record, and the supervisor's retried writes ----------------------

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process


def _row(job_id, supervisor_pid):
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": vocab.RUNNING, "started_at": 1, "updated_at": 1, "boot_id": procs.boot_id(),
            "worker_pid": supervisor_pid, "worker_start": procs.start_time(supervisor_pid),
            "target_pid": NO_SUCH_PID}


@pytest.fixture
def state(tmp_path):
    path = str(tmp_path / "state")
    with store.writing(path) as conn:
        store.insert_job(conn, _row("orphan", NO_SUCH_PID))  # supervisor and target gone
        store.insert_job(conn, _row("retrying", os.getpid()))  # supervisor alive, target gone
    return path


def _stored(state, job_id):
    conn = store.open_db(state, write=False)
    try:
        return store.get_job(conn, job_id)
    finally:
        conn.close()


def test_reconcile_turns_an_exit_record_into_the_outcome_not_lost(state):
    exitrec.write(state, "orphan", 7, 1700000007)
    conn = store.open_db(state, write=False)
    try:
        seen = liveness.reconcile(conn, store.get_job(conn, "orphan"))
    finally:
        conn.close()
    assert (seen["status"], seen["exit_code"], seen["finished_at"]) == (vocab.FAILED, 7, 1700000007)
    assert seen["lost_reason"] is None
    stored = _stored(state, "orphan")  # the supervisor is gone: the reader wrote it
    assert (stored["status"], stored["exit_code"]) == (vocab.FAILED, 7)
    # without a record the same job would have been LOST
    with store.writing(state) as conn:
        store.insert_job(conn, dict(_row("orphan2", NO_SUCH_PID), run_key="k-x"))
        assert liveness.reconcile(conn, store.get_job(conn, "orphan2"), locked=True)["status"] == vocab.LOST


def test_reconcile_reports_a_live_supervisors_record_and_leaves_the_write_to_writers(state):
    exitrec.write(state, "retrying", 0, 1700000000)
    conn = store.open_db(state, write=False)
    try:
        seen = liveness.reconcile(conn, store.get_job(conn, "retrying"))
    finally:
        conn.close()
    assert (seen["status"], seen["exit_code"]) == (vocab.SUCCEEDED, 0)
    assert _stored(state, "retrying")["status"] == vocab.RUNNING  # a reader did not write
    with store.writing(state) as conn:  # a writer (start, abort, unlock) stores it
        seen = liveness.reconcile(conn, store.get_job(conn, "retrying"), locked=True)
    assert _stored(state, "retrying")["status"] == vocab.SUCCEEDED == seen["status"]


def test_supervisor_write_is_retried_until_the_lock_is_released(state, monkeypatch):
    import sqlite3

    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0.2")
    holder = sqlite3.connect(os.path.join(state, "orchesjob.db"), isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    calls = []

    def before():  # called before each attempt: the second one lets the lock go first
        calls.append(1)
        if len(calls) == 2:
            holder.execute("ROLLBACK")

    db = supervisor._Db(state, None)
    ok = db.write("retrying", vocab.ACTIVE, before=before, status=vocab.SUCCEEDED, exit_code=0, finished_at=2)
    db.close()
    holder.close()
    # a count, not a time: the first attempt failed under the lock, the retry after it succeeded
    assert ok is True and len(calls) == 2
    assert _stored(state, "retrying")["status"] == vocab.SUCCEEDED


def test_exit_record_write_is_retried_after_a_failure(tmp_path):
    record = supervisor._ExitRecord(str(tmp_path), "j9", 5, 9)
    assert record() is False  # no logs/ directory yet (as with ENOSPC): nothing recorded
    (tmp_path / "logs").mkdir()
    assert record() is True and exitrec.read(str(tmp_path), "j9") == (5, 9)

"""Tests of the loopback sshd harness itself (testkit/sshd.py, testkit/ssh_target.py)."""
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.ssh


def test_login_with_key_as_non_root_user(sshd):
    r = sshd.run("id -u; id -un; echo $HOME", timeout=30)
    assert r.returncode == 0, r.stderr
    uid, name, home = r.stdout.split()
    assert int(uid) != 0
    assert int(uid) == sshd.uid
    assert name == sshd.user
    assert home == sshd.home


def test_argv_commands_are_quoted(sshd):
    hostile = "a b; echo INJECTED $(id) 'q' \"dq\" \\"
    r = sshd.run(["printf", "%s", hostile], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == hostile


def test_target_python_runs_as_target_user(sshd):
    r = sshd.run([sshd.target_python, "-c", "import os, sys; print(os.getuid(), sys.version_info[0])"],
                 timeout=30)
    assert r.returncode == 0, r.stderr
    uid, major = r.stdout.split()
    assert int(uid) != 0 and major == "3"


def test_wrong_known_hosts_is_rejected(sshd, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    bad = tmp_path / "known_hosts"
    bad.write_text(f"[{sshd.host}]:{sshd.port} {pub}\n")
    argv = sshd.ssh_argv("true")
    argv = [a.replace(sshd.known_hosts_path, str(bad)) for a in argv]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in r.stderr or "verification failed" in r.stderr, r.stderr


def test_unknown_host_is_rejected(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(sshd.known_hosts_path, str(empty)) for a in sshd.ssh_argv("true")]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 255, r.stderr


def test_other_key_is_refused(sshd, tmp_path):
    key = tmp_path / "id_other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    argv = [a.replace(sshd.key_path, str(key)) for a in sshd.ssh_argv("true")]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 255
    assert "Permission denied" in r.stderr, r.stderr


def test_many_concurrent_sessions(sshd):
    """MaxStartups is high enough for bursts of parallel SSH logins."""
    procs = [sshd.popen("echo ok", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(30)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 30, [o[1] for o in outs if o[1]]


def test_popen_session_can_be_killed(sshd):
    """A session can be dropped from the client side (what the detach tests build on)."""
    marker = f"orchesjob-harness-{os.getpid()}-{time.time_ns()}"
    pattern = f"[{marker[0]}]{marker[1:]}"  # does not match pgrep's own command line
    p = sshd.popen(["bash", "-c", "sleep 30; :", marker], stdout=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            if sshd.run(["pgrep", "-f", pattern], timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("remote sleep never appeared")
    finally:
        p.kill()
        p.wait(timeout=10)
    assert p.returncode == -9  # the client side of the session was dropped, not the server
    # without a pty the remote command is not sent SIGHUP; clean up our own sleep
    sshd.run(["pkill", "-f", pattern], timeout=30)

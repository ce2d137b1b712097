"""The triggerer's host-key decision (orchesjob_provider/hooks/ssh/host_keys.py) as data: the rules of
SSHHook.get_conn/paramiko, the known_hosts lookup, and the refused ``known_hosts`` extra.
The end-to-end matrix against a real sshd is tests/provider/test_host_keys.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

import pytest

from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.hooks.ssh.host_keys import (
    HostKeyPolicy,
    check_known_hosts_extra,
    host_key_policy,
    known_host_keys,
    parse_host_key,
)

RIGHT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
WRONG = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlPSKXGnRhqt9bbqfO1w1D1ZnSNhULTuAtk+9wKF1Xw"


def blob(key):
    return parse_host_key(key)


def test_verdicts_follow_paramiko():
    right = blob(RIGHT)
    assert HostKeyPolicy(trusted=(right,), accept_unknown=False).verdict(*right) == "ok"
    assert HostKeyPolicy(trusted=(blob(WRONG),), accept_unknown=True).verdict(*right) == "changed"
    # a listed key of another type only: paramiko raises BadHostKeyException too
    assert HostKeyPolicy(trusted=(("ssh-rsa", b"x"),), accept_unknown=True).verdict(*right) == "changed"
    assert HostKeyPolicy(trusted=(), accept_unknown=False).verdict(*right) == "unknown"
    assert HostKeyPolicy(trusted=(), accept_unknown=True).verdict(*right) == "ok"


def _hashed(name):
    salt = os.urandom(20)
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def test_known_hosts_lookup_is_paramikos(tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "# comment\nnot-a-host-line\n"
        f"db1 {RIGHT}\n"  # port 22 entry: not used for port 2222
        f"{_hashed('[db1]:2222')} {WRONG}\n"  # hashed entries are matched
    )
    assert known_host_keys(str(kh), "db1", 22) == (blob(RIGHT),)
    assert known_host_keys(str(kh), "db1", 2222) == (blob(WRONG),)
    assert known_host_keys(str(kh), "db2", 22) == ()
    assert known_host_keys(str(tmp_path / "missing"), "db1", 22) == ()


def test_a_broken_known_hosts_fails_like_paramiko(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text("db1 ssh-ed25519 AAAAC\n")  # bad base64
    with pytest.raises(AgentUnavailable, match=r"cannot read ~/\.ssh/known_hosts: InvalidHostKey"):
        asyncio.run(host_key_policy({}, "db1", 22, "c1"))


def test_host_key_policy_from_extras(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[db1]:2222 {WRONG}\n")

    def policy(**extras):
        return asyncio.run(host_key_policy(extras, "db1", 2222, "c1"))

    # known_hosts wins over host_key (paramiko's system host keys are looked up first)
    assert policy(host_key=RIGHT) == HostKeyPolicy(trusted=(blob(WRONG),), accept_unknown=False)
    # allow_host_key_change: ~/.ssh/known_hosts is not read; host_key still checked
    assert policy(host_key=RIGHT, allow_host_key_change="true") == HostKeyPolicy(
        trusted=(blob(RIGHT),), accept_unknown=True
    )
    assert policy(no_host_key_check="true").accept_unknown is True
    assert policy(no_host_key_check="false").accept_unknown is False
    assert policy().accept_unknown is False  # unset: checked (our sync hook forces it too)
    with pytest.raises(AgentUnavailable, match="Must check host key when provided"):
        policy(host_key=RIGHT, no_host_key_check="true")


def test_known_hosts_extra_is_refused_unless_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    check_known_hosts_extra({}, "c1")
    check_known_hosts_extra({"known_hosts": "~/.ssh/known_hosts"}, "c1")
    check_known_hosts_extra({"known_hosts": str(tmp_path / ".ssh" / "known_hosts")}, "c1")
    for value in ("/etc/other_known_hosts", "none", f"db1 {RIGHT}"):
        with pytest.raises(AgentUnavailable, match="the known_hosts extra is not supported") as ei:
            check_known_hosts_extra({"known_hosts": value}, "c1")
        assert "'c1'" in str(ei.value) and "host_key" in str(ei.value)

"""Host keys: the worker (SSHHook/paramiko) and the triggerer (asyncssh) accept and refuse the
same server keys, for every combination of the connection extras ``host_key``,
``no_host_key_check``, ``allow_host_key_change`` and the user's ~/.ssh/known_hosts (host listed
with its right key / with a wrong key / not listed). One ping per cell and path, against the
real loopback sshd; HOME is a temporary directory per cell (the worker side reads
~/.ssh/known_hosts through it), so cells are independent and parallel-safe.

``EXPECTED`` is the table "Host keys" of docs/connection.md; it is asserted for both paths, so the sync hook
(the SSH provider's SSHHook of this Airflow leg) proves the table and the async hook must match.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import uuid

import pytest
from connutil import set_conn

pytestmark = pytest.mark.ssh

HOST_KEY = ["none", "right", "wrong"]
NO_CHECK = ["unset", "true"]
ALLOW_CHANGE = ["false", "true"]
KNOWN = ["right", "wrong", "absent"]


def expected(host_key: str, no_check: str, allow_change: str, known: str) -> str:
    """SSHHook.get_conn's decision (see docs/connection.md "Host keys"), one of ok/changed/unknown/config."""
    if host_key != "none" and no_check == "true":
        return "config"  # ValueError: Must check host key when provided
    listed = known if allow_change == "false" and known != "absent" else None
    trusted = listed or (host_key if host_key != "none" else None)
    if trusted:
        return "ok" if trusted == "right" else "changed"
    return "ok" if (no_check == "true" or allow_change == "true") else "unknown"


@pytest.fixture(scope="module")
def wrong_key(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wrong_host_key") / "k")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    with open(path + ".pub") as f:
        return " ".join(f.read().split()[:2])


def kind_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    msg = str(error)
    assert "\n" not in msg, msg
    if "Must check host key when provided" in msg:
        return "config"
    if "does not match the one expected" in msg:
        return "changed"
    if "is not in known_hosts" in msg:
        return "unknown"
    return f"other: {msg}"


CELLS = list(itertools.product(HOST_KEY, NO_CHECK, ALLOW_CHANGE, KNOWN))


@pytest.mark.parametrize("host_key,no_check,allow_change,known", CELLS, ids=["-".join(c) for c in CELLS])
def test_sync_and_async_host_key_decisions_match(
    host_key,
    no_check,
    allow_change,
    known,
    sshd,
    airflow_db,
    state_dir,
    wrong_key,
    tmp_path,
    monkeypatch,
    quick_sshhook_retries,
):
    keys = {"right": sshd.host_public_key, "wrong": wrong_key}
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    known_hosts = home / ".ssh" / "known_hosts"

    def write_known_hosts():  # before each ping: paramiko's AutoAddPolicy appends to it
        lines = ["[otherhost.invalid]:22 " + wrong_key]
        if known != "absent":
            lines.append(f"[{sshd.host}]:{sshd.port} {keys[known]}")
        known_hosts.write_text("\n".join(lines) + "\n")

    extra = {"private_key": sshd.key_text}
    if host_key != "none":
        extra["host_key"] = keys[host_key]
    if no_check != "unset":
        extra["no_host_key_check"] = no_check
    extra["allow_host_key_change"] = allow_change
    conn_id = f"hk_{uuid.uuid4().hex[:10]}"
    set_conn(
        conn_id,
        json.dumps(
            {"conn_type": "ssh", "host": sshd.host, "port": sshd.port, "login": sshd.user, "extra": extra}
        ),
    )

    sync_error, async_error = _ping_both(conn_id, state_dir, sshd, write_known_hosts)
    want = expected(host_key, no_check, allow_change, known)
    assert (kind_of(sync_error), kind_of(async_error)) == (want, want), (sync_error, async_error)


def _ping_both(conn_id, state_dir, sshd, write_known_hosts):
    """One ping through the worker's hook and one through the triggerer's; their errors."""
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook

    write_known_hosts()
    sync_error = None
    hook = OrchesjobHook(conn_id, state_dir=state_dir, remote_python=sshd.target_python)
    try:
        hook.ping()
    except Exception as e:
        sync_error = e
    finally:
        hook.close()

    write_known_hosts()

    async def aping():
        async with AsyncOrchesjobHook(conn_id, state_dir=state_dir, remote_python=sshd.target_python) as h:
            return await h.call("ping")

    async_error = None
    try:
        asyncio.run(aping())
    except Exception as e:
        async_error = e
    return sync_error, async_error


#: every value the ``no_host_key_check`` extra can hold (JSON): absent, null, booleans, the
#: strings in any case, and values that mean nothing (refused: "config" in both paths). Issue 18:
#: with ``null`` the SSH provider 3.14 kept its own default (no check) in the worker only.
FLAG_VALUES = [
    ("absent", None, "verify"),
    ("null", None, "verify"),
    ("json-true", True, "skip"),
    ("json-false", False, "verify"),
    ("str-true", "true", "skip"),
    ("str-false", "false", "verify"),
    ("str-TRUE-blank", " TRUE ", "skip"),
    ("str-False", "False", "verify"),
    ("str-yes", "yes", "bad"),
    ("int-1", 1, "bad"),
    ("empty", "", "bad"),
]


@pytest.mark.parametrize("name,value,meaning", FLAG_VALUES, ids=[v[0] for v in FLAG_VALUES])
@pytest.mark.parametrize("known", ["right", "absent"])
def test_every_no_host_key_check_value_means_the_same_in_both_paths(
    name, value, meaning, known, sshd, airflow_db, state_dir, tmp_path, monkeypatch, quick_sshhook_retries
):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    known_hosts = home / ".ssh" / "known_hosts"

    def write_known_hosts():
        text = f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n" if known == "right" else ""
        known_hosts.write_text(text)

    extra = {"private_key": sshd.key_text}
    if name != "absent":
        extra["no_host_key_check"] = value
    conn_id = f"hkv_{uuid.uuid4().hex[:10]}"
    set_conn(
        conn_id,
        json.dumps(
            {"conn_type": "ssh", "host": sshd.host, "port": sshd.port, "login": sshd.user, "extra": extra}
        ),
    )
    sync_error, async_error = _ping_both(conn_id, state_dir, sshd, write_known_hosts)
    if meaning == "bad":
        for error in (sync_error, async_error):
            assert error is not None and "no_host_key_check extra must be true or false" in str(error), error
            assert "\n" not in str(error)
        return
    want = "ok" if known == "right" or meaning == "skip" else "unknown"
    assert (kind_of(sync_error), kind_of(async_error)) == (want, want), (sync_error, async_error)

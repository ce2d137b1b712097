"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import AgentError
from remote_agent.frontends import render, rpc
from remote_agent.host import identity, procs
from remote_agent.jobs.liveness import REBOOTED, reconcile
from remote_agent.ops import start
from remote_agent.ops.start import decide_start, outcome_unknown
from remote_agent.store import store

NO_SUCH_PID = 4194304 + 17  # above Linux's largest pid_max: never a live process
KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}
OVERRIDE = {"run_key": "k", "reason": "checked: it did not finish", "used_at": None}
UNKNOWN_REASON = "supervisor (pid 7) was killed and the target (pid 8) has ended; exit status unknown"


def lost(reason=UNKNOWN_REASON, target_pid=8, exit_code=None, acked_at=None):
    return {"job_id": "j1", "status": vocab.LOST, "lost_reason": reason, "target_pid": target_pid,
            "exit_code": exit_code, "acked_at": acked_at}


# --- the decision table -------------------------------------------------------------------------

def test_outcome_unknown_only_when_the_target_started_and_no_reboot_explains_it() -> None:
    assert outcome_unknown(lost())
    never_started = "supervisor (pid 7) exited before starting the target"
    assert not outcome_unknown(lost(target_pid=None, reason=never_started))
    assert not outcome_unknown(lost(reason=REBOOTED))
    assert not outcome_unknown(lost(exit_code=0))  # an exit status was recorded after all
    assert not outcome_unknown(lost(reason=None))  # orchesjob 1.1.0's LOST rows (imported)
    imported = "imported from orchesjob 1.1.0 beside a newer active job of its key"
    assert not outcome_unknown(lost(reason=imported))
    assert not outcome_unknown(dict(lost(), status=vocab.FAILED))


@pytest.mark.parametrize("acked_at", [None, 1700000000])
@pytest.mark.parametrize("strict", [False, True])
def test_unknown_outcome_is_returned_not_rerun(acked_at, strict) -> None:
    latest = lost(acked_at=acked_at)
    assert decide_start(latest, True, strict, None, KEY) == (vocab.UNKNOWN, latest, None)
    # rerun_unknown never bypasses strict: only an unlock does
    expected = (vocab.UNKNOWN, latest, None) if strict else (vocab.STARTED, None, None)
    assert decide_start(latest, True, strict, None, KEY, rerun_unknown=True) == expected


@pytest.mark.parametrize("strict", [False, True])
def test_unknown_outcome_with_an_unlock_starts_and_consumes_it(strict) -> None:
    assert decide_start(lost(), True, strict, OVERRIDE, KEY) == (vocab.STARTED, None, OVERRIDE)


def test_unknown_outcome_outside_resume_mode_keeps_orchesjob_behaviour() -> None:
    assert decide_start(lost(), False, False, None, KEY) == (vocab.STARTED, None, None)
    assert decide_start(lost(), False, True, None, KEY) == (vocab.KEPT, lost(), None)


def test_never_started_or_rebooted_lost_jobs_are_retried_as_before() -> None:
    for latest in (lost(target_pid=None), lost(reason=REBOOTED)):
        assert decide_start(latest, True, False, None, KEY) == (vocab.ADOPTED, latest, None)
        acked = dict(latest, acked_at=1)
        assert decide_start(acked, True, False, None, KEY) == (vocab.STARTED, None, None)


def test_unknown_is_an_action() -> None:
    assert vocab.UNKNOWN == "unknown" and vocab.UNKNOWN in vocab.ACTIONS
    assert start.StartResult(vocab.UNKNOWN, lost()).existing


# --- hosts --------------------------------------------------------------------------------------

def row(job_id, host_id, status=vocab.RUNNING):
    return {"job_id": job_id, "run_key": "k-" + job_id, "attempt_no": 1, "command": '["true"]',
            "status": status, "started_at": 1, "updated_at": 1, "boot_id": "another-boot",
            "worker_pid": NO_SUCH_PID, "target_pid": NO_SUCH_PID, "host_id": host_id}


def test_reconcile_leaves_another_hosts_job_alone(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir) as conn:
        store.insert_job(conn, row("theirs", "elsewhere/0123"))
        store.insert_job(conn, row("mine", identity.host_id()))
        store.insert_job(conn, row("legacy", None))
    with store.writing(state_dir) as conn:
        assert reconcile(conn, store.get_job(conn, "theirs"), locked=True)["status"] == vocab.RUNNING
        assert reconcile(conn, store.get_job(conn, "mine"), locked=True)["lost_reason"] == REBOOTED
        assert reconcile(conn, store.get_job(conn, "legacy"), locked=True)["status"] == vocab.LOST
    conn = store.open_db(state_dir, write=False)
    assert conn is not None
    assert store.get_job(conn, "theirs")["status"] == vocab.RUNNING  # nothing written either
    assert render.job_object(store.get_job(conn, "theirs"), state_dir)["host_id"] == "elsewhere/0123"
    conn.close()


def test_abort_of_another_hosts_job_is_refused_naming_it(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir) as conn:
        store.insert_job(conn, row("theirs", "elsewhere/0123"))
    with pytest.raises(AgentError) as info:
        start.abort(state_dir, None, "theirs", None, 0.1)
    assert info.value.code == 4 and "elsewhere/0123" in info.value.message


# --- journal mode -------------------------------------------------------------------------------

def mode_of(state_dir: str) -> str:
    conn = sqlite3.connect(os.path.join(state_dir, "orchesjob.db"))
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    finally:
        conn.close()


@pytest.fixture
def on_nfs(monkeypatch):
    monkeypatch.setattr(identity, "state_fs_type", lambda state_dir: "nfs4")


def test_local_state_dir_uses_wal(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir):
        pass
    assert mode_of(state_dir) == "wal"


def test_new_database_on_a_network_fs_uses_the_rollback_journal(tmp_path: Path, on_nfs) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir):
        pass
    assert mode_of(state_dir) == "delete"


def test_existing_wal_database_is_switched_back_on_a_network_fs(tmp_path: Path, monkeypatch) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir) as conn:
        store.insert_job(conn, row("a", None, vocab.SUCCEEDED))
    assert mode_of(state_dir) == "wal"
    monkeypatch.setattr(identity, "state_fs_type", lambda state_dir: "nfs4")
    with store.writing(state_dir) as conn:
        assert store.get_job(conn, "a") is not None  # nothing lost
    assert mode_of(state_dir) == "delete"


def test_wal_database_held_open_elsewhere_fails_naming_a_local_state_dir(tmp_path: Path, monkeypatch) -> None:
    state_dir = str(tmp_path / "state")
    with store.writing(state_dir):
        pass
    other = sqlite3.connect(os.path.join(state_dir, "orchesjob.db"))
    other.execute("SELECT COUNT(*) FROM jobs").fetchone()  # a WAL reader keeps the file shared
    other.execute("BEGIN")
    other.execute("SELECT COUNT(*) FROM jobs").fetchone()
    monkeypatch.setattr(identity, "state_fs_type", lambda state_dir: "nfs4")
    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0.2")
    try:
        with pytest.raises(AgentError) as info:
            with store.writing(state_dir):
                pass
    finally:
        other.close()
    msg = info.value.message
    assert "network filesystem (nfs4)" in msg and "local state_dir" in msg and "WAL" in msg, msg
    assert mode_of(state_dir) == "wal"


def test_ping_reports_host_and_journal_mode(tmp_path: Path, monkeypatch) -> None:
    out = rpc.op_ping({}, str(tmp_path))
    assert out["host_id"] == identity.host_id() and out["boot_id"] == procs.boot_id()
    assert out["journal_mode"] == "wal" and out["state_fs"]
    monkeypatch.setattr(identity, "state_fs_type", lambda state_dir: "nfs4")
    out = rpc.op_ping({}, str(tmp_path))
    assert out["journal_mode"] == "delete" and out["state_fs"] == "nfs4"
    json.dumps(out)

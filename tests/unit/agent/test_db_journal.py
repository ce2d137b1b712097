"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""

import os
import sqlite3
from pathlib import Path

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import AgentError
from remote_agent.store import db, fstype, jobsql
from tests.unit.agent.rows import foreign_job

row = foreign_job


def mode_of(state_dir: str) -> str:
    conn = sqlite3.connect(os.path.join(state_dir, "orchesjob.db"))
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    finally:
        conn.close()


@pytest.fixture
def on_nfs(monkeypatch):
    monkeypatch.setattr(fstype, "state_fs_type", lambda state_dir: "nfs4")


def test_local_state_dir_uses_wal(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir):
        pass
    assert mode_of(state_dir) == "wal"


def test_new_database_on_a_network_fs_uses_the_rollback_journal(tmp_path: Path, on_nfs) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir):
        pass
    assert mode_of(state_dir) == "delete"


def test_existing_wal_database_is_switched_back_on_a_network_fs(tmp_path: Path, monkeypatch) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir) as conn:
        jobsql.insert_job(conn, row("a", None, vocab.SUCCEEDED))
    assert mode_of(state_dir) == "wal"
    monkeypatch.setattr(fstype, "state_fs_type", lambda state_dir: "nfs4")
    with db.writing(state_dir) as conn:
        assert jobsql.get_job(conn, "a") is not None  # nothing lost
    assert mode_of(state_dir) == "delete"


def test_wal_database_held_open_elsewhere_fails_naming_a_local_state_dir(tmp_path: Path, monkeypatch) -> None:
    state_dir = str(tmp_path / "state")
    with db.writing(state_dir):
        pass
    other = sqlite3.connect(os.path.join(state_dir, "orchesjob.db"))
    other.execute("SELECT COUNT(*) FROM jobs").fetchone()  # a WAL reader keeps the file shared
    other.execute("BEGIN")
    other.execute("SELECT COUNT(*) FROM jobs").fetchone()
    monkeypatch.setattr(fstype, "state_fs_type", lambda state_dir: "nfs4")
    monkeypatch.setenv("ORCHESJOB_BUSY_TIMEOUT", "0.2")
    try:
        with pytest.raises(AgentError) as info:
            with db.writing(state_dir):
                pass
    finally:
        other.close()
    msg = info.value.message
    assert "network filesystem (nfs4)" in msg and "local state_dir" in msg and "WAL" in msg, msg
    assert mode_of(state_dir) == "wal"

"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""

import json
from pathlib import Path

from remote_agent.frontends import rpc
from remote_agent.host import identity, procs
from remote_agent.store import fstype


def test_ping_reports_host_and_journal_mode(tmp_path: Path, monkeypatch) -> None:
    out = rpc.op_ping({}, str(tmp_path))
    assert out["host_id"] == identity.host_id() and out["boot_id"] == procs.boot_id()
    assert out["journal_mode"] == "wal" and out["state_fs"]
    monkeypatch.setattr(fstype, "state_fs_type", lambda state_dir: "nfs4")
    out = rpc.op_ping({}, str(tmp_path))
    assert out["journal_mode"] == "delete" and out["state_fs"] == "nfs4"
    json.dumps(out)

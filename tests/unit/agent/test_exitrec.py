"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os

import pytest

from remote_agent.store import exitrec


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

"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os

from remote_agent.host import identity


def test_host_id_env_override_and_legacy_rows(monkeypatch):
    monkeypatch.setattr(identity, "_cache", [])
    monkeypatch.setenv("ORCHESJOB_HOST_ID", "batch-7")
    assert identity.host_id() == "batch-7"
    assert identity.is_this_host("batch-7") and identity.is_this_host(None)
    assert not identity.is_this_host("batch-8")
    monkeypatch.setattr(identity, "_cache", [])
    monkeypatch.delenv("ORCHESJOB_HOST_ID")
    assert identity.host_id().startswith(os.uname().nodename + "/")

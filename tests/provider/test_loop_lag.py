"""Nothing blocks the triggerer's loop on the first connect: no import of asyncssh (0.58 s) or
of the crypto it brings on the loop thread. Asserted by what cannot vary with load: an audit
hook in a fresh interpreter (where nothing is imported yet) lists every module first imported
on the loop's own thread during the first connect; none may be asyncssh's or cryptography's.
How late the loop wakes meanwhile (the lag this used to bound at 250 ms) is measured in
benchmarks/loop_lag_bench.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.airflow, pytest.mark.ssh]

#: Packages whose import on the loop thread would block it (asyncssh alone took 0.39-0.58 s).
HEAVY = ("asyncssh", "cryptography", "paramiko", "nacl", "bcrypt")


def _probe(orch_conn: str, state_dir: str) -> dict:
    probe = os.path.join(os.path.dirname(__file__), "loop_lag_probe.py")
    r = subprocess.run(
        [sys.executable, probe, orch_conn, state_dir],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print({k: v for k, v in res.items() if k != "imported_on_loop"})
    return res


def test_first_connect_does_not_block_the_loop(orch_conn, state_dir):
    res = _probe(orch_conn, state_dir)
    assert res["asyncssh_before"] is False  # else the probe proves nothing
    assert res["asyncssh_after"] is True  # the connect did import it (on another thread)
    heavy = [m for m in res["imported_on_loop"] if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy

"""Nothing blocks the triggerer's loop on the first connect: no import of asyncssh (0.58 s), no
connection lookup, key parsing or bundle build on the loop thread. Measured in a fresh
interpreter (where nothing is imported yet) by a ticker task that records how late it wakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.airflow, pytest.mark.ssh]

#: Worst wake-up delay allowed on the first connect. Importing asyncssh on the loop took
#: 0.39-0.58 s on a quiet machine; what remains is the SSH handshake's own crypto (a few ms) and
#: GIL contention with the importing thread: 33-78 ms quiet, up to 150 ms on a loaded machine.
MAX_LAG = 0.25


#: Fresh-interpreter probes before the test gives up. A blocking import stalls every probe the
#: same way; a busy machine (CI runs other suites beside this one) delays one now and then.
ATTEMPTS = 3


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
    print(res)
    assert res["asyncssh_before"] is False  # else the probe measures nothing
    assert res["ticks"] > 20
    return res


def test_first_connect_does_not_block_the_loop(orch_conn, state_dir):
    """The best of up to ATTEMPTS probes must stay under MAX_LAG."""
    seen = []
    for _ in range(ATTEMPTS):
        seen.append(_probe(orch_conn, state_dir))
        if seen[-1]["lag_max_s"] < MAX_LAG:
            break
    assert min(r["lag_max_s"] for r in seen) < MAX_LAG, seen

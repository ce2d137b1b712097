"""Abort on timeout: a job that overruns its window is stopped on the host, not left behind.

``timeout`` bounds each try: when it passes, the operator aborts the remote job (SIGTERM to its
process group, SIGKILL after ``abort_grace_seconds``), acknowledges it and fails the try. The
same happens when Airflow's own ``execution_timeout`` kills the task, or a user marks it failed
(``abort_on_kill=True``, the default). A worker that merely dies never aborts: the retry
reattaches instead. With ``retries`` the next try starts a new attempt (the aborted one was
acknowledged); here there are none: an overrun needs a person.

Configuration: see example_orchesjob_deferrable (ORCHESJOB_EXAMPLE_CONN_ID, _STATE_DIR, _OUT).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_abort_on_timeout",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 0},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="refresh_cache",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        # stands for a job that hangs: it would run for an hour
        command='mkdir -p "$OUT" && echo "refresh started" >> "$OUT/example_orchesjob_abort_on_timeout.log"'
        ' && sleep 3600 && echo "refresh done" >> "$OUT/example_orchesjob_abort_on_timeout.log"',
        env={"OUT": OUT},
        timeout=timedelta(seconds=5),  # the window; the job is aborted on the host after it
        abort_grace_seconds=2,
        poll_interval=1,
    )
# --8<-- [end:dag]

"""A strict daily import: the import of a day runs at most once, whatever Airflow does.

The run key is the day (``daily-import/{{ ds }}``), not the Airflow run: a retry, a clear, a
second manual run or a backfill of the same day finds the day's job and never starts it again
(``strict=True``). While it runs, every try reattaches; once it finished, every later try
succeeds or fails from the recorded outcome (start action ``kept``), without running anything.

Runbook: run a day's import again (the input was wrong and is fixed now)
-------------------------------------------------------------------------
1. Look at what ran, on the host, as the SSH user of the connection (with the connection's state
   dir, if it sets one: ``export ORCHESJOB_HOME=<state_dir>``)::

       export PATH="$HOME/.orchesjob/bin:$PATH"   # the launcher every deploy leaves
       orchesjob status --run-key daily-import/2026-01-15 --all --format table

   A job still RUNNING is not to be unlocked: abort it first
   (``orchesjob abort --run-key daily-import/2026-01-15``) or let it finish.
2. Unlock the day for exactly one more run, saying why (kept in the job history)::

       orchesjob unlock --run-key daily-import/2026-01-15 \\
           --reason "input fixed, TICKET-123" --ttl 1h

3. Clear ``import_day`` of that day's run in Airflow. The next try starts a new attempt
   (``attempt_no`` 2), which consumes the unlock: the day is strict again afterwards. An unlock
   nobody uses expires after its ttl.

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
    dag_id="example_orchesjob_strict_daily_import",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=1)},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="import_day",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        run_key="daily-import/{{ ds }}",  # one key per day, whatever the Airflow run
        strict=True,  # a finished day never runs again (until `orchesjob unlock`)
        command=[
            "sh",
            "-c",
            'mkdir -p "$OUT" && echo "imported $DAY" >> "$OUT/example_orchesjob_strict_daily_import.log"',
        ],
        env={"DAY": "{{ ds }}", "OUT": OUT},
        poll_interval=1,
    )
# --8<-- [end:dag]

"""Example: check / run / recheck - a non-idempotent load that runs only when its result is missing.

``check_command`` asks the host "is this already done?" before the command runs (exit 0: yes,
the task succeeds and the command does not run) and again after it ran (still failing: the task
fails with "ran, but the check still fails"). Both run on the target, decided by the agent, so a
retry, a cleared task, a second Airflow deployment or a job whose outcome is unknown (its
supervisor was killed) all get the same answer: the check decides, nothing loads twice.

Set up an ``ssh`` connection called ``orchesjob_demo`` (or export ORCHESJOB_DEMO_CONN_ID); see
orchesjob_example.py. On the host, ``~/orchesjob-demo/loads.log`` gets one line per real load.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.10 / 2.11
    from airflow import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_DEMO_CONN_ID", "orchesjob_demo")
STATE_DIR = os.environ.get("ORCHESJOB_DEMO_STATE_DIR") or None

# The load: appends to a log (the side effect we must not repeat), then marks the partition done.
LOAD = r"""
set -eu
mkdir -p "$HOME/orchesjob-demo/done"
echo "$(date -u +%FT%TZ) load $PARTITION" >> "$HOME/orchesjob-demo/loads.log"
sleep 2
touch "$HOME/orchesjob-demo/done/$PARTITION"
"""

with DAG(
    dag_id="orchesjob_check_example",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    tags=["orchesjob", "example"],
) as dag:
    OrchesjobOperator(
        task_id="load_partition",
        ssh_conn_id=CONN_ID,
        command=LOAD,
        env={"PARTITION": "{{ ds }}"},
        # Same env, cwd and user as the command; templated; its own timeout. Exit 0 = done.
        check_command='test -e "$HOME/orchesjob-demo/done/$PARTITION"',
        check_timeout=60,
        poll_interval=2,
        state_dir=STATE_DIR,
    )

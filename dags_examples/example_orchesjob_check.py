"""Check / run / recheck: a non-idempotent load that runs only when its result is missing.

``check_command`` asks the host "is this already done?" before the command runs (exit 0: yes,
the task succeeds and the command does not run; the task log says "satisfied") and again after
it ran (still failing: the task fails with "ran, but the check still fails"). Both run on the
target, decided by the agent as part of the job, so a retry, a cleared task, a second Airflow
deployment or a job whose outcome is unknown (its supervisor was killed) all get the same answer:
the check decides, nothing loads twice.

Connections and places: ``ORCHESJOB_EXAMPLE_CONN_ID``, ``ORCHESJOB_EXAMPLE_STATE_DIR`` and
``ORCHESJOB_EXAMPLE_OUT``, as in example_orchesjob_deferrable.py. The load appends one line to
``$OUT/example_orchesjob_check.log`` and marks its partition done in ``$OUT/done/``; run the DAG
again for the same date and the check finds the mark: no second line.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# The load: appends to a log (the side effect we must not repeat), then marks the partition done.
LOAD = r"""
set -eu
mkdir -p "$OUT/done"
echo "load $PARTITION by $$" >> "$OUT/example_orchesjob_check.log"
sleep 1
touch "$OUT/done/$PARTITION"
"""

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_check",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="load_partition",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=LOAD,
        env={"PARTITION": "{{ ds }}", "OUT": OUT},
        # Same env, cwd and user as the command; templated; its own timeout. Exit 0 = done.
        check_command='test -e "$OUT/done/$PARTITION"',
        check_timeout=60,
        poll_interval=1,
    )
# --8<-- [end:dag]

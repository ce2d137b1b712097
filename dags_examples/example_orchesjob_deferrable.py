"""Run and wait, deferrable: a nightly batch import over SSH that a retry never runs twice.

The operator starts (or resumes) the remote job and hands the waiting to the triggerer, so no
worker slot is held while the job runs. Kill the worker, restart the triggerer, let the task
retry: the next try finds the job by its run key (``af/<dag_id>/<task_id>/<map_index>/<run_id>``),
reattaches to it (still running) or adopts its result (finished while nobody watched), and the
import writes its line in ``$OUT/<dag_id>.log`` on the host exactly once.

Connections and places (every example reads the same three environment variables):
``ORCHESJOB_EXAMPLE_CONN_ID`` (an ``ssh`` connection, default ``orchesjob_default``),
``ORCHESJOB_EXAMPLE_STATE_DIR`` (the agent's state dir on the host, default the SSH user's) and
``ORCHESJOB_EXAMPLE_OUT`` (where the jobs write on the host, default ``~/orchesjob-examples``).
"""

from __future__ import annotations

# --8<-- [start:readme]
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

IMPORT = r"""
set -eu
mkdir -p "$OUT"
echo "import $BATCH_DATE by $$" >> "$OUT/example_orchesjob_deferrable.log"
for step in 1 2 3; do echo "importing part $step/3"; sleep 1; done
echo "import of $BATCH_DATE done"
"""

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_deferrable",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="import_batch",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=IMPORT,  # a string runs as ["/bin/sh", "-c", IMPORT]
        env={"BATCH_DATE": "{{ ds }}", "OUT": OUT},  # sent on stdin, never on a command line
        deferrable=True,  # wait in the triggerer
        poll_interval=1,
        timeout=timedelta(hours=2),  # then the remote job is aborted and the try fails
    )
# --8<-- [end:dag]
# --8<-- [end:readme]

"""Named locks and slots on the host, shared by every DAG (and cron, and people on the host).

Two tasks write the same warehouse table; put them in two DAGs, two Airflow deployments or a
crontab and the rule is the same, because the agent on the host enforces it. Whoever starts
second waits *on the host* until the first is done (task log: ``Remote job ... is WAITING on the
host for write lock 'warehouse.orders' held by job ... (run key af/...)``), in first-come order;
a retry of a waiting task reattaches to its waiting job. Readers of ``raw/orders`` share it. At
most two jobs of the ``heavy-io`` slot run at once on the host. ``queue_timeout`` bounds the
wait: then the job is CANCELLED without running and the task fails saying what it waited for.

On the host, ``orchesjob locks --format table`` lists holders and waiters.

Connections and places: ``ORCHESJOB_EXAMPLE_CONN_ID``, ``ORCHESJOB_EXAMPLE_STATE_DIR`` and
``ORCHESJOB_EXAMPLE_OUT``, as in example_orchesjob_deferrable.py; each job appends one line to
``$OUT/example_orchesjob_locks.log``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")
ORDERS = "warehouse.orders"

WRITE = r"""
set -eu
mkdir -p "$OUT"
echo "$STEP orders for $DAY by $$" >> "$OUT/example_orchesjob_locks.log"
sleep 1
"""

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_locks",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["orchesjob", "example", "locks"],
):
    OrchesjobOperator(
        task_id="load_orders",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=WRITE,
        env={"DAY": "{{ ds }}", "STEP": "load", "OUT": OUT},
        locks={"write": [ORDERS], "read": ["raw/orders"]},  # templated, like command
        slots={"heavy-io": 2},
        queue_timeout=timedelta(minutes=30),
        poll_interval=1,
    )
    OrchesjobOperator(  # no dependency: both may start at once; the host runs them one at a time
        task_id="rebuild_orders",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=WRITE,
        env={"DAY": "{{ ds }}", "STEP": "rebuild", "OUT": OUT},
        locks={"write": [ORDERS]},
        slots={"heavy-io": 2},
        poll_interval=1,
    )
# --8<-- [end:dag]

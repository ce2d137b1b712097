"""Example: named locks and slots on the host, shared by every DAG (and cron, and people).

Two DAGs write the same warehouse table. Whoever starts second waits *on the host* until the
first is done (task log: ``Remote job ... is WAITING on the host for write lock
'warehouse.orders' held by job ... (run key af/...)``), in first-come order; a retry of a waiting
task reattaches to its waiting job. Readers of ``raw/orders`` share it. At most two jobs of the
``heavy-io`` slot run at once on the host. ``queue_timeout`` bounds the wait: then the job is
CANCELLED without running and the task fails saying what it waited for.

On the host, ``orchesjob locks --format table`` lists holders and waiters.

Set up an ``ssh`` connection called ``orchesjob_demo`` (or export ORCHESJOB_DEMO_CONN_ID), as
for dags_examples/orchesjob_example.py.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef,attr-defined]

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_DEMO_CONN_ID", "orchesjob_demo")
STATE_DIR = os.environ.get("ORCHESJOB_DEMO_STATE_DIR") or None
ORDERS = "warehouse.orders"

with DAG(
    dag_id="orchesjob_locks_load_orders",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["orchesjob", "example", "locks"],
) as load_dag:
    OrchesjobOperator(
        task_id="load_orders",
        ssh_conn_id=CONN_ID,
        command="echo loading orders for $DAY; sleep 20; echo loaded",
        env={"DAY": "{{ ds }}"},
        locks={"write": [ORDERS], "read": ["raw/orders"]},  # templated, like command
        slots={"heavy-io": 2},
        queue_timeout=timedelta(minutes=30),
        state_dir=STATE_DIR,
        poll_interval=2,
    )

with DAG(
    dag_id="orchesjob_locks_rebuild_orders",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["orchesjob", "example", "locks"],
) as rebuild_dag:
    OrchesjobOperator(
        task_id="rebuild_orders",
        ssh_conn_id=CONN_ID,
        command=["sh", "-c", "echo rebuilding the orders table; sleep 10; echo rebuilt"],
        locks={"write": [ORDERS]},
        slots={"heavy-io": 2},
        state_dir=STATE_DIR,
        poll_interval=2,
    )

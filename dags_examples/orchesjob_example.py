"""Example: a ~20 s remote job with a side effect, retried without ever running twice.

Set up an ``ssh`` connection called ``orchesjob_demo`` (or export ORCHESJOB_DEMO_CONN_ID), e.g.::

    export AIRFLOW_CONN_ORCHESJOB_DEMO='{"conn_type": "ssh", "host": "batch-host", "port": 22,
        "login": "batch", "extra": {"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\\n...",
                                    "host_key": "ssh-ed25519 AAAA..."}}'

Kill the worker (or the triggerer) while ``import_batch`` runs: the next try reattaches to the same
remote job, so ``~/orchesjob-demo/side-effect.log`` on the host gets exactly one line per run.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

CONN_ID = os.environ.get("ORCHESJOB_DEMO_CONN_ID", "orchesjob_demo")
DEFERRABLE = os.environ.get("ORCHESJOB_DEMO_DEFERRABLE", "false").lower() == "true"
STATE_DIR = os.environ.get("ORCHESJOB_DEMO_STATE_DIR") or None

SCRIPT = r"""
set -eu
mkdir -p "$HOME/orchesjob-demo"
echo "$(date -u +%FT%TZ) airflow_run=$AIRFLOW_RUN pid=$$" >> "$HOME/orchesjob-demo/side-effect.log"
for i in $(seq 1 20); do
  echo "step $i/20"
  sleep 1
done
echo "import of $BATCH_DATE done"
"""

with DAG(
    dag_id="orchesjob_example",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    tags=["orchesjob", "example"],
) as dag:
    import_batch = OrchesjobOperator(
        task_id="import_batch",
        ssh_conn_id=CONN_ID,
        command=SCRIPT,  # a string runs as ["/bin/sh", "-c", SCRIPT]
        env={"BATCH_DATE": "{{ ds }}", "AIRFLOW_RUN": "{{ dag.dag_id }}/{{ run_id }}"},
        poll_interval=2,
        timeout=timedelta(minutes=10),
        deferrable=DEFERRABLE,
        state_dir=STATE_DIR,
    )

    # Something else may start jobs too (cron, a person, an operator with wait=False):
    start_report = OrchesjobOperator(
        task_id="start_report",
        ssh_conn_id=CONN_ID,
        command=["sh", "-c", "sleep 3; echo report ready"],
        wait=False,  # start (or reattach) and return the job record
        state_dir=STATE_DIR,
    )
    wait_report = OrchesjobSensor(
        task_id="wait_report",
        ssh_conn_id=CONN_ID,
        job_id="{{ ti.xcom_pull(task_ids='start_report')['job_id'] }}",
        poke_interval=5,
        timeout=600,
        mode="reschedule",
        state_dir=STATE_DIR,
    )

    import_batch >> start_report >> wait_report

"""Start without waiting, then wait with the sensor: other work runs while the job does.

``wait=False`` starts the job (or reattaches to the one a previous try started: same run key)
and pushes its record (``job_id``, ``run_key``, ``status`` ...) to XCom at once. The sensor then
waits for that job by ``job_id``; it succeeds when the job succeeded and fails with the job's exit
code otherwise. The result is acknowledged by neither: a later ``wait=True`` try or the sensor
only read it. Use ``run_key=`` instead of ``job_id=`` to watch a job something else started
(cron, a person with ``orchesjob start``).

Configuration: see example_orchesjob_deferrable (ORCHESJOB_EXAMPLE_CONN_ID, _STATE_DIR, _OUT).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_start_then_sensor",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["orchesjob", "example"],
):
    start_report = OrchesjobOperator(
        task_id="start_report",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=[
            "sh",
            "-c",
            'mkdir -p "$OUT"; echo "report $$" >> "$OUT/example_orchesjob_start_then_sensor.log"; '
            "sleep 3; echo report ready",
        ],
        env={"OUT": OUT},
        wait=False,  # start (or reattach) and return the job record
    )

    @task
    def meanwhile(record: dict) -> str:
        """Work that does not need the report, done while it is being built."""
        print(f"report job {record['job_id']} is {record['status']}")
        return record["job_id"]

    wait_report = OrchesjobSensor(
        task_id="wait_report",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        job_id="{{ ti.xcom_pull(task_ids='start_report')['job_id'] }}",
        poke_interval=1,
        timeout=3600,
        deferrable=True,  # or mode="reschedule": either way no worker slot while waiting
    )

    meanwhile(start_report.output) >> wait_report
# --8<-- [end:dag]

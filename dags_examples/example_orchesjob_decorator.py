"""``@task.orchesjob``: a Python function that returns the command, TaskFlow style.

The function runs in the worker at the start of every try and returns the command: a list of
str (argv, no shell) or a str (run by ``/bin/sh -c``, or ``shell=``). The decorator takes every
other OrchesjobOperator parameter. The returned command is not rendered as a Jinja template: build
it in Python (``ds`` and the other context values are function arguments). The task's XCom is the
finished job's record, and ``.expand()`` maps over the function's arguments like any TaskFlow
task (one run key per map index). A retry calls the function again but resumes the same job.

Configuration: see example_orchesjob_deferrable (ORCHESJOB_EXAMPLE_CONN_ID, _STATE_DIR, _OUT).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_decorator",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["orchesjob", "example"],
):

    @task.orchesjob(ssh_conn_id=CONN_ID, state_dir=STATE_DIR, env={"OUT": OUT}, poll_interval=1)
    def export_table(table: str, ds: str | None = None) -> list[str]:
        """Export one table of the day: argv, so the table name needs no shell quoting."""
        script = 'mkdir -p "$OUT" && echo "exported $1 for $2" >> "$OUT/example_orchesjob_decorator.log"'
        return ["sh", "-c", script, "export", table, str(ds)]

    @task
    def summary(records: list[dict]) -> list[str]:
        """Each export's job record (XCom), e.g. for a report of job ids and durations."""
        return [f"{r['run_key']}: {r['status']} (job {r['job_id']})" for r in records]

    summary(export_table.expand(table=["customers", "orders", "invoices"]))
# --8<-- [end:dag]

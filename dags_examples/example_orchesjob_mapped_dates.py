"""Dynamic task mapping over dates: reprocess the last three days, one remote job per day.

An upstream task computes the days from the run's ``ds`` (deterministic: the same list on every
try) and the operator is mapped over the job's environment. The default run key holds the
``map_index`` (``af/<dag_id>/reprocess_day/<map_index>/<run_id>``): each day is its own job, and
a retry of day 2 resumes day 2's job. Because the index is the day's place in the list, the list
must not change between tries (compute it from ``ds``, never from "now").

Configuration: see example_orchesjob_deferrable (ORCHESJOB_EXAMPLE_CONN_ID, _STATE_DIR, _OUT).
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

from airflow.sdk import DAG, task

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = os.environ.get("ORCHESJOB_EXAMPLE_CONN_ID", "orchesjob_default")
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_mapped_dates",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["orchesjob", "example"],
):

    @task
    def last_days(ds: str | None = None) -> list[dict[str, str]]:
        """The job environment of each day to reprocess, oldest first."""
        end = date.fromisoformat(str(ds))
        days = [(end - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
        return [{"DAY": d, "OUT": OUT} for d in days]

    OrchesjobOperator.partial(
        task_id="reprocess_day",
        ssh_conn_id=CONN_ID,
        state_dir=STATE_DIR,
        command=[
            "sh",
            "-c",
            'mkdir -p "$OUT" && echo "reprocessed $DAY" >> "$OUT/example_orchesjob_mapped_dates.log"',
        ],
        poll_interval=1,
    ).expand(env=last_days())
# --8<-- [end:dag]

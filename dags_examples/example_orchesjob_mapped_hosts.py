"""Dynamic task mapping over hosts: the same maintenance job on every host, one task per host.

``OrchesjobOperator.partial(...).expand(ssh_conn_id=[...])`` makes one mapped task instance per
``ssh`` connection. Each gets its own run key (the default one holds the ``map_index``:
``af/<dag_id>/rotate_logs/<map_index>/<run_id>``), so a retry of host 2 resumes host 2's job and
never touches host 1's. Keep the list's order stable between tries (sorted, from a Variable or a
config file): the map index is the host's place in it.

Configuration: ``ORCHESJOB_EXAMPLE_HOSTS``, comma-separated ``ssh`` connection ids (default
``batch_host_1,batch_host_2``); the others as in example_orchesjob_deferrable.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

HOSTS = sorted(os.environ.get("ORCHESJOB_EXAMPLE_HOSTS", "batch_host_1,batch_host_2").split(","))
STATE_DIR = os.environ.get("ORCHESJOB_EXAMPLE_STATE_DIR") or None
OUT = os.environ.get("ORCHESJOB_EXAMPLE_OUT", "orchesjob-examples")

# --8<-- [start:dag]
with DAG(
    dag_id="example_orchesjob_mapped_hosts",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator.partial(
        task_id="rotate_logs",
        state_dir=STATE_DIR,
        command=[
            "sh",
            "-c",
            'mkdir -p "$OUT" && echo "rotated on $(hostname), map index $IDX"'
            ' >> "$OUT/example_orchesjob_mapped_hosts.log"',
        ],
        env={"OUT": OUT, "IDX": "{{ ti.map_index }}"},
        poll_interval=1,
        max_active_tis_per_dag=4,  # at most 4 hosts at once
    ).expand(ssh_conn_id=HOSTS)
# --8<-- [end:dag]

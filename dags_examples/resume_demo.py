"""Resume demo: a non-idempotent job over SSH whose retry reattaches instead of running twice.

The task appends ONE line to a side-effect file on the remote host, then works for
``params.steps`` x 2 seconds, printing a line per step. Kill the Airflow task process while the
job runs (``bash scripts/demo.sh`` does exactly that): Airflow retries the task, and try 2 finds the
job still RUNNING under the same run key (``af/<dag_id>/<task_id>/<map_index>/<run_id>``),
reattaches to it, streams the rest of its output and succeeds when it does. The side-effect file
still has one line: the job ran once.

Needs an ``ssh`` connection named ``orchesjob_demo_ssh`` (login, key, host key), for example::

    export AIRFLOW_CONN_ORCHESJOB_DEMO_SSH='{"conn_type": "ssh", "host": "web1", "login": "deploy",
        "extra": {"key_file": "/path/id_ed25519", "host_key": "ssh-ed25519 AAAA..."}}'
"""

from __future__ import annotations

from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.10
    from airflow import DAG
    from airflow.models.param import Param

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

# A plain shell script, run by /bin/sh -c on the target. Jinja renders run_id and params first;
# run ids only contain [A-Za-z0-9_.~:+-], so quoting them in "..." is safe.
JOB = """
set -e
out="$HOME/orchesjob-demo"
mkdir -p "$out"
echo "side effect by {{ run_id }} at $(date -u +%H:%M:%S)" >> "$out/side-effect-{{ run_id }}.txt"
echo "job pid $$ started; the side effect is written once, now"
i=1
while [ "$i" -le {{ params.steps | int }} ]; do
    echo "step $i/{{ params.steps | int }}"
    sleep 2
    i=$((i + 1))
done
echo "finished"
"""

with DAG(
    dag_id="orchesjob_resume_demo",
    description="A remote job over SSH whose retry reattaches to it instead of starting a copy",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"steps": Param(10, type="integer", minimum=1, maximum=600, description="2-second steps")},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    tags=["orchesjob", "demo"],
):
    OrchesjobOperator(
        task_id="remote_job",
        ssh_conn_id="orchesjob_demo_ssh",
        command=JOB,
        poll_interval=1,
        # The demo kills the task process; abort_on_kill (default True) only acts on a graceful
        # kill (SIGTERM: clear/mark failed in the UI), never on a crash.
    )

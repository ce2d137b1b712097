"""End to end: a real Airflow 3 stack, a real sshd; kill the task or the triggerer mid-job; the
same job goes on (the first and third events of docs/guides/kill-and-abort.md).

The cases run in the shared stack of tests/e2e (events_runner.py; session fixture ``events``),
concurrently with the cases of test_airflow_events.py. The stack runs in a temporary
AIRFLOW_HOME: PostgreSQL metadata DB, LocalExecutor, `airflow api-server` (the execution API the
task processes talk to), two schedulers, `dag-processor` and two triggerers, with a task heartbeat
timeout of 45 s so the scheduler notices a killed task quickly. Each case's DAG has one OrchesjobOperator
task (retries=1, retry_delay=1 s) whose remote job appends one line to a side-effect file on the
target, waits for a release file, then prints `done`.

* test_worker_killed_retry_reattaches (case worker_sigkill, sync wait in the worker): once the
  remote job RUNS, kill -9 every process of the task on the Airflow side (the LocalExecutor
  worker that supervises it and the task runner it forked). The scheduler fails the silent task
  instance and retries it; try 2 must REATTACH to the same job, which then succeeds: one line in
  the side-effect file, one job (attempt_no 1) in the agent's history for the run key.
* test_triggerer_killed_deferred_task_resumes (case triggerer_sigkill, deferrable=True): once the
  other deferred cases of its phase are over, kill -9 the triggerer (of the two) that runs the
  trigger and start it again; the trigger is picked up again (by the other triggerer once the
  dead one's heartbeat is 15 s old, or by the new one) and the task finishes with the same single
  job.

The remote job runs until the case creates its release file, so it cannot finish "too early" on
a slow machine (then try 2 would adopt instead of reattach). Every wait is a poll with a deadline.
"""

from __future__ import annotations

from events_runner import check_case, e2e_marks

pytestmark = e2e_marks()


#: the events_runner case each test checks (conftest starts only the cases of collected tests)
CASE_OF_TEST = {
    "test_worker_killed_retry_reattaches": "worker_sigkill",
    "test_triggerer_killed_deferred_task_resumes": "triggerer_sigkill",
}


def test_worker_killed_retry_reattaches(events):
    check_case(events, "worker_sigkill")


def test_triggerer_killed_deferred_task_resumes(events):
    check_case(events, "triggerer_sigkill")

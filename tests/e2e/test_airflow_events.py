"""End to end: every Airflow event of the table in docs/guides/kill-and-abort.md ("Kill and abort:
what each Airflow event does to the remote job"), on ONE real Airflow 3 stack (PostgreSQL,
api-server, two schedulers + LocalExecutor, dag-processor, two triggerers;
testkit/airflow_stack.py) and the real loopback sshd. The cases of this module run in phase 0,
before the control-plane cases of test_control_plane.py.

Each case has its own generated DAG (one OrchesjobOperator task, retries=1, retry_delay 1 s), its
own agent state dir, side-effect file and release file on the target. The remote command appends
one line `start` to the side-effect file (so its line count = the number of executions), waits
for the release file that the case creates when it wants the job to end (never a fixed sleep), and
prints `done`. All cases of tests/e2e run at the same time on one stack (one thread each:
events_runner.py, session fixture ``events`` in conftest.py), so the leg takes about as long as
its longest case; each test waits for its own case and, when it fails, prints the case's timeline,
a summary (per try: what orchesjob did and the error; per job: status, acknowledged or not), the
task and trigger logs, the agent's history and the tails of the stack's component logs.

Every case asserts the number of executions, the final task state and the agent's history for
the run key:

* worker_sigterm: a graceful worker stop without a user action (SIGTERM to the task runner and
  its children, SIGKILL of what is left 10 s later, as a container stop does; the LocalExecutor
  worker process that hosts the task's supervisor is spared: killed while it holds the
  executor's queue lock it would hang every other worker of the shared stack). The remote job is
  NOT aborted (still RUNNING after on_kill had its time), the retry reattaches: 1 execution,
  success.
* clear_running_sync (deferrable=False): the user clears the running task. The job is ABORTED
  and its result acknowledged; the new try starts attempt 2: 2 executions, success.
* clear_deferred: the same while the task is deferred (the race of issue 8: the new try must
  neither reattach to the old job nor fail with ABORTED): 2 executions, success.
* mark_failed_deferred: the user marks the deferred task failed: the job is ABORTED (the
  trigger's on_kill; the wait for it is a hang ceiling, not a budget); the user then clears the
  task: it runs again, 2 executions, success.
* clear_success / clear_success_strict: the user clears a task that succeeded: a new attempt,
  2 executions; with strict=True the result is kept: 1 execution; success both times.
* sshd_outage_deferred: the sshd the task's connection uses (a second sshd of the test kit, so
  the other cases keep theirs) is stopped, its sessions cut, for 3x poll_interval during the
  deferred wait, then started again: the same try picks the job up, 1 execution, success; the
  trigger's log shows it retried (the outage was felt).
* supervisor_killed: the job's supervisor is killed with -9 on the target, then the command
  ends: its outcome is unknown; the task fails saying so ("unknown") and the retry does not run
  the command again: 1 execution, failed.
* end_from_trigger (end_from_trigger=True): the job SUCCEEDS while deferred; the trigger ends the
  task (no worker resumes it: the try's task log lacks the worker's end), 1 execution, success,
  the result acknowledged, the record in XCom.
* start_in_triggerer (with end_from_trigger): the task process renders and defers without SSH
  (its log names no start); the trigger starts the job, watches it and ends the task: 1
  execution, success.

In both clear cases and after the mark, the try after the user's action must be try 2 and must
start a new attempt (a try that adopts the aborted job and fails, hidden by a retry that then
runs, is the bug of issue 8). The worker SIGKILL case (1 execution) and the triggerer SIGKILL
case run on the same stack; test_resume_after_crash.py checks them. `-k`/one module starts only
the cases of the selected tests.
"""

from __future__ import annotations

import pytest
from events_runner import CASES, CONTROL_PLANE, check_case, e2e_marks

pytestmark = e2e_marks()

#: the cases of this module (test_resume_after_crash.py has worker_sigkill and triggerer_sigkill,
#: test_control_plane.py the CONTROL_PLANE cases)
EVENTS = [name for name in CASES if name not in ("worker_sigkill", "triggerer_sigkill", *CONTROL_PLANE)]


@pytest.mark.parametrize("name", EVENTS)
def test_airflow_event(events, name):
    check_case(events, name)

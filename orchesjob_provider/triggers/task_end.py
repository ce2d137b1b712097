"""Ending a task in the triggerer (``end_from_trigger=True``): when the trigger may, and how.

Why: a deferrable task otherwise takes a worker slot twice, once to start its job and once, after
its trigger fired, to print the last lines, acknowledge the result and succeed. At fan-out (a
thousand mapped tasks) that second task process is about half of Airflow's whole CPU for the run.
Airflow 2.10+ lets a trigger end its task itself (``TaskSuccessEvent``); the triggerer then sets
the state, pushes the XComs the event carries and sends the success callback to the
dag-processor.

The trigger ends the task only when it can do everything the worker's end does, in the same order
(operators/outcome.py): the job **SUCCEEDED**; every line of its log is written (the end's lines
and what follows them, a last line without a newline included) and is **in the task's log**
(the try's trigger log file holds every piece: log_files.settled_offsets); the result is
**acknowledged** on the host. Anything else (a failure, a skip code, a lost job, a timeout, an
error, a line the file lacks, an acknowledgement that failed) resumes the task on a worker exactly
as without the option, so failures keep Airflow's retry path, ``skip_on_exit_code`` and the
failure callbacks on every Airflow version. :func:`ends_in_trigger` is that table.

The order keeps the resume rule: the result is acknowledged before the event, as the worker does
before it returns. If the triggerer dies in between, another one runs the trigger again: the job
is still SUCCEEDED, its lines are already in the files (it writes none twice), it acknowledges
again (the first acknowledgement counts) and ends the task. If Airflow never records the success
and retries the task, the retry adopts the acknowledged success of its clear epoch (the resume
rule's "Airflow lost the success" row): never a second run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchesjob_provider.client.records import JobLogs, JobRecord
from orchesjob_provider.exceptions import AgentUnavailable, OrchesjobError
from orchesjob_provider.triggers.log_files import settled_offsets
from orchesjob_provider.utils import metrics

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook
    from orchesjob_provider.triggers.log_lines import LineFeed

#: the payload of a ``TaskSuccessEvent``: what ``execute_complete`` receives where an end event
#: resumes the task anyway (``dag.test()`` runs triggers inline and resumes with their payload)
ENDED_PAYLOAD = "success"

#: why the worker ends the task after all (the trigger logs it), by the first step that failed
NOT_SUCCEEDED = "the job did not succeed"
LINES_HELD = "lines another triggerer wrote are still being skipped"
LINES_MISSING = "the task's log file does not hold every line yet"
NOT_ACKED = "the result could not be acknowledged"
NOT_READ = "the rest of the log could not be read"


def ends_in_trigger(job: JobRecord, read_all: bool, pending: bool, in_file: bool, acked: bool) -> str | None:
    """The decision table: None when the trigger ends the task, else why the worker does.

    One row per step of the end, in the order they run; the first that failed names the reason.
    """
    if not job.succeeded:
        return NOT_SUCCEEDED
    if not read_all:
        return NOT_READ
    if pending:
        return LINES_HELD
    if not in_file:
        return LINES_MISSING
    if not acked:
        return NOT_ACKED
    return None


def xcoms_of(job: JobRecord, push: bool) -> dict[str, Any] | None:
    """The XComs the end event carries: the operator's return value (the job record), if pushed."""
    return {"return_value": job.to_dict()} if push else None


async def write_rest(hook: AsyncOrchesjobHook, job_id: str, feed: LineFeed, res: JobLogs,
                     read_at: dict[str, int]) -> bool:
    """Write the end's lines and every byte after them (``read_at``: where ``res``'s bytes start);
    False when the log could not be read to its end (the worker then prints the rest)."""
    while True:
        feed.feed(res)
        read_at = res.next_offsets(read_at)
        if res.job is None or not res.more:
            feed.flush()
            return True
        try:
            res = await hook.poll_job(job_id, read_at)
        except (AgentUnavailable, OrchesjobError):
            return False


async def finish_here(trigger: Any, hook: AsyncOrchesjobHook, feed: LineFeed, res: JobLogs,
                      read_at: dict[str, int]) -> JobRecord | None:
    """Do the worker's end in the trigger: the acknowledged record when the task may end here,
    None when the worker must (the reason is logged)."""
    job = res.job
    assert job is not None and trigger.job_id
    read_all = job.succeeded and await write_rest(hook, trigger.job_id, feed, res, read_at)
    pending = any(feed.skip.values())
    in_file = False
    if read_all and not pending:
        ti = getattr(trigger, "task_instance", None)
        in_file = await settled_offsets(ti, trigger.job_id, feed, trigger._token) == feed.offsets
    acked = await _ack(hook, trigger.job_id, trigger.log) if in_file else None
    why = ends_in_trigger(job, read_all, pending, in_file, acked is not None)
    job = acked or job
    if why is not None:
        trigger.log.info("orchesjob: job %s %s; the task ends on a worker (%s)", job.job_id, job.status, why)
        return None
    trigger.log.info("Remote job %s SUCCEEDED with exit code %s and is acknowledged: the task ends in "
                     "the triggerer (end_from_trigger)", job.job_id, job.exit_code)
    metrics.job_finished(job, metrics.trigger_tags(trigger))
    return job


async def _ack(hook: AsyncOrchesjobHook, job_id: str, log: Any) -> JobRecord | None:
    try:
        return JobRecord.from_dict((await hook.call("ack", job_id=job_id))["job"])
    except (AgentUnavailable, OrchesjobError, KeyError, TypeError) as e:
        log.warning("Could not acknowledge remote job %s: %s", job_id, e)
        return None

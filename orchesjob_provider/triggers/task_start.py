"""Starting the job from the trigger (``start_in_triggerer=True``): what the trigger does before
it watches, and how a kill finds a job whose start was in flight.

Why: a deferrable task's first worker slot mostly pays for SSH in a fresh task process (importing
paramiko, ~0.2 s of CPU, and a key exchange, ~0.05 s, measured in benchmarks/airflow_fanout.py's
task processes), then defers. With this option the worker still runs ``execute()``: it renders the
templates, checks every argument and computes what the resume rule needs (the run key, the clear
epoch, the task instance), and defers at once with that start request; the trigger sends it over
the triggerer's shared connection to the host, batched with the other triggers' starts
(hooks/ssh/start_batcher.py), then watches the job as usual. Unlike Airflow's own
``start_from_trigger``, mapped values, templates, pools and the clear epoch all keep working:
the worker still runs (docs/design/start-from-trigger.md).

The start is the same resume-mode ``start`` the worker sends, so it may be sent any number of
times: a trigger run again (its triggerer died, before or after the start reached the host)
reattaches to the running job, or adopts the finished one, or starts it if it never started.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from orchesjob_provider.client.records import normalize_offsets
from orchesjob_provider.exceptions import AgentUnavailable, OrchesjobError
from orchesjob_provider.utils import metrics
from orchesjob_provider.utils.messages import start_lines, unknown_outcome_message
from orchesjob_provider.utils.waiting import Watch
from remote_agent.common.vocab import UNKNOWN

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook


class StartFailed(Exception):
    """The start cannot go on: ``kind`` is the event to fire (``error``: the host could not be
    reached for the whole reconnect budget, or the try's timeout passed first; ``refused``: the
    agent's answer says why, e.g. an unknown outcome or a strict key that must be unlocked)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def start_job(trigger: Any, hook: AsyncOrchesjobHook) -> None:
    """Send the trigger's start request; on success the trigger knows its job (``job_id``) and
    the log offsets earlier tries showed (``offsets``). Raises :class:`StartFailed`."""
    watch = Watch(trigger.log, {}, deadline=trigger.timeout_at, max_failures=trigger.max_reconnect_attempts)
    run_key = str(trigger.start["run_key"])
    while True:
        if watch.expired:
            raise StartFailed("error", "the try's timeout passed before the remote job could be started")
        trigger._starting = asyncio.ensure_future(hook.start(trigger.start))
        try:
            action, job = await asyncio.shield(trigger._starting)
            break
        except AgentUnavailable as e:
            delay = watch.failed(e)
            if delay is None:
                raise StartFailed("error", watch.give_up_message(e)) from None
            await asyncio.sleep(delay)
        except OrchesjobError as e:
            raise StartFailed("refused", f"the start of run key {run_key} was refused: {e}") from None
    trigger.job_id = job.job_id
    trigger.offsets = normalize_offsets(job.raw.get("log_shown"))
    for level, line in start_lines(action, job, hook.where, run_key):
        getattr(trigger.log, level)("%s", line)
    metrics.start_action(action, metrics.trigger_tags(trigger))
    if action == UNKNOWN:  # not acknowledged: every try answers the same until it is released
        raise StartFailed("refused", unknown_outcome_message(job, hook.where))


async def job_of_start(trigger: Any, hook: AsyncOrchesjobHook, wait: float) -> str | None:
    """For a kill while the start may be in flight: the job it started (waiting up to ``wait`` s
    for the start's answer), else the run key's latest job on the host, else None."""
    starting = getattr(trigger, "_starting", None)
    if starting is not None:
        try:
            _, job = await asyncio.wait_for(asyncio.shield(starting), wait)
            return str(job.job_id)
        except Exception:  # it failed or did not answer in time: ask the host
            pass
    try:
        job = await hook.status(run_key=str(trigger.start["run_key"]))
    except OrchesjobError:
        return None
    return job.job_id if job is not None else None

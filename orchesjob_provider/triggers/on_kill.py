"""What a deferred task's trigger does when a user kills the task: abort and acknowledge its job.

Airflow 3.3+ calls the trigger's ``on_kill`` for a user action (mark failed/success, clear) and
never on a triggerer shutdown. Before 3.3 the trigger is only cancelled, for either reason, so it
reads the task instance's state first (``task_state.kill_action``) and aborts only for a user's
kill. Either way the abort outlasts the triggerer's repeated cancels (triggers/cancels.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from orchesjob_provider.client.wire import abort_timeout
from orchesjob_provider.exceptions import OrchesjobWrongState
from orchesjob_provider.triggers.cancels import finish_despite_cancels, on_kill_budget
from orchesjob_provider.triggers.task_start import job_of_start
from orchesjob_provider.utils.task_state import KEEP, TaskIdent, kill_action, read_task_state_async


class AbortOnKill:
    """The kill half of OrchesjobTrigger (its ``job_id``, ``start``, ``abort_on_kill``,
    ``abort_grace_seconds``, ``_hook()``, ``log`` and ``task_instance``)."""

    job_id: str | None
    start: dict[str, Any] | None
    abort_on_kill: bool
    abort_grace_seconds: float
    log: Any
    task_instance: Any

    def _hook(self) -> Any:
        raise NotImplementedError

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user action (mark failed/success, clear) unassigned the deferred task;
        never called on a triggerer shutdown. The triggerer cancels again while this runs
        (triggers/cancels.py): the abort outlasts that."""
        cause = "task killed by a user action while deferred"
        budget = on_kill_budget(abort_timeout(self.abort_grace_seconds))
        await finish_despite_cancels(self._abort(cause), budget, self.log)

    async def _abort(self, cause: str) -> None:
        """Abort and acknowledge the job: a later try of the run key starts a new attempt.

        A late call (the task was cleared, and its new try already superseded this job) only meets
        the old, finished job: the agent answers "not running", nothing else happens.
        """
        if not self.abort_on_kill:
            return
        hook = self._hook()
        async with hook:
            if not self.job_id and self.start is not None:  # killed while the start was in flight
                self.job_id = await job_of_start(self, hook, abort_timeout(self.abort_grace_seconds))
            if not self.job_id:
                return
            try:
                await asyncio.wait_for(
                    hook.abort(self.job_id, reason=cause, grace_seconds=self.abort_grace_seconds, ack=True),
                    timeout=abort_timeout(self.abort_grace_seconds),
                )
                self.log.info("%s: aborted and acknowledged remote job %s", cause, self.job_id)
            except OrchesjobWrongState:
                self.log.info("%s: remote job %s had already finished; nothing to abort", cause, self.job_id)
            except Exception as e:
                self.log.warning("%s: could not abort remote job %s: %s", cause, self.job_id, e)

    async def _abort_if_task_killed(self) -> None:
        """Before Airflow 3.3: cancellation also happens on triggerer shutdown/redistribution.

        Like the official providers' ``safe_to_cancel()``: abort only if the task instance's state
        says a user killed it (``task_state.kill_action``); while it is still deferred (or the state
        cannot be read) the trigger just moves elsewhere. A clear racing with this check (the new
        try deferred again already) is covered by the clear epoch: the new try superseded the job.
        """
        if not self.abort_on_kill or not (self.job_id or self.start):
            return
        state = await self._task_state()
        if kill_action(state) == KEEP:
            self.log.info(
                "Trigger cancelled while the task is %s: remote job %s keeps running", state, self.job_id
            )
            return
        await self._abort(f"task killed by a user action while deferred (task state {state})")

    async def _task_state(self) -> str | None:
        return await read_task_state_async(TaskIdent.of(self.task_instance), log=self.log)

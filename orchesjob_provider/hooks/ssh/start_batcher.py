"""Batched starts from the triggerer: the triggers of one loop that start jobs on the same host at
once send them in one ``starts`` exec over the shared connection (``start_in_triggerer``).

The async twin of client/starts.py's ``GroupCommit`` (which coordinates threads of the worker):
a start waits :data:`JOIN_SECONDS` for the starts of the same loop iteration, then goes (alone:
a plain ``start``; with others: one ``starts``); starts that arrive while an exec is in flight go
together in the next one (up to ``MAX_BATCH``). The
agent decides each start of a batch in its own transaction, in the order sent, so batching
changes the cost (one SSH session and one agent process per batch), never a decision. A start
the agent rolled back as busy is sent again with the call's backoff; any other answer, or the
whole call's failure, goes to that start's trigger only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from orchesjob_provider.client.starts import MAX_BATCH, BusyResend, StartAnswer, call_seconds, outcome

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

#: how long a new batch waits for the starts of the same loop iteration to join it
JOIN_SECONDS = 0.01


class BatchStarter:
    """One per (conn id, state dir, remote python) and event loop (``AsyncOrchesjobHook.starter``)."""

    def __init__(self, hook: AsyncOrchesjobHook) -> None:
        self.hook = hook
        self.pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.execs = 0  # start/starts execs sent (tests and benchmarks count them)

    async def start(self, fields: dict[str, Any]) -> Any:
        """(action, JobRecord) of one start, or its error raised."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending.append((fields, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        await asyncio.sleep(JOIN_SECONDS)
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            batch = [b for b in batch if not b[1].done()]  # a cancelled trigger's start is dropped
            if not batch:
                continue
            results: list[StartAnswer | BaseException]
            try:
                results = list(await self._send([f for f, _ in batch]))
            except Exception as e:  # the whole call failed: every start of the batch sees it
                results = [e] * len(batch)
            for (_, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def _send(self, batch: list[dict[str, Any]]) -> list[StartAnswer]:
        if len(batch) == 1:
            self.execs += 1
            one = batch[0]
            reply = await self.hook.call("start", call_timeout=call_seconds([one]), **one)
            return [outcome(reply)]
        plan = BusyResend(batch, where=self.hook.where)
        while (part := plan.part()) is not None:
            self.execs += 1
            reply = await self.hook.call("starts", starts=part, call_timeout=call_seconds(part))
            await asyncio.sleep(plan.take(reply))
        return plan.answers()

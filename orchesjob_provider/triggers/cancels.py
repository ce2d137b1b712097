"""Finish a trigger's abort although the triggerer cancels the trigger again meanwhile.

A user action (mark failed/success, clear) on a deferred task makes the triggerer cancel the
trigger's task, and the trigger then aborts the remote job (``on_kill`` on Airflow 3.3+, the
``except CancelledError`` of ``run`` before). But the triggerer keeps cancelling that task on
every state sync until it has ended: Airflow 3.3 sends the trigger in ``to_cancel`` on each sync
until it reports it finished, and 2.x ``update_triggers`` re-cancels every running trigger that
is no longer requested. An abort that outlives one sync (an SSH connect, the SIGTERM grace) was
therefore itself cancelled, and Airflow swallows that second ``CancelledError`` in silence: the
remote job kept running although its task was marked failed (seen in CI, e2e case
``mark_failed_deferred``).

So the abort runs as its own task, and the caller absorbs further cancels until the abort ends or
a time budget is spent. The budget stays inside Airflow's own ``[triggerer] on_kill_timeout`` so
the timeout's cancel is never the one absorbed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

#: Airflow's default ``[triggerer] on_kill_timeout`` (3.3+)
ON_KILL_TIMEOUT_DEFAULT = 30.0
#: how much of Airflow's on_kill timeout is left to the triggerer
ON_KILL_MARGIN = 2.0


def on_kill_budget(abort_seconds: float) -> float:
    """Seconds an abort may take inside ``on_kill``: its own timeout, within Airflow's cap."""
    try:
        from airflow.configuration import conf

        cap = conf.getfloat("triggerer", "on_kill_timeout", fallback=ON_KILL_TIMEOUT_DEFAULT)
    except Exception:
        cap = ON_KILL_TIMEOUT_DEFAULT
    return max(1.0, min(abort_seconds, cap - ON_KILL_MARGIN))


async def finish_despite_cancels(work: Awaitable[Any], budget: float, log: Any) -> None:
    """Await ``work`` to its end; cancels of the calling task meanwhile are absorbed.

    After ``budget`` seconds the work is cancelled and a warning logged. Exceptions of the work
    propagate. Each absorbed cancel is undone with ``Task.uncancel`` (3.11+), so structured
    timeouts around the caller (Airflow's ``wait_for(on_kill())``) keep their count right.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    deadline = loop.time() + budget
    absorbed = 0
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
                return
            except asyncio.TimeoutError:
                log.warning("Gave up on the abort after %.1f s (%d cancels absorbed)", budget, absorbed)
                return
            except asyncio.CancelledError:
                if task.done():
                    if task.cancelled():  # the work itself was cancelled, not only us
                        raise
                    _uncancel()
                    task.result()  # it ended as the cancel came: its outcome stands
                    return
                absorbed += 1
                _uncancel()
                log.debug("Cancelled again while aborting; the abort goes on (%d)", absorbed)
    finally:
        if not task.done():
            task.cancel()


def _uncancel() -> None:
    current = asyncio.current_task()
    if current is not None and hasattr(current, "uncancel"):
        current.uncancel()

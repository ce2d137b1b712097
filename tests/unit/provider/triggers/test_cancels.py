"""finish_despite_cancels: an abort outlives the triggerer's repeated cancels, within a budget."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from orchesjob_provider.triggers.cancels import finish_despite_cancels, on_kill_budget

LOG = logging.getLogger("test.cancels")


async def _recancel(task: asyncio.Task, every: float) -> int:
    """Cancel ``task`` the way the triggerer's state sync does, until it ends."""
    n = 0
    while not task.done():
        task.cancel("__airflow_user_action__")
        n += 1
        await asyncio.wait([task], timeout=every)
    return n


async def _abort(done: list) -> None:
    """An abort that takes 0.3 s (an SSH round trip and the SIGTERM grace, shortened)."""
    await asyncio.sleep(0.3)
    done.append("aborted")


def test_the_work_ends_although_the_caller_is_cancelled_again_and_again():
    done = []

    async def on_kill():
        await finish_despite_cancels(_abort(done), 5.0, LOG)
        return "returned"

    async def main():
        task = asyncio.ensure_future(on_kill())
        await asyncio.sleep(0)
        cancels = await _recancel(task, 0.01)
        return cancels, task.result()

    cancels, result = asyncio.run(main())
    assert done == ["aborted"] and result == "returned"
    assert cancels > 10  # the cancels really came while the work ran


def test_without_it_the_second_cancel_loses_the_work():
    """The failure this module exists for: the same driver, the work awaited directly."""
    done = []

    async def main():
        task = asyncio.ensure_future(_abort(done))
        await asyncio.sleep(0)
        await _recancel(task, 0.01)
        return task.cancelled()

    assert asyncio.run(main()) is True and done == []


def test_the_budget_bounds_it_and_cancels_the_work(caplog):
    cancelled = []

    async def stuck():
        try:
            await asyncio.sleep(3600)  # only the budget can end it
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.ensure_future(finish_despite_cancels(stuck(), 0.3, LOG))
        await asyncio.sleep(0)
        await _recancel(task, 0.05)
        await asyncio.sleep(0)  # let the work see its cancel
        return loop.time() - t0, task

    with caplog.at_level(logging.WARNING, logger="test.cancels"):
        took, task = asyncio.run(asyncio.wait_for(main(), 120))  # a ceiling for a hang
    # it waited out its budget (a lower bound: load only lengthens it), then gave up
    assert took >= 0.25 and not task.cancelled() and task.result() is None
    assert cancelled == [True]
    assert "Gave up on the abort after 0.3 s" in caplog.text


def test_an_error_of_the_work_propagates():
    async def fails():
        await asyncio.sleep(0.05)
        raise RuntimeError("agent said no")

    with pytest.raises(RuntimeError, match="agent said no"):
        asyncio.run(finish_despite_cancels(fails(), 5.0, LOG))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel is 3.11+")
def test_absorbed_cancels_are_uncancelled_so_an_outer_timeout_still_counts_right():
    """Airflow wraps on_kill in wait_for(..., on_kill_timeout): after absorbed cancels the task's
    cancel count is back where it was, and the outer timeout neither fires nor is swallowed."""

    async def abort():
        await asyncio.sleep(0.2)

    async def on_kill_in_airflow():
        await asyncio.wait_for(finish_despite_cancels(abort(), 5.0, LOG), timeout=30)
        return asyncio.current_task().cancelling()

    async def main():
        task = asyncio.ensure_future(on_kill_in_airflow())
        await asyncio.sleep(0)
        await _recancel(task, 0.02)
        return task.result()

    assert asyncio.run(main()) == 0


def test_on_kill_budget_stays_inside_airflows_on_kill_timeout(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "30")
    assert on_kill_budget(65.0) == 28.0
    assert on_kill_budget(10.0) == 10.0
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "120")
    assert on_kill_budget(65.0) == 65.0

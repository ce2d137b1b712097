"""The on_kill decision table and the clear epoch (orchesjob_provider.utils.task_state), in-process."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from orchesjob_provider.utils import task_state
from orchesjob_provider.utils.task_state import (
    ABORT,
    KEEP,
    UNKNOWN,
    TaskIdent,
    clear_epoch,
    is_task_timeout,
    kill_action,
    read_task_state,
)

SHUTDOWN = ["running", "deferred", "up_for_retry", UNKNOWN]
USER_ACTION = ["restarting", "failed", "success", "skipped", "removed", None, "scheduled", "queued"]


@pytest.mark.parametrize("state", SHUTDOWN)
def test_a_live_or_unreadable_state_is_a_shutdown_the_job_keeps_running(state) -> None:
    assert kill_action(state) == KEEP


@pytest.mark.parametrize("state", USER_ACTION)
def test_any_other_state_is_a_user_action_the_job_is_aborted(state) -> None:
    assert kill_action(state) == ABORT


@pytest.mark.parametrize("state", SHUTDOWN + USER_ACTION)
def test_a_timeout_always_aborts(state) -> None:
    assert kill_action(state, timed_out=True) == ABORT


def test_task_timeout_is_recognised_by_class_name_on_both_majors() -> None:
    class AirflowTaskTimeout(BaseException):
        pass

    class Sub(AirflowTaskTimeout):
        pass

    assert is_task_timeout(AirflowTaskTimeout()) and is_task_timeout(Sub())
    assert not is_task_timeout(TimeoutError()) and not is_task_timeout(None)
    try:
        raise Sub()
    except BaseException:
        assert task_state.timed_out_now()
    assert not task_state.timed_out_now()


def test_state_reader_answers_unknown_on_error_and_on_a_hang(monkeypatch) -> None:
    ident = TaskIdent("d", "t", "r", -1)
    monkeypatch.setattr(task_state, "_read", lambda i: "restarting")
    assert read_task_state(ident) == "restarting"

    def boom(i):
        raise RuntimeError("no supervisor")

    monkeypatch.setattr(task_state, "_read", boom)
    logged: list = []
    log = SimpleNamespace(warning=lambda *a: logged.append(a))
    assert read_task_state(ident, log=log) == UNKNOWN and logged
    release = threading.Event()
    # a read that ignored its 0.3 s timeout would answer "failed" after 60 s (a ceiling)
    monkeypatch.setattr(task_state, "_read", lambda i: release.wait(60) and "failed")
    assert read_task_state(ident, timeout=0.3) == UNKNOWN
    release.set()
    assert read_task_state(None) == UNKNOWN


def test_task_ident_of_a_task_instance() -> None:
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=None)
    assert TaskIdent.of(ti) == TaskIdent("d", "t", "r", -1)
    assert TaskIdent.of(None) is None and TaskIdent.of(SimpleNamespace(dag_id="d")) is None


def test_clear_epoch_changes_with_max_tries_and_clear_number() -> None:
    ti = SimpleNamespace(max_tries=3)
    assert clear_epoch({"ti": ti, "dag_run": SimpleNamespace(clear_number=2)}) == "3:2"
    assert clear_epoch({"ti": ti, "dag_run": SimpleNamespace()}) == "3:0"
    assert clear_epoch({"ti": ti}) == "3:0"
    run = SimpleNamespace(clear_number=0)
    assert clear_epoch({"ti": SimpleNamespace(max_tries=5), "dag_run": run}) == "5:0"
    assert clear_epoch({"ti": SimpleNamespace()}) is None
    assert clear_epoch({}) is None

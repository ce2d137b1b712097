"""client/starts.py: one start's fields, a ``starts`` reply's answers, and the group commit."""

from __future__ import annotations

import threading

import pytest

from orchesjob_provider.client.retry import CallRetry
from orchesjob_provider.client.starts import (
    BusyResend,
    GroupCommit,
    answers,
    busy,
    call_seconds,
    fields_of,
    seconds_needed,
    start_fields,
)
from orchesjob_provider.exceptions import OrchesjobBadRequest, OrchesjobBusy, OrchesjobError

JOB = {"job_id": "j1", "run_key": "k", "status": "RUNNING", "attempt_no": 1}


def test_fields_leave_out_what_was_not_given():
    assert start_fields(["sh", "-c", "x"], "k") == {
        "run_key": "k", "argv": ["sh", "-c", "x"], "env": {}, "strict": False, "mode": "resume",
        "start_timeout": 10,
    }
    f = start_fields(("a",), "k", epoch="e1", grace_seconds=2, rerun_unknown=True, locks={"write": ("db",)},
                     slots={"gpu": 1}, queue_timeout=3, check={"argv": ["true"]}, task_instance="ti")
    assert f["grace_seconds"] == 2 and f["rerun_unknown"] is True and f["locks"] == {"write": ["db"]}
    assert f["queue_timeout"] == 3.0 and f["check"] == {"argv": ["true"]} and f["task_instance"] == "ti"
    assert "grace_seconds" not in start_fields(["a"], "k", grace_seconds=9)  # only with an epoch
    assert seconds_needed(f) == 12 and seconds_needed(start_fields(["a"], "k")) == 10


def test_fields_of_takes_start_keywords_only():
    assert fields_of({"argv": ["a"], "run_key": "k"})["run_key"] == "k"
    with pytest.raises(TypeError, match=r"unknown start argument.*: command"):
        fields_of({"argv": ["a"], "run_key": "k", "command": "x"})


def test_answers_keep_order_and_type_each_error():
    reply = {"starts": [
        {"ok": True, "action": "started", "job": JOB},
        {"ok": False, "error": {"code": 2, "kind": "bad_request", "message": "argv must be a list"}},
        {"ok": False, "error": {"code": 5, "kind": "busy", "message": "database is locked"}},
        {"ok": True, "action": "started", "job": {**JOB, "job_id": "j2"},
         "superseded": {"job_id": "j0", "status": "ABORTED", "aborted": True}},
        "garbage",
    ]}
    got = answers(reply, 5, where="u@h:22")
    assert got[0][0] == "started" and got[0][1].job_id == "j1"
    assert isinstance(got[1], OrchesjobBadRequest) and "u@h:22" in str(got[1]) and "argv" in str(got[1])
    assert busy(got[2]) and not busy(got[1]) and not busy(got[0])
    assert got[3][1].raw["superseded"]["job_id"] == "j0"
    assert type(got[4]) is OrchesjobError
    short = answers({"starts": []}, 2, where="h")
    assert len(short) == 2 and all(isinstance(a, OrchesjobError) for a in short)


OK = {"ok": True, "action": "started", "job": JOB}
BUSY = {"ok": False, "error": {"code": 5, "kind": "busy", "message": "database is locked"}}
BAD = {"ok": False, "error": {"code": 2, "kind": "bad_request", "message": "no"}}


def test_busy_resend_sends_only_the_busy_starts_again_with_a_growing_pause():
    batch = [{"run_key": f"k{i}", "argv": ["a"]} for i in range(4)]
    plan = BusyResend(batch, where="h")
    assert plan.part() == batch and call_seconds(batch) == 40 + call_seconds([])
    first = plan.take({"starts": [OK, BUSY, BAD, BUSY]})
    assert plan.part() == [batch[1], batch[3]]
    second = plan.take({"starts": [BUSY, OK]})
    assert plan.part() == [batch[1]]
    assert 0.2 <= first <= 0.4 and 0.4 <= second <= 0.8  # jittered, doubling
    assert plan.take({"starts": [OK]}) == 0 and plan.part() is None and plan.execs == 3
    got = plan.answers()
    assert [a[0] if isinstance(a, tuple) else type(a) for a in got] == [
        "started", "started", OrchesjobBadRequest, "started"]


def test_busy_resend_gives_up_after_max_execs_with_the_busy_error():
    plan = BusyResend([{"run_key": "k", "argv": ["a"]}] * 2, where="h")
    pauses = []
    while plan.part() is not None:
        pauses.append(plan.take({"starts": [OK, BUSY]} if not pauses else {"starts": [BUSY]}))
    assert plan.execs == CallRetry.max_execs and pauses[-1] == 0
    ok, last = plan.answers()
    assert ok[0] == "started" and busy(last)


def test_a_lone_submitter_flushes_at_once_alone():
    seen: list[list[int]] = []
    group: GroupCommit[int, int] = GroupCommit(lambda items: (seen.append(items), [i * 10 for i in items])[1])
    assert group.submit(1) == 10 and group.submit(2) == 20
    assert seen == [[1], [2]] and group.flushes == 2


def test_submitters_arriving_during_a_flush_go_together_in_the_next():
    """The first flush is held open until 30 more threads queued: they all go in one flush
    (max_batch 50), each gets its own result, one its own error."""
    gate, entered = threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def flush(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if items == [0]:
            entered.set()
            assert gate.wait(30)
        return [OrchesjobBusy("no") if i == 7 else i * 2 for i in items]

    group: GroupCommit[int, int] = GroupCommit(flush, max_batch=50)
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = group.submit(i)
        except BaseException as exc:
            results[i] = exc

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert entered.wait(30)
    others = [threading.Thread(target=run, args=(i,)) for i in range(1, 31)]
    for t in others:
        t.start()
    while len(group._queue) < 30:  # every other submitter queued behind the held flush
        threading.Event().wait(0.01)
    gate.set()
    for t in [first, *others]:
        t.join(30)
    assert seen[0] == [0] and sorted(seen[1]) == list(range(1, 31)) and len(seen) == 2
    assert isinstance(results.pop(7), OrchesjobBusy)
    assert results == {i: i * 2 for i in range(31) if i != 7}


def test_a_batch_never_exceeds_max_batch_and_a_failed_flush_reaches_each_submitter():
    seen: list[int] = []

    def flush(items: list[int]) -> list[int]:
        seen.append(len(items))
        raise ConnectionError("ssh lost")

    group: GroupCommit[int, int] = GroupCommit(flush, max_batch=3)
    group._flushing = True  # as if a flush were under way: ten submitters queue
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            group.submit(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    while len(group._queue) < 10:
        threading.Event().wait(0.01)
    with group._cond:
        group._flushing = False
        group._cond.notify_all()
    for t in threads:
        t.join(30)
    assert sum(seen) == 10 and max(seen) <= 3
    assert len(errors) == 10 and all(isinstance(e, ConnectionError) for e in errors)

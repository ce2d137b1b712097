"""Ending a task in the triggerer (triggers/task_end.py): the decision table, and the end's steps
against a fake hook that counts what was asked of the host (acks, reads)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from orchesjob_provider.client.records import JobLogs, JobRecord
from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.triggers import task_end
from orchesjob_provider.triggers.log_lines import LineFeed
from orchesjob_provider.triggers.task_end import (
    LINES_HELD,
    LINES_MISSING,
    NOT_ACKED,
    NOT_READ,
    NOT_SUCCEEDED,
    ends_in_trigger,
    finish_here,
    xcoms_of,
)


def job(status: str = "SUCCEEDED", **extra: Any) -> JobRecord:
    return JobRecord.from_dict({"job_id": "j1", "status": status, "exit_code": 0, **extra})


def answer(offsets: dict[str, int], data: dict[str, bytes], status: str = "SUCCEEDED",
           more: bool = False) -> JobLogs:
    logs = {}
    for stream, chunk in data.items():
        end = offsets.get(stream, 0) + len(chunk)
        logs[stream] = {"offset": offsets.get(stream, 0), "next_offset": end, "more": more,
                        "size": end + (1 if more else 0), "data_b64": base64.b64encode(chunk).decode()}
    return JobLogs.from_reply("j1", {"job": {"job_id": "j1", "status": status, "exit_code": 0}, "logs": logs})


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((job(), True, False, True, True), None),
        ((job("FAILED"), True, False, True, True), NOT_SUCCEEDED),
        ((job("LOST"), True, False, True, True), NOT_SUCCEEDED),
        ((job("ABORTED"), True, False, True, True), NOT_SUCCEEDED),
        ((job(), False, False, True, True), NOT_READ),
        ((job(), True, True, True, True), LINES_HELD),
        ((job(), True, False, False, True), LINES_MISSING),
        ((job(), True, False, True, False), NOT_ACKED),
        ((job("FAILED"), False, True, False, False), NOT_SUCCEEDED),  # the first failed step names it
    ],
)
def test_decision_table(args: tuple, why: str | None) -> None:
    assert ends_in_trigger(*args) == why


def test_xcoms_carry_the_record_only_when_pushed() -> None:
    assert xcoms_of(job(), True) == {"return_value": job().to_dict()}
    assert xcoms_of(job(), False) is None


def test_flush_writes_a_last_line_without_newline_once() -> None:
    written: list[str] = []
    feed = LineFeed(lambda s, t: written.append(t), lambda o: written.append("START"), {"stdout": 0})
    feed.feed(answer({"stdout": 0}, {"stdout": b"a\nb"}))
    assert written == ["START", "a"]
    feed.flush()
    feed.flush()
    assert written == ["START", "a", "b"]
    assert feed.offsets["stdout"] == 3


def test_flush_skips_a_last_piece_another_trigger_wrote() -> None:
    """A trigger run again after its triggerer died: the file holds both pieces already."""
    written: list[str] = []
    feed = LineFeed(lambda s, t: written.append(t), lambda o: None, {"stdout": 0}, {"stdout": 2})
    feed.feed(answer({"stdout": 0}, {"stdout": b"a\nb"}))
    feed.flush()
    assert written == [] and feed.offsets["stdout"] == 3 and feed.skip["stdout"] == 0


class FakeHook:
    """Answers reads from one log, counts acks; ``ack_fails``/``read_fails`` make a step fail."""

    def __init__(self, log: bytes, ack_fails: bool = False, read_fails: bool = False) -> None:
        self.log, self.ack_fails, self.read_fails = log, ack_fails, read_fails
        self.acks = 0
        self.reads: list[dict[str, int]] = []

    async def poll_job(self, job_id: str, offsets: dict[str, int]) -> JobLogs:
        self.reads.append(dict(offsets))
        if self.read_fails:
            raise AgentUnavailable("ssh dropped")
        at = offsets["stdout"]
        chunk = self.log[at : at + 4]
        return answer(offsets, {"stdout": chunk}, more=at + len(chunk) < len(self.log))

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert op == "ack" and args == {"job_id": "j1"}
        if self.ack_fails:
            raise AgentUnavailable("ssh dropped")
        self.acks += 1
        return {"job": {"job_id": "j1", "status": "SUCCEEDED", "exit_code": 0, "acked_at": 1}}


class FakeTrigger:
    job_id = "j1"
    ssh_conn_id = "c"
    _token = "t0"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.log = self

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    warning = info


def end(hook: FakeHook, first: JobLogs) -> tuple[JobRecord | None, list[str], FakeTrigger]:
    written: list[str] = []
    feed = LineFeed(lambda s, t: written.append(t), lambda o: None, {"stdout": 0})
    trig = FakeTrigger()
    got = asyncio.run(finish_here(trig, hook, feed, first, {"stdout": 0, "stderr": 0}))  # type: ignore[arg-type]
    return got, written, trig


LOG = b"line-1\nline-2\nline-3\nlast-no-newline"


def test_success_writes_every_line_then_acknowledges() -> None:
    hook = FakeHook(LOG)
    got, written, trig = end(hook, answer({"stdout": 0}, {"stdout": LOG[:4]}, more=True))
    assert written == ["line-1", "line-2", "line-3", "last-no-newline"]
    assert got is not None and got.raw.get("acked_at") == 1 and hook.acks == 1
    assert hook.reads[0] == {"stdout": 4, "stderr": 0}  # went on after the end's bytes
    assert any("ends in the triggerer" in line for line in trig.lines)


@pytest.mark.parametrize(
    ("status", "hook", "why", "acks"),
    [
        ("FAILED", FakeHook(LOG), NOT_SUCCEEDED, 0),
        ("SUCCEEDED", FakeHook(LOG, read_fails=True), NOT_READ, 0),
        ("SUCCEEDED", FakeHook(LOG, ack_fails=True), NOT_ACKED, 0),
    ],
)
def test_any_failed_step_leaves_the_end_to_the_worker(status: str, hook: FakeHook, why: str,
                                                      acks: int) -> None:
    got, _, trig = end(hook, answer({"stdout": 0}, {"stdout": LOG[:4]}, status=status, more=True))
    assert got is None and hook.acks == acks
    assert any(f"the task ends on a worker ({why})" in line for line in trig.lines), trig.lines


def test_lines_missing_from_the_file_leave_the_end_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    async def short_of_the_end(ti: Any, job_id: str, feed: LineFeed, token: str) -> dict[str, int]:
        return {"stdout": 7, "stderr": 0}

    monkeypatch.setattr(task_end, "settled_offsets", short_of_the_end)
    hook = FakeHook(LOG)
    got, _, trig = end(hook, answer({"stdout": 0}, {"stdout": LOG}))
    assert got is None and hook.acks == 0  # never acknowledged: the worker does it
    assert any(LINES_MISSING in line for line in trig.lines)

"""The lines that arrive with a job's end are the task's, not the trigger's (triggers/orchesjob.py).

Airflow 3's triggerer closes a trigger's log file when the trigger finishes; lines the trigger
logs just before its event can reach the triggerer after that and be dropped. So the trigger
writes no line of the answer that says the job ended: its event's offsets stop before them and
the task prints them into its own log (execute_complete). Scripted answers, both wait paths."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from orchesjob_provider.client.records import JobLogs
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger


def answer(status: str, offset: int, data: bytes, shown: int = 0) -> JobLogs:
    chunk = {"offset": offset, "next_offset": offset + len(data), "size": offset + len(data),
             "data_b64": base64.b64encode(data).decode()}
    job = {"job_id": "j1", "status": status, "log_shown": {"stdout": shown, "stderr": 0}}
    return JobLogs.from_reply("j1", {"job": job, "logs": {"stdout": chunk} if data else {}})


class FakePollHook:
    where = "fake"

    def __init__(self, answers: list[JobLogs]) -> None:
        self.answers = answers
        self.asked: list[dict[str, int]] = []

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    async def poll_job(self, job_id: str, offsets: Any) -> JobLogs:
        self.asked.append(dict(offsets or {}))
        return self.answers.pop(0)


class FakeSub:
    def __init__(self, answers: list[JobLogs]) -> None:
        self.answers = answers
        self.recorded: list[dict[str, int]] = []
        self.resubscribed: list[Any] = []

    async def next(self, timeout: float) -> JobLogs | None:
        return self.answers.pop(0) if self.answers else None

    def shown(self, offsets: Any) -> None:
        self.recorded.append(dict(offsets))

    def resubscribe(self, offsets: Any = None) -> None:
        self.resubscribed.append(dict(offsets) if offsets is not None else None)

    async def wait_recorded(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeChannel:
    supported = True

    def __init__(self, sub: FakeSub) -> None:
        self.sub = sub

    def subscribe(self, job_id: str, offsets: Any) -> FakeSub:
        return self.sub


class FakeWatchHook(FakePollHook):
    def __init__(self, sub: FakeSub) -> None:
        super().__init__([])
        self.watch_channel = FakeChannel(sub)


def run(trigger: OrchesjobTrigger, hook: Any) -> tuple[dict[str, Any], list[bytes]]:
    shown: list[bytes] = []
    trigger._hook = lambda: hook  # type: ignore[method-assign]
    trigger._write = lambda stream, text: shown.append(text.encode() + b"\n")  # type: ignore[method-assign]

    async def first_event() -> Any:
        return await trigger.run().__anext__()

    return asyncio.run(first_event()).payload, shown


def trigger(use_watch: bool, offsets: dict[str, int] | None = None) -> OrchesjobTrigger:
    return OrchesjobTrigger(ssh_conn_id="c", job_id="j1", poll_interval=0.01, use_watch=use_watch,
                            offsets=offsets)


def test_poll_path_leaves_the_ends_lines_to_the_task() -> None:
    hook = FakePollHook([answer("RUNNING", 0, b"a\n"), answer("SUCCEEDED", 2, b"b\nc\n")])
    payload, shown = run(trigger(use_watch=False), hook)
    assert payload["status"] == "terminal" and payload["job"]["status"] == "SUCCEEDED"
    assert shown == [b"a\n"]
    assert payload["offsets"] == {"stdout": 2, "stderr": 0}  # the task prints b and c


def test_watch_path_leaves_the_ends_lines_to_the_task() -> None:
    sub = FakeSub([answer("RUNNING", 0, b"a\n"), answer("SUCCEEDED", 2, b"b\n", shown=2)])
    payload, shown = run(trigger(use_watch=True), FakeWatchHook(sub))
    assert shown == [b"a\n"] and sub.recorded == [{"stdout": 2, "stderr": 0}]
    assert payload["offsets"] == {"stdout": 2, "stderr": 0}

"""The decisions the hooks and the waiting loops share: the call retry policy and the watch.

Pure objects, driven here with canned exec results, a fake clock and a list logger.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-unit-airflow-home-"))
pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from orchesjob_provider import exceptions as x
from orchesjob_provider.client.records import JobLogs
from orchesjob_provider.client.retry import DEPLOY, DONE, RESEND, CallRetry
from orchesjob_provider.utils.waiting import Watch, log_chunk_lines, reconnect_delay

OK = (0, b'{"ok": true, "op": "ping"}\n', b"")
BUSY = (5, json.dumps({"ok": False, "error": {"code": 5, "kind": "busy", "message": "locked"}}).encode(), b"")
MISSING = (86, b"", b"orchesjob-agent-redeploy: missing /h/.orchesjob/agent/agent-1\n")


def _retry() -> CallRetry:
    return CallRetry("ping", remote_python="python3", jitter=lambda d: d / 2)


# -- CallRetry -------------------------------------------------------------------------------------
def test_ok_is_done_at_once():
    step = _retry().after(*OK, where="w")
    assert step.action == DONE and step.reply == {"ok": True, "op": "ping"}


def test_missing_agent_deploys_once_then_resends_and_a_second_miss_is_an_error():
    retry = _retry()
    assert retry.after(*MISSING, where="w").action == DEPLOY
    assert retry.after(*OK, where="w").action == DONE
    retry = _retry()
    assert retry.after(*MISSING, where="w").action == DEPLOY
    with pytest.raises(x.AgentUnavailable, match="exit 86"):
        retry.after(*MISSING, where="w")


def test_busy_backs_off_exponentially_with_jitter_and_gives_up_after_six_execs():
    retry = _retry()
    delays = []
    for _ in range(CallRetry.max_execs - 1):
        step = retry.after(*BUSY, where="w")
        assert step.action == RESEND and step.reply is None
        delays.append(round(step.delay, 6))
    assert delays == [0.3, 0.6, 1.2, 2.4, 4.8]  # 0.2 * 2**n plus the (fixed here) half jitter
    with pytest.raises(x.OrchesjobBusy, match="orchesjob ping on w: locked"):
        retry.after(*BUSY, where="w")
    assert retry.execs == CallRetry.max_execs == 6


def test_busy_jitter_stays_within_one_delay():
    retry = CallRetry("ping", remote_python="python3")
    for base in (0.2, 0.4, 0.8):
        step = retry.after(*BUSY, where="w")
        assert base <= step.delay <= 2 * base


def test_a_deploy_counts_against_the_bound_and_other_errors_are_raised_at_once():
    retry = _retry()
    assert retry.after(*MISSING, where="w").action == DEPLOY
    for _ in range(4):
        assert retry.after(*BUSY, where="w").action == RESEND
    with pytest.raises(x.OrchesjobBusy):
        retry.after(*BUSY, where="w")
    not_found = (3, json.dumps({"ok": False, "error": {"code": 3, "message": "no job"}}).encode(), b"")
    with pytest.raises(x.OrchesjobNotFound):
        _retry().after(*not_found, where="w")


# -- Watch -----------------------------------------------------------------------------------------
class ListLog:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, fmt, *args):
        self.lines.append(("info", fmt % args))

    def warning(self, fmt, *args):
        self.lines.append(("warning", fmt % args))


def _res(
    status: str | None, out: bytes = b"", err: bytes = b"", out_at: int = 0, size: int | None = None
) -> JobLogs:
    logs = {}
    for stream, data in (("stdout", out), ("stderr", err)):
        if data:
            logs[stream] = {
                "data_b64": base64.b64encode(data).decode(),
                "offset": out_at if stream == "stdout" else 0,
                "size": size if size is not None else out_at + len(data),
            }
    job = {"job_id": "j", "status": status} if status else None
    return JobLogs.from_reply("j", {"job": job, "logs": logs})


def test_watch_counts_failures_backs_off_and_gives_up():
    log = ListLog()
    watch = Watch(log, None, deadline=None, max_failures=2)
    e = x.AgentUnavailable("link down")
    d1, d2 = watch.failed(e), watch.failed(e)
    assert d1 is not None and 0.5 <= d1 <= 1.0 and d2 is not None and 1.0 <= d2 <= 2.0
    warning = next(w for w in log.lines if w[0] == "warning")[1]
    assert warning.startswith("orchesjob: link down (retry 1/2 in ")
    assert watch.failed(e) is None
    assert watch.give_up_message(e) == "giving up after 2 retries: link down"
    watch.seen(_res("RUNNING"))  # an answer restarts the count
    assert watch.failures == 0 and watch.failed(e) is not None


def test_watch_shows_new_lines_and_moves_offsets():
    log = ListLog()
    watch = Watch(log, {"stdout": 10}, deadline=None, max_failures=1)
    watch.seen(_res("RUNNING", out=b"one\ntwo\n", err=b"warn\n", out_at=10, size=30))
    assert log.lines == [("info", "one"), ("info", "two"), ("info", "[stderr] warn")]
    assert watch.offsets == {"stdout": 18, "stderr": 5}
    assert watch.job is not None and watch.job.status == "RUNNING"
    watch.seen(_res(None))  # an unknown job does not forget the last record
    assert watch.job.status == "RUNNING"


def test_watch_without_log_streaming_keeps_offsets():
    log = ListLog()
    watch = Watch(log, {"stdout": 3}, deadline=None, max_failures=1, stream_logs=False)
    watch.seen(_res("SUCCEEDED", out=b"x\n", out_at=3))
    assert log.lines == [] and watch.offsets == {"stdout": 3, "stderr": 0} and watch.job.succeeded


def test_watch_deadline():
    now = [100.0]
    watch = Watch(ListLog(), None, deadline=105.0, max_failures=1, clock=lambda: now[0])
    assert not watch.expired and watch.capped(3) == 3 and watch.capped(10) == 5
    now[0] = 105.0
    assert watch.expired and watch.capped(3) == 0
    free = Watch(ListLog(), None, deadline=None, max_failures=1)
    assert not free.expired and free.capped(7.5) == 7.5


def test_reconnect_delay_grows_and_is_capped():
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)):
        assert base / 2 <= reconnect_delay(attempt) <= base


def test_log_chunk_lines_prefix_and_replacement():
    log = ListLog()
    log_chunk_lines(log, _res("RUNNING", out=b"a\xff\r\nb", err=b""), prefix="> ")
    assert log.lines == [("info", "> a\ufffd"), ("info", "> b")]

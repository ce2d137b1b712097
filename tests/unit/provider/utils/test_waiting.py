"""Watch.catch_up: a trigger taken over by another triggerer continues after what was shown."""

from __future__ import annotations

import logging

from orchesjob_provider.client.records import JobRecord
from orchesjob_provider.utils.waiting import Watch


def _job(shown):
    return JobRecord.from_dict({"job_id": "j", "status": "RUNNING", "log_shown": shown})


def _watch(offsets, stream_logs=True):
    return Watch(logging.getLogger("t"), offsets, deadline=None, max_failures=3, stream_logs=stream_logs)


def test_offsets_move_past_what_the_host_says_was_shown():
    watch = _watch({"stdout": 10, "stderr": 0})
    assert watch.catch_up(_job({"stdout": 120, "stderr": 7})) is True
    assert watch.offsets == {"stdout": 120, "stderr": 7}
    assert watch.catch_up(_job({"stdout": 120, "stderr": 7})) is False  # once: then it is ours


def test_offsets_never_move_back_and_a_stream_behind_stays():
    watch = _watch({"stdout": 50, "stderr": 9})
    assert watch.catch_up(_job({"stdout": 40, "stderr": 12})) is True
    assert watch.offsets == {"stdout": 50, "stderr": 12}
    assert watch.catch_up(_job({"stdout": 0, "stderr": 0})) is False
    assert watch.offsets == {"stdout": 50, "stderr": 12}


def test_nothing_moves_without_streaming_or_a_record():
    assert _watch({"stdout": 0}, stream_logs=False).catch_up(_job({"stdout": 9, "stderr": 0})) is False
    assert _watch({"stdout": 0}).catch_up(None) is False
    assert _watch({"stdout": 0}).catch_up(JobRecord.from_dict({"job_id": "j", "status": "RUNNING"})) is False

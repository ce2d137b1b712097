"""The job's log as triggers write it: whole pieces from a start line, counted back from the try's
trigger log files (triggers/log_lines.py, log_files.py).

The property that matters: however the bytes arrive and wherever a triggerer dies, the lines in
the try's trigger log files plus what the task prints past the event's offsets are the job's log
exactly once. The files here are written as Airflow 3's triggerer writes them (one JSON record per
line, the logger's name beside the text), and a kill is a file cut after any record."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

import pytest

from orchesjob_provider.client.records import JobLogs
from orchesjob_provider.triggers import log_files
from orchesjob_provider.triggers.log_lines import (
    PIECE_MAX,
    START_FORMAT,
    LineFeed,
    piece_text,
    pieces,
    resume_point,
    run_of,
    runs_in,
)
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

LOGGER = "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger"


def answer(offsets: dict[str, int], data: dict[str, bytes], status: str = "RUNNING") -> JobLogs:
    logs = {}
    for stream, chunk in data.items():
        if chunk:
            end = offsets[stream] + len(chunk)
            logs[stream] = {"offset": offsets[stream], "next_offset": end, "size": end,
                            "data_b64": base64.b64encode(chunk).decode()}
    return JobLogs.from_reply("j1", {"job": {"job_id": "j1", "status": status}, "logs": logs})


def chunked(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 3, 7, 50, 4000, PIECE_MAX + 5])
        out.append(data[i : i + n])
        i += n
    return out


def job_log(rng: random.Random, lines: int) -> bytes:
    parts = []
    for n in range(lines):
        kind = rng.random()
        if kind < 0.05:
            parts.append(b"x" * (PIECE_MAX + rng.randrange(3)) + b"\n")  # longer than a piece
        elif kind < 0.1:
            parts.append(b"bad \xff\xfe utf-8 \r\n")
        elif kind < 0.15:
            parts.append(b"\n")
        else:
            parts.append(f"line {n} \u00e9\n".encode())
    return b"".join(parts)


class FileWriter:
    """A trigger's records as Airflow 3's triggerer writes them into the try's file of one triggerer."""

    def __init__(self, job: str = "j1", token: str = "0badcafe") -> None:
        self.records: list[bytes] = []
        self.job, self.token = job, token

    def write(self, stream: str, text: str) -> None:
        label = "" if stream == "stdout" else "[stderr] "
        self.records.append(json.dumps({"event": label + text, "logger": f"{LOGGER}.{stream}",
                                        "level": "info", "timestamp": "t"}).encode())

    def start_line(self, offsets: dict[str, int]) -> None:
        text = START_FORMAT.format(job=self.job, token=self.token, **offsets)
        self.records.append(json.dumps({"event": text, "logger": LOGGER, "level": "info"}).encode())

    def lines(self) -> list[tuple[str, str]]:
        out = []
        for raw in self.records:
            rec = json.loads(raw)
            if rec["logger"].endswith((".stdout", ".stderr")):
                out.append((rec["logger"].rsplit(".", 1)[1], rec["event"]))
        return out


def expected(data: dict[str, bytes], start: dict[str, int]) -> list[tuple[str, str]]:
    out = []
    for stream in ("stdout", "stderr"):
        done, rest = pieces(data[stream][start[stream]:])
        label = "" if stream == "stdout" else "[stderr] "
        out += [(stream, label + piece_text(p)) for p in done]
        if rest:
            out.append((stream, label + piece_text(rest)))
    return out


def drive(feed: LineFeed, data: dict[str, bytes], rng: random.Random, stop_after: int | None = None,
          sink: FileWriter | None = None) -> None:
    """Feed the job's bytes from the feed's wire position in random answers; ``stop_after``: the
    triggerer dies once its file holds that many records (the rest of its writes are lost)."""
    wire = {s: feed.offsets[s] for s in data}
    streams = {s: chunked(data[s][wire[s]:], rng) for s in data}
    while any(streams.values()):
        take = {s: (streams[s].pop(0) if streams[s] and rng.random() < 0.7 else b"") for s in data}
        feed.feed(answer(wire, take))
        for s in data:
            wire[s] += len(take[s])
        if sink is not None and stop_after is not None and len(sink.records) >= stop_after:
            del sink.records[stop_after:]
            return


@pytest.mark.parametrize("seed", range(6))
def test_pieces_do_not_depend_on_how_the_bytes_arrive(seed: int) -> None:
    rng = random.Random(seed)
    data = job_log(rng, 200) + b"partial"
    whole, rest = pieces(data)
    got, pending = [], b""
    for chunk in chunked(data, rng):
        done, pending = pieces(pending + chunk)
        got += done
    assert got == whole and pending == rest == b"partial"
    assert all(len(p) <= PIECE_MAX for p in whole) and b"".join(whole) + rest == data


def test_a_partial_line_waits_and_the_start_line_names_where_lines_begin() -> None:
    sink = FileWriter()
    feed = LineFeed(sink.write, sink.start_line, {"stdout": 10, "stderr": 4})
    feed.feed(answer({"stdout": 10, "stderr": 4}, {"stdout": b"abc", "stderr": b""}))
    assert sink.records == [] and feed.offsets == {"stdout": 10, "stderr": 4}
    feed.feed(answer({"stdout": 13, "stderr": 4}, {"stdout": b"d\ne", "stderr": b"oops\n"}))
    assert sink.lines() == [("stdout", "abcd"), ("stderr", "[stderr] oops")]
    assert json.loads(sink.records[0])["event"] == START_FORMAT.format(job="j1", token="0badcafe",
                                                                       stdout=10, stderr=4)
    assert feed.offsets == {"stdout": 15, "stderr": 9}  # "e" is held back: the task prints it


def test_the_ends_answer_writes_nothing_but_lets_skipped_pieces_go_by() -> None:
    sink = FileWriter()
    feed = LineFeed(sink.write, sink.start_line, {"stdout": 0, "stderr": 0}, skip={"stdout": 1, "stderr": 0})
    feed.feed(answer({"stdout": 0, "stderr": 0}, {"stdout": b"old\nnew\n"}, "SUCCEEDED"), write=False)
    assert sink.records == [] and feed.offsets == {"stdout": 4, "stderr": 0}


def test_no_line_is_written_before_every_streams_skipped_pieces_went_by() -> None:
    sink = FileWriter()
    feed = LineFeed(sink.write, sink.start_line, {"stdout": 0, "stderr": 0}, skip={"stdout": 0, "stderr": 1})
    feed.feed(answer({"stdout": 0, "stderr": 0}, {"stdout": b"a\n"}))
    assert sink.records == [] and feed.offsets == {"stdout": 0, "stderr": 0}
    feed.feed(answer({"stdout": 2, "stderr": 0}, {"stderr": b"e1\ne2\n"}))
    assert sink.lines() == [("stdout", "a"), ("stderr", "[stderr] e2")]
    runs: list[Any] = []
    runs_in(sink.records, "j1", runs)
    assert runs[0].start == {"stdout": 0, "stderr": 3} and runs[0].count == {"stdout": 1, "stderr": 1}


@pytest.mark.parametrize("seed", range(40))
def test_a_triggerer_killed_anywhere_leaves_each_line_once(seed: int) -> None:
    """Up to three triggerers run the trigger one after the other, each killed after a random
    number of records reached its file; the last one ends with the job. Its event's offsets plus
    every file: each line of the job exactly once."""
    rng = random.Random(seed)
    data = {"stdout": job_log(rng, 60), "stderr": job_log(rng, 20)}
    deferred = {"stdout": rng.randrange(0, 40), "stderr": 0}
    deferred["stdout"] = data["stdout"].index(b"\n", deferred["stdout"]) + 1  # the task's own lines
    files: list[FileWriter] = []
    for n in range(rng.randrange(1, 4)):
        runs: list[Any] = []
        for f in files:
            runs_in(f.records, "j1", runs)
        start, skip = resume_point(runs, deferred)
        sink = FileWriter(token=f"{n:08x}")
        files.append(sink)
        feed = LineFeed(sink.write, sink.start_line, start, skip)
        last = n == 2 or rng.random() < 0.3
        drive(feed, data, rng, stop_after=None if last else rng.randrange(0, 40), sink=sink)
        if last:
            break
    else:
        runs = []
        for f in files:
            runs_in(f.records, "j1", runs)
        start, skip = resume_point(runs, deferred)
        feed = LineFeed(files[-1].write, files[-1].start_line, start, skip)
        drive(feed, data, rng)
    # the task prints everything past the event's offsets (the last trigger's, all its lines kept)
    task_prints = expected(data, feed.offsets)
    shown = [line for f in files for line in f.lines()]
    assert sorted(shown + task_prints) == sorted(expected(data, deferred))
    assert len(shown + task_prints) == len(expected(data, deferred))


def test_step_back_to_the_pieces_the_file_holds() -> None:
    sink = FileWriter()
    feed = LineFeed(sink.write, sink.start_line, {"stdout": 5, "stderr": 0})
    feed.feed(answer({"stdout": 5, "stderr": 0}, {"stdout": b"aa\nbbb\ncccc\n", "stderr": b"e\n"}))
    assert feed.step_back({"stdout": 3, "stderr": 1}) == {"stdout": 17, "stderr": 2}
    assert feed.step_back({"stdout": 1, "stderr": 0}) == {"stdout": 8, "stderr": 0}
    assert feed.step_back({}) == {"stdout": 5, "stderr": 0}


def test_other_jobs_other_formats_and_earlier_deferrals_say_nothing() -> None:
    other = FileWriter(job="j2")
    other.start_line({"stdout": 0, "stderr": 0})
    other.write("stdout", "x")
    runs: list[Any] = []
    assert runs_in([*other.records, b"[2026-12-05] {x.py:1} INFO - text", b"not json"], "j1", runs)
    assert runs == []
    assert not runs_in([b"[2026-12-05] {x.py:1} INFO - text"], "j1", [])
    early = FileWriter()
    early.start_line({"stdout": 0, "stderr": 0})
    early.write("stdout", "x")
    runs_in(early.records, "j1", runs)
    assert resume_point(runs, {"stdout": 9, "stderr": 0}) == ({"stdout": 9, "stderr": 0},
                                                              {"stdout": 0, "stderr": 0})
    assert run_of(runs, "0badcafe") is runs[0] and run_of(runs, "feedbeef") is None


# -- the trigger with the try's files ------------------------------------------------------------


class Sub:
    def __init__(self, answers: list[JobLogs]) -> None:
        self.answers, self.recorded = answers, []

    async def next(self, timeout: float) -> JobLogs | None:
        return self.answers.pop(0) if self.answers else None

    def shown(self, offsets: Any) -> None:
        self.recorded.append(dict(offsets))

    def resubscribe(self, offsets: Any = None) -> None:
        raise AssertionError("answers start at the trigger's offsets")

    async def wait_recorded(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class Hook:
    where = "fake"

    def __init__(self, sub: Sub) -> None:
        self.watch_channel = type("Channel", (), {"supported": True, "subscribe": lambda _s, j, o: sub})()

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


Written = list[tuple[str, str]]


def run_trigger(tmp_path: Any, monkeypatch: Any, answers: list[JobLogs], deferred: dict[str, int],
                keep: int | None = None, settle: float = 60.0) -> tuple[dict[str, Any], Written]:
    """Run a trigger whose records are appended to its own file in ``tmp_path`` as it writes them,
    as the triggerer does (``keep``: only that many reach it, as when the triggerer closes the file
    at the trigger's end). ``settle`` is a ceiling: a trigger whose file holds its lines does not
    wait for it."""
    trigger = OrchesjobTrigger(ssh_conn_id="c", job_id="j1", offsets=deferred)
    monkeypatch.setattr(log_files, "trigger_log_files", lambda ti: sorted(str(p) for p in tmp_path.iterdir()))
    monkeypatch.setattr(log_files, "SETTLE_SECONDS", settle)
    own = FileWriter()
    path = tmp_path / "attempt=1.log.trigger.2.log"
    written: list[tuple[str, str]] = []

    def reach_file() -> None:
        if keep is None or len(own.records) <= keep:
            with open(path, "ab") as f:
                f.write(own.records[-1] + b"\n")

    def write(stream: str, text: str) -> None:
        own.token = trigger._token
        own.write(stream, text)
        written.append((stream, text))
        reach_file()

    def start_line(offsets: dict[str, int]) -> None:
        own.token = trigger._token
        own.start_line(offsets)
        reach_file()

    trigger._write = write  # type: ignore[method-assign]
    trigger._start_line = start_line  # type: ignore[method-assign]
    trigger._hook = lambda: Hook(Sub(answers))  # type: ignore[method-assign]
    return asyncio.run(trigger.run().__anext__()).payload, written


def test_a_taken_over_trigger_goes_on_after_the_dead_triggerers_file(tmp_path: Any, monkeypatch: Any) -> None:
    dead = FileWriter(token="deaddead")
    dead.start_line({"stdout": 2, "stderr": 0})
    dead.write("stdout", "L1")
    dead.write("stdout", "L2")
    (tmp_path / "attempt=1.log.trigger.1.log").write_bytes(b"\n".join(dead.records))
    # the dead one also recorded L3 as shown on the host, but L3 never reached its file
    answers = [answer({"stdout": 2, "stderr": 0}, {"stdout": b"L1\nL2\nL3\nL4\n"}),
               answer({"stdout": 14, "stderr": 0}, {"stdout": b"end\n"}, "SUCCEEDED")]
    payload, written = run_trigger(tmp_path, monkeypatch, answers, {"stdout": 2, "stderr": 0})
    assert written == [("stdout", "L3"), ("stdout", "L4")]
    assert payload["offsets"] == {"stdout": 14, "stderr": 0}  # the task prints "end"


def test_lines_that_never_reached_the_file_are_the_tasks(tmp_path: Any, monkeypatch: Any) -> None:
    answers = [answer({"stdout": 0, "stderr": 0}, {"stdout": b"a\nbb\nccc\n"}),
               answer({"stdout": 9, "stderr": 0}, {"stdout": b"end\n"}, "SUCCEEDED")]
    payload, written = run_trigger(tmp_path, monkeypatch, answers, {"stdout": 0, "stderr": 0}, keep=2,
                                   settle=0.3)  # the start line and "a" reach the file
    assert written == [("stdout", "a"), ("stdout", "bb"), ("stdout", "ccc")]
    assert payload["offsets"] == {"stdout": 2, "stderr": 0}  # "bb" and "ccc" are printed by the task


def test_without_readable_files_the_trigger_trusts_its_writes(tmp_path: Any, monkeypatch: Any) -> None:
    answers = [answer({"stdout": 0, "stderr": 0}, {"stdout": b"a\nb"}),
               answer({"stdout": 3, "stderr": 0}, {"stdout": b"\nend\n"}, "SUCCEEDED")]
    monkeypatch.setattr(log_files, "trigger_log_files", lambda ti: None)
    trigger = OrchesjobTrigger(ssh_conn_id="c", job_id="j1")
    written: list[str] = []
    trigger._write = lambda stream, text: written.append(text)  # type: ignore[method-assign]
    trigger._hook = lambda: Hook(Sub(answers))  # type: ignore[method-assign]
    payload = asyncio.run(trigger.run().__anext__()).payload
    assert written == ["a"] and payload["offsets"] == {"stdout": 2, "stderr": 0}  # "b" is the task's

"""Input validation and log chunking, in-process."""

import base64
import os
from pathlib import Path

import pytest

from remote_agent.store import logs, paths


@pytest.fixture
def log(tmp_path: Path):
    os.makedirs(str(tmp_path / "logs"))

    def write(data: bytes) -> str:
        with open(paths.log_path(str(tmp_path), "j", "stdout"), "wb") as f:
            f.write(data)
        return str(tmp_path)

    return write


def chunk(state_dir: str, offset: int, limit: int, terminal: bool):
    out = logs.read_chunk(state_dir, "j", "stdout", offset, limit, terminal)
    return base64.b64decode(out["data_b64"]), out


def test_running_job_chunk_ends_at_a_line_end(log) -> None:
    state_dir = log(b"one\ntwo\nthr")
    data, out = chunk(state_dir, 0, 1000, False)
    assert data == b"one\ntwo\n"
    assert out == {"offset": 0, "next_offset": 8, "size": 11, "data_b64": out["data_b64"], "eof": False}
    data, out = chunk(state_dir, 8, 1000, False)  # half a line: nothing until it is complete
    assert data == b"" and out["next_offset"] == 8
    assert not logs.has_output(state_dir, "j", {"stdout": 8}, 1000)
    assert logs.has_output(state_dir, "j", {"stdout": 4}, 1000)


def test_limit_cuts_at_the_last_line_end_inside_it(log) -> None:
    state_dir = log(b"one\ntwo\nthree\n")
    data, out = chunk(state_dir, 0, 10, False)
    assert data == b"one\ntwo\n" and out["next_offset"] == 8


def test_a_line_longer_than_the_limit_is_returned_in_pieces(log) -> None:
    state_dir = log(b"x" * 10 + b"\n")
    data, out = chunk(state_dir, 0, 4, False)
    assert data == b"xxxx" and out["next_offset"] == 4 and not out["eof"]


def test_terminal_job_gets_the_tail_and_eof(log) -> None:
    state_dir = log(b"one\ntwo")
    data, out = chunk(state_dir, 4, 1000, True)
    assert data == b"two" and out["eof"] and out["next_offset"] == 7
    data, out = chunk(state_dir, 0, 2, True)
    assert data == b"on" and not out["eof"]


def test_missing_log_reads_empty(tmp_path: Path) -> None:
    out = logs.read_chunk(str(tmp_path), "nope", "stderr", 0, 100, True)
    assert out == {"offset": 0, "next_offset": 0, "size": 0, "data_b64": "", "eof": True}
    assert logs.log_size(str(tmp_path), "nope", "stderr") == 0

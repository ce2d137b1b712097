"""Input validation and log chunking, in-process."""

import base64
import os
import re
from pathlib import Path

import pytest

from remote_agent.common.errors import EXIT_INVALID_ARGS, AgentError
from remote_agent.common.validate import (
    MAX_RUN_KEY,
    check_argv,
    check_job_id,
    check_run_key,
    new_job_id,
    text,
)
from remote_agent.store import logs, paths


def bad(fn, value) -> str:
    with pytest.raises(AgentError) as err:
        fn(value)
    assert err.value.code == EXIT_INVALID_ARGS
    return err.value.message


def test_run_key_checks() -> None:
    assert check_run_key("nightly/2026-01-01 ü") == "nightly/2026-01-01 ü"
    assert bad(check_run_key, "") == "run_key is required"
    assert bad(check_run_key, None) == "run_key is required"
    assert bad(check_run_key, 5) == "run_key is required"
    assert bad(check_run_key, "x" * (MAX_RUN_KEY + 1)).startswith("run_key is too long (2049 characters")
    assert check_run_key("x" * MAX_RUN_KEY)
    assert "control characters" in bad(check_run_key, "a\nb")
    assert "control characters" in bad(check_run_key, "a\x7fb")
    assert bad(check_run_key, "a\udcffb") == "run_key must be valid UTF-8 text"


def test_job_id_checks() -> None:
    assert check_job_id("abc-1") == "abc-1"
    assert bad(check_job_id, "") == "job_id is required"
    assert bad(check_job_id, "../x") == "Invalid job_id: contains path separator"
    assert bad(check_job_id, "a\\b") == "Invalid job_id: contains path separator"
    assert bad(check_job_id, "a\tb") == "Invalid job_id: 'a\\tb'"
    assert bad(check_job_id, "x" * 201).startswith("Invalid job_id: 'xxx")


def test_argv_checks() -> None:
    assert check_argv(["true"]) == ["true"]
    assert bad(check_argv, []) == "command is required (provide it after --)"
    assert bad(check_argv, None) == "command is required (provide it after --)"
    assert bad(check_argv, "true") == "command must be a list of strings"
    assert bad(check_argv, ["echo", 1]) == "command must be a list of strings"
    assert bad(check_argv, ["echo", "a\0b"]) == "command arguments must not contain NUL bytes"


def test_text_and_job_ids() -> None:
    assert text(None) is None
    assert text("ok") == "ok"
    assert text("bad \udcff byte") == "bad \ufffd byte"
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50
    for job_id in ids:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", job_id)


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

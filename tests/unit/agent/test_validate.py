"""Input validation and log chunking, in-process."""

import re

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


def test_env_seconds_takes_a_number_from_the_environment_or_the_default(monkeypatch) -> None:
    from remote_agent.common.validate import env_seconds

    for raw, want in [(None, 5.0), ("", 5.0), ("2.5", 2.5), ("-3", 0.0), ("soon", 5.0), ("0", 0.0)]:
        if raw is None:
            monkeypatch.delenv("ORCHESJOB_TEST_SECONDS", raising=False)
        else:
            monkeypatch.setenv("ORCHESJOB_TEST_SECONDS", raw)
        assert env_seconds("ORCHESJOB_TEST_SECONDS", 5.0) == want, raw

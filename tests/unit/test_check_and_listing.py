"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from orchesjob_provider import protocol as p
from orchesjob_provider.operators.validation import validate_check
from orchesjob_provider.version_compat import AirflowException
from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_ARGS, AgentError
from remote_agent.frontends import listing
from remote_agent.jobs import checkspec
from remote_agent.ops.start import decide_start

KEY = {"run_key": "k", "last_attempt_no": 1, "last_job_id": "j1"}
OVERRIDE = {"run_key": "k", "reason": "fixed", "used_at": None}


def unknown_job():
    return {"job_id": "j1", "status": vocab.LOST, "target_pid": 42, "exit_code": None, "acked_at": None,
            "lost_reason": "supervisor (pid 41) was killed and the target (pid 42) has ended;"
                           " exit status unknown"}


# --- decide_start: the check row -----------------------------------------------------------
def test_a_check_decides_an_unknown_outcome() -> None:
    latest = unknown_job()
    assert decide_start(latest, True, False, None, KEY) == (vocab.UNKNOWN, latest, None)
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)
    # acknowledged or not, the same
    acked = dict(latest, acked_at=5)
    assert decide_start(acked, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)


def test_a_check_does_not_release_a_strict_unknown_outcome() -> None:
    latest = unknown_job()
    assert decide_start(latest, True, True, None, KEY, check=True) == (vocab.UNKNOWN, latest, None)
    # an unlock still does (and is consumed)
    assert decide_start(latest, True, True, OVERRIDE, KEY, check=True) == (vocab.STARTED, None, OVERRIDE)


@pytest.mark.parametrize("status", vocab.ACTIVE)
def test_a_check_never_bypasses_an_active_job(status: str) -> None:
    latest = {"job_id": "j1", "status": status, "acked_at": None}
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.REATTACHED, latest, None)


@pytest.mark.parametrize("status", vocab.TERMINAL)
def test_a_check_changes_nothing_else(status: str) -> None:
    """Unacknowledged results are adopted, strict keys kept: a check only decides unknown outcomes."""
    latest = {"job_id": "j1", "status": status, "acked_at": None, "lost_reason": "supervisor exited"}
    assert decide_start(latest, True, False, None, KEY, check=True) == (vocab.ADOPTED, latest, None)
    acked = dict(latest, acked_at=3)
    assert decide_start(acked, True, True, None, KEY, check=True) == (vocab.KEPT, acked, None)
    assert decide_start(acked, True, False, None, KEY, check=True) == (vocab.STARTED, None, None)


# --- checkspec.parse ---------------------------------------------------------------------------
def test_check_spec_parsing() -> None:
    assert checkspec.parse(None) is None
    assert checkspec.parse({"argv": ["test", "-e", "/x"]}) == (
        ["test", "-e", "/x"], checkspec.DEFAULT_TIMEOUT)
    assert checkspec.parse({"argv": ["true"], "timeout": 2}) == (["true"], 2.0)
    for bad in ("true", ["true"], {"argv": []}, {"argv": "true"}, {"argv": [1]}, {"argv": ["a\0b"]},
                {"argv": ["true"], "timeout": 0}, {"argv": ["true"], "timeout": True},
                {"argv": ["true"], "timeout": "5"}, {"argv": ["true"], "shell": True}):
        with pytest.raises(AgentError) as err:
            checkspec.parse(bad)
        assert err.value.code == EXIT_INVALID_ARGS, bad


def test_check_columns_round_trip() -> None:
    spec = (["sh", "-c", "test -e 'a b'"], 7.5)
    cols = checkspec.columns(spec)
    assert cols["phase"] == vocab.CHECKING
    assert checkspec.spec_of(cols) == spec
    assert checkspec.columns(None) == {} and checkspec.spec_of({"check_argv": None}) is None


@pytest.mark.parametrize(("status", "when", "verdict", "words"), [
    (0, "before", checkspec.PASSES, "already satisfied"),
    (0, "after", checkspec.PASSES, "verified"),
    (1 << 8, "before", checkspec.FAILS, "the command runs"),
    (3 << 8, "after", checkspec.FAILS, "ran, but the check still fails"),
    (9, "before", checkspec.ERROR, "killed by signal 9"),
    (None, "after", checkspec.ERROR, "timed out"),
])
def test_check_verdicts(status, when, verdict, words) -> None:
    got, _, text = checkspec._verdict(status, 5.0, when)
    assert got == verdict and words in text


# --- listing --------------------------------------------------------------------------------
def test_list_status_filter_parsing() -> None:
    assert listing.parse_statuses(None) == list(vocab.STATUSES)
    assert listing.parse_statuses(["failed,lost", "FAILED", " running "]) == ["FAILED", "LOST", "RUNNING"]
    with pytest.raises(AgentError) as err:
        listing.parse_statuses(["DONE"])
    assert err.value.code == EXIT_INVALID_ARGS and "unknown status 'DONE'" in err.value.message


def test_literal_prefix_and_its_range() -> None:
    assert listing.literal_prefix("af/dag/*") == "af/dag/"
    assert listing.literal_prefix("a[*]b[?]c?d") == "a*b?c"
    assert listing.literal_prefix("a[bc]d") == "a" and listing.literal_prefix("*x") == ""
    assert listing.literal_prefix(listing.prefix_glob("x*[y")) == "x*[y"
    assert listing.prefix_range("af/") == ["af/", "af0"]
    assert listing.prefix_range("") is None and listing.prefix_range("a\U0010ffff") is None
    assert listing.prefix_range("a\ud7ff") == ["a\ud7ff", "a\ue000"]
    low, high = listing.prefix_range("ké")
    keys = ["k", "ké", "ké/1", "kéz", "kê", "kf", "ké\U0010ffff"]
    inside = ["ké", "ké/1", "kéz", "ké\U0010ffff"]
    assert [k for k in keys if low <= k < high] == inside
    assert [k for k in keys if low.encode() <= k.encode() < high.encode()] == inside  # SQLite's order


def test_prefix_glob_takes_wildcards_literally() -> None:
    assert listing.prefix_glob("af/dag/") == "af/dag/*"
    assert listing.prefix_glob("a*b?[c]") == "a[*]b[?][[]c]*"


# --- provider: messages and the operator's argument ------------------------------------------
def test_failure_messages_of_the_check_phases() -> None:
    rec = p.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "exit_code": 0,
                                 "phase": "recheck_failed", "check": {"exit_code": 1}, "target_pid": 5})
    assert p.failure_message(rec) == (
        "Remote job j ran, but the check still fails (the command exited 0, the check then exited 1)")
    rec = p.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "phase": "check_error",
                                 "target_pid": None})
    assert p.failure_message(rec).endswith("and nothing ran")


def test_validate_check() -> None:
    assert validate_check("test -e /x", None) == ["/bin/sh", "-c", "test -e /x"]
    assert validate_check("test -e /x", "/bin/bash") == ["/bin/bash", "-c", "test -e /x"]
    assert validate_check(["test", "-e", "/x"], "/bin/bash") == ["test", "-e", "/x"]  # shell: strings only
    with pytest.raises(AirflowException, match=r"^OrchesjobOperator: check_command: command is empty$"):
        validate_check("  ", None)

"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_ARGS, AgentError
from remote_agent.frontends import listing


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


def test_a_job_that_ends_between_the_two_reads_is_listed_once(tmp_path, monkeypatch) -> None:
    """Issue 18: `orchesjob list` showed a quick-ended job twice: read as RUNNING by the active
    query (and reconciled to its end), then stored SUCCEEDED by the watch channel or a finisher
    before the terminal query read it again."""
    from remote_agent.store import db, reads

    state = str(tmp_path / "state")
    with db.writing(state):
        pass  # the database exists

    row = {"job_id": "j1", "run_key": "k", "status": vocab.RUNNING, "started_at": 5, "seq": 1}
    ended = dict(row, status=vocab.SUCCEEDED)

    def list_jobs(conn, statuses, *args, **kw):
        return [dict(row)] if vocab.RUNNING in statuses else [dict(ended)]

    monkeypatch.setattr(reads, "list_jobs", list_jobs)
    monkeypatch.setattr(listing, "reconcile", lambda conn, r: dict(r, status=vocab.SUCCEEDED))
    got = listing.list_jobs(state, list(vocab.STATUSES))
    assert [(r["job_id"], r["status"]) for r in got] == [("j1", vocab.SUCCEEDED)]

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

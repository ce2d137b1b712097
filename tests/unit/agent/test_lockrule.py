"""The lock rule (remote_agent/jobs/lockrule.py): first come first, per resource, across readers,
writers and slots; claim validation. Pure, milliseconds."""

from __future__ import annotations

import pytest

from remote_agent.common.errors import AgentError
from remote_agent.jobs.lockrule import decide_turn, describe, listing, normalize, parse_slot


def entry(job_id, read=(), write=(), slots=None, granted=False):
    return {
        "job_id": job_id,
        "run_key": "rk-" + job_id,
        "claims": {"read": list(read), "write": list(write), "slots": dict(slots or {})},
        "granted": granted,
        "status": "RUNNING" if granted else "STARTING",
    }


def may(job_id, queue):
    return decide_turn(job_id, queue)[0]


def blockers(job_id, queue):
    return [(b["job_id"], b["mode"], b["resource"], b["holding"]) for b in decide_turn(job_id, queue)[1]]


def test_alone_may_start():
    assert may("a", [entry("a", write=["R"])])


def test_writer_blocks_writer_and_reader_blocks_writer():
    q = [entry("h", write=["R"], granted=True), entry("w", write=["R"])]
    assert blockers("w", q) == [("h", "write", "R", True)]
    q = [entry("h", read=["R"], granted=True), entry("w", write=["R"])]
    assert not may("w", q)


def test_readers_share_but_not_with_a_writer():
    q = [entry("r1", read=["R"], granted=True), entry("r2", read=["R"])]
    assert may("r2", q)
    q = [entry("h", write=["R"], granted=True), entry("r", read=["R"])]
    assert blockers("r", q) == [("h", "read", "R", True)]


def test_fifo_reader_behind_a_waiting_writer_waits():
    """A reader arriving after a queued writer does not overtake it (no writer starvation)."""
    q = [entry("r1", read=["R"], granted=True), entry("w", write=["R"]), entry("r2", read=["R"])]
    assert not may("w", q)
    assert blockers("r2", q) == [("w", "read", "R", False)]


def test_later_waiters_never_block_an_earlier_one():
    q = [entry("h", write=["A"], granted=True), entry("w1", write=["B"]), entry("w2", write=["B"])]
    assert may("w1", q)
    assert blockers("w2", q) == [("w1", "write", "B", False)]


def test_a_job_waiting_for_one_resource_keeps_its_place_for_the_others():
    q = [entry("h", write=["A"], granted=True), entry("w", write=["A", "B"]), entry("x", write=["B"])]
    assert blockers("x", q) == [("w", "write", "B", False)]


def test_different_resources_do_not_interact():
    q = [entry("h", write=["A"], granted=True), entry("x", write=["B"], read=["C"])]
    assert may("x", q)


def test_slot_capacity_counts_holders_and_earlier_waiters():
    q = [entry("a", slots={"io": 2}, granted=True), entry("b", slots={"io": 2})]
    assert may("b", q)
    q = [entry("a", slots={"io": 2}, granted=True), entry("b", slots={"io": 2}, granted=True),
         entry("c", slots={"io": 2}), entry("d", slots={"io": 2})]
    assert [x[0] for x in blockers("c", q)] == ["a", "b"]
    assert {x[0] for x in blockers("d", q)} == {"a", "b", "c"}
    # the capacity is the one the job declares
    q = [entry("a", slots={"io": 5}, granted=True), entry("b", slots={"io": 1})]
    assert not may("b", q)


def test_slots_and_locks_are_separate_namespaces():
    q = [entry("a", slots={"R": 1}, granted=True), entry("b", write=["R"])]
    assert may("b", q)


def test_a_later_granted_job_still_blocks():
    """Defensive: a holder further back in the queue (cannot happen under the rule) still counts."""
    q = [entry("w", write=["R"]), entry("h", write=["R"], granted=True)]
    assert blockers("w", q) == [("h", "write", "R", True)]


def test_describe_names_resource_and_holder():
    q = [entry("h", write=["R"], granted=True), entry("s", slots={"io": 1}, granted=True),
         entry("w", write=["R"], slots={"io": 1})]
    text = describe(decide_turn("w", q)[1])
    assert "write lock 'R': held by job h (run key rk-h)" in text
    assert "slot 'io' (capacity 1): held by job s" in text


def test_listing_groups_holders_and_waiters_in_order():
    q = [entry("h", write=["R"], granted=True), entry("w1", read=["R"]),
         entry("w2", write=["R"], slots={"io": 1})]
    out = listing(q)
    assert [(r["kind"], r["name"]) for r in out] == [("lock", "R"), ("slot", "io")]
    assert [h["job_id"] for h in out[0]["holders"]] == ["h"]
    assert [(w["job_id"], w["position"], w["status"]) for w in out[0]["waiters"]] == [
        ("w1", 1, "WAITING"), ("w2", 2, "WAITING")]
    assert out[1]["waiters"][0]["capacity"] == 1


def test_normalize_sorts_dedups_and_returns_none_for_nothing():
    assert normalize(None, None) is None
    assert normalize({"read": [], "write": []}, {}) is None
    expected = {"read": [], "write": ["a", "b"], "slots": {"io": 2}}
    assert normalize({"write": ["b", "a", "a"]}, {"io": 2}) == expected


@pytest.mark.parametrize(
    "locks,slots,message",
    [
        ({"write": "R"}, None, "must be a list"),
        ({"exclusive": ["R"]}, None, "unknown key 'exclusive'"),
        ({"read": ["R"], "write": ["R"]}, None, "both read and write"),
        ({"write": [""]}, None, "non-empty"),
        ({"write": ["a\nb"]}, None, "control characters"),
        ({"write": ["x" * 201]}, None, "too long"),
        (None, {"io": 0}, "integer >= 1"),
        (None, {"io": True}, "integer >= 1"),
        (None, {"io": "2"}, "integer >= 1"),
        (["R"], None, "locks must be an object"),
        ({"write": [f"r{i}" for i in range(65)]}, None, "too many"),
    ],
)
def test_normalize_rejects_bad_claims_with_one_line(locks, slots, message):
    with pytest.raises(AgentError) as exc:
        normalize(locks, slots)
    assert exc.value.code == 2 and message in exc.value.message and "\n" not in exc.value.message


def test_parse_slot():
    assert parse_slot("heavy-io=2") == ("heavy-io", 2)
    assert parse_slot("a=b=3") == ("a=b", 3)
    for bad in ("io", "=2", "io=x"):
        with pytest.raises(AgentError):
            parse_slot(bad)

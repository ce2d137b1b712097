"""docs/agent/contract.md item 27: clean."""

import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from agent_helpers import assert_error

ISO_HINT = "Use ISO 8601 format, e.g. 2026-01-01 or 2026-01-01T12:00:00+09:00"


def utc_iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _exists(job):
    return os.path.exists(job["stdout_file"]) and os.path.exists(job["stderr_file"])


@pytest.mark.smoke
def test_27_clean_all_removes_terminal_jobs_and_logs(agent):
    k1, k2 = agent.key(), agent.key()
    a = agent.start_ok(k1, "true", sync=True)
    b = agent.start_ok(k2, "false", sync=True)
    run = agent.start_ok(agent.key(), "sleep", "30")
    dry = agent.ok("clean", "--all", "--dry-run")
    assert dry["deleted"] == 2 and dry["errors"] == 0 and dry["dry_run"] is True
    assert _exists(a) and _exists(b) and agent.status(a["job_id"])
    rep = agent.ok("clean", "--all")
    assert list(rep) == ["deleted", "errors", "dry_run", "items"]
    assert rep["deleted"] == 2 and rep["errors"] == 0 and rep["dry_run"] is False
    assert sorted(i["job_id"] for i in rep["items"]) == sorted([a["job_id"], b["job_id"]])
    for item in rep["items"]:
        assert list(item) == ["job_id", "run_key", "selected_at", "selected_at_iso"]
        src = a if item["job_id"] == a["job_id"] else b
        assert item["run_key"] == src["run_key"]
        assert item["selected_at"] == src["finished_at"]
        assert item["selected_at_iso"] == src["finished_at_iso"]
    assert not os.path.exists(a["stdout_file"]) and not os.path.exists(b["stderr_file"])
    assert_error(
        agent.run("status", "--job-id", a["job_id"]), 3, exact="Job not found: {}".format(a["job_id"])
    )
    assert_error(agent.run("status", "--run-key", k2), 3, exact="run_key not found")
    # the active job and its logs are untouched
    assert agent.status(run["job_id"])["status"] == "RUNNING" and _exists(run)
    again = agent.ok("clean", "--all")
    assert again["deleted"] == 0 and again["errors"] == 0
    agent.ok("abort", "--job-id", run["job_id"], "--grace-seconds", "1")


def test_27_clean_job_id_and_run_key(agent):
    k1, k2 = agent.key(), agent.key()
    a1 = agent.start_ok(k1, "true", sync=True)
    a2 = agent.start_ok(k1, "true", sync=True)
    b = agent.start_ok(k2, "true", sync=True)
    rep = agent.ok("clean", "--job-id", a1["job_id"])
    assert rep["deleted"] == 1 and [i["job_id"] for i in rep["items"]] == [a1["job_id"]]
    assert agent.status(run_key=k1)["job_id"] == a2["job_id"]
    rep = agent.ok("clean", "--all", "--run-key", k1)
    assert rep["deleted"] == 1 and [i["job_id"] for i in rep["items"]] == [a2["job_id"]]
    assert agent.status(b["job_id"])["status"] == "SUCCEEDED"
    run = agent.start_ok(agent.key(), "sleep", "30")
    rep = agent.ok("clean", "--job-id", run["job_id"])  # active: never deleted
    assert rep["deleted"] == 0
    assert agent.status(run["job_id"])["status"] == "RUNNING"
    agent.ok("abort", "--job-id", run["job_id"], "--grace-seconds", "1")


@pytest.mark.smoke
def test_27_before_exclusive_after_inclusive(agent):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    t = job["finished_at"]

    def selected(*args):
        rep = agent.ok("clean", "--run-key", key, "--dry-run", *args)
        return [i["job_id"] for i in rep.get("items", [])]

    assert selected("--before", utc_iso(t)) == []
    assert selected("--before", utc_iso(t + 1)) == [job["job_id"]]
    assert selected("--after", utc_iso(t)) == [job["job_id"]]
    assert selected("--after", utc_iso(t + 1)) == []
    assert selected("--after", utc_iso(t), "--before", utc_iso(t + 1)) == [job["job_id"]]
    assert selected("--after", utc_iso(t - 5), "--before", utc_iso(t)) == []
    tokyo = datetime.fromtimestamp(t, timezone.utc).astimezone(timezone(timedelta(hours=9))).isoformat()
    assert tokyo.endswith("+09:00")
    assert selected("--after", tokyo) == [job["job_id"]]
    assert selected("--before", tokyo) == []
    rep = agent.ok("clean", "--run-key", key, "--before", utc_iso(t + 1))
    assert rep["deleted"] == 1 and rep["dry_run"] is False
    assert not os.path.exists(job["stdout_file"])


@pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/New_York"])
def test_27_naive_datetimes_are_local_time(agent, tz):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    t = job["finished_at"]
    local = datetime.fromtimestamp(t, ZoneInfo(tz)).replace(tzinfo=None)
    utc = datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)
    env = {"TZ": tz}

    def selected(*args):
        rep = agent.ok("clean", "--run-key", key, "--dry-run", *args, env=env)
        return [i["job_id"] for i in rep.get("items", [])]

    assert selected("--after", local.isoformat()) == [job["job_id"]]
    assert selected("--after", (local + timedelta(seconds=1)).isoformat()) == []
    assert selected("--before", (local + timedelta(seconds=1)).isoformat(sep=" ")) == [job["job_id"]]
    # the same wall-clock numbers read as UTC would select the opposite way
    if tz == "Asia/Tokyo":  # UTC wall clock is 9 h earlier than local: as local time it is in the past
        assert selected("--before", (utc + timedelta(seconds=1)).isoformat()) == []
    else:  # UTC wall clock is 4-5 h later than local: as local time it is in the future
        assert selected("--after", utc.isoformat()) == []
    # a date alone is local midnight
    assert selected("--after", local.date().isoformat()) == [job["job_id"]]
    assert selected("--before", local.date().isoformat()) == []


@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01",
        "2000-01-01T00:00:00",
        "2000-01-01 00:00",
        "2000-01-01T00:00:00+09:00",
        "2000-01-01T09:30:00.250-02:00",
        "2000-01-01T00:00:00Z",
    ],
)
def test_27_accepted_datetime_forms(agent, value):
    key = agent.key()
    job = agent.start_ok(key, "true", sync=True)
    rep = agent.ok("clean", "--run-key", key, "--dry-run", "--after", value)
    assert [i["job_id"] for i in rep["items"]] == [job["job_id"]]
    rep = agent.ok("clean", "--run-key", key, "--dry-run", "--before", value)
    assert rep["deleted"] == 0


@pytest.mark.parametrize(
    "args, exact, contains",
    [
        ([], None, "clean: one of --before, --after, --all, or --job-id is required"),
        (["--run-key", "k"], None, "clean: one of --before, --after, --all, or --job-id is required"),
        (["--dry-run"], None, "clean: one of --before, --after, --all, or --job-id is required"),
        (
            ["--all", "--before", "2026-01-01"],
            None,
            "clean: --all cannot be combined with --before or --after",
        ),
        (
            ["--all", "--after", "2026-01-01"],
            None,
            "clean: --all cannot be combined with --before or --after",
        ),
        (
            ["--job-id", "x", "--all"],
            None,
            "clean: --job-id cannot be combined with --before, --after, --all, or --run-key",
        ),
        (
            ["--job-id", "x", "--run-key", "k"],
            None,
            "clean: --job-id cannot be combined with --before, --after, --all, or --run-key",
        ),
        (
            ["--job-id", "x", "--before", "2026-01-01"],
            None,
            "clean: --job-id cannot be combined with --before, --after, --all, or --run-key",
        ),
        (["--before", "garbage"], "Invalid --before: 'garbage'. " + ISO_HINT, None),
        (["--after", "2026-13-01"], "Invalid --after: '2026-13-01'. " + ISO_HINT, None),
        (
            ["--after", "2026-01-01", "--before", "yesterday"],
            "Invalid --before: 'yesterday'. " + ISO_HINT,
            None,
        ),
        (["--job-id", "a/b"], "Invalid job_id: contains path separator", None),
    ],
)
def test_27_bad_combinations_and_datetimes(agent, args, exact, contains):
    keep = agent.start_ok(agent.key(), "true", sync=True)
    assert_error(agent.run("clean", *args), 2, exact=exact, contains=contains)
    assert agent.status(keep["job_id"])["status"] == "SUCCEEDED"
    assert _exists(keep)


# -- retention (beyond orchesjob 1.1.0; issue 18): --older-than and --keep ------------------------
def _ack(agent, job_id):
    agent.rpc_ok({"op": "ack", "protocol": 1, "job_id": job_id})


def _age(agent, job_id, seconds):
    """Make a job look as if it finished ``seconds`` ago (its row only)."""
    conn = agent.db()
    try:
        conn.execute("UPDATE jobs SET finished_at = finished_at - ?, started_at = started_at - ? "
                     "WHERE job_id = ?", (seconds, seconds, job_id))
        conn.commit()
    finally:
        conn.close()


@pytest.mark.beyond_orchesjob
def test_retention_keeps_the_newest_n_per_key_and_never_an_unacknowledged_result(agent):
    key, other = agent.key(), agent.key()
    jobs = [agent.start_ok(key, "true", sync=True) for _ in range(4)]
    for j in jobs[:3]:
        _ack(agent, j["job_id"])
    lone = agent.start_ok(other, "true", sync=True)
    _ack(agent, lone["job_id"])
    # --keep 1: of key's 4 jobs the newest (attempt 4) stays; attempts 1-3 (acknowledged) go
    rep = agent.ok("clean", "--keep", "1", "--dry-run")
    assert sorted(i["job_id"] for i in rep["items"]) == sorted(j["job_id"] for j in jobs[:3])
    # an unacknowledged result is never deleted by retention, even beyond --keep
    unacked = agent.start_ok(key, "true", sync=True)  # attempt 5: newest now, jobs[3] unacked
    rep = agent.ok("clean", "--keep", "0")
    deleted = {i["job_id"] for i in rep["items"]}
    assert deleted == {j["job_id"] for j in jobs[:3]} | {lone["job_id"]}
    assert agent.status(jobs[3]["job_id"])["status"] == "SUCCEEDED"  # unacknowledged: kept
    assert agent.status(unacked["job_id"])["status"] == "SUCCEEDED"
    # a resume start adopts the unacknowledged result instead of running the key again
    rep = agent.rpc_ok({"op": "start", "protocol": 1, "run_key": key, "argv": ["true"], "mode": "resume"})
    assert rep["action"] == "adopted" and rep["job"]["job_id"] == unacked["job_id"]


@pytest.mark.beyond_orchesjob
def test_retention_by_age_and_its_bad_values(agent):
    key = agent.key()
    old, new = agent.start_ok(key, "true", sync=True), agent.start_ok(key, "true", sync=True)
    for j in (old, new):
        _ack(agent, j["job_id"])
    _age(agent, old["job_id"], 40 * 86400)
    rep = agent.ok("clean", "--older-than", "30d")
    assert [i["job_id"] for i in rep["items"]] == [old["job_id"]]
    assert agent.status(new["job_id"])["status"] == "SUCCEEDED"
    # both together: old AND beyond the newest N
    _age(agent, new["job_id"], 40 * 86400)
    assert agent.ok("clean", "--older-than", "30d", "--keep", "1")["deleted"] == 0
    assert_error(agent.run("clean", "--older-than", "soon"), 2, contains="clean: --older-than: Invalid ttl")
    assert_error(agent.run("clean", "--keep", "-1"), 2, contains="clean: --keep must be >= 0")
    assert_error(agent.run("clean", "--keep", "1", "--all"), 2, contains="cannot be combined")

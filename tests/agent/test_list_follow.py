"""Issue 9 item 3: ``orchesjob list`` (filters, 100,000 history rows) and ``logs --follow``."""

import json
import re
import subprocess
import time

import pytest
from agent_helpers import wait_until

pytestmark = pytest.mark.beyond_orchesjob

BASE = 1_780_000_000  # a fixed epoch second for the synthetic history


def keys(jobs):
    return [j["run_key"] for j in jobs]


def fill(agent, rows):
    """``rows`` terminal jobs in one SQL statement: job i starts at BASE + 10 i, key hist/<i//2>,
    every 100th FAILED, every 1000th LOST, the rest SUCCEEDED."""
    agent.start_ok(agent.key("seed"), "true", sync=True)  # the agent creates and migrates the db
    conn = agent.db()
    try:
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO jobs (job_id, run_key, attempt_no, command, status, exit_code, strict,"
            " started_at, finished_at, updated_at, acked_at)"
            " SELECT printf('hist-%07d', i), printf('hist/%06d', i / 2), i % 2 + 1, '[\"true\"]',"
            " CASE WHEN i % 1000 = 0 THEN 'LOST' WHEN i % 100 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,"
            " CASE WHEN i % 1000 = 0 THEN NULL WHEN i % 100 = 0 THEN 1 ELSE 0 END, 0,"
            " ? + 10 * i, ? + 10 * i + 5, ? + 10 * i + 5, ? + 10 * i + 5 FROM n",
            (rows, BASE, BASE, BASE, BASE))
        conn.execute("COMMIT")
    finally:
        conn.close()


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_list_filters(agent):
    a = agent.start_ok("etl/a", "true", sync=True)
    b = agent.start_ok("etl/b", "sh", "-c", "exit 3", sync=True)
    agent.start_ok("other*[x]", "true", sync=True)
    gate = agent.workdir / "gate"
    running = agent.start_ok("etl/c", "sh", "-c", f"while [ ! -e '{gate}' ]; do sleep 0.05; done")
    try:
        assert keys(agent.ok("list")) == ["etl/c", "other*[x]", "etl/b", "etl/a"]  # newest first
        assert keys(agent.ok("list", "--status", "failed")) == ["etl/b"]
        assert keys(agent.ok("list", "--status", "RUNNING,FAILED")) == ["etl/c", "etl/b"]
        assert keys(agent.ok("list", "--status", "RUNNING", "--status", "SUCCEEDED")) == [
            "etl/c", "other*[x]", "etl/a"]
        assert keys(agent.ok("list", "--run-key", "etl/*")) == ["etl/c", "etl/b", "etl/a"]
        assert keys(agent.ok("list", "--run-key", "etl/a")) == ["etl/a"]
        assert keys(agent.ok("list", "--prefix", "other*[")) == ["other*[x]"]  # taken literally
        assert keys(agent.ok("list", "--prefix", "etl/", "--limit", "2")) == ["etl/c", "etl/b"]
        assert keys(agent.ok("list", "--since", iso(running["started_at"]))) [0] == "etl/c"
        assert agent.ok("list", "--until", iso(a["started_at"])) == []
        assert agent.ok("list", "--since", "2999-01-01") == []
        lines = agent.run("list", "--format", "jsonl").stdout.decode().splitlines()
        assert [json.loads(x)["job_id"] for x in lines][-2:] == [b["job_id"], a["job_id"]]
        table = agent.run("list", "--format", "table").stdout.decode()
        assert table.splitlines()[0].split()[:4] == ["JOB_ID", "RUN_KEY", "ATTEMPT", "STATUS"], table
        assert "etl/b" in table and "FAILED" in table
        bad = ((["--status", "NOPE"], "unknown status"), (["--since", "yesterday"], "Invalid --since"),
               (["--limit", "-1"], "--limit"), (["--run-key", "a", "--prefix", "b"], "cannot be combined"))
        for args, words in bad:
            res = agent.run("list", *args)
            assert res.code == 2 and words in res.err and res.stdout == b"", (args, res)
    finally:
        gate.write_text("")
    agent.wait_status(running["job_id"])
    # a job whose processes are gone is listed as it really is (reconciled), not as stored
    assert keys(agent.ok("list", "--status", "RUNNING")) == []


def test_list_at_100000_rows_answers_from_the_indexes(agent):
    fill(agent, 100_000)
    got = agent.ok("list", "--limit", "3")
    assert len(got) == 3 and got[0]["run_key"].startswith("seed-") and got[1]["job_id"] == "hist-0100000"
    got = agent.ok("list", "--status", "FAILED", "--limit", "2")
    assert [j["job_id"] for j in got] == ["hist-0099900", "hist-0099800"]
    got = agent.ok("list", "--status", "LOST", "--since", iso(BASE + 10 * 50_000), "--limit", "0")
    assert len(got) == 51 and all(j["status"] == "LOST" for j in got), len(got)
    got = agent.ok("list", "--prefix", "hist/01234", "--limit", "0")
    assert sorted(j["job_id"] for j in got) == sorted(f"hist-{i:07d}" for i in range(24680, 24700))
    got = agent.ok("list", "--prefix", "hist/", "--limit", "2")
    assert [j["job_id"] for j in got] == ["hist-0100000", "hist-0099999"]
    got = agent.ok("list", "--run-key", "hist/0[1]234[5-6]", "--limit", "0")
    assert sorted(j["job_id"] for j in got) == [f"hist-{i:07d}" for i in range(24690, 24694)]
    got = agent.ok("list", "--until", iso(BASE + 10 * 3 + 1), "--limit", "0")
    assert [j["job_id"] for j in got] == ["hist-0000003", "hist-0000002", "hist-0000001"]

    # How fast `list` answers is measured in benchmarks/list_bench.py (CPU time against the
    # floor and against `status`, a table); a test cannot hold a time under load. What a slow
    # machine cannot change is which indexes `list` walks: every statement it runs (recorded
    # from the real code path, in this process, against this database) is answered from an
    # index, and a limited newest-first listing never sorts the history. Without the
    # started_at indexes these plans read "SCAN jobs" and "USE TEMP B-TREE FOR ORDER BY".
    from remote_agent.common.vocab import STATUSES as ALL

    cases = {"list --limit 20": (ALL, None, None, None, 20),
             "list --status FAILED": (["FAILED"], None, None, None, 20),
             "list --prefix (all keys)": (ALL, "hist/*", None, None, 20),
             "list --run-key GLOB": (ALL, "hist/0[9]9*", None, None, 20),
             "list --since": (ALL, None, BASE + 10 * 99_990, None, 20)}
    for name, (statuses, glob, since, until, limit) in cases.items():
        statements = _statements_of_list(agent, statuses, glob, since, until, limit)
        listing_sql = [(sql, params) for sql, params in statements if "ORDER BY started_at" in sql]
        assert len(listing_sql) == 2, (name, statements)  # the active rows, then the terminal ones
        for sql, params in statements:
            plan = _plan(agent, sql, params)
            assert not any(re.match(r"SCAN (TABLE )?jobs$", line) for line in plan), (name, sql, plan)
            if "LIMIT" in sql and "run_key >= ?" not in sql:
                assert "USE TEMP B-TREE FOR ORDER BY" not in plan, (name, sql, plan)


class _Recording:
    """A connection that records every statement run on it (then runs it)."""

    def __init__(self, conn, seen):
        self._conn, self._seen = conn, seen

    def execute(self, sql, params=()):
        self._seen.append((sql, list(params)))
        return self._conn.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _statements_of_list(agent, statuses, glob, since, until, limit):
    """The SQL `orchesjob list` runs for these filters: remote_agent.frontends.listing.list_jobs
    itself, in this process, on a recording read-only connection to the test's database."""
    from remote_agent.frontends import listing
    from remote_agent.store import sqlite

    seen = []
    real_open = sqlite.open_read
    sqlite.open_read = lambda state_dir: _Recording(real_open(state_dir), seen)
    try:
        listing.list_jobs(str(agent.home), statuses, glob, since, until, limit)
    finally:
        sqlite.open_read = real_open
    return seen


def _plan(agent, sql, params):
    conn = agent.db()
    try:
        return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
    finally:
        conn.close()


def test_logs_follow_streams_until_the_job_ends(agent):
    gate = agent.workdir / "gate"
    script = f"echo first; while [ ! -e '{gate}' ]; do sleep 0.05; done; echo second; echo oops >&2; exit 4"
    job = agent.start_ok(agent.key(), "sh", "-c", script)
    argv = [*agent.argv, "logs", "--job-id", job["job_id"], "--follow"]
    proc = subprocess.Popen(argv, env=agent.make_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    agent.spawned.append(proc)
    first = proc.stdout.readline()
    assert first == b"first\n"  # streamed while the job runs
    assert proc.poll() is None, "follow must wait while the job runs"
    gate.write_text("")
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and out == b"second\n" and err == b"", (out, err)
    assert agent.status(job["job_id"])["status"] == "FAILED"
    # stderr, and a finished job: prints everything and exits at once
    res = agent.run("logs", "--job-id", job["job_id"], "--stream", "stderr", "-f")
    assert res.code == 0 and res.stdout == b"oops\n", res
    res = agent.run("logs", "--job-id", "no-such-job", "--follow")
    assert res.code == 3 and res.stdout == b"", res


def test_logs_follow_ends_when_the_job_is_aborted(agent):
    job = agent.start_ok(agent.key(), "sh", "-c", "echo up; sleep 60")
    argv = [*agent.argv, "logs", "--run-key", job["run_key"], "--follow"]
    proc = subprocess.Popen(argv, env=agent.make_env(), stdout=subprocess.PIPE)
    agent.spawned.append(proc)
    assert proc.stdout.readline() == b"up\n"
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    wait_until(lambda: proc.poll() is not None, timeout=10, message="follow ended after the abort")
    assert proc.returncode == 0

"""Issue 8 item 7: the clear epoch. A resume start whose ``epoch`` differs from the one the key's
job was started under supersedes that job (the task was cleared in Airflow): an active job is
aborted and acknowledged, a finished unacknowledged one acknowledged, and a new attempt runs.
Same or missing epoch: the old rules (reattach, adopt). Real agent processes, real SQLite; each
target appends one line to a file per execution, so the tests count real runs.
"""

import sqlite3

import pytest
from agent_helpers import TARGET_PYTHON, pid_alive, wait_until

pytestmark = pytest.mark.beyond_orchesjob

SUPERSEDED = "superseded: the task was cleared in Airflow"

# one line per execution, then run until signalled
LONG = "import sys, time\nopen(sys.argv[1], 'a').write('ran\\n')\ntime.sleep(300)\n"
SHORT = "import sys\nopen(sys.argv[1], 'a').write('ran\\n')\n"


def runs(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def start(agent, key, script, count, epoch=None, strict=False, task_instance=None):
    req = {"op": "start", "protocol": 1, "run_key": key, "argv": [TARGET_PYTHON, script, str(count)],
           "mode": "resume", "strict": strict}
    if epoch is not None:
        req["epoch"] = epoch
    if task_instance is not None:
        req["task_instance"] = task_instance
    return agent.rpc_ok(req)


def test_active_job_of_another_epoch_is_aborted_acked_and_a_new_attempt_runs(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("long.py", LONG)
    first = start(agent, key, script, count, epoch="1:0")["job"]
    assert first["epoch"] == "1:0"
    wait_until(lambda: runs(count) == 1, message="first execution")
    rep = start(agent, key, script, count, epoch="2:1")
    assert rep["action"] == "started", rep
    assert rep["superseded"] == {"job_id": first["job_id"], "status": first["status"], "aborted": True}
    new = rep["job"]
    assert new["job_id"] != first["job_id"] and new["epoch"] == "2:1"
    assert new["rerun_of_job_id"] == first["job_id"] and new["rerun_reason"] == SUPERSEDED
    old = agent.status(first["job_id"])
    assert old["status"] == "ABORTED" and old["abort_reason"] == SUPERSEDED
    assert agent.job_row(first["job_id"])["acked_at"] is not None
    # the old processes were stopped before the new attempt was launched
    assert not pid_alive(first["target_pid"])
    wait_until(lambda: runs(count) == 2, message="second execution")
    # a late abort of the old try (its trigger's on_kill) only meets the old, finished job
    code, reply = agent.rpc({"op": "abort", "protocol": 1, "job_id": first["job_id"], "ack": True})
    assert code == 4 and reply["error"]["kind"] == "wrong_state", reply
    assert agent.status(new["job_id"])["status"] == "RUNNING"
    # the new epoch's retry reattaches to the new job
    again = start(agent, key, script, count, epoch="2:1")
    assert again["action"] == "reattached" and again["job"]["job_id"] == new["job_id"]
    assert "superseded" not in again
    assert runs(count) == 2


def test_same_epoch_reattaches(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("long.py", LONG)
    first = start(agent, key, script, count, epoch="3:0")["job"]
    rep = start(agent, key, script, count, epoch="3:0")
    assert rep["action"] == "reattached" and rep["job"]["job_id"] == first["job_id"]
    wait_until(lambda: runs(count) == 1, message="one execution")
    assert agent.status(first["job_id"])["status"] == "RUNNING"
    assert runs(count) == 1


@pytest.mark.parametrize("first_epoch, second_epoch", [(None, "2:1"), ("1:0", None)])
def test_missing_epoch_keeps_todays_rule(agent, first_epoch, second_epoch):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("long.py", LONG)
    first = start(agent, key, script, count, epoch=first_epoch)["job"]
    rep = start(agent, key, script, count, epoch=second_epoch)
    assert rep["action"] == "reattached" and rep["job"]["job_id"] == first["job_id"]
    wait_until(lambda: runs(count) == 1, message="one execution")


def test_strict_key_is_never_superseded(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("long.py", LONG)
    first = start(agent, key, script, count, epoch="1:0", strict=True)["job"]
    rep = start(agent, key, script, count, epoch="2:1", strict=True)
    assert rep["action"] == "reattached" and rep["job"]["job_id"] == first["job_id"]


def test_terminal_unacknowledged_job_of_another_epoch_is_acked_and_a_new_attempt_runs(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("short.py", SHORT)
    first = start(agent, key, script, count, epoch="1:0")["job"]
    agent.wait_status(first["job_id"])
    # same epoch: adopted (today's rule), no new run
    same = start(agent, key, script, count, epoch="1:0")
    assert same["action"] == "adopted" and same["job"]["job_id"] == first["job_id"]
    rep = start(agent, key, script, count, epoch="2:1")
    assert rep["action"] == "started", rep
    assert rep["superseded"] == {"job_id": first["job_id"], "status": "SUCCEEDED", "aborted": False}
    old = agent.status(first["job_id"])
    assert old["status"] == "SUCCEEDED" and old["abort_reason"] is None
    assert agent.job_row(first["job_id"])["acked_at"] is not None
    agent.wait_status(rep["job"]["job_id"])
    assert runs(count) == 2


def test_abort_with_ack_acknowledges_running_and_finished_jobs(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("long.py", LONG)
    first = start(agent, key, script, count)["job"]
    # the count must include the first run before it is aborted (else 2 is never reached)
    wait_until(lambda: runs(count) == 1, message="first execution")
    rep = agent.rpc_ok({"op": "abort", "protocol": 1, "job_id": first["job_id"], "ack": True,
                        "reason": "task killed", "grace_seconds": 2})
    assert rep["aborted"] is True and rep["job"]["status"] == "ABORTED"
    assert rep["job"]["acked_at"] is not None
    # acknowledged: the next resume start runs a new attempt instead of adopting ABORTED
    second = start(agent, key, script, count)
    assert second["action"] == "started"
    wait_until(lambda: runs(count) == 2, message="second execution")
    # without ack (today's behaviour) an aborted job stays unacknowledged and is adopted
    agent.rpc_ok({"op": "abort", "protocol": 1, "job_id": second["job"]["job_id"], "grace_seconds": 2})
    assert agent.job_row(second["job"]["job_id"])["acked_at"] is None
    assert start(agent, key, script, count)["action"] == "adopted"


def test_abort_with_ack_of_a_finished_job_acknowledges_it_and_says_not_running(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("short.py", SHORT)
    first = start(agent, key, script, count)["job"]
    agent.wait_status(first["job_id"])
    code, reply = agent.rpc({"op": "abort", "protocol": 1, "job_id": first["job_id"]})
    assert code == 4 and agent.job_row(first["job_id"])["acked_at"] is None
    code, reply = agent.rpc({"op": "abort", "protocol": 1, "job_id": first["job_id"], "ack": True})
    assert code == 4 and "acknowledged" in reply["error"]["message"], reply
    assert agent.job_row(first["job_id"])["acked_at"] is not None
    res = agent.run("abort", "--job-id", first["job_id"], "--ack")
    assert res.code == 4, res


def test_cli_abort_ack(agent):
    key = agent.key()
    job = agent.start_ok(key, "sleep", "300")
    out = agent.ok("abort", "--run-key", key, "--ack", "--grace-seconds", "2")
    assert out["status"] == "ABORTED" and out["acked_at"] is not None
    assert not pid_alive(job["target_pid"])


def test_version_2_database_gains_the_epoch_column(agent):
    from remote_agent.store import schema

    agent.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(agent.db_path), isolation_level=None)
    for script in schema._MIGRATIONS[:2]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    key, count = agent.key(), agent.workdir / "count"
    rep = start(agent, key, agent.script("short.py", SHORT), count, epoch="1:0")
    assert rep["job"]["epoch"] == "1:0"
    conn = sqlite3.connect(str(agent.db_path))
    assert "epoch" in [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    # additive: user_version stays "compatible since" (2); the level is in agent_schema
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT level FROM agent_schema").fetchone()[0] == len(schema._MIGRATIONS)
    conn.close()


TI = "dag/task/-1/manual__1"
FAIL = "import sys\nopen(sys.argv[1], 'a').write('ran\\n')\nsys.exit(3)\n"


def test_a_retry_of_the_same_epoch_adopts_an_acknowledged_success(agent):
    """Issue 17: the operator acknowledged the success, Airflow could not record it (api-server
    down) and retried in the same clear epoch: the retry adopts it; only a clear runs it again."""
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("short.py", SHORT)
    first = start(agent, key, script, count, epoch="1:0", task_instance=TI)["job"]
    agent.wait_status(first["job_id"])
    agent.rpc_ok({"op": "ack", "protocol": 1, "job_id": first["job_id"]})
    assert agent.job_row(first["job_id"])["acked_at"] is not None
    retry = start(agent, key, script, count, epoch="1:0", task_instance=TI)
    assert retry["action"] == "adopted" and retry["job"]["job_id"] == first["job_id"], retry
    assert retry["job"]["status"] == "SUCCEEDED" and retry["job"]["task_instance"] == TI
    assert runs(count) == 1
    # another dag run sharing this (explicit) run key, same "1:0" epoch: no retry, it runs anew
    other = start(agent, key, script, count, epoch="1:0", task_instance="dag/task/-1/manual__2")
    assert other["action"] == "started", other
    agent.wait_status(other["job"]["job_id"])
    agent.rpc_ok({"op": "ack", "protocol": 1, "job_id": other["job"]["job_id"]})
    assert runs(count) == 2
    cleared = start(agent, key, script, count, epoch="2:1", task_instance=TI)
    assert cleared["action"] == "started" and cleared["job"]["job_id"] != first["job_id"], cleared
    agent.wait_status(cleared["job"]["job_id"])
    assert runs(count) == 3


def test_a_retry_of_the_same_epoch_reruns_an_acknowledged_failure(agent):
    key, count = agent.key(), agent.workdir / "count"
    script = agent.script("fail.py", FAIL)
    first = start(agent, key, script, count, epoch="1:0", task_instance=TI)["job"]
    assert agent.wait_status(first["job_id"])["status"] == "FAILED"
    # not acknowledged yet: the retry adopts the failure (nobody reported it)
    adopted = start(agent, key, script, count, epoch="1:0", task_instance=TI)
    assert adopted["action"] == "adopted" and adopted["job"]["job_id"] == first["job_id"], adopted
    agent.rpc_ok({"op": "ack", "protocol": 1, "job_id": first["job_id"]})
    retry = start(agent, key, script, count, epoch="1:0", task_instance=TI)
    assert retry["action"] == "started" and retry["job"]["job_id"] != first["job_id"], retry
    agent.wait_status(retry["job"]["job_id"])
    assert runs(count) == 2

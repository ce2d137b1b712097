"""``starts`` (docs/agent/protocol.md): many start requests answered by one agent process, each
decided in its own transaction in the order sent, one start's error its own answer."""

import pytest
from agent_helpers import wait_until
from test_protocol import check_envelope, check_job, lines

pytestmark = pytest.mark.beyond_orchesjob


def starts(agent, items, **kw):
    code, reply = agent.rpc({"protocol": 1, "op": "starts", "starts": items}, **kw)
    assert reply is not None, agent.last_rpc
    check_envelope(reply, "starts", ok=(code == 0))
    return code, reply


def test_a_batch_decides_each_start_as_if_sent_alone_in_order(agent):
    marker = agent.workdir / "runs"
    hostile = f"'; touch {agent.workdir}/pwned; echo $(id) `id` \\n\""

    keys = {k: agent.key(k) for k in "abd"}

    def job(key, word):
        script = 'printf "%s\\n" "$1" >> "$2"; sleep 30'
        return {"run_key": keys[key], "argv": ["sh", "-c", script, "sh", word, str(marker)]}

    items = [job("a", "a"), job("b", hostile), job("a", "a-again"), {"run_key": agent.key("c"), "argv": "ls"},
             "not an object", job("d", "d")]
    code, reply = starts(agent, items)
    assert code == 0, agent.last_rpc
    answers = reply["starts"]
    assert [a["ok"] for a in answers] == [True, True, True, False, False, True]
    assert [a.get("action") for a in answers] == ["started", "started", "reattached", None, None, "started"]
    for a in answers:
        if a["ok"]:
            check_job(a["job"])
    # the same key twice in one batch: the second start meets the first's job, as it would alone
    assert answers[2]["job"]["job_id"] == answers[0]["job"]["job_id"]
    assert answers[3]["error"]["code"] == 2 and "argv" in answers[3]["error"]["message"]
    assert answers[4]["error"]["code"] == 2 and "object" in answers[4]["error"]["message"]
    # each job ran exactly once; the hostile word reached its job as one argument, untouched
    wait_until(lambda: len(lines(marker)) == 3, message="three jobs ran")
    assert sorted(lines(marker)) == sorted(["a", hostile, "d"])
    assert not (agent.workdir / "pwned").exists()
    rows = agent.db().execute("SELECT run_key, COUNT(*) FROM jobs GROUP BY run_key").fetchall()
    assert sorted(n for _, n in rows) == [1, 1, 1]
    for a in (answers[0], answers[1], answers[5]):
        agent.rpc_ok({"op": "abort", "job_id": a["job"]["job_id"], "grace_seconds": 1})
    assert len(lines(marker)) == 3


@pytest.mark.parametrize("items, words", [
    ([], "non-empty list"),
    ("x", "non-empty list"),
    (None, "non-empty list"),
])
def test_a_batch_that_is_not_a_list_is_refused_in_one_line(agent, items, words):
    req = {"protocol": 1, "op": "starts"}
    if items is not None:
        req["starts"] = items
    code, reply = agent.rpc(req)
    assert code == 2 and words in reply["error"]["message"], agent.last_rpc
    assert agent.last_rpc.stderr.count(b"\n") == 1


def test_a_batch_over_the_limit_stores_nothing(agent):
    marker = agent.workdir / "runs"
    item = {"run_key": agent.key("x"), "argv": ["sh", "-c", f"echo run >> '{marker}'"]}
    code, reply = agent.rpc({"protocol": 1, "op": "starts", "starts": [item] * 1001})
    assert code == 2 and "at most 1000 starts" in reply["error"]["message"], agent.last_rpc
    assert "nothing was done" in reply["error"]["message"]
    assert not marker.exists()
    if agent.db_path.exists():
        assert agent.db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_twenty_starts_in_one_request_each_run_once(agent):
    marker = agent.workdir / "runs"
    items = [{"run_key": agent.key(f"m{i}"), "argv": ["sh", "-c", f"echo {i} >> '{marker}'"]}
             for i in range(20)]
    code, reply = starts(agent, items)
    assert code == 0 and all(a["ok"] and a["action"] == "started" for a in reply["starts"]), agent.last_rpc
    wait_until(lambda: len(lines(marker)) == 20, message="twenty jobs ran")
    assert sorted(int(x) for x in lines(marker)) == list(range(20))
    ids = [a["job"]["job_id"] for a in reply["starts"]]
    assert len(set(ids)) == 20

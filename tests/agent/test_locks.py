"""Named locks and slots on the host (remote_agent/jobs/lockrule.py, lockwait.py), against the real agent:
real starters, real supervisors waiting in the queue, real targets writing their own start and
end times. Every test counts how many times each target really ran."""

import json
import os
import signal
import time

import pytest
from agent_helpers import assert_error, wait_until
from test_concurrency import release_together

pytestmark = pytest.mark.beyond_orchesjob

# A shell target (starts in a millisecond, unlike a Python one): its own start and end times.
# With a 4th argument it also waits for that file to exist (the test opens the gate).
TARGET = """
echo "$2 start $(date +%s.%N)" >> "$1"
sleep "$3"
if [ -n "$4" ]; then while [ ! -e "$4" ]; do sleep 0.02; done; fi
echo "$2 end $(date +%s.%N)" >> "$1"
"""


class Runs:
    """The targets' own record: name -> (start, end), and how often each started."""

    def __init__(self, agent):
        self.agent = agent
        self.log = agent.workdir / "runs.log"
        self.script = agent.script("target.sh", TARGET)

    def cmd(self, name, seconds, gate=None):
        return ["sh", self.script, str(self.log), name, str(seconds), *([str(gate)] if gate else [])]

    def gate(self, name):
        """A file the test creates to let a gated target end."""
        return self.agent.workdir / f"gate-{name}"

    def read(self):
        starts, spans = {}, {}
        text = self.log.read_text() if self.log.exists() else ""
        for line in text.splitlines():
            name, what, ts = line.split()
            if what == "start":
                starts[name] = starts.get(name, 0) + 1
                spans[name] = [float(ts), None]
            else:
                spans[name][1] = float(ts)
        return starts, spans


def start(agent, runs, key, name, seconds, *flags, gate=None):
    return agent.start_ok(key, *runs.cmd(name, seconds, gate), extra=list(flags))


def wait_done(agent, keys, timeout=60):
    """Wait until the latest job of every key in ``keys`` is stored as finished (read straight from
    the database: a CLI call per key and round would cost more than the jobs); returns them.

    A light job that ended cleanly is stored by the next reader (light.py, quick end): the next
    job in the queue does that for its holder, but nobody for the last one. So when only such
    ends are left, one ``status --running`` (a reader of every active job) stores them."""
    box = {}

    def read():
        conn = agent.db()
        try:
            rows = conn.execute("SELECT * FROM jobs ORDER BY attempt_no").fetchall()
        finally:
            conn.close()
        box["jobs"] = {r["run_key"]: dict(r) for r in rows if r["run_key"] in keys}
        return len(box["jobs"]) == len(keys) and all(
            j["status"] not in ("STARTING", "RUNNING") for j in box["jobs"].values())

    def ended_unstored():
        return any(j["status"] == "RUNNING" and (agent.home / "logs" / f"{j['job_id']}.exit").exists()
                   for j in box["jobs"].values())

    def done():
        if read():
            return True
        if ended_unstored():
            agent.ok("status", "--running")
            return read()
        return False

    wait_until(done, timeout=timeout, interval=0.05, message="every job finished")
    return box["jobs"]


def wakeups(pid):
    """How many times ``pid`` went to sleep and was woken (voluntary context switches): a count
    load cannot raise. A process blocked in select stays put; a poller adds one per poll."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise KeyError("voluntary_ctxt_switches")


def test_20_concurrent_writers_never_overlap(agent):
    runs = Runs(agent)
    keys = [agent.key(f"w{i}") for i in range(20)]
    argvs = [[*agent.argv, "start", "--run-key", k, "--lock-write", "warehouse.orders", "--",
              *runs.cmd(f"j{i}", 0.05)] for i, k in enumerate(keys)]
    results = release_together(agent, argvs)
    assert all(code == 0 for code, _, _ in results), results
    jobs = wait_done(agent, keys)
    assert all(j["status"] == "SUCCEEDED" for j in jobs.values()), jobs
    starts, spans = runs.read()
    assert starts == {f"j{i}": 1 for i in range(20)}  # every target ran exactly once
    ordered = sorted(spans.values())
    for (s1, e1), (s2, _) in zip(ordered, ordered[1:]):
        assert s2 >= e1, f"two writers at once: {s1}-{e1} and {s2}"
    gaps = [s2 - e1 for (_, e1), (s2, _) in zip(ordered, ordered[1:])]
    print(f"20 writers: {ordered[-1][1] - ordered[0][0]:.2f}s from first start to last end; "
          f"hand-over gaps median {sorted(gaps)[len(gaps) // 2]:.3f}s, max {max(gaps):.3f}s")
    assert agent.ok("locks") == {"locks": []}


def test_first_come_order_waiting_status_and_prompt_wake(agent):
    runs = Runs(agent)
    gate = runs.gate("h")
    holder = start(agent, runs, agent.key("h"), "h", 0, "--lock-write", "R", gate=gate)
    assert holder["status"] == "RUNNING"
    keys, names, ids = [], [], []
    for i in range(5):
        key, name = agent.key(f"q{i}"), f"q{i}"
        job = start(agent, runs, key, name, 0.05, "--lock-write", "R")
        # an async start returns with the job waiting in the queue: the holder cannot end before
        # the gate opens, so a start that waited for its turn would hang (the run's ceiling)
        assert job["status"] == "WAITING", job
        assert job["waiting_for"][0]["job_id"] in [holder["job_id"], *ids]
        ids.append(job["job_id"])
        keys.append(key)
        names.append(name)
    first = agent.status(run_key=keys[0])
    assert first["status"] == "WAITING"
    expected = {"job_id": holder["job_id"], "run_key": holder["run_key"], "mode": "write", "resource": "R",
                "holding": True}
    assert first["waiting_for"] == [expected]
    # woken by the holder's exit, not by a poll: while the holder runs, no waiter wakes up
    # (blocked in select on the wake channel; RECHECK polls would add 2 a second each)
    queued = [agent.status(run_key=k)["worker_pid"] for k in keys]
    before = {pid: wakeups(pid) for pid in queued}
    time.sleep(1.0)
    woke = {pid: wakeups(pid) - n for pid, n in before.items()}
    assert max(woke.values()) <= 1, woke
    gate.touch()
    wait_done(agent, [*keys, holder["run_key"]])
    starts, spans = runs.read()
    assert starts == {n: 1 for n in ["h", *names]}
    order = sorted(spans, key=lambda n: spans[n][0])
    assert order == ["h", *names]
    chain = [spans[n] for n in order]
    gaps = [s2 - e1 for (_, e1), (s2, _) in zip(chain, chain[1:])]
    assert min(gaps) >= 0  # how short the hand-overs are: benchmarks/locks_bench.py


def test_readers_share_a_writer_waits_and_later_readers_do_not_overtake_it(agent):
    runs = Runs(agent)
    keys = [agent.key(n) for n in ("r1", "r2", "w", "r3")]
    gate = runs.gate("readers")
    start(agent, runs, keys[0], "r1", 0, "--lock-read", "R", gate=gate)
    start(agent, runs, keys[1], "r2", 0, "--lock-read", "R", "--lock-read", "other", gate=gate)
    w = start(agent, runs, keys[2], "w", 0.1, "--lock-write", "R")
    assert w["status"] == "WAITING"
    r3 = start(agent, runs, keys[3], "r3", 0.05, "--lock-read", "R")
    assert r3["status"] == "WAITING"
    assert [(b["job_id"], b["holding"]) for b in r3["waiting_for"]] == [(w["job_id"], False)]
    gate.touch()
    wait_done(agent, keys)
    starts, s = runs.read()
    assert starts == {"r1": 1, "r2": 1, "w": 1, "r3": 1}
    assert s["r2"][0] < s["r1"][1] and s["r1"][0] < s["r2"][1]  # the readers overlapped
    assert s["w"][0] >= max(s["r1"][1], s["r2"][1])  # the writer waited for both
    assert s["r3"][0] >= s["w"][1]  # and the later reader for the writer


def test_slot_of_capacity_two(agent):
    runs = Runs(agent)
    keys = [agent.key(f"s{i}") for i in range(5)]
    gate = runs.gate("slots")
    for i, k in enumerate(keys):
        start(agent, runs, k, f"s{i}", 0.2, "--slot", "heavy-io=2", gate=gate)
    table = agent.run("locks", "--format", "table")
    assert table.code == 0 and "heavy-io" in table.out and "holds" in table.out and "waits" in table.out
    gate.touch()
    wait_done(agent, keys)
    starts, spans = runs.read()
    assert starts == {f"s{i}": 1 for i in range(5)}
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2


def _kill_tree(job):
    for pid in (job["worker_pid"],):
        os.kill(pid, signal.SIGKILL)
    os.killpg(job["target_pid"], signal.SIGKILL)


def test_holder_killed_with_sigkill_frees_its_lock(agent):
    runs = Runs(agent)
    holder = start(agent, runs, agent.key("h"), "h", 60, "--lock-write", "R", "--slot", "io=1")
    waiter_key = agent.key("w")
    waiter = start(agent, runs, waiter_key, "w", 0.1, "--lock-write", "R")
    assert waiter["status"] == "WAITING"
    # the waiter does not poll while it waits (blocked in select on the holder's wake channel)
    supervisor = waiter["worker_pid"]
    before = wakeups(supervisor)
    time.sleep(1.0)
    assert wakeups(supervisor) - before <= 1
    _kill_tree(holder)
    jobs = wait_done(agent, [waiter_key])
    assert jobs[waiter_key]["status"] == "SUCCEEDED"
    starts, _spans = runs.read()
    assert starts == {"h": 1, "w": 1}  # woken by the kill (how soon: benchmarks/locks_bench.py)
    assert agent.status(run_key=holder["run_key"])["status"] == "LOST"


def test_supervisor_killed_while_target_runs_keeps_the_lock_until_the_target_ends(agent):
    """kill -9 of the supervisor alone: the job still runs (its target lives), so it still
    holds the lock; the waiter re-reads the queue (every 0.5 s) and starts once the target ended."""
    runs = Runs(agent)
    gate = runs.gate("h")
    holder = start(agent, runs, agent.key("h"), "h", 0, "--lock-write", "R", gate=gate)
    waiter_key = agent.key("w")
    start(agent, runs, waiter_key, "w", 0.05, "--lock-write", "R")
    os.kill(holder["worker_pid"], signal.SIGKILL)
    time.sleep(1.0)
    assert agent.status(run_key=waiter_key)["status"] == "WAITING"
    gate.touch()
    wait_done(agent, [waiter_key])
    starts, spans = runs.read()
    assert starts == {"h": 1, "w": 1}
    assert spans["w"][0] >= spans["h"][1]  # never beside the still-running holder


def test_queue_timeout_cancels_without_running(agent):
    runs = Runs(agent)
    gate = runs.gate("h")  # the holder runs until the test lets it end: only the timeout can
    holder = start(agent, runs, agent.key("h"), "h", 0, "--lock-write", "R", gate=gate)
    key = agent.key("w")
    job = start(agent, runs, key, "w", 0.1, "--lock-write", "R", "--queue-timeout", "0.5")
    # WAITING when the start answered; under load the 0.5 s may already have run out (CANCELLED):
    # which one is the machine's speed, not the agent's behaviour
    assert job["status"] in ("WAITING", "CANCELLED") and job["queue_deadline"] is not None
    done = wait_done(agent, [key], timeout=60)[key]
    assert done["status"] == "CANCELLED" and done["exit_code"] is None
    assert done["abort_reason"].startswith("queue timeout: waited 0.5s for write lock 'R': held by job "
                                           + holder["job_id"])
    assert "queue timeout" in agent.run("logs", "--run-key", key, "--stream", "stderr").out
    assert runs.read()[0] == {"h": 1}  # the waiter's target never ran
    assert agent.status(run_key=holder["run_key"])["status"] == "RUNNING"


def test_retry_reattaches_to_the_waiting_job_and_abort_ends_it(agent):
    runs = Runs(agent)
    holder = start(agent, runs, agent.key("h"), "h", 30, "--lock-write", "R")
    key = agent.key("w")
    req = {"op": "start", "run_key": key, "argv": runs.cmd("w", 0.1), "mode": "resume",
           "locks": {"write": ["R"]}, "slots": {"io": 3}}
    first = agent.rpc_ok(req)
    assert first["action"] == "started" and first["job"]["status"] == "WAITING"
    again = agent.rpc_ok(req)
    assert again["action"] == "reattached" and again["job"]["job_id"] == first["job"]["job_id"]
    assert again["job"]["status"] == "WAITING"
    assert again["job"]["waiting_for"][0]["job_id"] == holder["job_id"]
    listing = agent.rpc_ok({"op": "locks"})["locks"]
    assert [(r["kind"], r["name"]) for r in listing] == [("lock", "R"), ("slot", "io")]
    assert [h["job_id"] for h in listing[0]["holders"]] == [holder["job_id"]]
    assert [(w["job_id"], w["status"], w["position"]) for w in listing[0]["waiters"]] == [
        (first["job"]["job_id"], "WAITING", 1)]
    # the waiting supervisor ends at SIGTERM, not after the grace: with a 600 s grace, an abort
    # that waited it out would outlast the rpc's 60 s ceiling
    res = agent.rpc_ok({"op": "abort", "job_id": first["job"]["job_id"], "reason": "not today", "ack": True,
                        "grace_seconds": 600})
    assert res["job"]["status"] == "ABORTED"
    third = agent.rpc_ok(req)  # acknowledged: a new attempt queues again
    assert third["action"] == "started" and third["job"]["attempt_no"] == 2
    agent.run("abort", "--job-id", third["job"]["job_id"], "--grace-seconds", "1")
    agent.run("abort", "--job-id", holder["job_id"], "--grace-seconds", "1")
    assert "w" not in runs.read()[0]  # neither waiting attempt ever ran


def test_rerun_queues_for_the_same_locks(agent):
    runs = Runs(agent)
    key = agent.key("r")
    start(agent, runs, key, "r", 0.1, "--lock-write", "R", "--sync")
    holder = start(agent, runs, agent.key("h"), "h", 30, "--lock-write", "R")
    rerun = agent.ok("rerun", "--run-key", key)
    assert rerun["status"] == "WAITING"
    assert rerun["waiting_for"][0]["job_id"] == holder["job_id"]
    agent.run("abort", "--job-id", holder["job_id"], "--grace-seconds", "1")
    assert agent.wait_status(rerun["job_id"])["status"] == "SUCCEEDED"
    assert runs.read()[0] == {"r": 2, "h": 1}


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--slot", "io=0"], "capacity must be an integer >= 1"),
        (["--slot", "io"], "--slot must be NAME=CAPACITY"),
        (["--queue-timeout", "5"], "--queue-timeout needs --lock-write"),
        (["--lock-write", "R", "--lock-read", "R"], "both read and write"),
        (["--lock-write", "R", "--queue-timeout", "-1"], "--queue-timeout must be >= 0"),
    ],
)
def test_bad_lock_arguments_fail_with_one_line(agent, flags, message):
    res = agent.start(agent.key(), "true", extra=flags)
    assert_error(res, 2, contains=message)
    assert not agent.db_path.exists() or agent.ok("status", "--running") == []


def test_rpc_rejects_bad_claims(agent):
    req = {"op": "start", "run_key": agent.key(), "argv": ["true"], "locks": {"write": "R"}}
    code, reply = agent.rpc(req)
    assert code == 2 and reply["error"]["kind"] == "bad_request"
    assert "must be a list" in reply["error"]["message"]


def test_locks_on_an_empty_state_dir(agent):
    assert agent.ok("locks") == {"locks": []}
    res = agent.run("locks", "--format", "table")
    assert res.code == 0 and res.out.startswith("KIND")
    assert json.loads(agent.run("rpc", input=b'{"op": "locks"}').out)["locks"] == []


def test_an_aborted_holder_keeps_its_lock_until_its_processes_are_gone(agent):
    """abort stores ABORTED first, then SIGTERM, then SIGKILL after the grace: a holder whose
    target ignores SIGTERM still holds its lock during the grace, for waiters and new starts."""
    import subprocess

    runs = Runs(agent)
    stubborn = f'trap "" TERM; echo "h start $(date +%s.%N)" >> {runs.log}; sleep 30'
    holder = agent.start_ok(agent.key("h"), "sh", "-c", stubborn, extra=["--lock-write", "R"])
    w1 = start(agent, runs, agent.key("w1"), "w1", 0.05, "--lock-write", "R")
    assert w1["status"] == "WAITING"
    t0 = time.time()
    aborter = subprocess.Popen([*agent.argv, "abort", "--job-id", holder["job_id"], "--grace-seconds", "2"],
                               env=agent.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent.wait_status(holder["job_id"], statuses={"ABORTED"}, timeout=10)
    w2 = start(agent, runs, agent.key("w2"), "w2", 0.05, "--lock-write", "R")
    assert w2["status"] == "WAITING"  # not granted beside the holder's still-running target
    listing = agent.ok("locks")["locks"]
    if aborter.poll() is None:  # still within the grace (a loaded machine may take longer)
        holders = listing[0]["holders"]
        assert [(h["job_id"], h["status"]) for h in holders] == [(holder["job_id"], "ABORTED")]
    assert aborter.wait(timeout=30) == 0
    wait_done(agent, [w1["run_key"], w2["run_key"]])
    starts, spans = runs.read()
    assert starts == {"h": 1, "w1": 1, "w2": 1}
    # only after the SIGKILL at the end of the 2 s grace (a lower bound: load only lengthens it)
    assert spans["w1"][0] - t0 >= 1.8
    assert spans["w2"][0] >= spans["w1"][1]
    assert agent.ok("locks") == {"locks": []}

"""The ``watch`` op's timings, moved out of tests/agent/test_watch_op.py (issue 15): how soon a
job's end and a log line are pushed, and what a round costs with 1,001 subscriptions.

    python benchmarks/watch_bench.py [--repeat 5] [--subs 1000]
    AGENT_PYTHON=~/.pyenv/versions/3.6.15/bin/python3 python benchmarks/watch_bench.py

Each sample opens a gate file the job waits on and times the push the gate causes (the tests
keep only the order, the counts and the bytes). Targets the tests used to assert: end pushed
within ~1 s (the test allowed 2 s, whole-second rounding), 1,001 subscriptions under 250 ms of
CPU per second and their end seen within 1.5 s. Prints a Markdown table; never fails on a
number. Uses the agent suite's helpers (tests/agent/agent_helpers.py).
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "agent")]

from agent_helpers import AGENT_PYTHON, TARGET_PYTHON, Agent  # noqa: E402
from test_watch_op import WatchProc  # noqa: E402


def gated(agent, gate, code_before=""):
    script = agent.script(f"b{time.monotonic_ns()}.py", f"import os, time\n{code_before}"
                          f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
                          "print('after', flush=True)\n")
    return agent.start_ok(agent.key(), TARGET_PYTHON, script)


def end_latency(agent):
    gate = agent.workdir / f"g{time.monotonic_ns()}"
    job = gated(agent, gate)
    w = WatchProc(agent)
    w.send({"cmd": "sub", "sid": "a", "job_id": job["job_id"], "offsets": None})
    w.next(30)
    t0 = time.monotonic()
    gate.touch()
    w.until(lambda e: e.get("job") and e["job"]["status"] == "SUCCEEDED", 60)
    took = time.monotonic() - t0
    w.close()
    return took


def line_latency(agent):
    gate = agent.workdir / f"g{time.monotonic_ns()}"
    job = gated(agent, gate)
    agent.wait_status(job["job_id"], statuses={"RUNNING"})
    w = WatchProc(agent)
    w.send({"cmd": "sub", "sid": "a", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    w.next(30)
    t0 = time.monotonic()
    gate.touch()  # the job prints its line only now
    seen = w.until(lambda e: e.get("logs") and e["logs"]["stdout"]["next_offset"] > 0, 60)
    took = time.monotonic() - t0
    if seen[-1]["job"]["status"] != "SUCCEEDED":
        w.until(lambda e: e.get("job") and e["job"]["status"] == "SUCCEEDED", 60)
    w.close()
    return took


def _cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def many_subs(agent, n):
    gate = agent.workdir / f"g{time.monotonic_ns()}"
    job = gated(agent, gate)
    agent.wait_status(job["job_id"], statuses={"RUNNING"})
    conn = agent.db()
    row = dict(conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job["job_id"],)).fetchone())
    cols, fakes = list(row), []
    conn.execute("BEGIN")
    for i in range(n):
        fake = dict(row, job_id=f"{i:032x}", run_key=f"fake-{i}-{time.monotonic_ns()}", status="RUNNING")
        fakes.append(fake["job_id"])
        conn.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [fake[c] for c in cols])
        (agent.home / "logs" / f"{fake['job_id']}.stdout").write_bytes(b"")
    conn.execute("COMMIT")
    conn.close()
    w = WatchProc(agent, interval=0.2, check_every=300)
    subs = [{"cmd": "sub", "sid": j, "job_id": j, "offsets": {"stdout": 0, "stderr": 0}} for j in fakes]
    subs.append({"cmd": "sub", "sid": "real", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    threading.Thread(target=lambda: [w.send(s) for s in subs], daemon=True).start()
    w.until(lambda e: e.get("sid") == "real", 120)
    cpu0 = _cpu(w.proc.pid)
    time.sleep(2.0)
    per_second = (_cpu(w.proc.pid) - cpu0) / 2.0
    t0 = time.monotonic()
    gate.touch()
    w.until(lambda e: e.get("sid") == "real" and e["job"]["status"] == "SUCCEEDED", 60)
    took = time.monotonic() - t0
    w.close()
    return per_second, took


def row(name, values, unit="s"):
    scale = 1000 if unit == "ms" else 1
    vals = sorted(v * scale for v in values)
    med = statistics.median(vals)
    print(f"| {name} | {len(vals)} | {vals[0]:.3f} | {med:.3f} | {vals[-1]:.3f} | {unit} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--subs", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        agent = Agent(Path(tmp) / "ojhome", work)
        try:
            ends = [end_latency(agent) for _ in range(args.repeat)]
            lines = [line_latency(agent) for _ in range(args.repeat)]
            many = [many_subs(agent, args.subs) for _ in range(max(1, args.repeat // 2))]
        finally:
            agent.kill_leftovers()
    print(f"### watch op ({AGENT_PYTHON}, load {os.getloadavg()[0]:.2f})\n")
    print("| measurement | n | min | median | max | unit |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    row("end pushed after the gate opened (interval 0.1 s)", ends)
    row("log line pushed after the gate opened (interval 0.1 s)", lines)
    row(f"watch CPU per second, {args.subs + 1} subscriptions", [m[0] for m in many], "ms")
    row(f"end pushed among {args.subs + 1} subscriptions (interval 0.2 s)", [m[1] for m in many])
    return 0


if __name__ == "__main__":
    sys.exit(main())

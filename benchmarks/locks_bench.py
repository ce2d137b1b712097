"""Named locks: how soon a waiting job starts once its turn comes, moved out of
tests/agent/test_locks.py (issue 15). The tests keep the orders, the counts (each target ran
once; a waiter wakes up no more than once while it waits) and never two writers at once.

    python benchmarks/locks_bench.py [--repeat 3]
    AGENT_PYTHON=~/.pyenv/versions/3.6.15/bin/python3 python benchmarks/locks_bench.py

Rows: the hand-over gap (a holder's target ended -> the next target started, from the targets'
own clocks) in a chain of 5 waiters released by a gate; the gap after the holder's whole tree is
SIGKILLed; the gaps between 20 writers released together. Targets the tests used to assert:
median chain gap < 0.5 s and every gap < 1.5 s (typical ~0.1 s). Never fails on a number.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "agent")]

from agent_helpers import AGENT_PYTHON, Agent  # noqa: E402
from test_concurrency import release_together  # noqa: E402
from test_locks import Runs, _kill_tree, start, wait_done  # noqa: E402


def fresh(tmp, n):
    work = Path(tmp) / f"work{n}"
    work.mkdir()
    return Agent(Path(tmp) / f"home{n}", work)


def chain(agent):
    runs = Runs(agent)
    gate = runs.gate("h")
    holder = start(agent, runs, agent.key("h"), "h", 0, "--lock-write", "R", gate=gate)
    keys = [agent.key(f"q{i}") for i in range(5)]
    for i, key in enumerate(keys):
        start(agent, runs, key, f"q{i}", 0.05, "--lock-write", "R")
    gate.touch()
    wait_done(agent, [*keys, holder["run_key"]])
    _, spans = runs.read()
    order = sorted(spans.values())
    return [s2 - e1 for (_, e1), (s2, _) in zip(order, order[1:])]


def after_kill(agent):
    runs = Runs(agent)
    holder = start(agent, runs, agent.key("h"), "h", 60, "--lock-write", "R")
    key = agent.key("w")
    start(agent, runs, key, "w", 0.1, "--lock-write", "R")
    time.sleep(0.5)
    killed_at = time.time()
    _kill_tree(holder)
    wait_done(agent, [key])
    return runs.read()[1]["w"][0] - killed_at


def writers(agent):
    runs = Runs(agent)
    keys = [agent.key(f"w{i}") for i in range(20)]
    argvs = [[*agent.argv, "start", "--run-key", k, "--lock-write", "orders", "--", *runs.cmd(f"j{i}", 0.05)]
             for i, k in enumerate(keys)]
    release_together(agent, argvs)
    wait_done(agent, keys)
    order = sorted(runs.read()[1].values())
    return [s2 - e1 for (_, e1), (s2, _) in zip(order, order[1:])]


def row(name, vals):
    vals = sorted(vals)
    print(f"| {name} | {len(vals)} | {vals[0]:.3f} | {statistics.median(vals):.3f} | {vals[-1]:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gaps, kills, many = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeat):
            for fn, out in ((chain, gaps), (writers, many)):
                agent = fresh(tmp, f"{fn.__name__}{n}")
                try:
                    out.extend(fn(agent))
                finally:
                    agent.kill_leftovers()
            agent = fresh(tmp, f"kill{n}")
            try:
                kills.append(after_kill(agent))
            finally:
                agent.kill_leftovers()
    print(f"### lock hand-overs ({AGENT_PYTHON}, load {os.getloadavg()[0]:.2f}), seconds\n")
    print("| gap | n | min | median | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    row("holder ended -> next of 5 queued waiters started", gaps)
    row("holder's tree SIGKILLed -> the waiter started", kills)
    row("20 writers released together: end -> next start", many)
    return 0


if __name__ == "__main__":
    sys.exit(main())

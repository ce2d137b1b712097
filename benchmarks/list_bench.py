"""``orchesjob list`` at 100,000 history rows: CPU time per command, against the interpreter
floor and against ``status --run-key`` (one index seek), interleaved runs on one database.

    python benchmarks/list_bench.py [--rows 100000] [--repeat 9] [--python PY]

Moved here from tests/agent/test_list_follow.py (issue 15): a CPU-time ratio is a measurement,
not something a test on a shared machine can hold. The test keeps what load cannot change (the
rows returned, and that every statement of `list` is answered from an index: EXPLAIN QUERY
PLAN). Reference (quiet machine, before the move): every `list` case within 1.6x `status`;
without the started_at indexes `list --limit 20` measured 2.7x. Prints a Markdown table;
never fails on a number.
"""

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = 1_780_000_000


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fill(home: Path, env: dict, python: str, rows: int) -> None:
    subprocess.run([python, "-m", "remote_agent", "start", "--run-key", "seed", "--sync", "--", "true"],
                   env=env, stdout=subprocess.DEVNULL, check=True)
    conn = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None)
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
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--python", default=os.environ.get("AGENT_PYTHON") or sys.executable,
                    help="the interpreter the agent runs under (default: $AGENT_PYTHON or this one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(ORCHESJOB_HOME=str(home), PYTHONPATH=str(REPO))
        fill(home, env, args.python, args.rows)
        agent = [args.python, "-m", "remote_agent"]
        cases = {"floor": [args.python, "-I", "-S", "-c", "import sqlite3, json"],
                 "status": [*agent, "status", "--run-key", "hist/012345"],
                 "list --limit 20": [*agent, "list", "--limit", "20"],
                 "list --status FAILED": [*agent, "list", "--status", "FAILED", "--limit", "20"],
                 "list --prefix (all keys)": [*agent, "list", "--prefix", "hist/", "--limit", "20"],
                 "list --run-key GLOB": [*agent, "list", "--run-key", "hist/0[9]9*", "--limit", "20"],
                 "list --since": [*agent, "list", "--since", iso(BASE + 10 * (args.rows - 10))]}
        cpu = {name: [] for name in cases}  # type: dict
        wall = {name: [] for name in cases}  # type: dict
        for _ in range(args.repeat):  # interleaved: a burst of load hits every case alike
            for name, argv in cases.items():
                c0, t0 = children_cpu(), time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, cwd=tmp)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(children_cpu() - c0)
    status = statistics.median(cpu["status"]) or 1e-9
    print(f"### `list` at {args.rows:,} rows ({args.python}, {args.repeat} interleaved runs, "
          f"load {os.getloadavg()[0]:.2f})\n")
    print("| command | CPU median ms | wall median ms | CPU / status |")
    print("| --- | ---: | ---: | ---: |")
    for name in cases:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"| {name} | {c * 1000:.1f} | {w * 1000:.1f} | {c / status:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

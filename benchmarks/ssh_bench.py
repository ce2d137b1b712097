"""The provider's hot path over SSH, measured beside what it avoids, in one interleaved run.

    .venvs/af3/bin/python benchmarks/ssh_bench.py [--repeat 25]

Starts its own loopback sshd (testkit/sshd.py, needs root), starts one job through
the hook, then times a status call (`poll`) of that job, round-robin across contenders:

  floor          paramiko exec of `true` on the reused connection (an SSH round trip + a shell)
  python floor   the same running `python3 -I -S -c "import sqlite3, json"` (what any agent costs)
  hook           OrchesjobHook.poll: one exec on the reused connection, TCP_NODELAY on
  hook, nodelay off   the same with TCP_NODELAY switched off on the socket (paramiko's default)
  new hook/call  a fresh OrchesjobHook per call: TCP + SSH handshake + auth every time,
                 as a sensor that builds an SSHHook per poke would
  ssh CLI        OpenSSH client one-shot: `ssh host python3 -I -S <agent> rpc`

Prints medians and p90 (ms) and the ratio to the floor. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def harness(state: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "testkit.sshd", "--state-dir", state, *args],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=25, help="timed calls per contender (default 25)")
    opts = ap.parse_args()

    state = tempfile.mkdtemp(prefix="orchesjob-sshbench-")
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-sshbench-af-"))
    harness(state, "start")
    try:
        info = json.loads(Path(state, "sshd.json").read_text())
        run(info, opts.repeat)
    finally:
        harness(state, "stop")


def run(info: dict, repeat: int) -> None:
    host, port, user = info["host"], int(info["port"]), info["user"]
    key_text = Path(info["key_path"]).read_text()
    conn = {"conn_type": "ssh", "host": host, "port": port, "login": user,
            "extra": {"private_key": key_text, "host_key": info["host_public_key"]}}
    os.environ["AIRFLOW_CONN_ORCH_BENCH"] = json.dumps(conn)

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    hook = OrchesjobHook(ssh_conn_id="orch_bench")
    _, job = hook.start(["sleep", "600"], run_key=f"bench-{time.time_ns()}")
    job_id = job.job_id
    slow = OrchesjobHook(ssh_conn_id="orch_bench")
    slow.poll([(job_id, None)])
    sock = slow.get_conn().get_transport().sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    client = hook.get_conn()

    def floor() -> None:
        _, stdout, _ = client.exec_command("true")
        stdout.channel.recv_exit_status()

    def floor_python() -> None:
        _, stdout, _ = client.exec_command('python3 -I -S -c "import sqlite3, json"')
        stdout.channel.recv_exit_status()

    def fresh() -> None:
        h = OrchesjobHook(ssh_conn_id="orch_bench")
        h.poll([(job_id, None)])
        h.close()

    from orchesjob_provider.bundle import get_bundle, rpc_command

    ssh_cmd = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={info['known_hosts_path']}", "-i", info["key_path"],
               "-p", str(port), f"{user}@{host}", rpc_command("python3", get_bundle())]
    payload = json.dumps({"protocol": 1, "op": "poll", "jobs": [{"job_id": job_id}]}).encode()

    def ssh_cli() -> None:
        subprocess.run(ssh_cmd, input=payload, capture_output=True, check=True)

    contenders = {
        "floor (exec `true`, reused conn)": floor,
        "floor + remote python3 -I -S sqlite3/json": floor_python,
        "hook.poll, reused conn, TCP_NODELAY": lambda: hook.poll([(job_id, None)]),
        "hook.poll, reused conn, Nagle on": lambda: slow.poll([(job_id, None)]),
        "new hook (connect+auth) per call": fresh,
        "OpenSSH client one-shot": ssh_cli,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    names = list(contenders)
    for i in range(repeat):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            contenders[name]()
            samples[name].append((time.perf_counter() - t0) * 1000)
    execs_before = hook.exec_count
    hook.poll([(job_id, None)])
    execs_per_poll = hook.exec_count - execs_before
    hook.abort(job_id, reason="benchmark done", grace_seconds=1)

    floor_med = statistics.median(samples[names[0]])
    print(f"# ssh_bench: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {repeat} calls each, interleaved; sshd on {host}")
    print(f"# SSH execs per hook.poll on a warm connection: {execs_per_poll}")
    print()
    py_med = statistics.median(samples[names[1]])
    print("| call | median ms | p90 ms | x floor | x python floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in names:
        vals = sorted(samples[name])
        p90 = vals[min(len(vals) - 1, int(0.9 * len(vals)))]
        med = statistics.median(vals)
        print(f"| {name} | {med:.1f} | {p90:.1f} | {med / floor_med:.2f} | {med / py_med:.2f} |")


if __name__ == "__main__":
    main()

"""Fan-out: N deferred jobs on H hosts, watched from one asyncio loop per contender, ours beside
apache-airflow-providers-ssh's SSHRemoteJobTrigger, in the same run on the same kind of jobs.

    .venvs/af3/bin/python benchmarks/fanout_bench.py --n 10,100,1000 --hosts 1,10
    .venvs/af3/bin/python benchmarks/fanout_bench.py --n 100 --hosts 1 --contenders ours

Needs root (testkit/sshd.py). Starts 2*H loopback sshd instances (LogLevel VERBOSE): H for ours
and H for the peer, each group in a cgroup (v1 cpuacct + memory, or v2) of its own, so the host
side of each contender is measured apart. Per cell:

1. launch N/H jobs per host, ``sh -c 'sleep D; date +%s.%N > END'``, D chosen so every job ends
   5-10 s after the watchers are up; ours through OrchesjobHook.start (what the operator does
   before deferring), the peer's through the wrapper SSHRemoteJobOperator submits
   (``build_posix_wrapper_command``) on one exec each;
2. run two watcher processes at once (this file with ``--watch``), one per contender: real
   trigger instances (OrchesjobTrigger / SSHRemoteJobTrigger, default settings) in one asyncio
   loop, a 10 ms ticker measuring loop lag, each trigger's first event timed;
3. report per contender: SSH connections and exec requests per host (from sshd's own log:
   "Accepted publickey", "Starting session: command"), completion latency (the END timestamp the
   job wrote on the host -> the trigger's event) p50/p90/max, loop lag p99/max, watcher RSS and
   CPU, host CPU and memory of the sshd group (its sessions and jobs included), and for ours
   the CPU of the remote watch process per round.

Printed tables (Markdown); a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_USER_DIR = "fanout-bench"  # under the target user's home


# ------------------------------------------------------------------------------- host side
class Group:
    """A cgroup around the sshd instances of one contender (v1 cpuacct+memory, else v2)."""

    def __init__(self, name: str) -> None:
        self.name = f"{name}-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/cpuacct")
        if v1.is_dir() and (Path("/sys/fs/cgroup/memory")).is_dir():
            self.dirs = [v1 / self.name, Path("/sys/fs/cgroup/memory") / self.name]
            self.v2 = False
        else:
            self.dirs = [Path("/sys/fs/cgroup") / self.name]
            self.v2 = True
        for d in self.dirs:
            d.mkdir(exist_ok=True)

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        if self.v2:
            stat = (self.dirs[0] / "cpu.stat").read_text()
            return int(re.search(r"usage_usec (\d+)", stat).group(1)) / 1e6  # type: ignore[union-attr]
        return int((self.dirs[0] / "cpuacct.usage").read_text()) / 1e9

    def memory(self) -> int:
        """Resident memory of the group's processes (page cache of logs excluded where known)."""
        if self.v2:
            stat = (self.dirs[0] / "memory.stat").read_text()
            return int(re.search(r"^anon (\d+)", stat, re.M).group(1))  # type: ignore[union-attr]
        stat = (self.dirs[1] / "memory.stat").read_text()
        return int(re.search(r"^total_rss (\d+)", stat, re.M).group(1))  # type: ignore[union-attr]

    def remove(self) -> None:
        for d in self.dirs:
            try:
                procs = (d / "cgroup.procs").read_text().split()
                parent = d.parent / "cgroup.procs"
                for pid in procs:
                    try:
                        parent.write_text(pid)
                    except OSError:
                        pass
                d.rmdir()
            except OSError:
                pass


class Host:
    def __init__(self, contender: str, index: int, group: Group) -> None:
        from testkit import sshd

        self.state = tempfile.mkdtemp(prefix=f"fanout-{contender}{index}-")
        self.info = sshd.start(self.state)
        self.conn_id = f"fanout_{contender}_{index}"
        extra = {"private_key": self.info["key_text"], "host_key": self.info["host_public_key"]}
        os.environ[f"AIRFLOW_CONN_{self.conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "ssh",
                "host": self.info["host"],
                "port": self.info["port"],
                "login": self.info["user"],
                "extra": extra,
            }
        )
        group.add(int(self.info["pid"]))
        self.log = Path(self.info["log_path"])

    def log_mark(self) -> int:
        return self.log.stat().st_size

    def log_counts(self, mark: int) -> tuple[int, int]:
        with self.log.open("rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        return text.count("Accepted publickey"), text.count("Starting session: command")

    def stop(self) -> None:
        from testkit import sshd

        try:
            sshd.stop(self.state)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# ------------------------------------------------------------------------------- launching
def launch_ours(host: Host, jobs: list[dict[str, Any]], state_dir: str) -> None:
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
    for job in jobs:
        _, rec = hook.start(["sh", "-c", job["cmd"]], f"fanout/{job['tag']}")
        job["job_id"] = rec.job_id


def launch_peer(host: Host, jobs: list[dict[str, Any]], base_dir: str) -> None:
    from airflow.providers.ssh.utils.remote_job import RemoteJobPaths, build_posix_wrapper_command

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    client = OrchesjobHook(host.conn_id).get_conn()  # a paramiko client: one exec per job
    for job in jobs:
        paths = RemoteJobPaths(job_id=job["tag"], remote_os="posix", base_dir=base_dir)
        # the same argv as ours (the wrapper appends its own redirections to the command)
        _, out, _ = client.exec_command(
            build_posix_wrapper_command(f"sh -c {shlex.quote(job['cmd'])}", paths)
        )
        out.read()
        job.update(
            job_id=job["tag"],
            job_dir=paths.job_dir,
            log_file=paths.log_file,
            exit_code_file=paths.exit_code_file,
        )


# ------------------------------------------------------------------------------- watching
async def watch(
    contender: str, jobs: list[dict[str, Any]], state_dir: str, deadline: float
) -> dict[str, Any]:
    """Run one trigger per job in this loop; the time each yields its first event."""
    import logging

    logging.getLogger("airflow").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    if contender == "ours":
        from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

        triggers = [
            OrchesjobTrigger(ssh_conn_id=j["conn_id"], job_id=j["job_id"], state_dir=state_dir) for j in jobs
        ]
    else:
        from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger

        triggers = [
            SSHRemoteJobTrigger(
                ssh_conn_id=j["conn_id"],
                remote_host=None,
                job_id=j["job_id"],
                job_dir=j["job_dir"],
                log_file=j["log_file"],
                exit_code_file=j["exit_code_file"],
                remote_os="posix",
            )
            for j in jobs
        ]
    seen: dict[str, float] = {}
    statuses: dict[str, str] = {}

    async def one(job: dict[str, Any], trigger: Any) -> None:
        async for event in trigger.run():
            seen[job["tag"]] = time.time()
            p = event.payload
            statuses[job["tag"]] = str(
                (p.get("job") or {}).get("status") if contender == "ours" else p.get("status")
            )
            break

    if os.environ.get("FANOUT_DEBUG"):  # name the callbacks that block the loop
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    tick = asyncio.ensure_future(ticker())
    cpu0 = time.process_time()
    t0 = time.time()
    tasks = [asyncio.ensure_future(one(j, t)) for j, t in zip(jobs, triggers)]
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.time()))
    for task in pending:  # a contender that cannot finish (e.g. stuck connects) is cut off
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.time() - t0
    agent_cpu: list[float] = []
    channels: dict[str, Any] = {}
    if contender == "ours":
        from orchesjob_provider.hooks.shared import loop_registry

        for key, obj in loop_registry().items():
            if key[0] == "watch":
                channels[key[1]] = {"opens": obj.opens, "pid": (obj.hello or {}).get("pid")}
                pid = (obj.hello or {}).get("pid")
                if pid:
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                        agent_cpu.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
                    except OSError:
                        pass
            if key[0] == "poller":
                channels.setdefault(key[1], {})["poll_execs"] = obj.execs
    cpu = time.process_time() - cpu0
    done.set()
    await tick
    return {
        "seen": seen,
        "statuses": statuses,
        "lag_p99": pct(lags, 0.99),
        "lag_max": max(lags) if lags else float("nan"),
        "cpu": cpu,
        "wall": wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "agent_cpu": agent_cpu,
        "channels": channels,
    }


def watcher_main(contender: str, jobs_file: str, state_dir: str, ready_file: str, deadline: float) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    if contender == "ours":
        import orchesjob_provider.triggers.orchesjob  # noqa: F401  (imports before "ready")
    else:
        import airflow.providers.ssh.triggers.ssh_remote_job  # noqa: F401
    Path(ready_file).write_text("ready")
    result = asyncio.run(watch(contender, jobs, state_dir, deadline))
    # to a file: the triggers' log lines go to stdout/stderr, and a pipe nobody reads until the
    # end would fill up and block the watcher's loop (it did: 64 KB of the peer's warnings)
    Path(ready_file + ".result").write_text(json.dumps(result))


# ------------------------------------------------------------------------------- one cell
def run_cell(
    n: int, hosts: dict[str, list[Host]], groups: dict[str, Group], contenders: list[str], opts: Any
) -> dict:
    h = len(hosts[contenders[0]])
    home = hosts[contenders[0]][0].info["home"]
    run = uuid.uuid4().hex[:8]
    bench_dir = f"{home}/{BENCH_USER_DIR}/{run}"
    os.makedirs(bench_dir, exist_ok=True)
    uid = hosts[contenders[0]][0].info["uid"]
    for p in (f"{home}/{BENCH_USER_DIR}", bench_dir):
        os.chown(p, uid, uid)
    state_dir = f"{bench_dir}/oj-state"
    # every job waits on a FIFO (a barrier that costs nothing while it waits: `cat` blocked in
    # open) that is opened once both watchers are up, then sleeps 5-10 s and writes its END time
    per_thread = max(1, 8 // h)
    barrier = f"{bench_dir}/go.fifo"
    os.mkfifo(barrier, 0o666)
    os.chmod(barrier, 0o666)
    jobs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for c in contenders:
        for i in range(n):
            tag = f"{c}{i:05d}"
            host = hosts[c][i % h]
            end_file = f"{bench_dir}/{tag}.end"
            sleep = random.uniform(opts.min_sleep, opts.max_sleep)
            cmd = f"cat {barrier} >/dev/null; sleep {sleep:.2f}; date +%s.%N > {end_file}"
            jobs[c].append(
                {"tag": tag, "conn_id": host.conn_id, "host": i % h, "end_file": end_file, "cmd": cmd}
            )
    # Import in this thread first: threads importing the same packages for the first time can
    # deadlock on Python's per-module import locks (airflow.providers.ssh did, on 3.12).
    import airflow.providers.ssh.utils.remote_job  # noqa: F401

    import orchesjob_provider.hooks.orchesjob  # noqa: F401

    t_launch = time.time()
    threads = []
    for c in contenders:
        for hi, host in enumerate(hosts[c]):
            mine = [j for j in jobs[c] if j["host"] == hi]
            fn = launch_ours if c == "ours" else launch_peer
            arg = state_dir if c == "ours" else f"{bench_dir}/peer"
            for k in range(per_thread):
                threads.append(threading.Thread(target=fn, args=(host, mine[k::per_thread], arg)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    launch_s = time.time() - t_launch
    marks = {c: [host.log_mark() for host in hosts[c]] for c in contenders}
    cpu0 = {c: groups[c].cpu_seconds() for c in contenders}
    procs = {}
    tmp = tempfile.mkdtemp(prefix="fanout-cell-")
    for c in contenders:
        jf = f"{tmp}/{c}.json"
        Path(jf).write_text(json.dumps(jobs[c]))
        procs[c] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--watch",
                c,
                "--jobs",
                jf,
                "--state-dir",
                state_dir,
                "--ready",
                f"{tmp}/{c}.ready",
                "--deadline",
                str(time.time() + opts.startup + opts.max_sleep + opts.cutoff),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{tmp}/{c}.err", "w") if not os.environ.get("FANOUT_DEBUG") else sys.stderr,
        )
    while not all(os.path.exists(f"{tmp}/{c}.ready") for c in contenders):
        if any(p.poll() is not None for p in procs.values()):
            break
        time.sleep(0.1)
    time.sleep(3.0)  # the triggers subscribe / make their first poll
    fd = os.open(barrier, os.O_WRONLY)  # releases every job blocked on the FIFO at once
    os.close(fd)
    late = False
    mem_peak = {c: 0 for c in contenders}
    while any(p.poll() is None for p in procs.values()):
        for c in contenders:
            mem_peak[c] = max(mem_peak[c], groups[c].memory())
        time.sleep(0.5)
    results: dict[str, Any] = {"n": n, "h": h, "launch_s": launch_s, "late_start": late}
    for c in contenders:
        procs[c].wait()
        try:
            res = json.loads(Path(f"{tmp}/{c}.ready.result").read_text())
        except (OSError, ValueError):
            raise SystemExit(f"watcher {c} failed:\n{Path(f'{tmp}/{c}.err').read_text()[-3000:]}") from None
        lat = []
        for j in jobs[c]:
            try:
                end = float(Path(j["end_file"]).read_text().strip())
            except (OSError, ValueError) as e:
                print(f"no end time for {j['tag']}: {e}", file=sys.stderr)
                continue
            if j["tag"] in res["seen"]:
                lat.append(res["seen"][j["tag"]] - end)
        counts = [host.log_counts(m) for host, m in zip(hosts[c], marks[c])]
        wall = res["wall"]
        results[c] = {
            "events": len(res["seen"]),
            "timed": len(lat),
            "ok": sum(1 for s in res["statuses"].values() if s in ("SUCCEEDED", "success")),
            "conns_per_host": max(x[0] for x in counts),
            "execs_per_host": max(x[1] for x in counts),
            "execs_per_host_s": statistics.mean(x[1] for x in counts) / wall if wall else 0,
            "lat_p50": pct(lat, 0.5),
            "lat_p90": pct(lat, 0.9),
            "lat_max": max(lat) if lat else float("nan"),
            "lag_p99": res["lag_p99"],
            "lag_max": res["lag_max"],
            "rss_mb": res["rss_mb"],
            "cpu": res["cpu"],
            "wall": wall,
            "host_cpu": groups[c].cpu_seconds() - cpu0[c],
            "host_mem_mb": mem_peak[c] / 2**20,
            "agent_cpu_per_round_ms": (
                1000 * statistics.mean(res["agent_cpu"]) / (wall / 0.2) if res["agent_cpu"] and wall else None
            ),
            "channels": res["channels"],
        }
    shutil.rmtree(tmp, ignore_errors=True)
    if not opts.keep:
        shutil.rmtree(bench_dir, ignore_errors=True)
    return results


def poll_round_cost(host: Host, n: int) -> float:
    """CPU seconds of one batched ``poll`` exec for n active jobs on one host (the fallback)."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    home = host.info["home"]
    state_dir = f"{home}/{BENCH_USER_DIR}/poll-{uuid.uuid4().hex[:6]}"
    hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
    ids = [hook.start(["sleep", "60"], f"fanout/poll/{i}")[1].job_id for i in range(n)]
    try:
        before = hook.call("ping")  # warm
        del before
        t = time.perf_counter()
        hook.poll([(j, {"stdout": 0, "stderr": 0}) for j in ids])
        return time.perf_counter() - t
    finally:
        for j in ids:
            try:
                hook.abort(j, reason="bench done", grace_seconds=0)
            except Exception:
                pass


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def table(rows: list[dict], contenders: list[str]) -> str:
    head = (
        "| N | H | contender | events ok | conns/host | execs/host (whole wait) | execs/host/s | "
        "completion p50 / p90 / max s | loop lag p99 / max ms | watcher RSS MB / CPU s | "
        "host CPU s | host mem MB | agent CPU/round ms |"
    )
    out = [head, "|" + " --- |" * 13]
    for r in rows:
        for c in contenders:
            x = r[c]
            out.append(
                f"| {r['n']} | {r['h']} | {c} | {x['ok']}/{r['n']} | {x['conns_per_host']} | "
                f"{x['execs_per_host']} | {fmt(x['execs_per_host_s'])} | "
                f"{fmt(x['lat_p50'])} / {fmt(x['lat_p90'])} / {fmt(x['lat_max'])} | "
                f"{fmt(x['lag_p99'] * 1000, '.0f')} / {fmt(x['lag_max'] * 1000, '.0f')} | "
                f"{fmt(x['rss_mb'], '.0f')} / {fmt(x['cpu'], '.1f')} | {fmt(x['host_cpu'], '.1f')} | "
                f"{fmt(x['host_mem_mb'], '.0f')} | {fmt(x['agent_cpu_per_round_ms'])} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10,100,1000", help="jobs per cell, comma-separated (default 10,100,1000)")
    ap.add_argument("--hosts", default="1,10", help="hosts per cell, comma-separated (default 1,10)")
    ap.add_argument("--contenders", default="ours,peer", help="ours,peer (default both)")
    ap.add_argument("--min-sleep", type=float, default=5.0)
    ap.add_argument("--max-sleep", type=float, default=10.0)
    ap.add_argument("--poll-cost", type=int, default=1000, help="jobs for the poll-round cost (0: skip)")
    ap.add_argument("--keep", action="store_true", help="keep the job files")
    ap.add_argument("--table-from", help="print the table from the per-cell JSON lines of a run's stderr")
    ap.add_argument("--watch", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--startup", type=float, default=120.0, help="s the watchers may take to start")
    ap.add_argument(
        "--cutoff", type=float, default=60.0, help="s after the last job's end before a watcher is cut off"
    )
    opts = ap.parse_args()
    if opts.watch:
        watcher_main(opts.watch, opts.jobs, opts.state_dir, opts.ready, opts.deadline)
        return
    if opts.table_from:  # e.g. a run stopped early: its finished cells
        lines = Path(opts.table_from).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.startswith('{"n"')]
        print(table(rows, [c for c in ("ours", "peer") if rows and c in rows[0]]))
        return
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="fanout-af-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    contenders = [c for c in opts.contenders.split(",") if c]
    ns = [int(x) for x in opts.n.split(",")]
    hs = [int(x) for x in opts.hosts.split(",")]
    groups = {c: Group(f"fanout-{c}") for c in contenders}
    hosts: dict[str, list[Host]] = {c: [] for c in contenders}
    rows = []
    started = datetime.now(timezone.utc)
    poll_cost = None
    try:
        for c in contenders:
            for i in range(max(hs)):
                hosts[c].append(Host(c, i, groups[c]))
        for h in hs:
            for n in ns:
                sub = {c: hosts[c][:h] for c in contenders}
                print(f"cell N={n} H={h} ...", file=sys.stderr, flush=True)
                rows.append(run_cell(n, sub, groups, contenders, opts))
                print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
        if opts.poll_cost and "ours" in contenders:
            poll_cost = poll_round_cost(hosts["ours"][0], opts.poll_cost)
    finally:
        for c in contenders:
            for host in hosts[c]:
                host.stop()
            groups[c].remove()
    print(f"## fan-out benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores\n")
    print(table(rows, contenders))
    if poll_cost is not None:
        print(
            f"\nOne batched `poll` exec (the fallback) for {opts.poll_cost} active jobs: "
            f"{poll_cost:.2f} s wall."
        )


if __name__ == "__main__":
    main()

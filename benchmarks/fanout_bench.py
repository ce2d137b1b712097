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
2. per contender, one after the other (the order alternates between cells; ``--together`` runs
   them at once instead): one watcher process (this file with ``--watch``) running real trigger
   instances (OrchesjobTrigger / SSHRemoteJobTrigger, default settings) in one asyncio loop,
   a 10 ms ticker measuring loop lag, each trigger's first event timed;
3. report per contender: SSH connections and exec requests per host (from sshd's own log:
   "Accepted publickey", "Starting session: command"), completion latency (the END timestamp the
   job wrote on the host -> the trigger's event) p50/p90/max, loop lag p99/max, watcher RSS and
   CPU, host CPU and memory of the sshd group (its sessions and jobs included), and for ours
   the CPU of the remote watch process per round.

``--starts-only``: step 1 alone, per contender: the time to start all N jobs ("start all s"),
the execs per host it took and the host CPU it cost (ours: one hook and one thread per host,
``start_many``, up to 200 starts per exec; the peer: one exec per job, a few threads per host).
A full cell prints "start all s" as its last column too.

Printed tables (Markdown); a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
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

from fanout_host import Group, Host, launch_ours, launch_peer  # noqa: E402  (benchmarks/ is on sys.path)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


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
        from orchesjob_provider.hooks.ssh.shared import loop_registry

        for key, obj in loop_registry().items():
            if key[0] == "watch":
                channels[key[1]] = {"opens": obj.opens, "pid": (obj.hello or {}).get("pid"),
                                    "drops": obj.drops[-3:]}
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
    n: int, hosts: dict[str, list[Host]], groups: dict[str, Group], contenders: list[str], opts: Any,
    flip: bool = False,
) -> dict:
    """One cell: the same N jobs (the same sleeps) for every contender. By default the
    contenders run one after the other, in an order that alternates between cells, so neither
    one's load (execs, connects, a thousand ends) is in the other's numbers; ``--together``
    runs them at the same time as before (then both share the machine's two cores)."""
    h = len(hosts[contenders[0]])
    home = hosts[contenders[0]][0].info["home"]
    run = uuid.uuid4().hex[:8]
    bench_dir = f"{home}/{BENCH_USER_DIR}/{run}"
    os.makedirs(bench_dir, exist_ok=True)
    uid = hosts[contenders[0]][0].info["uid"]
    for p in (f"{home}/{BENCH_USER_DIR}", bench_dir):
        os.chown(p, uid, uid)
    state_dir = f"{bench_dir}/oj-state"
    sleeps = [random.uniform(opts.min_sleep, opts.max_sleep) for _ in range(n)]
    order = list(reversed(contenders)) if flip else list(contenders)
    phases = [order] if opts.together else [[c] for c in order]
    results: dict[str, Any] = {"n": n, "h": h, "late_start": False, "order": "together" if opts.together
                               else ",".join(order), "launch_s": 0.0}
    for k, phase in enumerate(phases):
        # every job waits on a FIFO (a barrier that costs nothing while it waits: `cat` blocked
        # in open) that is opened once the phase's watchers are up, then sleeps 5-10 s and
        # writes its END time
        barrier = f"{bench_dir}/go{k}.fifo"
        os.mkfifo(barrier, 0o666)
        os.chmod(barrier, 0o666)
        jobs: dict[str, list[dict[str, Any]]] = {c: [] for c in phase}
        for c in phase:
            for i in range(n):
                tag = f"{c}{i:05d}"
                end_file = f"{bench_dir}/{tag}.end"
                cmd = f"cat {barrier} >/dev/null; sleep {sleeps[i]:.2f}; date +%s.%N > {end_file}"
                jobs[c].append(
                    {"tag": tag, "conn_id": hosts[c][i % h].conn_id, "host": i % h, "end_file": end_file,
                     "cmd": cmd}
                )
        marks = {c: [host.log_mark() for host in hosts[c]] for c in phase}
        cpu0 = {c: groups[c].cpu_seconds() for c in phase}
        launch_s = launch(phase, hosts, jobs, state_dir, bench_dir)
        results["launch_s"] += launch_s
        started = {
            c: {"start_s": launch_s, "start_host_cpu": groups[c].cpu_seconds() - cpu0[c],
                "start_execs_per_host": max(host.log_counts(m)[1] for host, m in zip(hosts[c], marks[c]))}
            for c in phase
        }
        if opts.starts_only:  # release the jobs (they end at once) and measure nothing else
            release(barrier)
            results.update({c: {**started[c], "starts_only": True} for c in phase})
            continue
        results.update(watch_phase(phase, hosts, groups, jobs, barrier, state_dir, opts))
        for c in phase:
            results[c].update(started[c])
    if not opts.keep:
        shutil.rmtree(bench_dir, ignore_errors=True)
    return results



def release(barrier: str, seconds: float = 5.0) -> None:
    """Let every job blocked on the barrier FIFO go: each writer open wakes the readers blocked
    then; a job that reaches its ``cat`` later needs another, so open again for a while, then
    kill the stragglers' ``cat`` (their ``sh`` goes on)."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            os.close(os.open(barrier, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: nobody waits right now
            pass
        time.sleep(0.1)
    subprocess.run(["pkill", "-f", f"cat {barrier}"], check=False)


def launch(
    phase: list[str], hosts: dict[str, list[Host]], jobs: dict[str, list[dict[str, Any]]], state_dir: str,
    bench_dir: str,
) -> float:
    """Start the phase's jobs, a few threads per host; the seconds it took."""
    # Import in this thread first: threads importing the same packages for the first time can
    # deadlock on Python's per-module import locks (airflow.providers.ssh did, on 3.12).
    import airflow.providers.ssh.utils.remote_job  # noqa: F401

    import orchesjob_provider.hooks.orchesjob  # noqa: F401

    # ours: one thread and one hook per host (its starts go in batches); the peer: one exec
    # per job, so a few threads per host (as many connections)
    per_thread = max(1, 8 // len(hosts[phase[0]]))
    t_launch = time.time()
    threads = []
    for c in phase:
        for hi, host in enumerate(hosts[c]):
            mine = [j for j in jobs[c] if j["host"] == hi]
            fn = launch_ours if c == "ours" else launch_peer
            arg = state_dir if c == "ours" else f"{bench_dir}/peer"
            k_threads = 1 if c == "ours" else per_thread
            for k in range(k_threads):
                threads.append(threading.Thread(target=fn, args=(host, mine[k::k_threads], arg)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t_launch


def watch_phase(
    phase: list[str], hosts: dict[str, list[Host]], groups: dict[str, Group],
    jobs: dict[str, list[dict[str, Any]]], barrier: str, state_dir: str, opts: Any,
) -> dict[str, Any]:
    """Start one watcher per contender of the phase, release the jobs, measure until done."""
    marks = {c: [host.log_mark() for host in hosts[c]] for c in phase}
    cpu0 = {c: groups[c].cpu_seconds() for c in phase}
    procs = {}
    tmp = tempfile.mkdtemp(prefix="fanout-cell-")
    for c in phase:
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
    while not all(os.path.exists(f"{tmp}/{c}.ready") for c in phase):
        if any(p.poll() is not None for p in procs.values()):
            break
        time.sleep(0.1)
    time.sleep(3.0)  # the triggers subscribe / make their first poll
    fd = os.open(barrier, os.O_WRONLY)  # releases every job blocked on the FIFO at once
    os.close(fd)
    mem_peak = {c: 0 for c in phase}
    while any(p.poll() is None for p in procs.values()):
        for c in phase:
            mem_peak[c] = max(mem_peak[c], groups[c].memory())
        time.sleep(0.5)
    results: dict[str, Any] = {}
    for c in phase:
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
    return results


def poll_round_cost(host: Host, group: Group, n: int) -> tuple[float, float]:
    """(wall s, host CPU s) of one batched ``poll`` exec for n active jobs on one host (the
    fallback): the host CPU is the cgroup's (sshd's session and the agent), nothing else runs."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    home = host.info["home"]
    state_dir = f"{home}/{BENCH_USER_DIR}/poll-{uuid.uuid4().hex[:6]}"
    ids: list[str] = []

    def start(part: range) -> None:
        hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
        ids.extend(hook.start(["sleep", "600"], f"fanout/poll/{i}")[1].job_id for i in part)

    def stop(part: list[str]) -> None:
        hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
        for job_id in part:
            try:
                hook.abort(job_id, reason="bench done", grace_seconds=0)
            except Exception:
                pass

    def in_threads(fn: Any, parts: list[Any]) -> None:
        threads = [threading.Thread(target=fn, args=(p,)) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    in_threads(start, [range(k, n, 8) for k in range(8)])
    try:
        hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
        hook.call("ping")  # warm: connection, deployed agent
        cpu0, t = group.cpu_seconds(), time.perf_counter()
        hook.poll([(j, {"stdout": 0, "stderr": 0}) for j in ids])
        return time.perf_counter() - t, group.cpu_seconds() - cpu0
    finally:
        in_threads(stop, [ids[k::8] for k in range(8)])


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def starts_table(rows: list[dict], contenders: list[str]) -> str:
    out = [
        "| N | H | contender | start all s | execs/host (starts) | host CPU s (starts) | host CPU ms/start |",
        "|" + " --- |" * 7,
    ]
    for r in rows:
        for c in contenders:
            x = r[c]
            out.append(
                f"| {r['n']} | {r['h']} | {c} | {fmt(x['start_s'], '.1f')} | {x['start_execs_per_host']} | "
                f"{fmt(x['start_host_cpu'], '.1f')} | {fmt(1000 * x['start_host_cpu'] / r['n'], '.1f')} |"
            )
    return "\n".join(out)


def table(rows: list[dict], contenders: list[str]) -> str:
    if rows and rows[0][contenders[0]].get("starts_only"):
        return starts_table(rows, contenders)
    head = (
        "| N | H | contender | events ok | conns/host | execs/host (whole wait) | execs/host/s | "
        "completion p50 / p90 / max s | loop lag p99 / max ms | watcher RSS MB / CPU s | "
        "host CPU s | host mem MB | agent CPU/round ms | start all s |"
    )
    out = [head, "|" + " --- |" * 14]
    for r in rows:
        for c in contenders:
            x = r[c]
            out.append(
                f"| {r['n']} | {r['h']} | {c} | {x['ok']}/{r['n']} | {x['conns_per_host']} | "
                f"{x['execs_per_host']} | {fmt(x['execs_per_host_s'])} | "
                f"{fmt(x['lat_p50'])} / {fmt(x['lat_p90'])} / {fmt(x['lat_max'])} | "
                f"{fmt(x['lag_p99'] * 1000, '.0f')} / {fmt(x['lag_max'] * 1000, '.0f')} | "
                f"{fmt(x['rss_mb'], '.0f')} / {fmt(x['cpu'], '.1f')} | {fmt(x['host_cpu'], '.1f')} | "
                f"{fmt(x['host_mem_mb'], '.0f')} | {fmt(x['agent_cpu_per_round_ms'])} | "
                f"{fmt(x.get('start_s'), '.1f')} |"
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
    ap.add_argument(
        "--starts-only", action="store_true",
        help="only start the jobs (the time to start all, execs, host CPU), then release them",
    )
    ap.add_argument(
        "--together", action="store_true", help="run the contenders at once (default: one after the other)"
    )
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
    import logging

    logging.getLogger("paramiko").setLevel(logging.WARNING)  # a line per connect, else
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
                rows.append(run_cell(n, sub, groups, contenders, opts, flip=len(rows) % 2 == 1))
                print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
        if opts.poll_cost and "ours" in contenders:
            poll_cost = poll_round_cost(hosts["ours"][0], groups["ours"], opts.poll_cost)
    finally:
        for c in contenders:
            for host in hosts[c]:
                host.stop()
            groups[c].remove()
    print(f"## fan-out benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores\n")
    print(table(rows, contenders))
    if poll_cost is not None:
        print(
            f"\nOne batched `poll` exec (the fallback) for {opts.poll_cost} active jobs on one host: "
            f"{poll_cost[0]:.2f} s wall, {poll_cost[1]:.2f} s of host CPU (sshd session and agent)."
        )


if __name__ == "__main__":
    main()

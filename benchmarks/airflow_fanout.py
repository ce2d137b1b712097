"""Fan-out in a real Airflow 3 stack: N mapped deferrable tasks on H hosts, our OrchesjobOperator
beside apache-airflow-providers-ssh's SSHRemoteJobOperator, one after the other in the same stack.

    .venvs/af3/bin/python benchmarks/airflow_fanout.py                     # N=1000, H=10, 20-60 s
    .venvs/af3/bin/python benchmarks/airflow_fanout.py --n 20 --hosts 2 --min-sleep 5 --max-sleep 10

Needs root (testkit/sshd.py starts the sshds; cgroups v1 cpuacct+memory or v2 do the accounting).
How long: the smoke size above takes about 3 min on 2 cores (stack start-up, warm-ups and settle
pauses included). A full run (N=1000, H=10, parallelism 32, 20-60 s jobs) is bound by the
Airflow-side CPU per task (measured at N=100 on 2 cores: ~1.0 CPU s per task for ours, ~1.6 for
the peer, i.e. ~0.6 s and ~0.9 s of wall per task): expect ~10-12 min for ours, ~15-18 min for
the peer, about 30-40 min in all.

The stack (testkit/airflow_stack.py, as tests/e2e uses it): PostgreSQL, one scheduler with the
LocalExecutor (``core.parallelism`` = ``--parallelism``, default 32), one triggerer, the API server
and the dag-processor. Heartbeats and timeouts are Airflow's defaults (the harness's are tuned for
quick tests); the DAGs set ``max_active_tasks=N`` and the triggerer's capacity is >= N, so
parallelism is the only limit on the fan-out. H loopback sshd "hosts" per contender
(benchmarks/fanout_host.py), each contender's in a cgroup of its own, reached through
``AIRFLOW_CONN_*`` connections (key and host key in the extra).

One DAG per contender, ``Operator.partial(task_id="job", poll_interval=5, ...).expand_kwargs([...])``:
map index i runs ``echo i >> RUNS; sleep S_i`` on host i % H, S_i drawn from ``--min-sleep``..
``--max-sleep`` with a seeded RNG (the same sleeps for both). Ours: ``deferrable=True``,
``start_in_triggerer=True`` and ``end_from_trigger=True`` (the trigger starts the job and ends a
task whose job succeeded: one short worker slot per task, without SSH) and a state dir of its own;
``ours-worker-end`` (``--contenders ours,peer,ours-worker-end``) is ours with the operator's
defaults (the task process starts the job over SSH; the task resumes on a worker to end);
the peer: ``remote_os="posix"`` (no OS probe) and a base dir of its own;
``retries=0`` (``--retries``) for both. First an unmeasured warm-up dag run per contender (H tasks
of 1 s, one per host: the API server's and triggerer's first-use imports, our agent's upload to
the hosts; without it the first contender measured paid ~4 s more API server CPU and ~1.5 s more
triggerer CPU at N=20). Then each contender's dag run is triggered (REST) after the previous one
finished and a settle pause (``--settle``, 15 s); every number below is a delta over its own run.

Columns (one row per contender, then each ours*/peer):

* ok: task instances ended ``success`` / N (the rest's states are printed when not all succeed);
* runs: lines in the RUNS file on the host = remote executions (must be N; duplicates said);
* wall s: the dag run's ``start_date`` to the last task instance's ``end_date`` (metadata DB);
* scheduler / workers / triggerer CPU s: user+system CPU of a cgroup per component. Once the stack
  is up, each component's process tree is moved into its own cgroup, and the LocalExecutor's
  worker processes (children of the scheduler titled ``airflow worker -- LocalExecutor: ...``)
  into a ``workers`` cgroup: every process they fork (supervisors' task runners, ssh clients)
  is counted there, exited ones included. A worker the executor forks later is moved within 0.5 s;
* Airflow-side CPU s: everything on the Airflow side: scheduler + workers + triggerer + API server
  (the execution API every task process talks to) + dag-processor + PostgreSQL (the second table
  shows the last three);
* peak worker slots: the highest number of the run's task instances in state ``running`` (DB,
  sampled every 0.5 s, so a shorter peak can be missed); the second table also shows the highest
  number of busy LocalExecutor workers (process titles, same samples) and of ``deferred`` task
  instances. Each task takes a slot twice (its start, then its resume after the trigger fired),
  once with ``end_from_trigger`` (ours, whose slot opens no SSH connection either);
  the LocalExecutor never runs more than ``--parallelism`` at once, so once N is well above it
  both contenders reach it: what a slot costs shows in workers CPU s and wall s;
* host CPU s / host mem MB: the contender's sshd cgroup (sshd, its sessions, the jobs and
  whatever runs beside them: our agent, the peer's wrapper shells): CPU delta, peak resident
  memory (sampled every 0.5 s).

The benchmark's own samples (one PostgreSQL session, two small queries every 0.5 s) are in the
PostgreSQL figure. A measurement, not a test: it prints Markdown tables (progress and per-contender JSON go to
stderr). ``--keep`` keeps the stack's home (logs) and the files on the hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fanout_host import Group, Host  # noqa: E402  (benchmarks/ is on sys.path)

from testkit.airflow_stack import AirflowStack, StackError, conn_env_name  # noqa: E402
from testkit.procs import descendants, proc_cmdline, proc_ppid, tail  # noqa: E402

OPERATORS = {
    # ours as recommended for fan-out: the trigger starts the job (the task process opens no SSH
    # connection) and ends a task whose job succeeded (one short worker slot per task)
    "ours": ("orchesjob_provider.operators.orchesjob", "OrchesjobOperator"),
    # ours with the operator's defaults: the task process starts the job over SSH, and the task
    # resumes on a worker to end (two worker slots)
    "ours-worker-end": ("orchesjob_provider.operators.orchesjob", "OrchesjobOperator"),
    "peer": ("airflow.providers.ssh.operators.ssh_remote_job", "SSHRemoteJobOperator"),
}
COMPONENTS = ("scheduler", "workers", "triggerer", "api-server", "dag-processor", "postgres")
FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")
WORKER_TITLE = "LocalExecutor"

DAG_TEMPLATE = '''\
"""Generated by benchmarks/airflow_fanout.py: {n} mapped deferrable {cls} tasks on {h} hosts."""
from datetime import datetime

from airflow.sdk import DAG

from {module} import {cls}

with DAG(
    dag_id={dag_id!r},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    max_active_tasks={n!r},
    default_args={{"retries": {retries!r}}},
):
    {cls}.partial(task_id="job", poll_interval=5, **{partial!r}).expand_kwargs({kwargs!r})
'''


def bench_env(opts: Any) -> dict[str, str]:
    """Airflow's defaults where testkit's stack shortens them for quick tests, and room for N."""
    return {
        "AIRFLOW__CORE__PARALLELISM": str(opts.parallelism),
        "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, opts.n)),
        "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": str(max(128, opts.parallelism)),
        "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, opts.n)),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "5",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
    }


def write_dag(dags: str, c: str, hosts: list[Host], sleeps: list[float], bench: str, retries: int,
              tag: str = "") -> str:
    module, cls = OPERATORS[c]
    runs = f"{bench}/{tag}{c}.runs"
    partial: dict[str, Any] = {"remote_os": "posix", "remote_base_dir": f"{bench}/peer-jobs"}
    if c.startswith("ours"):
        partial = {"state_dir": f"{bench}/oj-state", "deferrable": True, "end_from_trigger": c == "ours",
                   "start_in_triggerer": c == "ours"}
    kwargs = [{"ssh_conn_id": hosts[i % len(hosts)].conn_id, "command": f"echo {i} >> {runs}; sleep {s}"}
              for i, s in enumerate(sleeps)]
    dag_id = f"airflow_fanout_{tag}{c}"
    Path(dags, f"{dag_id}.py").write_text(DAG_TEMPLATE.format(
        n=len(sleeps), h=len(hosts), module=module, cls=cls, dag_id=dag_id, retries=retries,
        partial=partial, kwargs=kwargs))
    return dag_id


# ------------------------------------------------------------------------------- accounting
def group_pids(group: Group) -> list[int]:
    return [int(p) for p in (group.dirs[0] / "cgroup.procs").read_text().split()]


def add_tree(group: Group, pid: int) -> None:
    for p in [pid, *descendants(pid)]:
        try:
            group.add(p)
        except OSError:  # gone meanwhile
            pass


def adopt_workers(groups: dict[str, Group], scheduler: int) -> None:
    """Move the LocalExecutor's worker processes (and so all they fork) to the workers cgroup."""
    for p in group_pids(groups["scheduler"]):
        if proc_ppid(p) == scheduler and WORKER_TITLE in proc_cmdline(p):
            try:
                groups["workers"].add(p)
            except OSError:
                pass


def busy_workers(groups: dict[str, Group], scheduler: int) -> int:
    """LocalExecutor workers running a workload (their title names it; an idle one says <idle>)."""
    titles = [proc_cmdline(p) for p in group_pids(groups["workers"]) if proc_ppid(p) == scheduler]
    return sum(1 for t in titles if WORKER_TITLE in t and "<idle>" not in t)


def component_groups(stack: AirflowStack) -> dict[str, Group]:
    groups = {name: Group(f"airflow-fanout-{name}") for name in COMPONENTS}
    for name in ("scheduler", "triggerer", "api-server", "dag-processor"):
        add_tree(groups[name], stack.procs[name])
    assert stack.postgres is not None
    add_tree(groups["postgres"], stack.postgres.pid() or 0)
    adopt_workers(groups, stack.procs["scheduler"])
    return groups


# ------------------------------------------------------------------------------- one contender
def run_contender(stack: AirflowStack, c: str, dag_id: str, run_id: str, n: int, h: int, hosts_group: Group,
                  groups: dict[str, Group], bench: str, opts: Any) -> dict[str, Any]:
    import psycopg2

    assert stack.postgres is not None
    scheduler = stack.procs["scheduler"]
    con = psycopg2.connect(**stack.postgres.dsn())  # one session for all the samples
    con.autocommit = True
    cur = con.cursor()
    peak = {"running": 0, "busy": 0, "deferred": 0, "host_mem": 0}
    cpu0 = {k: g.cpu_seconds() for k, g in groups.items()}
    host0 = hosts_group.cpu_seconds()
    t0 = time.time()
    stack.trigger(dag_id, run_id)
    print(f"{c}: dag run {run_id} triggered", file=sys.stderr, flush=True)
    last_print = t0
    while True:
        adopt_workers(groups, scheduler)
        cur.execute("SELECT state, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s "
                    "AND map_index >= 0 GROUP BY state", (dag_id, run_id))
        states = {str(s): k for s, k in cur.fetchall()}
        cur.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
        row = cur.fetchone()
        dr_state = row[0] if row else None
        peak["running"] = max(peak["running"], states.get("running", 0))
        peak["deferred"] = max(peak["deferred"], states.get("deferred", 0))
        peak["busy"] = max(peak["busy"], busy_workers(groups, scheduler))
        peak["host_mem"] = max(peak["host_mem"], hosts_group.memory())
        if dr_state in ("success", "failed") and sum(states.get(s, 0) for s in FINISHED) == n:
            break
        dead = stack.dead_components()
        if dead:
            raise StackError(f"{', '.join(dead)} exited:\n"
                             + "\n".join(tail(stack.component_log(d), 30) for d in dead))
        if time.time() - t0 > opts.timeout:
            raise StackError(f"{c}: not done after {opts.timeout:.0f} s: dag run {dr_state}, {states}")
        if time.time() - last_print > 30:
            last_print = time.time()
            print(f"{c}: t+{last_print - t0:.0f}s dag run {dr_state} {states}", file=sys.stderr, flush=True)
        time.sleep(0.5)
    elapsed = time.time() - t0
    cpu = {k: g.cpu_seconds() - cpu0[k] for k, g in groups.items()}
    host_cpu = hosts_group.cpu_seconds() - host0
    cur.execute("SELECT dr.start_date, max(ti.end_date) FROM dag_run dr JOIN task_instance ti "
                "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE dr.dag_id = %s AND dr.run_id = %s "
                "GROUP BY dr.start_date", (dag_id, run_id))
    start, end = cur.fetchone()
    con.close()
    try:
        lines = Path(f"{bench}/{c}.runs").read_text().split()
    except OSError:
        lines = []
    return {
        "contender": c, "n": n, "h": h, "run_id": run_id, "states": states, "ok": states.get("success", 0),
        "runs": len(lines), "distinct": len(set(lines)), "wall": (end - start).total_seconds(),
        "elapsed": elapsed, "cpu": cpu, "airflow_cpu": sum(cpu.values()), "host_cpu": host_cpu,
        "host_mem_mb": peak["host_mem"] / 2**20, "peak_running": peak["running"],
        "peak_busy": peak["busy"], "peak_deferred": peak["deferred"],
    }


# ------------------------------------------------------------------------------- report
def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("apache-airflow", "apache-airflow-providers-ssh", "airflow-provider-orchesjob"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def tables(rows: list[dict[str, Any]]) -> str:
    head = ("| contender | N | H | ok | runs | wall s | scheduler CPU s | workers CPU s | triggerer CPU s "
            "| Airflow-side CPU s | peak worker slots | host CPU s | host mem MB |")
    out = [head, "|" + " --- |" * 13]

    def nums(r: dict[str, Any]) -> list[float]:
        cpu = r["cpu"]
        return [r["wall"], cpu["scheduler"], cpu["workers"], cpu["triggerer"], r["airflow_cpu"],
                r["peak_running"], r["host_cpu"], r["host_mem_mb"]]

    for r in rows:
        runs = f"{r['runs']}" + ("" if r["distinct"] == r["runs"] else f" ({r['distinct']} distinct)")
        v = [format(x, spec) for x, spec in zip(nums(r), [".1f"] * 5 + [".0f", ".1f", ".0f"])]
        out.append(f"| {r['contender']} | {r['n']} | {r['h']} | {r['ok']}/{r['n']} | {runs} | "
                   + " | ".join(v) + " |")
    by = {r["contender"]: r for r in rows}
    for ours in (c for c in by if c.startswith("ours") and "peer" in by):
        ratios = [f"{a / b:.2f}" if b else "-" for a, b in zip(nums(by[ours]), nums(by["peer"]))]
        out.append(f"| {ours}/peer | | | | | " + " | ".join(ratios) + " |")
    out += ["", "| contender | API server CPU s | dag-processor CPU s | PostgreSQL CPU s | peak busy "
            "LocalExecutor workers | peak deferred | trigger to done s | TI states |", "|" + " --- |" * 8]
    for r in rows:
        cpu = r["cpu"]
        out.append(f"| {r['contender']} | {cpu['api-server']:.1f} | {cpu['dag-processor']:.1f} | "
                   f"{cpu['postgres']:.1f} | {r['peak_busy']} | {r['peak_deferred']} | {r['elapsed']:.1f} | "
                   f"{json.dumps(r['states'], sort_keys=True)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="mapped tasks (default 1000)")
    ap.add_argument("--hosts", type=int, default=10, help="loopback sshd hosts per contender (default 10)")
    ap.add_argument("--min-sleep", type=float, default=20.0)
    ap.add_argument("--max-sleep", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1, help="of the per-map-index sleeps (default 1)")
    ap.add_argument("--contenders", default="ours,peer",
                    help="in this order (default ours,peer; ours-worker-end: without end_from_trigger)")
    ap.add_argument("--parallelism", type=int, default=32, help="core.parallelism = LocalExecutor workers")
    ap.add_argument("--retries", type=int, default=0, help="task retries (default 0)")
    ap.add_argument("--settle", type=float, default=15.0, help="s of quiet between contenders")
    ap.add_argument("--timeout", type=float, help="s per contender (default 600 + max-sleep + 3 s per task)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the unmeasured warm-up run of H one-second tasks per contender")
    ap.add_argument("--keep", action="store_true", help="keep the stack's home and the files on the hosts")
    opts = ap.parse_args()
    opts.timeout = opts.timeout or 600 + opts.max_sleep + 3 * opts.n
    if os.geteuid() != 0:
        raise SystemExit("needs root (loopback sshds, cgroups)")
    contenders = [c for c in opts.contenders.split(",") if c]
    if not contenders or set(contenders) - set(OPERATORS):
        raise SystemExit(f"--contenders: a list of {', '.join(OPERATORS)}")
    rng = random.Random(opts.seed)
    sleeps = [round(rng.uniform(opts.min_sleep, opts.max_sleep), 1) for _ in range(opts.n)]
    started = datetime.now(timezone.utc)
    home = tempfile.mkdtemp(prefix="airflow-fanout-")
    host_groups = {c: Group(f"airflow-fanout-hosts-{c}") for c in contenders}
    hosts: dict[str, list[Host]] = {c: [] for c in contenders}
    groups: dict[str, Group] = {}
    warm_ids: dict[str, str] = {}
    stack = None
    bench = ""
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    try:
        for c in contenders:
            for i in range(opts.hosts):
                hosts[c].append(Host(c, i, host_groups[c]))
        info = hosts[contenders[0]][0].info
        bench = f"{info['home']}/airflow-fanout-{uuid.uuid4().hex[:6]}"
        for d in (bench, f"{bench}/peer-jobs"):
            os.makedirs(d)
            os.chown(d, info["uid"], info["uid"])
        dags = os.path.join(home, "dags")
        os.makedirs(dags)
        dag_ids = {c: write_dag(dags, c, hosts[c], sleeps, bench, opts.retries) for c in contenders}
        if not opts.no_warmup:
            warm_ids = {c: write_dag(dags, c, hosts[c], [1.0] * opts.hosts, bench, opts.retries, "warmup_")
                        for c in contenders}
        conns = {h.conn_id: os.environ[conn_env_name(h.conn_id)] for c in contenders for h in hosts[c]}
        stack = AirflowStack(home, dags, connections=conns, heartbeat_timeout=300, database="postgres",
                             extra_env=bench_env(opts))
        t = time.time()
        stack.setup()
        stack.start()
        for dag_id in [*dag_ids.values(), *warm_ids.values()]:
            stack.wait_dag_parsed(dag_id, timeout=600)
        print(f"stack up and DAGs parsed in {time.time() - t:.0f} s (AIRFLOW_HOME {home})",
              file=sys.stderr, flush=True)
        groups = component_groups(stack)
        for c, dag_id in warm_ids.items():  # not measured: first-use costs (imports, our agent's upload)
            warm = run_contender(stack, c, dag_id, f"{dag_id}_1", opts.hosts, opts.hosts, host_groups[c],
                                 groups, bench, opts)
            print(f"{c}: warm-up {warm['ok']}/{opts.hosts} ok", file=sys.stderr, flush=True)
        for c in contenders:
            time.sleep(opts.settle)
            run_id = f"{dag_ids[c]}_{uuid.uuid4().hex[:6]}"
            try:
                rows.append(run_contender(stack, c, dag_ids[c], run_id, opts.n, opts.hosts, host_groups[c],
                                          groups, bench, opts))
            except StackError as e:  # the other contender still runs; the table says who is missing
                failed.append(c)
                try:  # stop what is left of the run, so it does not load the next contender's
                    stack.api("PATCH", f"/api/v2/dags/{dag_ids[c]}/dagRuns/{run_id}", {"state": "failed"})
                except Exception:
                    pass
                print(f"{c} FAILED: {e}\n{stack.diagnostics(20, task_logs=False)[-6000:]}", file=sys.stderr)
                continue
            print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
    finally:
        if stack is not None:
            stack.stop()
        for g in groups.values():
            g.remove()
        for c in contenders:
            for host in hosts[c]:
                host.stop()
            host_groups[c].remove()
        if opts.keep:
            print(f"kept: AIRFLOW_HOME {home}, host files {bench}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
            if bench:
                shutil.rmtree(bench, ignore_errors=True)
    print(f"## Airflow fan-out, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores: N={opts.n} mapped "
          f"deferrable tasks on H={opts.hosts} hosts, sleeps {opts.min_sleep:g}-{opts.max_sleep:g} s "
          f"(seed {opts.seed}), LocalExecutor parallelism {opts.parallelism}, retries {opts.retries}; "
          f"{versions()}\n")
    print(tables(rows))
    if failed:
        raise SystemExit(f"\nno result for {', '.join(failed)} (see stderr)")


if __name__ == "__main__":
    main()

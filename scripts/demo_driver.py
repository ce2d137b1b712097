#!/usr/bin/env python3
"""The resume demo (run by scripts/demo.sh under .venvs/af3): a real Airflow 3 stack runs
dags_examples/resume_demo.py against a loopback sshd; the first try is killed with kill -9 while
its remote job runs; the retry reattaches to the same job; the side effect happens once.

    PYTHONPATH=. python scripts/demo_driver.py --sshd-json .tmp/demo-sshd/sshd.json [--kill task|worker]

(from the repo root; PYTHONPATH=. makes the test kit, testkit/, importable; also --home DIR.)

--kill task   (default) kill -9 the task process (the one running the operator). Its supervisor
              sees it die and Airflow schedules try 2 within seconds.
--kill worker kill -9 the whole task tree (supervisor + task process), like a lost worker box.
              Airflow only notices through the missing heartbeats (20 s here), so the remote job
              is made longer (40 steps of 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time

from testkit import REPO
from testkit import airflow_stack as st
from testkit.ssh_target import SSHTarget

DAG_FILE = os.path.join(REPO, "dags_examples", "resume_demo.py")
DAG_ID = "orchesjob_resume_demo"
TASK_ID = "remote_job"
CONN_ID = "orchesjob_demo_ssh"
JOB_RE = re.compile(r"job ([0-9a-f-]{36}), attempt (\d+), status (\w+)")

T0 = time.monotonic()


def say(tag: str, msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.0f}s] {tag:<7} {msg}", flush=True)


def operator_lines(log_text: str) -> list[str]:
    """The lines the operator (and the remote job's output) wrote into a try's task log."""
    out = []
    for line in log_text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "orchesjob" in str(rec.get("logger", "")):
            out.append(str(rec.get("event", "")))
    return out


def agent_history(target: SSHTarget, run_key: str) -> list[dict]:
    """The agent's own record for the run key, read on the target over ssh like an admin would."""
    script = (
        "f=$(ls -td ~/.orchesjob/agent/agent-*/ 2>/dev/null | head -n 1); "
        "[ -n \"$f\" ] || exit 3; "
        f"exec {shlex.quote(target.target_python)} -I -S \"$f\" status --run-key {shlex.quote(run_key)} "
        "--all --format json"
    )
    r = target.run(script, timeout=60)
    if r.returncode == 3:
        return []
    if r.returncode != 0:
        raise RuntimeError(f"agent status failed ({r.returncode}): {r.stderr.strip()}")
    data = json.loads(r.stdout)
    return data if isinstance(data, list) else [data]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sshd-json", required=True)
    ap.add_argument("--home", default=os.path.join(REPO, ".tmp", "demo-airflow"))
    ap.add_argument("--kill", choices=("task", "worker"), default="task")
    ap.add_argument("--keep", action="store_true", help="keep the Airflow home afterwards")
    args = ap.parse_args()

    with open(args.sshd_json) as f:
        target = SSHTarget.from_info(json.load(f))
    steps = 10 if args.kill == "task" else 40
    run_id = "demo_" + time.strftime("%Y%m%dT%H%M%S")
    run_key = f"af/{DAG_ID}/{TASK_ID}/-1/{run_id}"
    side_effect = f"{target.home}/orchesjob-demo/side-effect-{run_id}.txt"

    if os.path.isdir(args.home):
        st.AirflowStack(args.home).stop()  # a stack left over by an interrupted demo
        shutil.rmtree(args.home)
    dags = os.path.join(args.home, "dags")
    os.makedirs(dags)
    shutil.copy(DAG_FILE, dags)
    stack = st.AirflowStack(args.home, dags, connections={CONN_ID: target.conn_uri()})

    ok = False
    try:
        say("setup", f"Airflow home {os.path.relpath(args.home, REPO)} (SQLite metadata DB, LocalExecutor)")
        stack.setup()
        say("setup", "airflow db migrate: done; starting api-server, scheduler, dag-processor, triggerer ...")
        stack.start()
        say("setup", f"Airflow is up (API on 127.0.0.1:{stack.api_port}); SSH target "
                     f"{target.user}@{target.host}:{target.port}, host key {target.host_key_fingerprint}")
        stack.wait_dag_parsed(DAG_ID, timeout=300)
        say("dag", f"{DAG_ID} parsed (dags_examples/resume_demo.py): 1 task, retries=1")

        stack.trigger(DAG_ID, run_id, conf={"steps": steps})
        say("run", f"triggered dag run {run_id}: the remote job writes its side effect once, "
                   f"then works {steps} x 2 s")

        # ---- try 1 starts the job
        def try1_started():
            ti = stack.task_instance(DAG_ID, run_id, TASK_ID)
            if ti and ti["state"] in ("success", "failed", "up_for_retry"):
                raise st.StackError(f"try 1 ended before the kill: {ti}")
            for line in operator_lines(stack.read_task_log(DAG_ID, run_id, TASK_ID, 1)):
                m = JOB_RE.search(line)
                if line.startswith("orchesjob ") and m:
                    return ti, line, m
            return None

        ti, line, m = st.wait_until(try1_started, 300, 0.5, "try 1 to start the remote job",
                                    diag=stack.diagnostics)
        job_id, attempt = m.group(1), m.group(2)
        say("try 1", f"started remote job {job_id} (attempt {attempt})")
        say("try 1", f"  task log: {line}")
        time.sleep(3)  # let a couple of steps run, so the kill is clearly mid-job
        jobs = agent_history(target, run_key)
        say("target", f"agent says job {jobs[0]['job_id']} is {jobs[0]['status']} "
                      f"(supervisor pid {jobs[0]['worker_pid']}, job pid {jobs[0]['target_pid']})")

        # ---- kill the first try
        ti = stack.task_instance(DAG_ID, run_id, TASK_ID)
        assert ti is not None
        if args.kill == "task":
            pids = [ti["pid"]]
            killed = [{"pid": p, "cmdline": st.proc_cmdline(p)} for p in pids]
            say("kill", f"killing the worker's task process: kill -9 {ti['pid']} ({killed[0]['cmdline']!r})")
            os.kill(ti["pid"], 9)
        else:
            procs = stack.task_processes(ti["id"], ti["pid"])
            say("kill", "killing the whole worker task tree: kill -9 "
                + ", ".join(f"{p} ({st.proc_cmdline(p)!r})" for p in procs))
            stack.kill_task(ti["id"], ti["pid"])
        jobs = agent_history(target, run_key)
        say("target", f"after the kill the remote job is still {jobs[0]['status']} (nothing on the target "
                      "was touched)")

        # ---- Airflow retries
        def try2():
            t = stack.task_instance(DAG_ID, run_id, TASK_ID)
            return t if t and t["try_number"] >= 2 else None

        say("retry", "waiting for Airflow to fail try 1 and schedule try 2"
            + (" (heartbeat timeout: ~20 s)" if args.kill == "worker" else ""))
        st.wait_until(try2, 300, 0.5, "try 2", diag=stack.diagnostics)

        def try2_attached():
            for line in operator_lines(stack.read_task_log(DAG_ID, run_id, TASK_ID, 2)):
                if line.startswith("orchesjob ") and JOB_RE.search(line):
                    return line
            return None

        line2 = st.wait_until(try2_attached, 300, 0.5, "try 2 to call the agent", diag=stack.diagnostics)
        m2 = JOB_RE.search(line2)
        assert m2 is not None
        action = line2.split(":", 1)[0].split()[1]
        say("try 2", f"{action}{' to' if action == 'reattached' else ''} job {m2.group(1)} "
                     f"(attempt {m2.group(2)}, status {m2.group(3)})"
            + ("  <- the same job" if m2.group(1) == job_id else "  <- A DIFFERENT JOB"))
        say("try 2", f"  task log: {line2}")

        state = stack.wait_dag_run_done(DAG_ID, run_id, timeout=600)
        ti = stack.task_instance(DAG_ID, run_id, TASK_ID)
        assert ti is not None
        say("run", f"dag run {state}; task instance {ti['state']} on try {ti['try_number']}")
        say("try 2", "try 2's task log, operator lines (the remote job's output is streamed in):")
        lines2 = operator_lines(stack.read_task_log(DAG_ID, run_id, TASK_ID, 2))
        if len(lines2) > 14:
            lines2 = [*lines2[:6], f"... ({len(lines2) - 12} more lines) ...", *lines2[-6:]]
        for ln in lines2:
            print(f"          | {ln}")

        # ---- the proof
        jobs = agent_history(target, run_key)
        r = target.run(f"cat {shlex.quote(side_effect)}", timeout=60)
        lines = r.stdout.splitlines() if r.returncode == 0 else []
        say("check", f"agent history for run key {run_key}: {len(jobs)} job(s): "
            + "; ".join(f"{j['job_id']} attempt {j['attempt_no']} {j['status']} exit {j['exit_code']}"
                        f"{' acked' if j['acked_at'] else ''}" for j in jobs))
        say("check", f"side-effect file {side_effect}: {len(lines)} line(s): {lines}")
        ok = (state == "success" and ti["try_number"] == 2 and action == "reattached"
              and m2.group(1) == job_id and len(jobs) == 1 and jobs[0]["status"] == "SUCCEEDED"
              and len(lines) == 1)
        if ok:
            say("RESULT", f"OK: try 1 started remote job {job_id} (attempt 1), was killed; try 2 reattached "
                          f"to job {job_id}; job SUCCEEDED; side effect happened once.")
        else:
            say("RESULT", "FAILED: see above")
            print(stack.diagnostics(40))
        return 0 if ok else 1
    except BaseException as e:
        say("ERROR", f"{type(e).__name__}: {e}")
        print(stack.diagnostics(40))
        return 1
    finally:
        say("cleanup", "stopping Airflow ...")
        stack.stop()
        target.run(f"rm -f {shlex.quote(side_effect)}", timeout=60)
        if ok and not args.keep:
            shutil.rmtree(args.home, ignore_errors=True)
        else:
            say("cleanup", f"Airflow home kept for inspection: {args.home}")


if __name__ == "__main__":
    sys.exit(main())

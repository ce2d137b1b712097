#!/usr/bin/env python3
"""What stays alive on a host per waiting job, and what a job costs in CPU (not a timed test).

For N waiting jobs (``sleep``) started the way each option starts them, sums over every
process that is not a job's target - the supervisor, the wrapper - and divides by N:

* Pss and RSS (``/proc/<pid>/smaps_rollup``; Pss splits shared pages among their users),
* CPU (utime + stime) those processes use over an idle window (``--idle`` seconds).

Options:

* ``classic``   - the agent with ``ORCHESJOB_LIGHT=0``: a forked Python supervisor per job;
* ``light``     - the agent as shipped: a bash wrapper per job (remote_agent/worker/light.py);
* ``mini-py``   - a minimal Python supervisor: a fresh ``python -I -S`` that forks the target
                  and waits (the least a Python supervisor can be);
* ``sh-wrap``   - a plain POSIX sh wrapper (dash here: ``sh -c '"$@" & wait $!'``), the floor
                  of a shell wrapper, without the guarantees (see docs/agent/on-the-host.md);
* ``shepherd``  - one Python process per host that forks and waits for all N jobs.

Then the CPU of a whole job's life on the host (``--cpu-jobs`` async starts of ``true``), for
``classic`` and ``light``: this script makes itself a child subreaper, so every process of a
start (launcher, supervisor, wrapper, finisher, target) is reaped here and counted in
RUSAGE_CHILDREN.

Usage::

    python benchmarks/job_memory.py [--counts 1,10,100] [--idle 3] [--cpu-jobs 20] [--python PY]

Standard library only; prints a Markdown report (progress on stderr). Linux only.
"""

import argparse
import ctypes
import datetime
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
MINI_PY = ("import os, sys\n"
           "pid = os.fork()\n"
           "if pid == 0:\n"
           "    os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])\n"
           "os.write(1, b'%d\\n' % pid); os.close(1)\n"
           "os.waitpid(pid, 0)\n")
SHEPHERD = ("import os, sys\n"
            "n = int(sys.argv[1])\n"
            "for _ in range(n):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        os.setsid(); os.execvp(sys.argv[2], sys.argv[2:])\n"
            "    os.write(1, b'%d\\n' % pid)\n"
            "os.close(1)\n"
            "for _ in range(n):\n"
            "    os.wait()\n")
SH_WRAP = '"$@" & echo $!; exec 1>&-; wait $!'


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def rollup(pid: int) -> Tuple[int, int]:
    """(Pss, Rss) in kB."""
    pss = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Run:
    """N jobs of one option: the processes that hold them (non-target), and how to stop them."""

    def __init__(self, python: str, option: str, n: int, home: Path):
        self.python, self.option, self.n, self.home = python, option, n, home
        self.holders: List[int] = []
        self.targets: List[int] = []
        self.procs: List[subprocess.Popen] = []

    def agent_env(self, light: bool) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=str(REPO), ORCHESJOB_HOME=str(self.home),
                   ORCHESJOB_LIGHT="1" if light else "0")
        return env

    def start(self) -> None:
        import json

        if self.option in ("classic", "light"):
            env = self.agent_env(self.option == "light")
            for _ in range(self.n):
                out = subprocess.run(
                    [self.python, "-S", "-m", "remote_agent", "start", "--run-key", uuid.uuid4().hex,
                     "--", "sleep", "600"], env=env, stdout=subprocess.PIPE, check=True,
                    stdin=subprocess.DEVNULL, cwd=str(self.home))
                job = json.loads(out.stdout)
                self.holders.append(job["worker_pid"])
                self.targets.append(job["target_pid"])
        elif self.option in ("mini-py", "sh-wrap"):
            for _ in range(self.n):
                argv = ([self.python, "-I", "-S", "-c", MINI_PY, "sleep", "600"]
                        if self.option == "mini-py" else ["sh", "-c", SH_WRAP, "sh", "sleep", "600"])
                p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
                self.procs.append(p)
                assert p.stdout is not None
                self.targets.append(int(p.stdout.readline()))
                self.holders.append(p.pid)
        else:  # shepherd
            p = subprocess.Popen([self.python, "-I", "-S", "-c", SHEPHERD, str(self.n), "sleep", "600"],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(p)
            assert p.stdout is not None
            self.targets = [int(p.stdout.readline()) for _ in range(self.n)]
            self.holders = [p.pid]
        time.sleep(0.5)  # let start-up settle (a supervisor's RUNNING write, the launcher's exit)

    def measure(self, idle: float) -> Dict[str, float]:
        pss = rss = 0
        for pid in self.holders:
            p, r = rollup(pid)
            pss += p
            rss += r
        before = sum(cpu_ticks(pid) for pid in self.holders)
        time.sleep(idle)
        after = sum(cpu_ticks(pid) for pid in self.holders)
        return {"pss": pss / self.n, "rss": rss / self.n,
                "cpu_ms": (after - before) * 1000.0 / TICK / self.n, "procs": len(self.holders)}

    def stop(self) -> None:
        for pid in self.targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for p in self.procs:
            p.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the agent's workers end on their own
            alive = [pid for pid in self.holders if os.path.exists(f"/proc/{pid}")]
            if not alive:
                break
            reap_all(block=False)
            time.sleep(0.05)


def reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def job_cpu(python: str, light: bool, jobs: int, home: Path) -> float:
    """ms of CPU (user + sys) on the host per job ``true`` started as the provider starts jobs
    (async), every process of its life counted once all of them ended."""
    run = Run(python, "light" if light else "classic", 0, home)
    env = run.agent_env(light)
    reap_all(block=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(jobs):
        subprocess.run([python, "-S", "-m", "remote_agent", "start", "--run-key", uuid.uuid4().hex,
                        "--", "true"], env=env, stdout=subprocess.DEVNULL, check=True,
                       stdin=subprocess.DEVNULL, cwd=str(home))
    reap_all(block=True)  # supervisors, wrappers, finishers were re-parented to us
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used * 1000.0 / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="1,10,100")
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--cpu-jobs", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--options", default="classic,light,mini-py,sh-wrap,shepherd")
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of every start come to us
    counts = [int(x) for x in args.counts.split(",")]
    options = [o for o in args.options.split(",") if o]
    tmp = Path(tempfile.mkdtemp(prefix="job-memory-"))
    rows = []
    try:
        for option in options:
            for n in counts:
                home = tmp / f"{option}-{n}"
                home.mkdir()
                log(f"{option} x {n}")
                run = Run(args.python, option, n, home)
                try:
                    run.start()
                    rows.append((option, n, run.measure(args.idle)))
                finally:
                    run.stop()
        cpu = {}
        for light in (False, True):
            home = tmp / f"cpu-{light}"
            home.mkdir()
            log(f"cpu per job, light={light}")
            cpu["light" if light else "classic"] = job_cpu(args.python, light, args.cpu_jobs, home)
    finally:
        reap_all(block=False)
        shutil.rmtree(tmp, ignore_errors=True)
    ver = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    print(f"# Job memory on the host ({datetime.date.today()}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {ver}, kernel {platform.release()})\n")
    print(f"Per waiting job, over every process that is not a job's target; CPU over {args.idle:g} s idle.\n")
    print("| option | jobs | processes held | Pss per job (kB) | RSS per job (kB) "
          "| CPU while waiting (ms/job) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for option, n, m in rows:
        print(f"| {option} | {n} | {m['procs']} | {m['pss']:.0f} | {m['rss']:.0f} | {m['cpu_ms']:.2f} |")
    print(f"\nHost CPU per job's whole life (`start -- true`, async, {args.cpu_jobs} jobs, every process):\n")
    print("| option | ms per job |")
    print("| --- | ---: |")
    for option, ms in cpu.items():
        print(f"| {option} | {ms:.1f} |")


if __name__ == "__main__":
    main()

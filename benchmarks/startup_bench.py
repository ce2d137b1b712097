#!/usr/bin/env python3
"""Start-up of the deployed agent: this tree against a base revision, call by call.

The deployed form is what a host runs on every call: ``python3 -I -S -c <launch.py>`` with the
agent directory the hook unpacked and precompiled (``~/.orchesjob/agent/agent-<sha>``), which
runs the bundle's ``orchesjob_boot.py`` and then the agent. This script builds that directory
for both trees with each tree's own ``orchesjob_provider/bundle.py`` (the bytes its hook would
upload), precompiles it like ``remote/deploy.py`` does, and measures each call:

* instructions (callgrind, when ``valgrind`` is installed): deterministic to ~0.1 %, so a
  difference of a few tenths of a percent is real on this noisy 2-core machine;
* CPU time (user + sys of the child), the median of ``--repeat`` runs, both trees interleaved
  so drift hits both alike.

Calls: ``status --run-key <none>`` (the cheapest answer), ``status --run-key <finished job>``
and ``start --sync -- true`` through the command line (a person, cron), and the same status,
``ping`` and a sync start through ``rpc`` (the hooks' every call, JSON on stdin).

Usage::

    python benchmarks/startup_bench.py [--base ea448b0] [--python python3.11] [--repeat 21]

Standard library only; prints a Markdown table. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def export_tree(rev: str, dest: Path) -> Path:
    """``remote_agent/`` and ``orchesjob_provider/`` of ``rev`` (or the working tree for "")."""
    if not rev:
        return REPO
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "remote_agent", "orchesjob_provider"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def launch_text(tree: Path) -> str:
    """launch.py as the hook sends it (bundle._remote_script: comment lines dropped)."""
    lines = (tree / "orchesjob_provider" / "remote" / "launch.py").read_text().splitlines()
    return "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")) + "\n"


def deploy(tree: Path, home: Path, python: str) -> Path:
    """Unpack ``tree``'s bundle under ``home`` the way deploy.py leaves it; returns the agent dir."""
    builder = tree / "orchesjob_provider" / "bundle.py"
    spec = importlib.util.spec_from_file_location(f"bundle_{uuid.uuid4().hex}", builder)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "remote_agent"}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(tree))
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        data = module.build_bundle().data
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k.split(".")[0] == "remote_agent"]:
            del sys.modules[k]
        sys.modules.update(saved)
    agent = home / ".orchesjob" / "agent" / "agent-bench"
    agent.mkdir(parents=True)
    zipfile.ZipFile(io.BytesIO(data)).extractall(agent)
    precompile = "import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2)"
    subprocess.run([python, "-I", "-S", "-c", precompile, str(agent)], check=True)
    for root, dirs, files in os.walk(home):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)
    os.chmod(home, 0o700)
    return agent


class Contender:
    def __init__(self, name: str, tree: Path, work: Path, python: str) -> None:
        self.name, self.python = name, python
        self.home = work / name
        self.home.mkdir()
        self.agent = deploy(tree, self.home, python)
        self.launch = launch_text(tree)
        self.state = self.home / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.env.update(HOME=str(self.home), ORCHESJOB_HOME=str(self.state))
        out = self.run(["start", "--run-key", "done", "--sync", "--", "true"], None)
        assert out.returncode == 0, out.stderr

    def argv(self, args: list[str]) -> list[str]:
        return [self.python, "-I", "-S", "-c", self.launch, str(self.agent), *args]

    def run(self, args: list[str], stdin: bytes | None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(args), input=stdin, capture_output=True, env=self.env,
                              cwd=str(self.home), timeout=60)

    def cpu(self, args: list[str], stdin: bytes | None) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = self.run(args, stdin)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert r.returncode in (0, 3), (r.returncode, r.stderr)  # 3: status of no such key
        return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000

    def instructions(self, args: list[str], stdin: bytes | None) -> int | None:
        """Instructions of the call's own process. A start forks the job's supervisor, which
        callgrind follows and reports apart (counting from the fork's copy of the parent):
        its work shows in the CPU column, which includes every waited-for child."""
        if not shutil.which("valgrind"):
            return None
        with tempfile.TemporaryDirectory() as out:
            r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p",
                                *self.argv(args)], input=stdin, capture_output=True,
                               env=dict(self.env, PYTHONHASHSEED="0"), cwd=str(self.home), timeout=600)
        first, counts = None, {}
        for line in r.stderr.decode().splitlines():
            if line.startswith("==") and "==" in line[2:]:
                pid = line[2:line.index("==", 2)]
                first = first or pid
                if "Collected :" in line:
                    counts[pid] = int(line.split()[-1])
        if first not in counts:
            raise RuntimeError(r.stderr.decode()[-2000:])
        return counts[first]


def calls() -> list[tuple[str, list[str], bytes | None]]:
    """(name, argv, stdin): RUNKEY becomes a fresh run key per run, STATE the contender's state dir."""
    def rpc(body: str) -> bytes:
        return body.encode()

    return [
        ("cli status (no such key)", ["status", "--run-key", "none"], None),
        ("cli status (finished job)", ["status", "--run-key", "done"], None),
        ("cli start --sync true", ["start", "--run-key", "RUNKEY", "--sync", "--", "true"], None),
        ("rpc status (finished job)", ["rpc"], rpc('{"op": "status", "run_key": "done", "home": "STATE"}')),
        ("rpc ping", ["rpc"], rpc('{"op": "ping", "home": "STATE"}')),
        ("rpc start sync true", ["rpc"],
         rpc('{"op": "start", "run_key": "RUNKEY", "argv": ["true"], "sync": true, "home": "STATE"}')),
    ]


def fresh(args: list[str], stdin: bytes | None, c: Contender) -> tuple[list[str], bytes | None]:
    key = "k-" + uuid.uuid4().hex
    if stdin is not None:
        stdin = stdin.replace(b"RUNKEY", key.encode()).replace(b"STATE", str(c.state).encode())
    return [key if a == "RUNKEY" else a for a in args], stdin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="ea448b0",
                    help="git revision to compare with (default: the last flat agent)")
    ap.add_argument("--python", default=shutil.which("python3.11") or sys.executable)
    ap.add_argument("--repeat", type=int, default=21)
    opts = ap.parse_args()
    probe = "import sys, sqlite3; print(sys.version.split()[0], sqlite3.sqlite_version)"
    version = subprocess.run([opts.python, "-c", probe], capture_output=True, text=True,
                             check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = Contender("base", export_tree(opts.base, work / "base-tree"), work, opts.python)
        ours = Contender("ours", REPO, work, opts.python)
        rows = []
        for name, args, stdin in calls():
            ir = {c.name: c.instructions(*fresh(args, stdin, c)) for c in (base, ours)}
            runs: dict[str, list[float]] = {"base": [], "ours": []}
            for i in range(opts.repeat):
                for c in ((base, ours) if i % 2 == 0 else (ours, base)):
                    runs[c.name].append(c.cpu(*fresh(args, stdin, c)))
            rows.append((name, ir, {k: statistics.median(v) for k, v in runs.items()}))
    print(f"Deployed agent start-up: `{opts.base}` (base) against this tree (ours); CPython {version[0]}, "
          f"SQLite {version[1]}; CPU: median of {opts.repeat} runs each, interleaved.\n")
    print("| call | base instructions | ours instructions | ours / base | base CPU ms | ours CPU ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, ir, cpu in rows:
        b, o = ir["base"], ir["ours"]
        cells = f"{b / 1e6:.2f} M | {o / 1e6:.2f} M | {o / b:.4f}" if b and o else "- | - | -"
        print(f"| {name} | {cells} | {cpu['base']:.1f} | {cpu['ours']:.1f} |")

if __name__ == "__main__":
    main()

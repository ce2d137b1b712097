#!/usr/bin/env python3
"""Start-up and history-size benchmark for the remote agent (not a timed test).

Measures, as separate processes exactly as a host would run them:

* ``status --run-key K``, ``status --run-key K --all``, ``status --running``
* ``list --limit 20`` (the newest 20 jobs) and ``list --status FAILED --limit 20`` (none in
  the synthetic history: the status index answers at once)
* ``start --run-key <fresh> -- true`` (async) and ``start --run-key <fresh> --sync -- true``

at several history sizes (rows in the ``jobs`` table), for

* ``floor``     - ``python -I -S -c "import sqlite3, json"``: the cheapest process that could
                  possibly answer (interpreter start-up plus the two modules any answer needs);
* ``ours``      - ``python -I -S agent.pyz ...``: the zipapp built from this repo's
                  ``remote_agent`` package, the way the provider runs it on a host;
* ``ours -m``   - ``python -S -m remote_agent ...`` with ``PYTHONPATH`` pointing at a copy of
                  the package (byte-code cached in ``__pycache__``, unlike the zipapp);
* ``orchesjob`` - ``python -m orchesjob ...`` (orchesjob 1.1.0), when it is installed.

All contenders use the same interpreter (the orchesjob one when found). Within every
operation the contenders are interleaved round-robin, with the order rotated each iteration,
so drift on a noisy machine hits all of them alike; the table reports the median and p90 of
N runs and the ratio median / floor median. History is synthesised directly with sqlite3
(``executemany`` in one transaction) from a template row that each tool wrote itself, so it
matches each tool's own schema; built databases are cached per (tool, schema, rows).

Standard library only.  Usage::

    python benchmarks/agent_bench.py [--rows 1,10000,1000000] [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipapp

try:
    import resource
except ImportError:  # not on Windows; CPU times are then 0
    resource = None  # type: ignore[assignment]
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = "3"  # bump when the history generator changes (invalidates the cache)
MEASURED_KEY = "bench-measured-key"
FLOOR_CODE = "import sqlite3, json"
SQLITE_MAGIC = b"SQLite format 3\x00"

# operation name -> (target ratio over the floor, kind)
TARGETS = {
    "status": 1.5,
    "status --all": 1.5,
    "status --running": 1.5,
    "list": 1.5,
    "list --status FAILED": 1.5,
    "start (async)": 3.0,
    "start --sync true": 4.0,
    # a start that declares a write lock (a fresh resource each run, so it never waits): the
    # lock queue's transaction and the supervisor's turn before the spawn (docs/guides/locks-and-slots.md)
    "start --lock-write (async)": 3.0,
}
READ_OPS = ("status", "status --all", "status --running", "list", "list --status FAILED")
START_OPS = ("start (async)", "start --sync true", "start --lock-write (async)")


def log(msg: str) -> None:
    print("[agent_bench {}] {}".format(time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- contenders


class Contender:
    """One way of running a command; ``tool`` groups contenders that share a state dir."""

    def __init__(self, name: str, prefix: Sequence[str], env: Dict[str, str], tool: Optional[str]):
        self.name = name
        self.prefix = list(prefix)
        self.env = env
        self.tool = tool  # None for the floor
        self.home: Optional[Path] = None

    def argv(self, args: Sequence[str]) -> List[str]:
        if self.tool is None:
            return list(self.prefix)
        return self.prefix + list(args)

    def run_env(self) -> Dict[str, str]:
        env = dict(self.env)
        if self.home is not None:
            env["ORCHESJOB_HOME"] = str(self.home)
        return env


def base_env() -> Dict[str, str]:
    """The caller's environment without PYTHON* variables (they would change start-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("ORCHESJOB_HOME", None)
    return env


# Every child runs in this empty directory: `python -S -m remote_agent` puts the current
# directory first on sys.path, and it must find the package copy, not the checkout.
CHILD_CWD: Optional[str] = None


def run_quiet(
    argv: Sequence[str],
    env: Optional[Dict[str, str]] = None,
    timeout: float = 600,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), stdin=stdin, capture_output=True, env=env, timeout=timeout, cwd=CHILD_CWD
    )


def find_orchesjob_python(explicit: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """Return (python, version) of an interpreter that can import orchesjob, else (None, None)."""
    candidates: List[str] = []
    if explicit:
        candidates.append(explicit)
    else:
        if os.environ.get("ORCHESJOB_PYTHON"):
            candidates.append(os.environ["ORCHESJOB_PYTHON"])
        candidates += ["/tmp/ojvenv/bin/python", sys.executable]
    probe = "import importlib.metadata as m, orchesjob; print(m.version('orchesjob'))"
    for py in candidates:
        if not py or not os.path.exists(py):
            continue
        try:
            p = run_quiet([py, "-c", probe], env=base_env(), timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if p.returncode == 0:
            return py, p.stdout.decode().strip()
    return None, None


def interpreter_info(python: str) -> Dict[str, str]:
    code = (
        "import json, sys, sqlite3, platform; print(json.dumps({'python': platform.python_version(),"
        " 'implementation': platform.python_implementation(), 'sqlite': sqlite3.sqlite_version,"
        " 'executable': sys.executable}))"
    )
    p = run_quiet([python, "-I", "-S", "-c", code], env=base_env(), timeout=30)
    if p.returncode != 0:
        raise SystemExit("cannot run {}: {}".format(python, p.stderr.decode(errors="replace")))
    return json.loads(p.stdout.decode())


def snapshot_agent(workdir: Path) -> Path:
    """Copy remote_agent/ (sources only) to workdir/src; return the src dir."""
    src = workdir / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(
        REPO / "remote_agent",
        src / "remote_agent",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
    )
    return src


def build_pyz(src: Path, workdir: Path) -> Tuple[Path, str]:
    """The agent zipapp for the package copy in ``src``; returns (path, how it was built).

    Uses the provider's own builder (orchesjob_provider/bundle.py, loaded from
    its file so the provider package and Airflow are not imported) when it exists, so the
    benchmark runs the very bytes the hook uploads; otherwise an equivalent zipapp.
    """
    target = workdir / "agent.pyz"
    builder = REPO / "orchesjob_provider" / "bundle.py"
    if builder.exists():
        import importlib.util

        saved_path = list(sys.path)
        saved_mods = {
            k: v for k, v in sys.modules.items() if k == "remote_agent" or k.startswith("remote_agent.")
        }
        for k in saved_mods:
            del sys.modules[k]
        sys.path.insert(0, str(src))
        try:
            spec = importlib.util.spec_from_file_location("_bench_agent_bundle", str(builder))
            if spec is None or spec.loader is None:
                raise ImportError(str(builder))
            mod = importlib.util.module_from_spec(spec)
            sys.modules["_bench_agent_bundle"] = mod  # dataclasses looks the module up
            spec.loader.exec_module(mod)
            bundle = mod.build_bundle()
            target.write_bytes(bundle.data)
            return (
                target,
                f"orchesjob_provider.bundle.build_bundle(), sha256 {bundle.sha256[:16]}",
            )
        except Exception as exc:  # fall back to our own zipapp
            log(f"provider bundle builder failed ({exc}); building the zipapp here")
        finally:
            sys.path[:] = saved_path
            sys.modules.pop("_bench_agent_bundle", None)
            for k in [k for k in sys.modules if k == "remote_agent" or k.startswith("remote_agent.")]:
                del sys.modules[k]
            sys.modules.update(saved_mods)
    stage = workdir / "pyz-stage"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(src, stage)
    (stage / "__main__.py").write_text(
        "import sys\nfrom remote_agent.frontends.cli import main\nsys.exit(main())\n")
    zipapp.create_archive(stage, target)
    return target, "zipapp.create_archive() of remote_agent/ (sources only)"


# --------------------------------------------------------------------------- history


def find_db(home: Path) -> Optional[Path]:
    """The SQLite file under ``home`` that holds a ``jobs`` table."""
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        try:
            with open(path, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    continue
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone():
                    return path
            finally:
                con.close()
        except (OSError, sqlite3.Error):
            continue
    return None


def schema_digest(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        uv = con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()
    return hashlib.sha256(repr((rows, uv)).encode()).hexdigest()[:16]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def history_plan(rows: int, measured_attempts: int, per_key: int) -> List[Tuple[str, int]]:
    """(run_key, attempt_no) in insertion (= time) order; the measured key is spread evenly."""
    others = rows - measured_attempts
    plan: List[Tuple[str, int]] = []
    n = 0
    k = 0
    while n < others:
        key = f"bench-hist-{k:07d}"
        for a in range(1, per_key + 1):
            if n >= others:
                break
            plan.append((key, a))
            n += 1
        k += 1
    # Evenly spaced, the last attempt last of all (the key a DAG is working on now).
    for j in range(measured_attempts, 0, -1):
        pos = len(plan) if j == measured_attempts else (j - 1) * len(plan) // measured_attempts
        plan.insert(pos, (MEASURED_KEY, j))
    return plan


def fill_history(db: Path, rows: int, measured_attempts: int, per_key: int) -> str:
    """Replace the single seed job (run key MEASURED_KEY) by ``rows`` synthetic terminal jobs.

    Every row is a copy of the seed row the tool wrote itself, with job id, run key, attempt
    number, rerun link, timestamps and id-bearing strings (log paths) changed. Other tables
    with a ``run_key`` column get one copy of the seed key's rows per key, pointing at that
    key's latest job; tables that only reference the seed job id get one copy per job.
    Returns a one-line description.
    """
    con = sqlite3.connect(str(db), isolation_level=None)
    try:
        journal = con.execute("PRAGMA journal_mode").fetchone()[0]
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-400000")
        con.execute("PRAGMA foreign_keys=OFF")
        info = con.execute("PRAGMA table_info(jobs)").fetchall()
        cols = [r[1] for r in info]
        for need in ("job_id", "run_key"):
            if need not in cols:
                raise RuntimeError(f"jobs table has no {need} column: {cols}")
        seed_rows = con.execute("SELECT * FROM jobs WHERE run_key = ?", (MEASURED_KEY,)).fetchall()
        if len(seed_rows) != 1:
            raise RuntimeError(f"expected exactly one seed job, found {len(seed_rows)}")
        tmpl = dict(zip(cols, seed_rows[0]))
        seed_id = tmpl["job_id"]
        int_ids = isinstance(seed_id, int)
        # Integer primary keys other than job_id (rowid aliases) get fresh values from SQLite.
        auto_cols = {r[1] for r in info if r[5] and r[1] != "job_id" and "INT" in (r[2] or "").upper()}
        ts_cols = [c for c in cols if c.endswith("_at") and _is_num(tmpl[c])]
        ts_base = {c: tmpl[c] for c in ts_cols}
        id_str_cols = [
            c
            for c in cols
            if c != "job_id" and isinstance(tmpl[c], str) and not int_ids and seed_id in tmpl[c]
        ]
        id_eq_cols = [
            c
            for c in cols
            if c not in ("job_id", "rerun_of_job_id") and tmpl[c] == seed_id and c not in id_str_cols
        ]

        aux_tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'jobs'"
            )
        ]
        aux: List[Tuple[str, List[str], List[tuple], bool]] = []
        for t in aux_tables:
            tcols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
            trows = con.execute(f"SELECT * FROM {t}").fetchall()
            if "run_key" in tcols:
                keyed_rows = [r for r in trows if r[tcols.index("run_key")] == MEASURED_KEY]
                if keyed_rows:
                    aux.append((t, tcols, keyed_rows, True))
            else:
                refs = [r for r in trows if seed_id in r]
                if refs:
                    aux.append((t, tcols, refs, False))

        con.execute("BEGIN")
        con.execute("DELETE FROM jobs WHERE job_id = ?", (seed_id,))
        for t, tcols, _trows, keyed in aux:
            if keyed:
                con.execute(f"DELETE FROM {t} WHERE run_key = ?", (MEASURED_KEY,))
            else:
                for c in tcols:
                    con.execute(f"DELETE FROM {t} WHERE {c} = ?", (seed_id,))

        plan = history_plan(rows, measured_attempts, per_key)
        total = len(plan)
        latest: Dict[str, Tuple[Any, int, int]] = {}  # run_key -> (job_id, seq, attempt_no)
        per_job_aux = [a for a in aux if not a[3]]
        per_job_rows: List[Tuple[str, tuple]] = []
        next_int = [(con.execute("SELECT COALESCE(MAX(job_id), 0) FROM jobs").fetchone()[0] or 0) + 1]

        def gen():
            for seq, (key, attempt) in enumerate(plan):
                if int_ids:
                    jid: Any = next_int[0]
                    next_int[0] += 1
                else:
                    jid = str(uuid.uuid4())
                prev = latest.get(key)
                row = dict(tmpl)
                row["job_id"] = jid
                row["run_key"] = key
                if "attempt_no" in row:
                    row["attempt_no"] = attempt
                if "rerun_of_job_id" in row:
                    row["rerun_of_job_id"] = prev[0] if prev else None
                age = total - seq  # one second apart, the newest one second before the seed
                for c in ts_cols:
                    v = ts_base[c] - age
                    row[c] = int(v) if isinstance(ts_base[c], int) else float(v)
                for c in id_str_cols:
                    row[c] = tmpl[c].replace(seed_id, jid)
                for c in id_eq_cols:
                    row[c] = jid
                for c in auto_cols:
                    row[c] = None
                latest[key] = (jid, seq, attempt)
                for t, _tcols, trows, _ in per_job_aux:
                    for tr in trows:
                        per_job_rows.append((t, tuple(jid if v == seed_id else v for v in tr)))
                yield tuple(row[c] for c in cols)

        con.executemany(
            "INSERT INTO jobs ({}) VALUES ({})".format(", ".join(cols), ", ".join("?" * len(cols))), gen()
        )
        for t, tcols, trows, keyed in aux:
            if not keyed:
                continue
            ts_t = [i for i, c in enumerate(tcols) if c.endswith("_at")]
            att_t = [i for i, c in enumerate(tcols) if "attempt" in c]  # e.g. last_attempt_no

            def gen_aux(tcols=tcols, trows=trows, ts_t=ts_t, att_t=att_t):
                kidx = tcols.index("run_key")
                for key, (jid, seq, attempt) in latest.items():
                    age = total - seq
                    for tr in trows:
                        vals = list(tr)
                        vals[kidx] = key
                        for i, v in enumerate(vals):
                            if v == seed_id:
                                vals[i] = jid
                            elif i in ts_t and _is_num(v):
                                vals[i] = type(v)(v - age)
                            elif i in att_t and _is_num(v):
                                vals[i] = attempt
                        yield tuple(vals)

            con.executemany(
                "INSERT INTO {} ({}) VALUES ({})".format(t, ", ".join(tcols), ", ".join("?" * len(tcols))),
                gen_aux(),
            )
        for t, vals in per_job_rows:
            con.execute("INSERT INTO {} VALUES ({})".format(t, ", ".join("?" * len(vals))), vals)
        con.execute("COMMIT")
        n = con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        if n != rows:
            raise RuntimeError(f"history has {n} rows, expected {rows}")
        if journal.lower() == "wal":
            con.execute("PRAGMA journal_mode=WAL")
        aux_names = ",".join(a[0] for a in aux) or "-"
        return f"jobs={n} keys={len(latest)} aux={aux_names}"
    finally:
        con.close()


def remove_db_files(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(db) + suffix)
        if p.exists():
            p.unlink()


def prepare_home(
    tool: str, runner: Contender, rows: int, cache_dir: Path, args: argparse.Namespace, tool_id: str
) -> Tuple[Path, Path, str]:
    """A state dir for ``tool`` whose jobs table holds ``rows`` terminal jobs. Returns (home, db, note)."""
    home = cache_dir / "homes" / f"{tool}-{rows}"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    runner.home = home
    p = run_quiet(
        runner.argv(["start", "--run-key", MEASURED_KEY, "--sync", "--", "true"]), env=runner.run_env()
    )
    if p.returncode != 0:
        raise RuntimeError(
            "seed start failed (rc={}): {}".format(
                p.returncode, " ".join(p.stderr.decode(errors="replace").split())[-300:]
            )
        )
    db = find_db(home)
    if db is None:
        raise RuntimeError(f"no SQLite file with a jobs table under {home}")
    measured_attempts = min(rows, args.key_attempts)
    key = hashlib.sha256(
        repr(
            (
                GENERATOR_VERSION,
                tool_id,
                schema_digest(db),
                rows,
                measured_attempts,
                args.attempts_per_key,
                str(home),
            )
        ).encode()
    ).hexdigest()[:20]
    cached = cache_dir / "db" / f"{tool}-{rows}-{key}.sqlite"
    if rows == 1:
        return home, db, "seed job only"
    if cached.exists() and not args.rebuild:
        remove_db_files(db)
        shutil.copyfile(cached, db)
        return home, db, f"cached {cached.name}"
    t0 = time.perf_counter()
    note = fill_history(db, rows, measured_attempts, args.attempts_per_key)
    dt = time.perf_counter() - t0
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    shutil.copyfile(db, tmp)
    os.replace(tmp, cached)
    return home, db, f"built in {dt:.1f} s ({note})"


def active_jobs(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('STARTING', 'RUNNING')"
            ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def quiesce(dbs: Sequence[Path], timeout: float = 30.0) -> None:
    """Wait until no job is active in any of ``dbs`` (started ``true`` jobs finish quickly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(active_jobs(db) == 0 for db in dbs):
            time.sleep(0.2)  # let the supervisors exit
            return
        time.sleep(0.05)
    log(f"warning: jobs still active after {timeout:.0f} s: {[(str(d), active_jobs(d)) for d in dbs]}")


# --------------------------------------------------------------------------- measuring


def op_args(op: str, tag: str) -> List[str]:
    if op == "status":
        return ["status", "--run-key", MEASURED_KEY]
    if op == "status --all":
        return ["status", "--run-key", MEASURED_KEY, "--all"]
    if op == "status --running":
        return ["status", "--running"]
    if op == "list":  # orchesjob 1.1.0 has no list: its cells show the error
        return ["list", "--limit", "20"]
    if op == "list --status FAILED":
        return ["list", "--status", "FAILED", "--limit", "20"]
    key = f"bench-start-{tag}-{uuid.uuid4().hex[:12]}"
    if op == "start (async)":
        return ["start", "--run-key", key, "--", "true"]
    if op == "start --sync true":
        return ["start", "--run-key", key, "--sync", "--", "true"]
    if op == "start --lock-write (async)":
        return ["start", "--run-key", key, "--lock-write", "bench/" + key, "--", "true"]
    raise ValueError(op)


class Result:
    def __init__(self) -> None:
        self.samples: List[float] = []
        self.cpu: List[float] = []  # user + sys seconds of the child (and what it waited for)
        self.error: Optional[str] = None
        self.capped = False

    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def p90(self) -> float:
        s = sorted(self.samples)
        if not s:
            return float("nan")
        if len(s) == 1:
            return s[0]
        return statistics.quantiles(s, n=10, method="inclusive")[8]

    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")


def _children_cpu() -> float:
    if resource is None:
        return 0.0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(c: Contender, argv: List[str]) -> Tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, process). CPU time excludes detached job supervisors."""
    env = c.run_env()
    c0 = _children_cpu()
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=CHILD_CWD)
    dt = time.perf_counter() - t0
    return dt, _children_cpu() - c0, p


def measure_op(op: str, contenders: List[Contender], args: argparse.Namespace, tag: str) -> Dict[str, Result]:
    results = {c.name: Result() for c in contenders}
    live = list(contenders)
    # Warm-up (untimed): page cache, __pycache__, and a first check that the command works.
    for c in list(live):
        for _ in range(args.warmup):
            dt, cpu, p = timed(c, c.argv(op_args(op, tag + "-w")))
            if p.returncode != 0:
                err = (p.stderr.decode(errors="replace") or p.stdout.decode(errors="replace")).strip()
                results[c.name].error = f"rc={p.returncode}: {err[-300:]}"
                live.remove(c)
                break
            if dt > args.slow_cap:
                results[c.name].samples.append(dt)  # too slow to waste a warm-up on
                results[c.name].cpu.append(cpu)
    for i in range(args.repeat):
        n = len(live)
        if n == 0:
            break
        order = live[i % n :] + live[: i % n]
        for c in order:
            r = results[c.name]
            if r.capped:
                continue
            if (len(r.samples) >= args.slow_min and (r.median() or 0) > args.slow_cap) or (
                r.samples and min(r.samples) > 5 * args.slow_cap
            ):
                r.capped = True
                continue
            dt, cpu, p = timed(c, c.argv(op_args(op, f"{tag}-{i}")))
            if p.returncode != 0 and r.error is None:
                err = (p.stderr.decode(errors="replace") or p.stdout.decode(errors="replace")).strip()
                r.error = f"iteration {i} rc={p.returncode}: {err[-300:]}"
            r.samples.append(dt)
            r.cpu.append(cpu)
            if args.gap:
                time.sleep(args.gap)
    return results


# --------------------------------------------------------------------------- report


def fmt_ms(r: Optional[Result]) -> str:
    if r is None:
        return "n/a"
    if not r.samples:
        return "err" if r.error else "n/a"
    s = f"{r.median() * 1000:.1f} / {r.p90() * 1000:.1f}"
    if r.capped or len(r.samples) < 3:
        s += f" (n={len(r.samples)})"
    if r.error:
        s += " err"
    return s


def fmt_ratio(r: Optional[Result], floor: Optional[Result]) -> str:
    if r is None or not r.samples or floor is None or not floor.samples:
        return "n/a"
    return "%.2fx" % (r.median() / floor.median())


def ratio(r: Optional[Result], floor: Optional[Result]) -> Optional[float]:
    if r is None or not r.samples or floor is None or not floor.samples or r.error:
        return None
    return r.median() / floor.median()


VARIANT_TAG = {"ours": "", "ours -m": " `[-m]`", "ours dir": " `[dir]`"}


def variants(names: List[str]) -> List[str]:
    return [n for n in names if n in VARIANT_TAG] or ["ours"]


def render_table(rows: int, per_op: Dict[str, Dict[str, Result]], names: List[str], note: str) -> str:
    has_oj = "orchesjob" in names
    out = []
    out.append("### {} history row{}\n".format(f"{rows:,}", "" if rows == 1 else "s"))
    if note:
        out.append(note + "\n")
    head = [
        "operation",
        "floor ms",
        "ours ms",
        "ours/floor",
        "orchesjob ms",
        "orchesjob/floor",
        "target",
        "met?",
    ]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * 5 + ["---:", ":---:"]) + "|")
    for variant in variants(names):
        for op, res in per_op.items():
            floor = res.get("floor")
            ours = res.get(variant)
            rt = ratio(ours, floor)
            target = TARGETS[op]
            met = "n/a" if rt is None else ("yes" if rt <= target else "**NO**")
            if not has_oj:
                oj_cells = ["n/a", "n/a"]
            elif variant == "ours":
                oj_cells = [fmt_ms(res.get("orchesjob")), fmt_ratio(res.get("orchesjob"), floor)]
            else:
                oj_cells = ["-", "-"]
            cells = [
                op + VARIANT_TAG[variant],
                fmt_ms(floor),
                fmt_ms(ours),
                fmt_ratio(ours, floor),
                *oj_cells,
                f"<= {target:.1f}x",
                met,
            ]
            out.append("| " + " | ".join(cells) + " |")
    errors = []
    for op, res in per_op.items():
        for name, r in res.items():
            if r.error:
                errors.append("- `{}` / {}: {}".format(op, name, r.error.replace("\n", " ")))
    if errors:
        out.append("\nErrors:\n" + "\n".join(errors))
    return "\n".join(out) + "\n"


def render_summary(all_results: Dict[int, Dict[str, Dict[str, Result]]], names: List[str]) -> str:
    sizes = list(all_results)
    shown = variants(names) + (["orchesjob"] if "orchesjob" in names else [])
    out = []
    worst: List[Tuple[float, str]] = []
    for title, getter in (
        ("wall time", Result.median),
        (
            "CPU time (user + sys; less sensitive to machine load, excludes the detached job supervisor)",
            Result.cpu_median,
        ),
    ):
        out.append(f"### Summary, {title}: median / floor median\n")
        head = ["operation", "target"]
        for v in shown:
            for n in sizes:
                head.append("{} @{}".format(v, f"{n:,}"))
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for op in TARGETS:
            if not any(op in all_results[n] for n in sizes):
                continue
            cells = [op, f"<= {TARGETS[op]:.1f}x"]
            for v in shown:
                for n in sizes:
                    res = all_results[n].get(op, {})
                    r, f = res.get(v), res.get("floor")
                    if r is None or f is None or not r.samples or not f.samples or r.error:
                        cells.append("n/a")
                        continue
                    a, b = getter(r), getter(f)
                    if not b:
                        cells.append("n/a")
                        continue
                    rt = a / b
                    mark = "" if v == "orchesjob" or rt <= TARGETS[op] else " **miss**"
                    cells.append(f"{rt:.2f}x{mark}")
                    if v == "ours" and getter is Result.median:
                        worst.append(
                            (
                                rt / TARGETS[op],
                                "{} @{} rows: {:.2f}x (target {:.1f}x)".format(op, f"{n:,}", rt, TARGETS[op]),
                            )
                        )
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if worst:
        misses = [w for w in sorted(worst, reverse=True) if w[0] > 1.0]
        if misses:
            out.append(f"Wall-time targets missed by `ours` ({len(misses)} of {len(worst)}):")
            out.extend("- " + m[1] for m in misses)
        else:
            out.append(f"`ours` meets every wall-time target ({len(worst)} cells).")
    return "\n".join(out) + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", default=None, help="history sizes, comma separated (default 1,10000,1000000)")
    ap.add_argument(
        "--repeat", type=int, default=None, help="timed runs per contender and operation (default 15)"
    )
    ap.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per contender and operation (default 1)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: rows 1,10000 and 5 repeats unless given")
    ap.add_argument("--ops", default=",".join(TARGETS), help="operations to run, comma separated")
    ap.add_argument(
        "--python",
        default=None,
        help="interpreter for floor and ours (default: the orchesjob interpreter, else this one)",
    )
    ap.add_argument(
        "--orchesjob-python",
        default=None,
        help="interpreter that can import orchesjob (default: $ORCHESJOB_PYTHON, /tmp/ojvenv/bin/python)",
    )
    ap.add_argument("--no-orchesjob", action="store_true", help="leave orchesjob out")
    ap.add_argument("--no-ours", action="store_true", help="leave this repo's agent out")
    ap.add_argument("--no-module", action="store_true", help="leave out the `python -S -m remote_agent` rows")
    ap.add_argument(
        "--dir",
        action="store_true",
        help="add `[dir]` rows: the zipapp extracted to a directory, run as `python -I -S DIR` "
        "(byte-code cached in the directory's __pycache__)",
    )
    ap.add_argument(
        "--agent-pyz", default=None, help="use this prebuilt agent zipapp instead of building one"
    )
    ap.add_argument(
        "--key-attempts",
        type=int,
        default=100,
        help="attempts of the measured run key (what status --all prints; default 100)",
    )
    ap.add_argument(
        "--attempts-per-key",
        type=int,
        default=2,
        help="attempts per run key for the rest of the history (default 2)",
    )
    ap.add_argument(
        "--slow-cap",
        type=float,
        default=2.0,
        help="stop sampling a contender once its median exceeds this many seconds (default 2)",
    )
    ap.add_argument(
        "--slow-min", type=int, default=3, help="samples taken before --slow-cap applies (default 3)"
    )
    ap.add_argument(
        "--gap", type=float, default=0.02, help="untimed pause after each sample, seconds (default 0.02)"
    )
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="where built histories and state dirs live (default $TMPDIR/agent_bench)",
    )
    ap.add_argument("--rebuild", action="store_true", help="ignore cached histories")
    ap.add_argument("--output", default=None, help="also write the Markdown report to this file")
    ap.add_argument("--json", default=None, help="write raw samples (seconds) as JSON to this file")
    args = ap.parse_args(argv)
    if args.rows is None:
        args.rows = "1,10000" if args.quick else "1,10000,1000000"
    if args.repeat is None:
        args.repeat = 5 if args.quick else 15
    args.rows = [int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()]
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in args.ops:
        if o not in TARGETS:
            ap.error("unknown operation {!r} (choose from {})".format(o, ", ".join(TARGETS)))
    if any(n < 1 for n in args.rows):
        ap.error("--rows must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    cache_dir = Path(args.cache_dir or os.path.join(tempfile.gettempdir(), "agent_bench")).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    workdir = cache_dir / "agent"
    workdir.mkdir(exist_ok=True)
    global CHILD_CWD
    (cache_dir / "cwd").mkdir(exist_ok=True)
    CHILD_CWD = str(cache_dir / "cwd")

    oj_python, oj_version = (
        (None, None) if args.no_orchesjob else find_orchesjob_python(args.orchesjob_python)
    )
    python = args.python or oj_python or sys.executable
    info = interpreter_info(python)
    env0 = base_env()
    notes: List[str] = []

    contenders: List[Contender] = [Contender("floor", [python, "-I", "-S", "-c", FLOOR_CODE], env0, None)]
    ours_version = None
    if not args.no_ours:
        try:
            src = snapshot_agent(workdir)
            env_m = dict(env0, PYTHONPATH=str(src))
            p = run_quiet([python, "-S", "-m", "remote_agent", "--version"], env=env_m, timeout=60)
            if p.returncode != 0:
                err = p.stderr.decode(errors="replace").strip().splitlines()
                raise RuntimeError(
                    "`python -m remote_agent --version` failed: {}".format(
                        err[-1] if err else f"rc={p.returncode}"
                    )
                )
            ours_version = (p.stdout.decode() + p.stderr.decode()).strip()
            if args.agent_pyz:
                pyz, pyz_how = Path(args.agent_pyz).resolve(), "given with --agent-pyz"
            else:
                pyz, pyz_how = build_pyz(src, workdir)
            contenders.append(Contender("ours", [python, "-I", "-S", str(pyz)], env0, "ours"))
            if not args.no_module:
                contenders.append(Contender("ours -m", [python, "-S", "-m", "remote_agent"], env_m, "ours"))
            if args.dir:
                import zipfile

                xdir = workdir / "agent-dir"
                if xdir.exists():
                    shutil.rmtree(xdir)
                with zipfile.ZipFile(str(pyz)) as zf:
                    zf.extractall(str(xdir))
                dir_cmd = [python, "-I", "-S", str(xdir / "__main__.py")]  # as the provider runs it
                contenders.append(Contender("ours dir", dir_cmd, env0, "ours"))
        except Exception as exc:  # the agent may not exist yet: report, keep going
            notes.append(f"ours: not measured ({exc})")
            log(f"ours not available: {exc}")
    if oj_python:
        contenders.append(Contender("orchesjob", [oj_python, "-m", "orchesjob"], env0, "orchesjob"))
    elif not args.no_orchesjob:
        notes.append("orchesjob: not installed (give --orchesjob-python)")
    names = [c.name for c in contenders]

    header = [
        "## agent_bench: {} UTC".format(
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        ),
        "",
    ]
    try:
        ncpu_aff = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu_aff = os.cpu_count() or 0
    header.append(
        "- machine: {}, {} CPUs ({} usable), {}, load avg {}".format(
            cpu_model(),
            os.cpu_count(),
            ncpu_aff,
            platform.platform(),
            " ".join(f"{x:.2f}" for x in os.getloadavg()),
        )
    )
    if os.getloadavg()[0] > ncpu_aff:
        header.append(
            "- **the machine was busy when the run started (1-minute load above the CPU count): wall "
            "times are inflated and noisy; the CPU-time summary is the steadier signal**"
        )
    header.append(
        "- interpreter: {} {} (`{}`), SQLite {}".format(
            info["implementation"], info["python"], python, info["sqlite"]
        )
    )
    header.append(f'- floor: `python -I -S -c "{FLOOR_CODE}"`')
    if "ours" in names:
        header.append(
            "- ours: {}, `python -I -S agent.pyz` (built by {}){}".format(
                ours_version,
                pyz_how,
                ""
                if args.no_module
                else "; `[-m]` rows: `python -S -m remote_agent`, PYTHONPATH = copy of remote_agent/ "
                "(cached byte-code)",
            )
            + ("; `[dir]` rows: the zipapp extracted to a directory, `python -I -S DIR`" if args.dir else "")
        )
    if "orchesjob" in names:
        header.append(f"- orchesjob {oj_version}: `{oj_python} -m orchesjob`")
    header.append(
        f"- {args.repeat} timed runs per cell after {args.warmup} warm-up, contenders interleaved "
        "round-robin; cells are median / p90 in ms, ratio = median / floor median; a contender "
        f"slower than {args.slow_cap:.1f} s is sampled only {args.slow_min} times"
    )
    header.append(
        "- history: terminal (SUCCEEDED) jobs copied from a template job each tool wrote; the "
        f"measured run key has min(rows, {args.key_attempts}) attempts spread over the history (what "
        f"`status --all` prints), the rest {args.attempts_per_key} attempts per run key; "
        "`status --running` finds 0 active jobs; starts use a fresh run key each run"
    )
    for n_ in notes:
        header.append("- " + n_)
    report: List[str] = ["\n".join(header) + "\n"]
    print(report[0], flush=True)

    all_results: Dict[int, Dict[str, Dict[str, Result]]] = {}
    raw: Dict[str, Any] = {"header": header, "results": {}}
    try:
        for rows in args.rows:
            homes: Dict[str, Tuple[Path, Path]] = {}
            size_notes = []
            for tool in ("ours", "orchesjob"):
                runner = next((c for c in contenders if c.tool == tool), None)
                if runner is None:
                    continue
                tool_id = ours_version if tool == "ours" else f"orchesjob {oj_version}"
                log("preparing {} history with {} rows".format(tool, f"{rows:,}"))
                try:
                    home, db, note = prepare_home(tool, runner, rows, cache_dir, args, str(tool_id))
                except Exception as exc:
                    log(f"{tool}: cannot prepare history: {exc}")
                    size_notes.append(f"{tool}: no history ({exc})")
                    contenders_t = [c for c in contenders if c.tool == tool]
                    for c in contenders_t:
                        c.home = None
                    continue
                log(f"{tool}: {note}")
                size_notes.append(f"{tool}: {note}")
                homes[tool] = (home, db)
                for c in contenders:
                    if c.tool == tool:
                        c.home = home
            active = [c for c in contenders if c.tool is None or c.tool in homes]
            per_op: Dict[str, Dict[str, Result]] = {}
            if hasattr(os, "sync"):
                os.sync()  # flush the history just written before timing anything
            time.sleep(1.0)
            for op in args.ops:
                log("{} rows: {}".format(f"{rows:,}", op))
                per_op[op] = measure_op(op, active, args, str(rows))
                if op in START_OPS:
                    # orchesjob 1.1.0's supervisor migrates every row before it runs the job.
                    quiesce([db for _, db in homes.values()], timeout=30 + rows / 5000)
            all_results[rows] = per_op
            raw["results"][str(rows)] = {
                op: {n: {"samples": r.samples, "cpu": r.cpu, "error": r.error} for n, r in res.items()}
                for op, res in per_op.items()
            }
            table = render_table(
                rows, per_op, names, "History: " + "; ".join(size_notes) if size_notes else ""
            )
            report.append(table)
            print(table, flush=True)
    finally:
        dbs = [c.home for c in contenders if c.home is not None]
        if dbs:
            quiesce([d for d in (find_db(h) for h in dbs) if d is not None], timeout=20)
    summary = render_summary(all_results, names)
    elapsed = time.perf_counter() - t_start
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary += f"\nTotal wall time: {elapsed:.0f} s; load average at the end: {load}.\n"
    report.append(summary)
    print(summary, flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(report))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The import rules of docs/design/architecture.md, checked on the source (AST, no imports).

Agent layers, low to high: common (L0) < store, host (L1, siblings) < jobs (L2) < worker (L3)
< ops (L4) < frontends (L5) < ``__main__``. A module imports from its own layer or below;
store/ and host/ never import each other; common/ imports nothing of the agent; imports of
agent modules inside functions only in frontends/ (per-command loading); no ``_private`` name
of another module; no import cycle in remote_agent or orchesjob_provider; the provider reaches
the agent only through ``remote_agent.common.vocab`` (one small module of shared words and the
one rule both sides apply) and ``remote_agent.__version__``.
Type-only imports (under ``if MYPY:`` / ``if TYPE_CHECKING:``) follow the layer rules but are
not edges of the cycle check (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAYER = {"common": 0, "store": 1, "host": 1, "jobs": 2, "worker": 3, "ops": 4, "frontends": 5}
#: run on the target from inside the bundle (the launcher, bootstrap, deploy): agent-side code
TARGET_SIDE = "orchesjob_provider.remote."
MAX_LINES = 400
#: (module, what it may load inside a function) outside frontends/, each with its cost note: the
#: reader loads the lock queue only for a STARTING row (~1 ms that every status would pay)
LAZY = {("remote_agent.jobs.reader", "remote_agent.jobs.lockqueue"),
        ("remote_agent.jobs.reader", "remote_agent.jobs.liveness"),
        # the read path (status of a finished job) loads neither: start-up is measured in ms
        ("remote_agent.jobs.reader", "remote_agent.store.logs"),
        ("remote_agent.jobs.liveness", "remote_agent.store.exitrec"),
        # a writer loads the migrations only for a file it must migrate (db.open_write)
        ("remote_agent.store.db", "remote_agent.store.schema"),
        # a plain start loads no lock queue, check runner, stopper or light wrapper: each is
        # loaded by the start (or the job's supervisor) that has locks, a check, a running
        # attempt to supersede, or an async start (docs/development/benchmarks.md: start-up)
        ("remote_agent.ops.start", "remote_agent.host.stop"),
        ("remote_agent.ops.start", "remote_agent.jobs.liveness"),
        ("remote_agent.ops.start", "remote_agent.jobs.checkspec"),
        ("remote_agent.ops.start", "remote_agent.jobs.lockqueue"),
        ("remote_agent.ops.start", "remote_agent.store.locksql"),
        ("remote_agent.worker.supervisor", "remote_agent.worker.checkrun"),
        ("remote_agent.worker.supervisor", "remote_agent.worker.lockwait"),
        ("remote_agent.worker.supervisor", "remote_agent.worker.light"),
        ("remote_agent.worker.finish", "remote_agent.worker.checkrun"),
        ("remote_agent.worker.finish", "remote_agent.worker.light")}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


ALL = {**modules("remote_agent"), **modules("orchesjob_provider")}


def imports(name: str):
    """(target module, imported names, in a function?, type-only?, line) for each import."""
    tree = ast.parse(ALL[name].read_text())
    package = name if ALL[name].name == "__init__.py" else name.rpartition(".")[0]

    def walk(node, in_func, typing_only):
        for child in ast.iter_child_nodes(node):
            func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            only = typing_only or (isinstance(child, ast.If) and ast.unparse(child.test) in (
                "MYPY", "TYPE_CHECKING", "typing.TYPE_CHECKING"))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, [], in_func, typing_only, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1]
                                    + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in ALL:
                        yield sub, [], in_func, typing_only, child.lineno
                    else:
                        yield base, [alias.name], in_func, typing_only, child.lineno
            yield from walk(child, func, only)

    yield from walk(tree, False, False)


def layer(name: str) -> float:
    if name == "remote_agent.__main__":
        return 6
    return LAYER[part(name)] if part(name) else 0


def part(name: str) -> str:
    """The subpackage of an agent module ("store"), or "" for the package's own modules."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else ""


def agent_problems(name: str) -> list[str]:
    problems = []
    for target, _names, in_func, _, line in imports(name):
        if not target.startswith("remote_agent") or target == name:
            continue
        where = f"{ALL[name].relative_to(ROOT)}:{line}: {name} imports {target}"
        if target != "remote_agent" and layer(target) > layer(name):
            problems.append(f"{where}: a higher layer")
        if name.startswith("remote_agent.common") and not target.startswith("remote_agent.common"):
            problems.append(f"{where}: common/ imports nothing of the agent outside common/")
        if {part(name), part(target)} == {"store", "host"}:
            problems.append(f"{where}: store/ and host/ never import each other")
        if in_func and not name.startswith("remote_agent.frontends") and (name, target) not in LAZY:
            problems.append(f"{where} inside a function (only frontends/ load per command)")
        elif in_func and "#" not in ALL[name].read_text().splitlines()[line - 1]:
            problems.append(f"{where} per command without its one-line cost note")
    return problems


def private_uses(name: str) -> list[str]:
    """``from x import _y`` and ``x._y`` where x is another product module."""
    problems, aliases = [], {}
    for target, names, _, _, line in imports(name):
        if target in ALL and target != name:
            problems += [f"{ALL[name].relative_to(ROOT)}:{line}: {n} of {target}"
                         for n in names if n.startswith("_") and not n.startswith("__")]
    tree = ast.parse(ALL[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in ALL:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            problems.append(f"{ALL[name].relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return problems


def cycles(package: str) -> list[list[str]]:
    graph = {n: sorted({t for t, _, _, only, _ in imports(n) if t in ALL and t != n and not only
                        and t.startswith(package)}) for n in ALL if n.startswith(package)}
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for t in graph.get(n, []):
            if state.get(t) == "open":
                found.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def report(problems: list[str]) -> str:
    return "\n" + "\n".join(sorted(set(problems)))


def test_agent_modules_import_only_their_layer_or_below() -> None:
    problems = [p for n in ALL if n.startswith("remote_agent.") for p in agent_problems(n)]
    assert not problems, report(problems)


def test_no_module_uses_another_modules_private_names() -> None:
    problems = [p for n in ALL for p in private_uses(n)]
    assert not problems, report(problems)


def test_no_import_cycles_in_the_agent() -> None:
    found = cycles("remote_agent")
    assert not found, "import cycles:" + report([" -> ".join(c) for c in found])


def test_no_import_cycles_in_the_provider() -> None:
    found = cycles("orchesjob_provider")
    assert not found, "import cycles:" + report([" -> ".join(c) for c in found])


def test_the_provider_reaches_the_agent_only_through_vocab_and_the_version() -> None:
    bad = []
    for name in ALL:
        if not name.startswith("orchesjob_provider") or name.startswith(TARGET_SIDE):
            continue
        for target, names, _, _, line in imports(name):
            if target == "remote_agent" and set(names) <= {"__version__"}:
                continue  # `import remote_agent` (bundle.py finds its files) or its __version__
            if target.startswith("remote_agent") and target != "remote_agent.common.vocab":
                bad.append(f"{ALL[name].relative_to(ROOT)}:{line}: {target} {names}")
    assert not bad, report(bad)


def test_subpackage_inits_are_empty_and_modules_short() -> None:
    inits = [p for n, p in ALL.items() if n.count(".") and p.name == "__init__.py"
             and n.startswith("remote_agent") and p.read_text().strip()]
    long = [f"{p.relative_to(ROOT)}: {len(p.read_text().splitlines())}" for p in ALL.values()
            if len(p.read_text().splitlines()) > MAX_LINES]
    assert (inits, long) == ([], [])

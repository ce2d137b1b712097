"""The provider's layers, as docs/design/architecture.md states them: each package imports only
the layers below it (any import, also one inside a function), so a trigger never loads operator
code and the sans-I/O client never loads a hook."""

from __future__ import annotations

import ast
from pathlib import Path

import orchesjob_provider

ROOT = Path(orchesjob_provider.__file__).parent

#: package -> the provider packages it may import (besides itself and the top-level modules)
ALLOWED = {
    "client": set(),
    "hooks": {"client", "utils"},
    "utils": {"client", "hooks"},
    "triggers": {"client", "hooks", "utils"},
    "sensors": {"client", "hooks", "utils", "triggers"},
    "operators": {"client", "hooks", "utils", "triggers"},
    "decorators": {"client", "hooks", "utils", "triggers", "operators"},
}
PACKAGES = set(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "orchesjob_provider" and len(parts) > 1 and parts[1] in PACKAGES:
                found.add(parts[1])
    return found


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = imported_packages(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from orchesjob_provider.operators.orchesjob import OrchesjobOperator\n")
    assert imported_packages(f) == {"operators"}

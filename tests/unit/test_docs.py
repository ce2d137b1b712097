"""The docs cover the code: every CLI command and option, every public parameter, the README's DAG.

- docs/agent/cli-reference.md is what scripts/gen_cli_docs.py renders from the agent's argparse
  tree today, and holds every command and every option of it (a new flag without a regenerated
  page fails here);
- every parameter of OrchesjobOperator, OrchesjobSensor, OrchesjobTrigger and ``@task.orchesjob``
  (read from their signatures) has a row in its guide page's parameter table;
- the README's first DAG is, line for line, the ``readme`` section of the example file it names,
  which tests/provider/test_examples.py runs; the README stays a front door (at most 200 lines).

Links and anchors inside docs/ are checked by ``mkdocs build --strict`` (scripts/test.sh, docs).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ the CLI


def _sections(page: str) -> dict[str, str]:
    """``## `name` `` heading -> the text under it (up to the next heading of that level)."""
    parts = re.split(r"^## `([^`]+)`\s*$", page, flags=re.M)
    # the examples (argparse epilog) do not count as documenting an option: cut them off
    return {parts[i]: parts[i + 1].split("\nexamples:\n")[0] for i in range(1, len(parts), 2)}


def _mentions(text: str, option: str) -> bool:
    """``--run-key`` stands in ``text`` as a whole option (not as part of ``--run-key-x``)."""
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", text) is not None


def test_the_cli_reference_is_current() -> None:
    gen = _gen_cli_docs()
    assert gen.PAGE.read_text() == gen.render(), (
        "docs/agent/cli-reference.md is stale: run `python scripts/gen_cli_docs.py`")


def test_every_cli_command_and_option_is_in_the_reference() -> None:
    gen = _gen_cli_docs()
    parser = gen.build_parser()
    sections = _sections(gen.PAGE.read_text())
    missing = []
    for option in gen.option_strings(parser):
        if not _mentions(sections.get("orchesjob", ""), option):
            missing.append(f"orchesjob {option}")
    commands = gen.subcommands(parser)
    assert commands, "the parser has no commands: wrong parser module?"
    for name, sub in commands.items():
        if name not in sections:
            missing.append(f"command {name!r} (no '## `{name}`' section)")
            continue
        for option in gen.option_strings(sub):
            if not _mentions(sections[name], option):
                missing.append(f"orchesjob {name} {option}")
    assert not missing, "undocumented in docs/agent/cli-reference.md: " + ", ".join(missing)


def test_every_command_has_a_section_in_the_cli_guide() -> None:
    """The hand-written guide (docs/agent/cli.md) shows every command at least once."""
    gen = _gen_cli_docs()
    guide = (DOCS / "agent" / "cli.md").read_text()
    missing = [n for n in gen.subcommands(gen.build_parser()) if not re.search(rf"orchesjob {n}\b", guide)]
    assert not missing, "commands never shown in docs/agent/cli.md: " + ", ".join(missing)


# ------------------------------------------------------------------------- the parameters


def _documented(page: Path) -> set[str]:
    """Names in backticks in the first cell of a table row: ``| `name` | ... |``."""
    names: set[str] = set()
    for line in page.read_text().splitlines():
        if line.startswith("|"):
            cells = line.split("|")
            if len(cells) > 2:
                names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[1]))
    return names


def _params(fn) -> list[str]:
    """Named parameters of a callable; ``self`` and ``*args`` left out, ``**kwargs`` kept as "kwargs"
    only where the page has to say where they go (the decorator, the sensor)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        out.append(p.name)
    return out


def _public_signatures():
    pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")
    from orchesjob_provider.decorators import orchesjob as decorators
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    drop_kwargs = {"kwargs"}  # BaseOperator's / BaseTrigger's own: documented by Airflow
    return [
        ("OrchesjobOperator", OrchesjobOperator.__init__, "guides/operator.md", drop_kwargs),
        ("OrchesjobSensor", OrchesjobSensor.__init__, "guides/sensor.md", set()),
        ("OrchesjobTrigger", OrchesjobTrigger.__init__, "guides/deferrable.md", drop_kwargs),
        ("@task.orchesjob", decorators._OrchesjobDecoratedOperator.__init__, "guides/taskflow.md", set()),
        ("orchesjob_task", decorators.orchesjob_task, "guides/taskflow.md", set()),
    ]


def test_every_public_parameter_has_a_row_in_its_guide() -> None:
    missing = []
    for what, fn, page, ignore in _public_signatures():
        documented = _documented(DOCS / page)
        missing += [f"{what}({name}) in docs/{page}" for name in _params(fn)
                    if name not in ignore and name not in documented]
    assert not missing, "parameters without a row in their guide's table: " + ", ".join(missing)


# ------------------------------------------------------------------------------- the README


def _example_section(path: Path, name: str) -> str:
    text = path.read_text()
    m = re.search(rf"^# --8<-- \[start:{name}\]\n(.*?)^# --8<-- \[end:{name}\]\n", text, flags=re.M | re.S)
    assert m, f"{path} has no section {name!r}"
    return re.sub(r"^# --8<-- \[(start|end):\w+\]\n", "", m.group(1), flags=re.M)


def test_the_readme_dag_is_the_example_it_names() -> None:
    readme = README.read_text()
    m = re.search(r"This is `(dags_examples/[\w.]+\.py)`.*?```python\n(.*?)```", readme, flags=re.S)
    assert m, "README: no 'This is `dags_examples/...`' followed by a python block"
    example = ROOT / m.group(1)
    assert example.is_file(), f"README names {m.group(1)}, which does not exist"
    assert m.group(2) == _example_section(example, "readme"), (
        f"README's DAG differs from the readme section of {m.group(1)}: copy it again")


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    # 200 until the fan-out section's two tables (issue 19 asks for them on the front page)
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move detail to docs/"
    # the two commands a contributor needs, exactly as scripts/ has them
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in README.read_text()
        assert (ROOT / command.split()[1]).is_file()


def test_readme_links_into_the_repo_resolve() -> None:
    """The README is also the package index page, so its links are absolute: each one into this
    repository must name a file that exists (anchors are mkdocs' job inside docs/)."""
    base = "https://github.com/orchesjob/airflow-provider-orchesjob/blob/main/"
    targets = re.findall(r"\]\((" + re.escape(base) + r"[^)#\s]+)", README.read_text())
    assert targets
    missing = [t for t in targets if not (ROOT / t[len(base):]).exists()]
    assert not missing, "README links to missing files: " + ", ".join(missing)


def test_the_mwaa_requirements_line_names_this_version() -> None:
    """The copy-paste `requirements.txt` line (README, docs/installation.md) installs this release."""
    import remote_agent

    for page in (README, DOCS / "installation.md"):
        pins = re.findall(r"^\s*airflow-provider-orchesjob==(\S+)$", page.read_text(), flags=re.M)
        assert pins == [remote_agent.__version__], (
            f"{page.relative_to(ROOT)}: requirements.txt line pins {pins}, the version is "
            f"{remote_agent.__version__}")

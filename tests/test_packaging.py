"""The distribution installs where users are: every MWAA pin set admits our dependency ranges.

The pins are copied from docs/installation.md "What Amazon MWAA pins" (amazon-mwaa-docker-images
constraint files);
a range narrowed by mistake (say paramiko<4) fails here before it fails on MWAA.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# image: (airflow, python, providers-ssh, common-compat, paramiko, asyncssh)
MWAA = {
    "2.10.3": ("2.10.3", "3.11", "3.14.0", "1.2.1", "3.5.0", "2.18.0"),
    "2.11.0": ("2.11.0", "3.12", "4.1.0", "1.7.0", "3.5.1", "2.21.0"),
    "2.11.2": ("2.11.2", "3.12", "4.3.1", "1.14.0", "3.5.1", "2.22.0"),
    "3.0.6": ("3.0.6", "3.12", "4.1.3", "1.7.3", "3.5.1", "2.21.0"),
    "3.2.1": ("3.2.1", "3.12", "5.0.0", "1.14.3", "3.5.1", "2.22.0"),
    "3.3.1": ("3.3.1", "3.12", "6.0.1", "1.18.0", "5.0.0", "2.24.0"),
}


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in _project()["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.mark.parametrize("image", sorted(MWAA))
def test_every_mwaa_pin_set_satisfies_our_ranges(image: str) -> None:
    airflow, python, ssh, compat, paramiko, asyncssh = MWAA[image]
    reqs = _requirements()
    pins = {
        "apache-airflow": airflow,
        "apache-airflow-providers-ssh": ssh,
        "apache-airflow-providers-common-compat": compat,
        "paramiko": paramiko,
        "asyncssh": asyncssh,
    }
    for name, version in pins.items():
        req = reqs.get(name)
        if req is not None:
            assert req.specifier.contains(version, prereleases=True), (
                f"MWAA {image} pins {name}=={version}, outside our range {req}")
    requires_python = _project()["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(requires_python).contains(python + ".0"), f"MWAA {image} runs Python {python}"


def test_no_dependency_on_a_common_compat_newer_than_mwaa_oldest() -> None:
    req = _requirements().get("apache-airflow-providers-common-compat")
    assert req is None or req.specifier.contains("1.2.1"), req


def test_agent_declares_no_dependency_and_console_script_points_at_it() -> None:
    project = _project()
    assert project["scripts"]["orchesjob"] == "remote_agent.frontends.cli:main"
    imports = set()
    for path in (ROOT / "remote_agent").rglob("*.py"):  # every layer's subpackage too
        for m in re.finditer(r"^\s*(?:from|import)\s+([a-zA-Z_][\w]*)", path.read_text(), re.M):
            imports.add(m.group(1))
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"remote_agent", "typing"}
    assert imports <= stdlib, f"agent imports outside the standard library: {imports - stdlib}"


def test_provider_info_names_this_distribution() -> None:
    pytest.importorskip("airflow")
    from orchesjob_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    assert canonicalize_name(info["package-name"]) == canonicalize_name(_project()["name"])
    assert info["package-name"] == _project()["name"]
    ep = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert ep["apache_airflow_provider"]["provider_info"] == (
        "orchesjob_provider.get_provider_info:get_provider_info")


def test_wheel_ships_only_the_agent_and_the_provider() -> None:
    """testkit/ (the test kit), tests/, scripts/ and benchmarks/ stay out of the distribution:
    [tool.setuptools.packages.find] include patterns (fnmatch on dotted names, as setuptools)."""
    from fnmatch import fnmatchcase

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    top_level = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert "testkit" in top_level, top_level
    shipped = {name for name in top_level if any(fnmatchcase(name, pat) for pat in find["include"])}
    assert shipped == {"remote_agent", "orchesjob_provider"}, (shipped, find)
    # ... and every subpackage of the two (the agent's layers, the provider's client/, utils/, ...)
    subpackages = sorted(".".join(p.parent.relative_to(ROOT).parts)
                         for top in shipped for p in (ROOT / top).rglob("__init__.py"))
    assert "remote_agent.store" in subpackages and "orchesjob_provider.client" in subpackages
    missed = [name for name in subpackages if not any(fnmatchcase(name, pat) for pat in find["include"])]
    assert not missed, (missed, find)

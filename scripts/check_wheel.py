#!/usr/bin/env python3
"""Check a built wheel holds only its packages: ``check_wheel.py WHEEL [--version V] [--agent-only]``.

``--agent-only``: the ``orchesjob-agent`` wheel (packaging/orchesjob-agent): ``remote_agent/``
alone, ``Requires-Python: >=3.6``, no dependency, the ``orchesjob`` console script, no provider
entry point.

Allowed at the top of the wheel: ``remote_agent/``, ``orchesjob_provider/`` and the wheel's own
``*.dist-info/``. Rejected anywhere: tests, the test kit, scripts, benchmarks, example DAGs,
bytecode. Requires every (sub)package of the two in the checkout this script lives in (the
agent's layers, the provider's client/, utils/, ...). Also checks the metadata's version (when
given) and the provider entry point.
Exit 0 = fine; 1 = one line per problem on stderr. Stdlib only (runs before any venv exists).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from email.parser import Parser

PACKAGES = ("remote_agent", "orchesjob_provider")
FORBIDDEN_PARTS = ("tests", "testkit", "scripts", "benchmarks", "dags_examples", "__pycache__")
ENTRY_POINT = "provider_info = orchesjob_provider.get_provider_info:get_provider_info"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


AGENT_SCRIPT = "orchesjob = remote_agent.frontends.cli:main"


def source_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``<pkg>/.../__init__.py`` of every (sub)package of ``packages`` in this checkout."""
    out = []
    for pkg in packages:
        for root, dirs, files in os.walk(os.path.join(REPO, pkg)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                out.append(os.path.relpath(os.path.join(root, "__init__.py"), REPO).replace(os.sep, "/"))
    return sorted(out)


def problems(path: str, version: str | None, agent_only: bool = False) -> list[str]:
    out: list[str] = []
    packages = ("remote_agent",) if agent_only else PACKAGES
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_infos = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
        if len(dist_infos) != 1:
            return [f"{path}: expected one .dist-info directory, found {dist_infos}"]
        dist_info = dist_infos[0]
        for name in names:
            top, *rest = name.split("/")
            if top not in packages and top != dist_info:
                out.append(f"{path}: {name}: not part of the packages {packages}")
            elif any(p in FORBIDDEN_PARTS for p in rest[:-1]) or name.endswith((".pyc", ".pyo")):
                out.append(f"{path}: {name}: tests, tooling or bytecode do not belong in the wheel")
        for init in [f"{pkg}/__init__.py" for pkg in packages] + source_packages(packages):
            if init not in names:
                out.append(f"{path}: {init} is missing (a package of the checkout left out)")
        meta = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        if version is not None and meta["Version"] != version:
            out.append(f"{path}: metadata version {meta['Version']} != {version} (remote_agent.__version__)")
        eps = (
            zf.read(f"{dist_info}/entry_points.txt").decode()
            if f"{dist_info}/entry_points.txt" in names
            else ""
        )
        if AGENT_SCRIPT not in eps:
            out.append(f"{path}: the orchesjob console script is missing")
        if agent_only:
            if "[apache_airflow_provider]" in eps:
                out.append(f"{path}: the agent-only wheel must not register an Airflow provider")
            if meta["Requires-Python"] != ">=3.6":
                out.append(f"{path}: Requires-Python is {meta['Requires-Python']!r}, not '>=3.6'")
            if meta.get_all("Requires-Dist"):
                out.append(f"{path}: the agent needs nothing beyond the standard library: "
                           f"{meta.get_all('Requires-Dist')}")
        elif "[apache_airflow_provider]" not in eps or ENTRY_POINT not in eps:
            out.append(f"{path}: the apache_airflow_provider entry point is missing")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel")
    ap.add_argument("--version")
    ap.add_argument("--agent-only", action="store_true", help="the orchesjob-agent wheel")
    args = ap.parse_args(argv)
    try:
        found = problems(args.wheel, args.version, args.agent_only)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        found = [f"{args.wheel}: unreadable wheel: {e}"]
    for line in found:
        print(f"check_wheel: {line}", file=sys.stderr)
    if not found:
        what = "remote_agent" if args.agent_only else ", ".join(PACKAGES)
        print(f"check_wheel: {args.wheel}: only {what} and its metadata: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""Test-only: lets Airflow 2.10 import the example DAGs, which are written for ``airflow.sdk``.

Decision (docs/guides/examples.md): the examples use Airflow 3's ``airflow.sdk`` imports and carry no
compatibility code; the docs show the Airflow 2 form (``from airflow import DAG``,
``from airflow.decorators import task``). So that the af2 leg still runs the very same DAG code,
this shim puts an ``airflow.sdk`` module holding the Airflow 2 objects in ``sys.modules`` while
an example is imported, and takes it away afterwards (Airflow 2 itself, or a provider, must never
see it and conclude it runs on Airflow 3).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator


@contextlib.contextmanager
def airflow_sdk() -> Iterator[None]:
    """``import airflow.sdk`` works inside the block (Airflow 3: the real one; 2.x: the shim)."""
    if importlib.util.find_spec("airflow.sdk") is not None:
        yield
        return
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param

    mod = types.ModuleType("airflow.sdk")
    mod.__dict__.update(DAG=DAG, task=task, Param=Param)
    sys.modules["airflow.sdk"] = mod
    try:
        yield
    finally:
        sys.modules.pop("airflow.sdk", None)

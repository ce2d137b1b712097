"""Write test DAGs into the session's dags folder (Airflow 3's dag.test() needs a parsed DAG file)."""

from __future__ import annotations

import datetime
import importlib.util
import os
import sys
import textwrap
import uuid
from typing import Any

DAGS_FOLDER = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]  # set by conftest.py before this import


def new_dag_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def kw(**kwargs: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


HEADER = """\
import datetime
from datetime import timedelta

from airflow import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor
"""


def write_dag(dag_id: str, body: str, *, preamble: str = "", dag_kwargs: str = "") -> Any:
    """Write ``with DAG(dag_id) as dag: <body>`` to the dags folder, import it, return the DAG."""
    src = (
        HEADER
        + textwrap.dedent(preamble)
        + f"\nwith DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2024, 1, 1), "
        + f"catchup=False{', ' + dag_kwargs if dag_kwargs else ''}) as dag:\n"
        + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
    )
    path = os.path.join(DAGS_FOLDER, f"{dag_id}.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"oj_test_dag_{dag_id}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.dag


def ti_states(dr: Any) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


FIXED_DATE = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)


def our_log_messages(text: str, caplog: Any) -> list[str]:
    """Messages logged by the operator/trigger/sensor during the test (Airflow 2: stdlib records;
    Airflow 3: structlog lines on stdout/stderr)."""
    import re

    msgs = [
        r.getMessage() for r in caplog.records if "orchesjob" in r.name or r.name.startswith("airflow.task")
    ]
    if msgs:
        return msgs
    pat = re.compile(
        r"\[(?:info|warning|error)\s*\] (.*?)\s+\[(?:airflow\.task\.(?:operators|sensors|hooks)\.|"
        r"orchesjob_provider)[^\]]*\]"
    )
    return [m.group(1) for line in text.splitlines() for m in [pat.search(line)] if m]


def log_times(capfd_text: str, token: str) -> list[float]:
    """Timestamps (epoch) of captured log lines containing token (both Airflow log formats)."""
    import re
    from datetime import datetime as dt

    res = []
    for line in capfd_text.splitlines():
        if token in line:
            m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)", line)
            if m:
                res.append(dt.fromisoformat(m.group(1)).timestamp())
    return res


def captured(capfd: Any) -> str:
    out, err = capfd.readouterr()
    return out + err


def op_src(cls: str = "OrchesjobOperator", task_id: str = "t", **kwargs: Any) -> str:
    """Source of one operator call for write_dag()."""
    return f"{cls}(task_id={task_id!r}, {kw(**kwargs)})"

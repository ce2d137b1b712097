"""The TaskFlow half of version_compat: the Airflow 2.10+/3.x imports ``@task.orchesjob`` needs.

Apart from ``version_compat`` because only the decorator needs them, and Airflow 3's
``airflow.sdk.bases.decorator`` costs ~70 ms of CPU to import: every task process of a plain
``OrchesjobOperator`` paid it (measured in benchmarks/airflow_fanout.py's task processes).
"""

from __future__ import annotations

from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk.bases.decorator import (
        DecoratedOperator,
        TaskDecorator,
        determine_kwargs,
        task_decorator_factory,
    )
    from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
    from airflow.sdk.definitions.context import context_merge
else:  # Airflow 2.10 / 2.11
    from airflow.decorators.base import (  # type: ignore[no-redef,assignment,attr-defined,unused-ignore]
        DecoratedOperator,
        TaskDecorator,
        task_decorator_factory,
    )
    from airflow.utils.context import context_merge  # type: ignore[no-redef,assignment,attr-defined,unused-ignore]
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef,assignment,attr-defined,unused-ignore]
    from airflow.utils.types import NOTSET as SET_DURING_EXECUTION  # type: ignore[no-redef,assignment,attr-defined,unused-ignore]

__all__ = [
    "SET_DURING_EXECUTION",
    "DecoratedOperator",
    "TaskDecorator",
    "context_merge",
    "determine_kwargs",
    "task_decorator_factory",
]

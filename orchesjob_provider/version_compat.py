"""The one place that hides the import differences between Airflow 2.10+ and Airflow 3.x.

Deliberately self-contained: no dependency on ``apache-airflow-providers-common-compat``
(MWAA pins old versions of it; see docs/installation.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import (  # same path on 2.10 and 3.x
    BaseTrigger,
    TaskSuccessEvent,
    TriggerEvent,
)
from packaging.version import Version


def _airflow_version() -> Version:
    from airflow import __version__

    return Version(Version(__version__).base_version)


AIRFLOW_VERSION = _airflow_version()
AIRFLOW_V_3_0_PLUS = AIRFLOW_VERSION >= Version("3.0.0")

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator, PokeReturnValue, conf
    from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException
    from airflow.sdk.log import mask_secret

    try:  # Airflow 3.1+
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import (  # type: ignore[no-redef]
            should_hide_value_for_key,
        )

    if TYPE_CHECKING:
        from airflow.sdk import Context
    else:
        Context = Any
else:  # Airflow 2.10 / 2.11
    from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    from airflow.exceptions import (  # type: ignore[no-redef,assignment]
        AirflowException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef,assignment]
    from airflow.sensors.base import (  # type: ignore[no-redef,assignment]
        BaseSensorOperator,
        PokeReturnValue,
    )
    from airflow.utils.log.secrets_masker import (  # type: ignore[no-redef,assignment]
        mask_secret,
        should_hide_value_for_key,
    )

    if not TYPE_CHECKING:
        Context = Any

#: Airflow 3.3 added ``BaseTrigger.on_kill`` (called only when a user kills a deferred task).
TRIGGER_HAS_ON_KILL = hasattr(BaseTrigger, "on_kill")


async def aget_connection(conn_id: str) -> Any:
    """Fetch an Airflow connection from async code without blocking the event loop.

    Airflow 3.3.2+ masks secrets asynchronously in ``BaseHook.aget_connection``; before that the
    synchronous lookup runs in a worker thread (the pattern of the official providers).
    """
    from asgiref.sync import sync_to_async

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.definitions.connection import Connection

        if hasattr(Connection, "aextra_dejson") and hasattr(BaseHook, "aget_connection"):
            return await BaseHook.aget_connection(conn_id=conn_id)
    return await sync_to_async(BaseHook.get_connection)(conn_id)


async def aget_extra_dejson(conn: Any) -> dict[str, Any]:
    """``conn.extra_dejson`` from async code (async masking on 3.3.2+, a worker thread before)."""
    if hasattr(conn, "aextra_dejson"):
        return await conn.aextra_dejson()
    from asgiref.sync import sync_to_async

    return await sync_to_async(lambda: conn.extra_dejson)()


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "TRIGGER_HAS_ON_KILL",
    "AirflowException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "PokeReturnValue",
    "TaskSuccessEvent",
    "TriggerEvent",
    "aget_connection",
    "aget_extra_dejson",
    "child_logger",
    "conf",
    "get_stats",
    "mask_secret",
    "should_hide_value_for_key",
]


def get_stats() -> Any:
    """Airflow's ``Stats`` (StatsD / OpenTelemetry / nothing, as the deployment configures it).

    Airflow 3.2+ keeps it in the Task SDK (``airflow.stats`` is a deprecated shim there, which
    warns on import); Airflow 2.10 - 3.1 in ``airflow.stats``. Imported on first use, not at
    module import, so a provider import never initialises the metrics backend.
    """
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:
        from airflow.stats import Stats  # type: ignore[no-redef,attr-defined,unused-ignore]
    return Stats


def child_logger(log: Any, suffix: str) -> Any:
    """The logger named ``<log's name>.<suffix>``: a stdlib child (Airflow 2), or the structlog
    logger of that name (Airflow 3's LoggingMixin hands out structlog loggers). Its records go
    wherever ``log``'s go (the triggerer routes by the trigger's context, not by name)."""
    get_child = getattr(log, "getChild", None)
    if get_child is not None:
        return get_child(suffix)
    import structlog

    return structlog.get_logger(f"{getattr(log, 'name', 'orchesjob')}.{suffix}")

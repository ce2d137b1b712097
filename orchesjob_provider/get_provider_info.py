"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from orchesjob_provider import __version__

    return {
        "package-name": "airflow-provider-orchesjob",
        "name": "Orchesjob",
        "description": (
            "Run non-idempotent jobs on remote hosts over SSH; a retry resumes the same remote job "
            "instead of starting a second copy. Uses the standard ``ssh`` connection type."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Orchesjob",
                "external-doc-url": "https://github.com/orchesjob/airflow-provider-orchesjob",
                "tags": ["protocol"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Orchesjob",
                # the two hook classes; hooks/ssh/ holds their helpers
                "python-modules": [
                    "orchesjob_provider.hooks.orchesjob",
                    "orchesjob_provider.hooks.async_orchesjob",
                ],
            }
        ],
        "operators": [
            {"integration-name": "Orchesjob", "python-modules": ["orchesjob_provider.operators.orchesjob"]}
        ],
        "sensors": [
            {"integration-name": "Orchesjob", "python-modules": ["orchesjob_provider.sensors.orchesjob"]}
        ],
        "triggers": [
            {"integration-name": "Orchesjob", "python-modules": ["orchesjob_provider.triggers.orchesjob"]}
        ],
        # ``@task.orchesjob``: Airflow's ``task`` object looks decorators up by name here.
        "task-decorators": [
            {"class-name": "orchesjob_provider.decorators.orchesjob.orchesjob_task", "name": "orchesjob"}
        ],
        # No "connection-types": the hook reuses the SSH provider's ``ssh`` connection type.
    }

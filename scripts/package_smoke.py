"""Run by scripts/check_package.sh in a fresh venv holding the built wheel and one MWAA pin set.

Imports every public class from the INSTALLED wheel (never the checkout: run with ``python -I``
from a scratch dir), checks get_provider_info() and that Airflow's ProvidersManager discovers
the provider, its version and ``@task.orchesjob``. No Airflow DB is needed. Prints one line.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib.metadata import version

DIST = "airflow-provider-orchesjob"


def main() -> int:
    import airflow

    import orchesjob_provider
    import remote_agent
    from orchesjob_provider import __version__
    from orchesjob_provider.decorators.orchesjob import orchesjob_task
    from orchesjob_provider.get_provider_info import get_provider_info
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    site = sysconfig.get_paths()["purelib"]
    for mod in (orchesjob_provider, remote_agent):
        assert mod.__file__ and mod.__file__.startswith(site), f"{mod.__name__} imported from {mod.__file__}"
    assert __version__ == remote_agent.__version__ == version(DIST), (__version__, version(DIST))
    info = get_provider_info()
    assert info["package-name"] == DIST and info["versions"] == [__version__], info
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for mod_name in info[kind][0]["python-modules"]:
            __import__(mod_name)
    assert [d["name"] for d in info["task-decorators"]] == ["orchesjob"]

    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert DIST in pm.providers, sorted(pm.providers)
    assert pm.providers[DIST].version == __version__
    try:
        from airflow.sdk import task
    except ImportError:
        from airflow.decorators import task
    assert task.orchesjob is orchesjob_task
    classes = (OrchesjobHook, AsyncOrchesjobHook, OrchesjobOperator, OrchesjobSensor, OrchesjobTrigger)
    print(
        f"package_smoke: {DIST} {__version__} on Airflow {airflow.__version__} (Python "
        f"{sys.version.split()[0]}): {', '.join(c.__name__ for c in classes)}, @task.orchesjob: ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Airflow environment of a pytest process: the one place tests set it up.

Airflow reads its configuration when first imported, so a conftest calls ``setup()`` at import
time, before any test module imports airflow. The first call in a process (xdist worker) makes
a temporary AIRFLOW_HOME (removed at exit) with a dags folder and a SQLite metadata DB path and
sets the variables below; later calls (tests/provider and tests/faults collected together)
return the same home. Nothing is migrated here (see tests/provider/conftest.py ``airflow_db``).
"""

import atexit
import os
import shutil
import tempfile
from typing import Dict, Optional

_home: Optional[str] = None


def is_af2() -> bool:
    try:
        from importlib.metadata import version

        return version("apache-airflow").startswith("2.")
    except Exception:
        return False


def variables(home: str, af2: bool) -> Dict[str, str]:
    """The AIRFLOW_* variables for a test process whose AIRFLOW_HOME is ``home``."""
    return {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(home, "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # Airflow 2 refuses LocalExecutor with SQLite; dag.test() runs tasks inline either way.
        "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor" if af2 else "LocalExecutor",
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
    }


def setup() -> str:
    """Set this process's Airflow environment (once); return its AIRFLOW_HOME."""
    global _home
    if _home is None:
        home = tempfile.mkdtemp(prefix="orchesjob-airflow-home-")
        atexit.register(shutil.rmtree, home, True)
        os.makedirs(os.path.join(home, "dags"), exist_ok=True)
        os.environ.update(variables(home, is_af2()))
        _home = home
    return _home

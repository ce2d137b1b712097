"""Apache Airflow provider for running jobs on remote hosts through the orchesjob agent."""

# One version for the distribution, the provider and the agent it deploys: the agent's
# (remote_agent cannot import the provider, so the number lives there; pyproject reads it too).
from remote_agent import __version__

__all__ = ["__version__"]

"""Apache Airflow provider for running jobs on remote hosts through the orchesjob agent."""

__version__ = "0.1.0"

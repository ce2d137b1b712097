"""The project's test kit: real parts for the tests, the benchmarks and the demo (stdlib only).

Imported as a package (the repo root is on sys.path: pytest's ``pythonpath = ["."]``, or run
from the repo root / with PYTHONPATH=<repo>); never shipped in the wheel.

    testkit.sshd           a throwaway OpenSSH server on 127.0.0.1 (`python3 -m testkit.sshd ...`)
    testkit.ssh_target     SSHTarget (what a test sees of that server), get_target(), release()
    testkit.netns          a test host in its own network namespace (`python3 -m testkit.netns ...`)
    testkit.airflow_stack  a real Airflow 3 stack: api-server, scheduler, dag-processor, triggerer
    testkit.airflow_env    the Airflow environment variables of a pytest process (one place)
    testkit.procs          pid_alive, wait_until, free_port, port_open, /proc helpers (one copy each)
    testkit.prereqs        the system packages the tests need and the error when one is missing
    testkit.ci             in_ci() and the CI rule "a skipped fault/e2e proof is a failure"
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

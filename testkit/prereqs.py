"""The system packages the tests need. scripts/prereqs.sh installs them once, before pytest;
nothing under pytest runs apt-get: a missing binary is a clear error naming the package."""

import os
import shutil
from typing import Optional

#: Debian package -> the binary that proves it is installed (same table as scripts/prereqs.sh).
PACKAGES = {
    "openssh-server": "/usr/sbin/sshd",
    "openssh-client": "ssh-keygen",
    "nftables": "nft",
    "iproute2": "ip",
    "python3": "/usr/bin/python3",  # for the target user (root's pyenv is not theirs to run)
    "sshfs": "sshfs",  # a state dir on a real network filesystem (tests/agent/test_field_host_network_fs.py)
    "redis-server": "/usr/bin/redis-server",  # the Celery broker of tests/e2e/test_celery_executor.py
    # the e2e events stack's metadata DB (testkit/postgres.py; Debian 12's server is 15)
    "postgresql": "/usr/lib/postgresql/15/bin/initdb",
}


def missing_message(package: str) -> str:
    return f"{package} is missing: run scripts/test.sh or apt-get install {package}"


def find(package: str) -> Optional[str]:
    """Path of the package's binary, or None when it is not installed."""
    binary = PACKAGES[package]
    if os.path.isabs(binary):
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary)


def require(package: str, error: type = RuntimeError) -> str:
    """The package's binary; raise ``error(missing_message(package))`` when it is missing."""
    path = find(package)
    if path is None:
        raise error(missing_message(package))
    return path

"""Airflow `ssh` connections for the loopback sshd, as AIRFLOW_CONN_* environment variables."""

from __future__ import annotations

import json
import os


def conn_json(sshd, **extra_overrides) -> str:
    extra = {"private_key": sshd.key_text, "host_key": sshd.host_public_key}
    for k, v in extra_overrides.items():
        if v is None:
            extra.pop(k, None)
        else:
            extra[k] = v
    return json.dumps(
        {"conn_type": "ssh", "host": sshd.host, "port": sshd.port, "login": sshd.user, "extra": extra}
    )


def set_conn(conn_id: str, value: str) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = value

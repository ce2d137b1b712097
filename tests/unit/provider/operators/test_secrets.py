"""Secrets in the deferrable path: the trigger, rebuilt from its kwargs in the triggerer (another
process, whose masker never saw the worker's mask_secret calls), registers the secret values
itself, never shows them in its repr, and writes the job's lines with ``***`` in their place."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")


def _redact(value: str) -> str:
    try:
        from airflow.sdk.log import redact
    except ImportError:
        from airflow.utils.log.secrets_masker import redact
    return str(redact(value))


def test_trigger_from_kwargs_masks_its_secret_values(monkeypatch):
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    secret = f"s3cr3t-{uuid.uuid4().hex}"
    worker_side = OrchesjobTrigger(ssh_conn_id="c", job_id="j", secret_values=[secret])
    _, kwargs = worker_side.serialize()
    assert kwargs["secret_values"] == [secret]  # stored encrypted by Airflow with the trigger
    assert secret not in repr(worker_side)

    trigger = OrchesjobTrigger(**kwargs)  # what the triggerer does
    assert _redact(f"x {secret} y") == "x *** y"
    assert secret not in repr(trigger)

    from types import SimpleNamespace  # a logger with a child per stream, as the trigger writes

    messages: list[str] = []
    recorder = SimpleNamespace(info=lambda msg, *args: messages.append(msg % args),
                               getChild=lambda suffix: recorder)
    monkeypatch.setattr(OrchesjobTrigger, "log", property(lambda self: recorder), raising=False)
    trigger._write("stdout", f"token={secret}")
    trigger._write("stderr", "plain")
    assert messages == ["token=***", "[stderr] plain"]

"""The secrets a trigger needs, sealed with Airflow's Fernet key before they go into its kwargs.

A deferred task's trigger needs the job's secret env values (to mask the job's log lines it
writes in the triggerer, whose masker never saw the worker's) and, with ``start_in_triggerer``,
the job's whole ``env`` (to send the start). Airflow stores trigger kwargs encrypted at rest, but
Airflow 2.10 and 3.0-3.2 return them in clear in the REST API, as a task instance's
``trigger.kwargs``, to anyone who may read that task instance (3.3 empties the field:
apache/airflow#67868). So they travel as one Fernet token of Airflow's own key (``[core]
fernet_key``: the key that encrypts connections and the trigger kwargs at rest, so the triggerer
that decrypts the kwargs has it). Where no key is configured, Airflow stores connections' passwords
in clear too; the values then go as they are, and the operator says so in the task log.
"""

from __future__ import annotations

import json
from typing import Any

FERNET = "fernet:"  # a Fernet token of the JSON payload
PLAIN = "plain:"  # the JSON payload itself: no Fernet key is configured


class SealError(ValueError):
    """A sealed payload this process cannot open (another Fernet key, or damaged)."""


def _fernet_key() -> str:
    """``[core] fernet_key`` as this process sees it: Airflow's configuration, or the task SDK's
    on a worker without Airflow core. Empty when none is set (the SDK's parser answers its
    template, ``{FERNET_KEY}``, then)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - a worker with the task SDK only
        try:
            from airflow.sdk.configuration import conf  # type: ignore[no-redef]
        except ImportError:
            return ""
    key = str(conf.get("core", "fernet_key", fallback="") or "").strip()
    return "" if key == "{FERNET_KEY}" else key


def _fernet() -> Any | None:
    """Airflow's Fernet (every key of ``[core] fernet_key``, the first encrypts), or None without
    a key. Built here rather than with ``airflow.models.crypto`` so that an Airflow 3 task process
    loads no ORM models for it."""
    key = _fernet_key()
    if not key:
        return None
    from cryptography.fernet import Fernet, MultiFernet

    try:
        return MultiFernet([Fernet(part.strip().encode()) for part in key.split(",") if part.strip()])
    except ValueError as e:
        raise SealError(f"[core] fernet_key is not a valid Fernet key: {e}") from None


def can_seal() -> bool:
    """Whether a Fernet key is configured here (else :func:`seal` writes the payload in clear)."""
    return _fernet() is not None


def seal(payload: dict[str, Any]) -> str:
    """The payload as one string for a trigger's kwargs: encrypted when a key is configured."""
    text = json.dumps(payload, sort_keys=True)
    fernet = _fernet()
    if fernet is None:
        return PLAIN + text
    return FERNET + fernet.encrypt(text.encode()).decode()


def unseal(sealed: str) -> dict[str, Any]:
    """The payload :func:`seal` made; :class:`SealError` when this process cannot open it."""
    if sealed.startswith(PLAIN):
        text = sealed[len(PLAIN) :]
    elif sealed.startswith(FERNET):
        text = _decrypt(sealed[len(FERNET) :])
    else:
        raise SealError("the trigger's sealed secrets are damaged (no known prefix)")
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise SealError("the trigger's sealed secrets are damaged (not a JSON object)")
    return payload


def _decrypt(token: str) -> str:
    from cryptography.fernet import InvalidToken

    fernet = _fernet()
    try:
        if fernet is not None:
            return str(fernet.decrypt(token.encode()).decode())
    except InvalidToken:
        pass
    raise SealError(f"the trigger's secrets were sealed with a Fernet key this process does not have "
                    f"({'none' if fernet is None else 'another'} is configured here): set the same "
                    "[core] fernet_key for the workers and the triggerer")

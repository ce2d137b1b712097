"""The operator's argument checks: at DAG parse time for static values, after rendering for
templated ones. Each turns a user value into what the agent gets, or raises one clear error."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

from orchesjob_provider.version_compat import AirflowException


def bad(message: str) -> AirflowException:
    return AirflowException(f"OrchesjobOperator: {message}")


def validate_command(command: Any, shell: str | None) -> list[str]:
    """The argv to run: a list of str as is, or a str run by ``[shell or /bin/sh, -c, command]``."""
    if isinstance(command, str):
        if not command.strip():
            raise bad("command is empty")
        if shell is not None and (not isinstance(shell, str) or not shell):
            raise bad("shell must be a non-empty string (path of the shell to run the command)")
        return [shell or "/bin/sh", "-c", command]
    if isinstance(command, (list, tuple)):
        if not command:
            raise bad("command is empty")
        not_str = [i for i, a in enumerate(command) if not isinstance(a, str)]
        if not_str:
            i = not_str[0]
            raise bad(f"command[{i}] is {type(command[i]).__name__}, every argv item must be a str")
        if not command[0]:
            raise bad("command[0] (the program) is empty")
        if shell is not None:
            raise bad("shell is only used when command is a string")
        return list(command)
    raise bad(f"command must be a list of str or a str, not {type(command).__name__}")


def validate_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise bad(f"env must be a dict of str to str, not {type(env).__name__}")
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise bad(f"env name {k!r} is invalid (a non-empty str without '=' or NUL)")
        if not isinstance(v, str):
            raise bad(f"env[{k!r}] is {type(v).__name__}, env values must be str")
        if "\0" in v:
            raise bad(f"env[{k!r}] contains a NUL byte")
    return dict(env)


def validate_skip_codes(value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, bool):
        raise bad("skip_on_exit_code must be an int or a collection of ints, not a bool")
    if isinstance(value, int):
        return frozenset({value})
    if isinstance(value, Collection) and not isinstance(value, (str, bytes, Mapping)):
        items = list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return frozenset(items)
    raise bad(f"skip_on_exit_code must be an int or a collection of ints, not {value!r}")


def seconds(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise bad(f"{name} must be a positive number of seconds or a timedelta, not {value!r}")
    return float(value)


def validate_check(check: Any, shell: str | None) -> list[str]:
    """``check_command`` as an argv, like ``command`` (a str runs in ``shell`` or /bin/sh)."""
    try:
        return validate_command(check, shell if isinstance(check, str) else None)
    except Exception as e:
        text = str(e)
        prefix = "OrchesjobOperator: "
        raise bad(f"check_command: {text[len(prefix):] if text.startswith(prefix) else text}") from None


def validate_locks(locks: Any) -> dict[str, list[str]] | None:
    """``{"write": [names], "read": [names]}`` for the agent's lock queue (None: no locks)."""
    if locks is None:
        return None
    if not isinstance(locks, Mapping):
        raise bad(f"locks must be a dict like {{'write': [...], 'read': [...]}}, not {type(locks).__name__}")
    unknown = sorted(str(k) for k in locks if k not in ("read", "write"))
    if unknown:
        raise bad(f"locks has unknown key {unknown[0]!r}: use 'read' and 'write'")
    out: dict[str, list[str]] = {}
    for mode in ("write", "read"):
        names = locks.get(mode)
        if names is None:
            continue
        if isinstance(names, str) or not isinstance(names, Collection):
            raise bad(f"locks[{mode!r}] must be a list of resource names, not {names!r}")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise bad(f"locks[{mode!r}] has {name!r}: every resource name must be a non-empty str")
        out[mode] = list(names)
    both = sorted(set(out.get("write", ())) & set(out.get("read", ())))
    if both:
        raise bad(f"lock {both[0]!r} is both read and write: declare it once (write includes read)")
    return out if any(out.values()) else None


def validate_slots(slots: Any) -> dict[str, int] | None:
    """``{name: capacity}``: at most ``capacity`` jobs of the slot at once on the host."""
    if slots is None:
        return None
    if not isinstance(slots, Mapping):
        raise bad(f"slots must be a dict of slot name to capacity, not {type(slots).__name__}")
    for name, capacity in slots.items():
        if not isinstance(name, str) or not name.strip():
            raise bad(f"slots has {name!r}: every slot name must be a non-empty str")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise bad(f"slots[{name!r}] must be an int >= 1 (jobs of the slot at once), not {capacity!r}")
    return dict(slots) or None


def has_template(value: Any) -> bool:
    """A (nested) value with Jinja markup left to render."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(k) or has_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(has_template(v) for v in value)
    return False


def validate_end_from_trigger(value: Any, deferrable: Any, outlets: Any) -> bool:
    """``end_from_trigger`` needs a trigger to end from, and a task whose end emits nothing the
    triggerer cannot (Airflow records no asset event for a task ended by its trigger)."""
    if not isinstance(value, bool):
        raise bad("end_from_trigger must be True or False")
    if value and not deferrable:
        raise bad("end_from_trigger=True needs deferrable=True (the task ends in the triggerer)")
    if value and outlets:
        raise bad("end_from_trigger=True cannot emit the task's outlets (asset events): drop one of them")
    return value


def start_spec(argv: list[str], run_key: str, op: Any, *, env: dict[str, str], check: dict[str, Any] | None,
               epoch: str | None) -> dict[str, Any]:
    """A try's start as ``OrchesjobHook.start``'s keyword arguments, from the operator ``op``'s
    checked arguments: the worker sends it, or the trigger does (``start_in_triggerer``)."""
    ident = op._task_ident
    return {
        "argv": argv, "run_key": run_key, "cwd": op.cwd, "env": env, "strict": op.strict, "mode": "resume",
        "start_timeout": op.start_timeout, "rerun_unknown": op.rerun_unknown_outcome, "epoch": epoch,
        "task_instance": ident.key() if ident else None, "grace_seconds": op.abort_grace_seconds,
        "check": check, "locks": validate_locks(op.locks), "slots": validate_slots(op.slots),
        "queue_timeout": op.queue_timeout,
    }


def validate_start_in_triggerer(value: Any, deferrable: Any, wait: Any) -> bool:
    """``start_in_triggerer`` hands the start to the trigger: there must be one to hand it to."""
    if not isinstance(value, bool):
        raise bad("start_in_triggerer must be True or False")
    if value and not deferrable:
        raise bad("start_in_triggerer=True needs deferrable=True (the trigger starts the job)")
    if value and not wait:
        raise bad("start_in_triggerer=True needs wait=True (with wait=False nothing defers)")
    return value

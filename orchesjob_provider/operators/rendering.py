"""What happens when the operator's fields are rendered: byte-exact strings, masked secrets.

* A string without Jinja markup is kept byte for byte (Jinja would turn ``\r\n`` into ``\n``
  and drop a trailing newline of a shell script).
* Secret env values are registered with Airflow's secrets masker as soon as they are rendered,
  before the rendered fields are stored or sent and before the job prints anything, and replaced
  by ``***`` in the ``env`` attribute itself (the real values wait in ``_env_secrets``), so the
  rendered fields never hold them, also when Airflow's masker would not hide them (short values,
  ``airflow``, lines of a multi-line value). A value is secret when its key is listed in
  ``secret_env`` or when Airflow's masker hides values of that key by name (``password``,
  ``token``, ... and ``[core] sensitive_var_conn_names``).

A mixin beside the operator, so the operator's own module stays about waiting and outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchesjob_provider.version_compat import mask_secret, should_hide_value_for_key


class RenderingMixin:
    """For an operator with ``env`` (a dict, after rendering) and ``secret_env`` (a list of keys)."""

    env: Any
    secret_env: Any

    def render_template(
        self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None
    ) -> Any:
        """Strings without any Jinja markup are kept as they are, byte for byte (Jinja itself would
        turn ``\\r\\n`` into ``\\n`` and drop a trailing newline)."""
        if isinstance(content, str) and not any(m in content for m in ("{{", "{%", "{#")):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)  # type: ignore[misc]

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Register the secret env values with Airflow's masker as soon as they are rendered:
        before the rendered fields are stored or sent (they are redacted then) and before the job
        prints anything."""
        try:
            super().render_template_fields(context, jinja_env)  # type: ignore[misc]
        finally:
            self._mask_secret_env()

    def _mask_secret_env(self) -> None:
        """Move every secret env value out of ``env`` into ``_env_secrets`` (``env`` shows
        ``***`` for it) and register it, and each of its lines, with Airflow's masker.

        Airflow's masker leaves values under 5 characters and a few common words (``airflow``)
        alone, and matches a multi-line value only whole; the rendered fields are taken from the
        task's attributes, so the value itself must not be there. Idempotent: ``execute`` calls it
        again for operators executed without rendering (tests, subclasses).
        """
        if not isinstance(self.env, Mapping):
            return
        secrets: dict[str, str] = dict(getattr(self, "_env_secrets", None) or {})
        shown = dict(self.env)
        for key, value in self.env.items():
            if not isinstance(value, str) or not value or (key in secrets and value == MASK):
                continue
            if key in self.secret_env or should_hide_value_for_key(key):
                for part in secret_parts([value]):
                    mask_secret(part)
                secrets[key], shown[key] = value, MASK
        self._env_secrets = secrets
        self.env = shown

    def _job_env(self) -> Any:
        """The env the job gets: ``env`` with the secret values put back."""
        if not isinstance(self.env, Mapping):
            return self.env
        return {**self.env, **(getattr(self, "_env_secrets", None) or {})}

    def _secret_values(self) -> list[str]:
        """The secret env values and each of their lines, for our own masking of the job's output
        (``MaskedLog``) in the worker and in the trigger (another process: its own masker)."""
        return secret_parts((getattr(self, "_env_secrets", None) or {}).values())


#: what the rendered fields show for a secret env value
MASK = "***"


def secret_parts(values: Any) -> list[str]:
    """Each value and each non-blank line of a multi-line one (the job's output is masked line
    by line, so a multi-line secret must be hidden line by line too)."""
    parts: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value:
            continue
        parts.append(value)
        lines = [line.strip() for line in value.splitlines()]
        parts.extend(line for line in lines if line and line != value)
    return sorted(set(parts), key=len, reverse=True)

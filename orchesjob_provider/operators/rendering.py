"""What happens when the operator's fields are rendered: byte-exact strings, masked secrets.

* A string without Jinja markup is kept byte for byte (Jinja would turn ``\r\n`` into ``\n``
  and drop a trailing newline of a shell script).
* Secret env values are registered with Airflow's secrets masker as soon as they are rendered,
  before the rendered fields are stored or sent and before the job prints anything. A value is
  secret when its key is listed in ``secret_env`` or when Airflow's masker hides values of that
  key by name (``password``, ``token``, ... and ``[core] sensitive_var_conn_names``).

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
        if not isinstance(self.env, Mapping):
            return
        for key, value in self.env.items():
            if not isinstance(value, str) or not value:
                continue
            if key in self.secret_env:
                mask_secret(value)  # no name: always masked
            else:
                mask_secret(value, key)  # masked if Airflow's masker hides values of this name

    def _secret_values(self) -> list[str]:
        """The env values masked above, for the trigger (another process: its own masker)."""
        if not isinstance(self.env, Mapping):
            return []
        return [
            v
            for k, v in self.env.items()
            if isinstance(v, str) and v and (k in self.secret_env or should_hide_value_for_key(k))
        ]

"""The sync hook's SSH transport: one paramiko client (through the SSH provider's ``SSHHook``),
reused for every call, one exec per call, a dead connection noticed and reconnected once.

A mixin of ``OrchesjobHook`` (hooks/orchesjob.py), which keeps the agent protocol. It reads the
hook's ``ssh_conn_id``, ``conn_timeout``, ``ssh_hook_kwargs`` and its private connection state, set
in the hook's ``__init__``. Host keys are decided by ``host_keys.host_key_checking`` (the same
function the triggerer's asyncssh path uses), not by the SSH provider's reading of the extras.
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.hooks.ssh.connect import (
    KEEPALIVE_SECONDS,
    STALE_SECONDS,
    connect_error,
    dead_after,
    run_on_channel,
    tune_socket,
)
from orchesjob_provider.hooks.ssh.host_keys import host_key_checking
from orchesjob_provider.utils import metrics
from orchesjob_provider.version_compat import AirflowException, BaseHook

#: the wait between our connect attempts (SSHHook's own spacing): seconds, plus up to as much
#: again at random
CONNECT_RETRY_WAIT = (3.0, 2.0)


class ParamikoTransport:
    """SSH for ``OrchesjobHook``: ``ssh_hook``, ``get_conn``, ``where``, ``close`` and the execs."""

    log: Any
    ssh_conn_id: str
    conn_timeout: int | None
    ssh_hook_kwargs: dict[str, Any]
    _ssh_hook: Any
    _connect_attempts: int
    _client: Any
    exec_count: int
    _lost: bool

    @property
    def ssh_hook(self) -> Any:
        if self._ssh_hook is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            kwargs = dict(self.ssh_hook_kwargs)
            if self.conn_timeout is not None:
                kwargs.setdefault("conn_timeout", self.conn_timeout)
            conn = BaseHook.get_connection(self.ssh_conn_id)
            # decided before SSHHook parses the extras, so a bad value is our one line in both paths
            checking = host_key_checking(conn.extra_dejson if conn.extra else {}, self.ssh_conn_id)
            try:
                hook = SSHHook(ssh_conn_id=self.ssh_conn_id, **kwargs)
            except AirflowException:
                raise
            except Exception as e:  # e.g. an unreadable host_key or private_key extra
                raise AgentUnavailable(
                    f"SSH connection {self.ssh_conn_id!r} is misconfigured: {type(e).__name__}: {e}"
                ) from None
            # Our decision, not the SSH provider's: old providers (3.14 on MWAA 2.10) skip host
            # key checks unless the connection asks for them (also for a null extra); we verify
            # unless the connection says true, exactly as the triggerer does.
            if "no_host_key_check" not in kwargs:
                hook.no_host_key_check = checking.no_host_key_check
            if "allow_host_key_change" not in kwargs:
                hook.allow_host_key_change = checking.allow_host_key_change
            # SSHHook retries every failed connect (3 tries, 3-5 s apart); a wrong key or host
            # key never passes on a retry. Where the provider lets us (ssh provider 4.x+), keep
            # its retries for network errors only, so such a failure is reported at once.
            if hasattr(hook, "conn_retry_attempts"):
                self._connect_attempts, hook.conn_retry_attempts = hook.conn_retry_attempts, 1
            self._ssh_hook = hook
        return self._ssh_hook

    @property
    def where(self) -> str:
        try:
            h = self.ssh_hook
            return f"{h.username}@{h.remote_host}:{h.port}"
        except Exception:
            return f"connection {self.ssh_conn_id!r}"

    def get_conn(self) -> Any:
        """The paramiko ``SSHClient`` of this hook (connected on first use, reused after)."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self._lost = True
            self._close_client()
        hook = self.ssh_hook
        attempt = 1
        while True:
            try:
                client = hook.get_conn()
                break
            except Exception as e:
                if attempt >= self._connect_attempts or not isinstance(e, OSError):
                    raise AgentUnavailable(self._connect_error(e)) from None  # final, or out of tries
                attempt += 1
                base, spread = CONNECT_RETRY_WAIT
                time.sleep(base + random.uniform(0, spread))
        transport = client.get_transport()
        tune_socket(getattr(transport, "sock", None), dead_after(self._conn_timeout()))
        # paramiko's keepalive expects no answer; it only keeps bytes in flight so that the
        # kernel's TCP_USER_TIMEOUT notices a dead peer (a cut link) within dead_after().
        transport.set_keepalive(KEEPALIVE_SECONDS)
        self._client = client
        if self._lost:
            self._lost = False
            metrics.ssh_reconnect(self.ssh_conn_id, metrics.WORKER)
        return client

    def _conn_timeout(self) -> float:
        return float(getattr(self._ssh_hook, "conn_timeout", None) or self.conn_timeout or 10)

    def _connect_error(self, e: BaseException) -> str:
        h = self.ssh_hook
        return connect_error(
            e,
            username=h.username,
            host=h.remote_host,
            port=h.port,
            conn_id=self.ssh_conn_id,
            conn_timeout=h.conn_timeout,
        )

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if self._ssh_hook is not None:
            self._ssh_hook.client = None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        self._close_client()

    def _exec(self, command: str, stdin: bytes, timeout: float | None) -> tuple[int, bytes, bytes]:
        """One SSH exec: send ``stdin``, close it, read stdout/stderr to EOF, return the exit code."""
        client = self.get_conn()
        transport = client.get_transport()
        self.exec_count += 1
        return run_on_channel(transport, command, stdin, timeout, open_timeout=self._conn_timeout())

    def _exec_retrying(self, command: str, stdin: bytes, timeout: float | None, op: str):
        """One exec; a connection found dead at once is reconnected and the call resent.

        Every op is idempotent, so resending is safe. A connection that dies *during* a call (a
        cut link, noticed after ``dead_after()`` s) is not reconnected here: the call fails
        with a one-line error and the caller's backoff decides when to try again.
        """
        import paramiko

        for attempt in (1, 2):
            t0 = time.monotonic()
            try:
                return self._exec(command, stdin, timeout)
            except AgentUnavailable:
                raise
            except (paramiko.SSHException, EOFError, OSError) as e:
                self._lost = True
                self._close_client()
                stale = time.monotonic() - t0 < STALE_SECONDS
                if attempt == 2 or not stale:
                    if isinstance(e, (socket.timeout, TimeoutError)):
                        raise AgentUnavailable(
                            f"orchesjob {op} on {self.where}: no answer within {timeout:.0f}s", op=op
                        ) from None
                    raise AgentUnavailable(
                        f"orchesjob {op} on {self.where}: SSH connection lost ({type(e).__name__}: {e})",
                        op=op,
                    ) from None
                self.log.warning("SSH connection to %s lost (%s); reconnecting", self.where, e)
        raise AssertionError("unreachable")

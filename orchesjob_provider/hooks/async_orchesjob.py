"""The async hook, for triggers: asyncssh, never blocks the triggerer's event loop.

It speaks the same protocol as the sync hook (orchesjob_provider/client/wire.py) with the same
retry policy (``CallRetry``) and deploy check; only the transport differs. All hooks of one
event loop share one connection per conn id and batch their polls (hooks/ssh/shared.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from orchesjob_provider.bundle import DEPLOY_TIMEOUT, deploy_command, rpc_command
from orchesjob_provider.client.records import JobLogs, JobRecord
from orchesjob_provider.client.retry import DEPLOY, CallRetry
from orchesjob_provider.client.wire import CALL_SLACK, abort_timeout, build_request, check_deploy
from orchesjob_provider.exceptions import AgentUnavailable, OrchesjobNotFound
from orchesjob_provider.hooks.ssh.shared import BatchPoller, SharedConnection, load_bundle, loop_registry
from orchesjob_provider.hooks.ssh.start_batcher import BatchStarter
from orchesjob_provider.hooks.ssh.watch_channel import WatchChannel
from orchesjob_provider.utils import metrics

T = TypeVar("T")


async def _run_with_stdin(conn: Any, command: str, stdin: bytes) -> Any:
    """``conn.run(command, input=stdin)``, except that a remote command which exits before its
    stdin is written (``python3: not found``, exit 127) is not reported as a lost connection.

    asyncssh writes ``input`` right after the channel opens; when the command has already
    exited, that write raises BrokenPipeError and the exit status and stderr that say why are
    lost with it. Here the write error is ignored and the status and output are read as usual.
    """
    process = await conn.create_process(command, encoding=None)
    try:
        process.stdin.write(stdin)
        process.stdin.write_eof()
    except BrokenPipeError:
        pass
    return await process.wait(check=False)


class AsyncOrchesjobHook:
    """Async counterpart of :class:`OrchesjobHook` for triggers (asyncssh; never blocks the loop).

    Connection options come from the same Airflow ``ssh`` connection (host, port, login, password,
    ``private_key``/``key_file``, ``host_key``/``known_hosts``/``no_host_key_check``,
    ``conn_timeout``): the triggerer runs elsewhere than the worker (MWAA), so key material must
    come from the connection. All hooks of one event loop share one connection per conn id, and
    their polls are batched per (conn id, state dir, remote python).
    """

    def __init__(
        self,
        ssh_conn_id: str,
        remote_python: str = "python3",
        state_dir: str | None = None,
        conn_timeout: float | None = None,
    ) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.remote_python = remote_python or "python3"
        self.state_dir = state_dir or None
        self.conn_timeout = conn_timeout
        self._shared: SharedConnection | None = None
        self._acquired = False

    @property
    def shared(self) -> SharedConnection:
        if self._shared is None:
            reg = loop_registry()
            key = ("conn", self.ssh_conn_id)
            shared = reg.get(key)
            if shared is None:
                shared = reg[key] = SharedConnection(self.ssh_conn_id, self.conn_timeout)
            self._shared = shared
        return self._shared

    def _per_host(self, kind: str, make: Callable[[], T]) -> T:
        """The loop's one ``kind`` object for this host, state dir and remote python."""
        reg = loop_registry()
        key = (kind, self.ssh_conn_id, self.state_dir, self.remote_python)
        found = reg.get(key)
        if found is None:
            found = reg[key] = make()
        return found  # type: ignore[no-any-return]

    @property
    def poller(self) -> BatchPoller:
        """The loop's poll batcher for this host (hooks/ssh/shared.py)."""
        return self._per_host("poller", lambda: BatchPoller(self))

    @property
    def starter(self) -> BatchStarter:
        """The loop's start batcher for this host (hooks/ssh/start_batcher.py)."""
        return self._per_host("starter", lambda: BatchStarter(self))

    @property
    def watch_channel(self) -> WatchChannel:
        """The loop's watch channel for this host (hooks/ssh/watch_channel.py); it holds a hook of
        its own, so its hold on the shared connection is its own too."""
        return self._per_host("watch", lambda: WatchChannel(
            AsyncOrchesjobHook(self.ssh_conn_id, self.remote_python, self.state_dir, self.conn_timeout)))

    @property
    def where(self) -> str:
        return self.shared.where

    def acquire(self) -> None:
        if not self._acquired:
            self.shared.acquire()
            self._acquired = True

    def release(self) -> None:
        if self._acquired:
            self._acquired = False
            self.shared.release()

    async def __aenter__(self) -> AsyncOrchesjobHook:
        self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    async def _exec(self, command: str, stdin: bytes, timeout: float, op: str) -> tuple[int, bytes, bytes]:
        conn = await self.shared.get()
        import asyncssh  # imported off the loop by the first shared.get(): a lookup now
        try:
            result = await asyncio.wait_for(_run_with_stdin(conn, command, stdin), timeout=timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            self.shared.invalidate(conn)
            if isinstance(e, asyncio.TimeoutError):
                raise AgentUnavailable(
                    f"orchesjob {op} on {self.where}: no answer within {timeout:.0f}s"
                ) from None
            raise AgentUnavailable(
                f"orchesjob {op} on {self.where}: SSH connection lost ({type(e).__name__}: {e})", op=op
            ) from None
        rc = result.exit_status
        if rc is None:
            if not result.exit_signal:  # the channel closed without a status: the link went
                self.shared.invalidate(conn)
                raise AgentUnavailable(
                    f"orchesjob {op} on {self.where}: SSH connection lost (no exit status)", op=op
                )
            rc = -1
        return rc, bytes(result.stdout or b""), bytes(result.stderr or b"")

    async def deploy(self) -> None:
        bundle = await load_bundle()
        command = deploy_command(self.remote_python, bundle)
        rc, out, err = await self._exec(command, bundle.data, DEPLOY_TIMEOUT, "deploy")
        check_deploy(rc, out, err, where=self.where, remote_path=bundle.remote_path)
        metrics.agent_deploy(self.ssh_conn_id, metrics.TRIGGERER)

    async def call(self, op: str, *, call_timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Run one agent operation and return its reply (``ok`` true), or raise a typed error."""
        payload = build_request(op, self.state_dir, args)
        timeout = call_timeout if call_timeout is not None else CALL_SLACK
        command = rpc_command(self.remote_python, await load_bundle())
        retry = CallRetry(op, remote_python=self.remote_python)
        while True:
            step = retry.after(*await self._exec(command, payload, timeout, op), where=self.where)
            if step.reply is not None:
                return step.reply
            if step.action == DEPLOY:
                await self.deploy()
            else:
                await asyncio.sleep(step.delay)

    async def start(self, fields: dict[str, Any]) -> tuple[str, JobRecord]:
        """One start (client/starts.py ``start_fields``), sent with the other triggers' starts on
        this host that arrive at the same time: (action, job), or the agent's error raised."""
        action, job = await self.starter.start(fields)
        return action, job

    async def poll_job(self, job_id: str, offsets: Mapping[str, int] | None = None) -> JobLogs:
        """Status and new log bytes of one job, batched with every other trigger on this host."""
        return await self.poller.poll(job_id, offsets)

    async def status(self, *, run_key: str) -> JobRecord | None:
        """Latest job of a run key, None when there is none yet."""
        try:
            reply = await self.call("status", run_key=run_key)
        except OrchesjobNotFound:
            return None
        job = reply.get("job")
        return JobRecord.from_dict(job) if job else None

    async def abort(
        self, job_id: str, reason: str, grace_seconds: float = 5, ack: bool = False
    ) -> dict[str, Any]:
        """Abort a running job; ``ack=True`` also acknowledges it (see the sync hook's ``abort``)."""
        return await self.call(
            "abort",
            job_id=job_id,
            reason=reason,
            grace_seconds=grace_seconds,
            ack=True if ack else None,
            call_timeout=abort_timeout(grace_seconds),
        )

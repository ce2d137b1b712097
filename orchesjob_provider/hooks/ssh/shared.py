"""What the async hooks of one event loop share: one asyncssh connection per SSH connection id,
and one batched ``poll`` exec at a time per (conn id, state dir, remote python).

A triggerer runs one long-lived loop; ``dag.test()`` and tests run one loop per trigger. The
registry is weak on the loop, so the objects of a finished loop go with it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchesjob_provider import bundle as bundle_module
from orchesjob_provider.bundle import AgentBundle
from orchesjob_provider.client.records import DEFAULT_LOG_LIMIT, JobLogs, normalize_offsets
from orchesjob_provider.client.wire import poll_args
from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.hooks.ssh.connect import build_connect_options, dead_after, tune_socket
from orchesjob_provider.utils import metrics

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def loop_registry() -> dict[tuple, Any]:
    """The shared objects of the running loop, by key."""
    loop = asyncio.get_running_loop()
    reg = _SHARED.get(loop)
    if reg is None:
        reg = _SHARED[loop] = {}
    return reg


_asyncssh_quieted = False
_asyncssh_loaded = False


async def load_asyncssh() -> Any:
    """asyncssh, imported in a worker thread the first time: its imports take ~0.5 s, which on
    the loop thread would stall every trigger of the triggerer. Later calls cost nothing."""
    global _asyncssh_loaded
    if not _asyncssh_loaded:
        # a second caller during the import waits on the module's import lock in its own thread
        await asyncio.to_thread(importlib.import_module, "asyncssh")
        _asyncssh_loaded = True
    return sys.modules["asyncssh"]


async def load_bundle() -> AgentBundle:
    """The agent bundle (built once: reading and zipping the agent's sources) off the loop."""
    cached = bundle_module.cached_bundle()
    if cached is not None:
        return cached
    return await asyncio.to_thread(bundle_module.get_bundle)


def quiet_asyncssh() -> None:
    """asyncssh logs every channel at INFO; a triggerer polling thousands of jobs would drown in it.
    Unless the deployment configured the ``asyncssh`` logger itself, keep it at WARNING. Done
    when the first async connection is made, not when this module is imported."""
    global _asyncssh_quieted
    if _asyncssh_quieted:
        return
    _asyncssh_quieted = True
    logger = logging.getLogger("asyncssh")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class SharedConnection:
    """One asyncssh connection per (conn_id, event loop), shared by all triggers, refcounted."""

    IDLE_CLOSE_SECONDS = 10.0

    def __init__(self, ssh_conn_id: str, conn_timeout: float | None):
        self.ssh_conn_id = ssh_conn_id
        self.conn_timeout = conn_timeout
        self.conn: Any = None
        self.where = f"connection {ssh_conn_id!r}"
        self.refs = 0
        self.lock = asyncio.Lock()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.lost = False  # a connection was lost: the next one made is a reconnect (metrics)

    async def get(self) -> Any:
        async with self.lock:
            if self.conn is not None and not self._is_closed(self.conn):
                return self.conn
            if self.conn is not None:  # closed under us (not by the idle close): lost
                self.lost = True
            self.conn = None
            asyncssh = await load_asyncssh()
            quiet_asyncssh()
            target = await build_connect_options(self.ssh_conn_id, self.conn_timeout)
            self.where = target.where
            try:
                conn = await asyncssh.connect(**target.options)
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                raise AgentUnavailable(target.error(e, self.ssh_conn_id)) from None
            tune_socket(conn.get_extra_info("socket"), dead_after(target.options["connect_timeout"]))
            self.conn = conn
            if self.lost:
                self.lost = False
                metrics.ssh_reconnect(self.ssh_conn_id, metrics.TRIGGERER)
            return conn

    @staticmethod
    def _is_closed(conn: Any) -> bool:
        transport = getattr(conn, "_transport", None)
        return transport is None or transport.is_closing()

    def invalidate(self, conn: Any) -> None:
        if conn is not None and self.conn is conn:
            self.conn = None
        if conn is not None:
            self.lost = True
        if conn is not None:
            try:
                conn.abort()
            except Exception:
                pass

    def acquire(self) -> None:
        self.refs += 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def release(self) -> None:
        self.refs = max(0, self.refs - 1)
        if self.refs == 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # finalized outside its loop (e.g. a generator closed by GC)
                self._close_if_idle()
                return
            self._idle_handle = loop.call_later(self.IDLE_CLOSE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle_handle = None
        if self.refs == 0 and self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except Exception:
                pass


class BatchPoller:
    """Coalesces the ``poll`` requests of many triggers for one host into one exec at a time.

    While a poll exec is in flight, new requests queue up; when it returns, everything queued goes
    out in the next single exec (up to ``max_batch`` jobs). So the number of SSH channels per host
    stays at one however many jobs the triggerer watches.
    """

    max_batch = 500
    batch_bytes = 4 << 20

    def __init__(self, hook: AsyncOrchesjobHook):
        self.hook = hook
        self.pending: list[tuple[str, dict[str, int] | None, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.execs = 0  # number of poll execs sent (for tests/benchmarks)
        self.requests = 0  # number of job polls served

    async def poll(self, job_id: str, offsets: Mapping[str, int] | None) -> JobLogs:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.requests += 1
        self.pending.append((job_id, normalize_offsets(offsets) if offsets is not None else None, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        await asyncio.sleep(0.01)  # let the requests of this loop iteration join the batch
        while self.pending:
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            batch = [b for b in batch if not b[2].done()]
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[tuple[str, dict[str, int] | None, asyncio.Future]]) -> None:
        limit = max(4096, min(DEFAULT_LOG_LIMIT, self.batch_bytes // (2 * len(batch))))
        record = any(offsets is not None for _, offsets, _ in batch)
        try:
            self.execs += 1
            reply = await self.hook.call("poll", **poll_args(((j, o) for j, o, _ in batch), limit, record))
        except Exception as e:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        results = reply.get("jobs") or []
        for i, (job_id, _, fut) in enumerate(batch):
            if fut.done():
                continue
            item = results[i] if i < len(results) else {"job_id": job_id, "job": None}
            try:
                fut.set_result(JobLogs.from_reply(job_id, item))
            except Exception as e:
                fut.set_exception(e)

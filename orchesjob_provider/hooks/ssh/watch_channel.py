"""One watch channel per host in a triggerer: a long-lived agent that pushes ends and log lines.

All triggers of one event loop that watch jobs through the same (conn id, state dir, remote
python) share one :class:`WatchChannel`: one SSH channel on the shared connection, running the
agent's ``watch`` op (remote_agent/frontends/watch.py). It is started when the first trigger subscribes,
re-established with backoff when it drops (every subscription is sent again from the offsets
its trigger has shown), and closed a moment after the last trigger unsubscribed. The steady
state costs no exec; a job's end reaches its trigger within the agent's round (0.2 s).

When the channel cannot run (an agent without the op never answers the ``watch`` line; the
remote refuses it), the channel says so with :class:`WatchUnsupported` and its triggers fall
back to the batched poll (hooks/ssh/shared.py) for ``UNSUPPORTED_FOR`` seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchesjob_provider.bundle import rpc_command
from orchesjob_provider.client.records import JobLogs
from orchesjob_provider.client.watch_wire import open_line, parse_line, record_line, sub_line, unsub_line
from orchesjob_provider.client.wire import is_missing_agent
from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.hooks.ssh.shared import load_asyncssh, load_bundle
from orchesjob_provider.utils.waiting import reconnect_delay

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook


class WatchUnsupported(Exception):
    """The watch channel cannot run on this host: use the batched poll."""


class Subscription:
    """One trigger's view of the channel: its job, the offsets it has shown, its events."""

    def __init__(self, channel: WatchChannel, job_id: str, offsets: Mapping[str, int] | None) -> None:
        self.channel = channel
        self.sid = uuid.uuid4().hex
        self.job_id = job_id
        self.offsets = dict(offsets) if offsets is not None else None
        self.queue: asyncio.Queue[JobLogs | BaseException] = asyncio.Queue()
        self.recorded: asyncio.Event = asyncio.Event()  # set: no record of shown offsets pending
        self.recorded.set()

    async def next(self, timeout: float) -> JobLogs | None:
        """The next job event; None after ``timeout``. Raises AgentUnavailable when the channel
        dropped (it reconnects by itself) and WatchUnsupported when it cannot run at all."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def shown(self, offsets: Mapping[str, int]) -> None:
        """The trigger showed bytes up to ``offsets``: a resubscribe starts there, and the agent
        stores them as the job's ``log_shown`` (so a later try does not show them again)."""
        self.offsets = dict(offsets)
        self.recorded.clear()
        self.channel.write(record_line(self.sid, self.job_id, offsets))

    def resubscribe(self) -> None:
        """Ask for the events again from the trigger's offsets (an event did not start there)."""
        self.channel.write(sub_line(self.sid, self.job_id, self.offsets))

    async def wait_recorded(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.recorded.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.channel.unsubscribe(self)


class WatchChannel:
    """The watch channel of one (conn id, state dir, remote python) in one event loop."""

    HELLO_TIMEOUT = 15.0  # an agent without the op reads to EOF and never says hello
    UNSUPPORTED_FOR = 300.0
    IDLE_CLOSE_SECONDS = 2.0

    def __init__(self, hook: AsyncOrchesjobHook) -> None:
        self.hook = hook
        self.subs: dict[str, Subscription] = {}
        self.task: asyncio.Task | None = None
        self.process: Any = None
        self.unsupported_until = 0.0
        self.opens = 0  # watch execs started (tests and benchmarks)
        self.drops: list[str] = []  # why the channel dropped or could not open, the latest last
        self.hello: Mapping[str, Any] | None = None  # the current channel's hello (agent pid, ...)
        self._idle: asyncio.TimerHandle | None = None

    MAX_DROPS = 20  # reasons kept for support and tests (a triggerer lives for weeks)

    def _dropped(self, reason: str) -> None:
        self.drops = [*self.drops[1 - self.MAX_DROPS :], reason]

    @property
    def supported(self) -> bool:
        return time.monotonic() >= self.unsupported_until

    # -- triggers ---------------------------------------------------------------------------
    def subscribe(self, job_id: str, offsets: Mapping[str, int] | None) -> Subscription:
        sub = Subscription(self, job_id, offsets)
        self.subs[sub.sid] = sub
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.task is None or self.task.done():
            self.hook.acquire()  # the channel holds the shared connection while it runs
            self.task = asyncio.ensure_future(self._run())
        elif self.process is not None:
            self.write(sub_line(sub.sid, job_id, sub.offsets))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if self.subs.pop(sub.sid, None) is None:
            return
        self.write(unsub_line(sub.sid))
        if not self.subs and self._idle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._stop()
                return
            self._idle = loop.call_later(self.IDLE_CLOSE_SECONDS, self._stop_if_idle)

    def write(self, line: bytes) -> None:
        process = self.process
        if process is None:
            return  # sent with every subscription when the channel (re)opens
        try:
            process.stdin.write(line)
        except Exception:
            pass  # the reader sees the channel end and reconnects

    def _stop_if_idle(self) -> None:
        self._idle = None
        if not self.subs:
            self._stop()

    def _stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _fail_all(self, error: BaseException) -> None:
        for sub in list(self.subs.values()):
            while not sub.queue.empty():  # events of a dropped channel are not shown
                sub.queue.get_nowait()
            sub.queue.put_nowait(error)

    # -- the channel --------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        try:
            while self.subs:
                try:
                    await self._open()
                except WatchUnsupported as e:
                    self._dropped(f"unsupported: {e}")
                    self.unsupported_until = time.monotonic() + self.UNSUPPORTED_FOR
                    self._fail_all(e)
                    return
                except AgentUnavailable as e:
                    self._dropped(str(e))
                    attempt += 1
                    self._fail_all(e)
                    await asyncio.sleep(reconnect_delay(attempt))
                    continue
                except Exception as e:  # never end silently: the triggers would wait on nothing
                    self._dropped(f"open failed: {e!r}")
                    attempt += 1
                    self._fail_all(AgentUnavailable(f"orchesjob watch on {self.hook.where}: {e!r}"))
                    await asyncio.sleep(reconnect_delay(attempt))
                    continue
                attempt = 0
                for sub in list(self.subs.values()):
                    self.write(sub_line(sub.sid, sub.job_id, sub.offsets))
                try:
                    error = await self._read()
                except Exception as e:
                    error = AgentUnavailable(f"orchesjob watch on {self.hook.where}: {e!r}")
                self._close_process()
                if error is not None:
                    self._dropped(str(error))
                    attempt += 1
                    self._fail_all(error)
                    await asyncio.sleep(reconnect_delay(attempt, cap=5.0))
        finally:
            self._close_process()
            self.hook.release()

    async def _open(self) -> None:
        """Start the watch exec and wait for its hello; deploy once if the agent is missing."""
        asyncssh = await load_asyncssh()
        for deployed in (False, True):
            conn = await self.hook.shared.get()
            command = rpc_command(self.hook.remote_python, await load_bundle())
            try:
                process = await conn.create_process(command, encoding=None)
            except (OSError, asyncssh.Error) as e:
                self.hook.shared.invalidate(conn)
                raise AgentUnavailable(
                    f"orchesjob watch on {self.hook.where}: SSH connection lost ({e})"
                ) from None
            self.opens += 1
            try:
                process.stdin.write(open_line(self.hook.state_dir))
                line = await asyncio.wait_for(process.stdout.readline(), self.HELLO_TIMEOUT)
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                process.close()
                if isinstance(e, asyncio.TimeoutError):
                    raise WatchUnsupported(f"no watch hello within {self.HELLO_TIMEOUT:.0f}s") from None
                raise AgentUnavailable(
                    f"orchesjob watch on {self.hook.where}: SSH connection lost ({e})"
                ) from None
            msg = parse_line(line) if line else None
            if msg is not None and msg.kind == "hello":
                self.process = process
                self.hello = msg.raw
                return
            process.close()
            err = b""
            try:
                result = await asyncio.wait_for(process.wait(check=False), 5)
                err, rc = bytes(result.stderr or b""), result.exit_status
            except Exception:
                rc = None
            if not deployed and is_missing_agent(rc, line or b"", err):
                await self.hook.deploy()
                continue
            raise WatchUnsupported(msg.message if msg is not None else f"watch exited (status {rc})")

    async def _read(self) -> AgentUnavailable | None:
        """Dispatch events until the channel ends; the error to report (None: closed by us)."""
        process = self.process
        while True:
            try:
                line = await process.stdout.readline()
            except Exception as e:
                return AgentUnavailable(
                    f"orchesjob watch on {self.hook.where}: channel lost ({type(e).__name__})"
                )
            if not line:
                if not self.subs:
                    return None
                return AgentUnavailable(f"orchesjob watch on {self.hook.where}: channel closed")
            msg = parse_line(line)
            if msg.kind == "job" and msg.sid in self.subs and msg.logs is not None:
                self.subs[msg.sid].queue.put_nowait(msg.logs)
            elif msg.kind == "recorded":
                for sub in self.subs.values():
                    if sub.job_id == msg.job_id:
                        sub.recorded.set()
            elif msg.kind == "error" and msg.sid in self.subs:
                self.subs[msg.sid].queue.put_nowait(WatchUnsupported(msg.message))

    def _close_process(self) -> None:
        process, self.process = self.process, None
        self.hello = None
        if process is not None:
            try:
                process.stdin.write_eof()  # the agent exits on EOF
            except Exception:
                pass
            try:
                process.close()
            except Exception:
                pass

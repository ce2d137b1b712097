"""Trigger that waits for a remote orchesjob job in the triggerer, without blocking its loop."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

from orchesjob_provider.client.records import normalize_offsets
from orchesjob_provider.client.watch_wire import starts_at
from orchesjob_provider.client.wire import abort_timeout
from orchesjob_provider.exceptions import AgentUnavailable, OrchesjobError
from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook
from orchesjob_provider.hooks.ssh.watch_channel import WatchUnsupported
from orchesjob_provider.triggers.cancels import finish_despite_cancels
from orchesjob_provider.triggers.events import EVENT_ERROR, EVENT_TERMINAL, EVENT_TIMEOUT, WatchEvent
from orchesjob_provider.triggers.log_files import resume_from_files, settled_offsets
from orchesjob_provider.triggers.log_lines import START_FORMAT, LineFeed
from orchesjob_provider.triggers.on_kill import AbortOnKill
from orchesjob_provider.triggers.task_end import finish_here, xcoms_of
from orchesjob_provider.triggers.task_start import StartFailed, start_job
from orchesjob_provider.utils.address import AgentAddress
from orchesjob_provider.utils.sealed import seal, unseal
from orchesjob_provider.utils.task_state import READ_TIMEOUT
from orchesjob_provider.utils.waiting import MaskedLog, Watch
from orchesjob_provider.version_compat import (
    TRIGGER_HAS_ON_KILL,
    BaseTrigger,
    TaskSuccessEvent,
    TriggerEvent,
    child_logger,
    mask_secret,
)


class OrchesjobTrigger(AbortOnKill, BaseTrigger):
    """
    Wait until a remote job is terminal; yield one event with its final record and log offsets.

    All I/O goes through asyncssh: one shared connection per SSH connection id in the triggerer
    process, and one watch channel per host (hooks/ssh/watch_channel.py) that pushes the job's end and
    new log lines; where that channel cannot run, one batched ``poll`` exec per round for every
    trigger watching that host. New log
    lines are written to the trigger's log as they arrive (on Airflow 2.6+ and 3.x the triggerer
    routes them into the task log); the event carries the offsets up to which lines were written,
    so the operator prints only what follows. A dropped connection is retried with backoff.

    Lines are written whole, after a start line that names where they begin
    (triggers/log_lines.py). The lines that arrive with the job's end are not written here but
    left to the task (unless this trigger ends the task itself: ``end_from_trigger``,
    triggers/task_end.py), which prints the log past the event's offsets into its own log when it
    resumes: Airflow 3's triggerer closes a trigger's log file when the trigger finishes and drops
    lines it has not read yet, so before its event a trigger also checks its own lines reached its
    file and otherwise hands the task the offsets its file really reaches. A trigger that another
    triggerer runs again (its triggerer died) goes on after the last line the try's trigger log
    files hold; where it cannot read them it starts from the offsets the task deferred with
    (repeats, never losses; docs/guides/kill-and-abort.md).

    :param ssh_conn_id: the ``ssh`` connection.
    :param job_id: the job to watch (or None with ``run_key``: wait for the key's latest job).
    :param run_key: the run key to resolve while ``job_id`` is None (sensor use).
    :param offsets: ``{"stdout": n, "stderr": m}`` already printed in the task log.
    :param poll_interval: seconds between polls.
    :param timeout_at: Unix time after which the trigger yields a ``timeout`` event.
    :param remote_python: the interpreter on the target.
    :param state_dir: the agent's state dir on the target.
    :param abort_on_kill: abort and acknowledge the remote job when a user kills the deferred task
        (clear, mark failed/success); a triggerer restart never aborts.
    :param stream_logs: write remote log lines to the trigger log (else the operator prints all).
    :param max_reconnect_attempts: consecutive connection failures before an ``error`` event.
    :param secret_values: the job's secret env values (operator ``secret_env`` and sensitive
        names): registered with the triggerer's secrets masker and replaced by ``***`` in the
        job's log lines written here. Serialized sealed (``sealed``), never as they are.
    :param use_watch: wait on the host's watch channel (one long-lived agent per host pushes the
        end and new log lines; ``poll_interval`` does not matter then); False, or a host where
        the channel cannot run, uses the batched poll every ``poll_interval`` seconds.
    :param end_from_trigger: end the task here when its job SUCCEEDED (``TaskSuccessEvent``: no
        worker slot to finish it), once every log line is in the task's log and the result is
        acknowledged; any other end resumes the task on a worker (triggers/task_end.py).
    :param push_xcom: with ``end_from_trigger``, push the job record as the return value XCom.
    :param start: the start request to send first (``start_in_triggerer``; client/starts.py
        ``start_fields``, the run key's resume-mode start: sent again by a trigger run again);
        then the job it answers is watched (triggers/task_start.py). Holds the job's ``env``,
        which is serialized sealed, and ``repr`` shows none of its values.
    :param sealed: how the kwargs carry ``secret_values`` and the start's ``env``: one Fernet
        token of Airflow's key (utils/sealed.py: Airflow 2.10 and 3.0-3.2 show trigger kwargs in
        clear in their REST API). Set by :meth:`serialize`, never by hand.
    """

    def __init__(
        self,
        ssh_conn_id: str,
        job_id: str | None = None,
        offsets: dict[str, int] | None = None,
        poll_interval: float = 5.0,
        timeout_at: float | None = None,
        remote_python: str = "python3",
        state_dir: str | None = None,
        abort_on_kill: bool = True,
        stream_logs: bool = True,
        run_key: str | None = None,
        max_reconnect_attempts: int = 20,
        abort_grace_seconds: float = 5.0,
        secret_values: list[str] | None = None,
        use_watch: bool = True,
        end_from_trigger: bool = False,
        push_xcom: bool = True,
        start: dict[str, Any] | None = None,
        sealed: str | None = None,
    ) -> None:
        super().__init__()
        self._sealed = sealed  # serialize() gives the same token again
        if sealed:  # rebuilt from its kwargs (the triggerer): the secrets are in the seal
            payload = unseal(sealed)
            secret_values = payload.get("secret_values") or []
            if start is not None:
                start = {**start, "env": payload.get("env") or {}}
        self.secret_values = [v for v in secret_values or () if isinstance(v, str) and v]
        for value in self.secret_values:  # before anything in this process logs this trigger
            mask_secret(value)
        if not job_id and not run_key and not start:
            raise ValueError("OrchesjobTrigger needs a job_id, a run_key or a start")
        self.start = dict(start) if start else None
        self._starting: Any = None  # run(): the start in flight (a kill waits for its answer)
        self.ssh_conn_id = ssh_conn_id
        self.job_id = job_id
        self.run_key = run_key
        self.offsets = normalize_offsets(offsets)
        self.poll_interval = float(poll_interval)
        self.timeout_at = float(timeout_at) if timeout_at is not None else None
        self.remote_python = remote_python
        self.state_dir = state_dir
        self.abort_on_kill = abort_on_kill
        self.stream_logs = stream_logs
        self.max_reconnect_attempts = max_reconnect_attempts
        self.abort_grace_seconds = abort_grace_seconds
        self.use_watch = bool(use_watch)
        self.end_from_trigger = bool(end_from_trigger)
        self.push_xcom = bool(push_xcom)
        self._feed: LineFeed | None = None  # run(): the job's log lines as written here
        self._token = ""  # run(): names this trigger's start line in the try's log files

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = self._kwargs()
        if self.holds_secrets:
            if self._sealed is None:
                secret: dict[str, Any] = {"secret_values": list(self.secret_values)}
                if self.start is not None:
                    secret["env"] = dict(self.start.get("env") or {})
                self._sealed = seal(secret)
            kwargs["sealed"] = self._sealed
        return "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger", kwargs

    @property
    def holds_secrets(self) -> bool:
        """Whether the kwargs carry a seal: secret values, or a start with an ``env``."""
        return bool(self.secret_values or (self.start is not None and self.start.get("env")))

    def _kwargs(self) -> dict[str, Any]:
        """The kwargs without the secrets: no secret value, and the start's ``env`` empty."""
        return {
            "ssh_conn_id": self.ssh_conn_id,
            "job_id": self.job_id,
            "offsets": dict(self.offsets),
            "poll_interval": self.poll_interval,
            "timeout_at": self.timeout_at,
            "remote_python": self.remote_python,
            "state_dir": self.state_dir,
            "abort_on_kill": self.abort_on_kill,
            "stream_logs": self.stream_logs,
            "run_key": self.run_key,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "abort_grace_seconds": self.abort_grace_seconds,
            "use_watch": self.use_watch,
            "end_from_trigger": self.end_from_trigger,
            "push_xcom": self.push_xcom,
            "start": {**self.start, "env": {}} if self.start is not None else None,
        }

    def __repr__(self) -> str:
        classpath = "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger"
        kwargs = {**self._kwargs(), **({"sealed": "***"} if self.holds_secrets else {})}
        return self.repr(classpath, kwargs) if hasattr(self, "repr") else f"<{classpath} {kwargs}>"

    def _write(self, stream: str, text: str) -> None:
        """One line of the job's log, secrets replaced (also where no masker filters this logger,
        e.g. the console of ``dag.test()``); each stream through a child logger of its own, which
        is how the try's trigger log files tell these lines from the trigger's own."""
        label = "" if stream == "stdout" else "[stderr] "
        MaskedLog(child_logger(self.log, stream), self.secret_values).info("%s%s", label, text)

    def _start_line(self, offsets: dict[str, int]) -> None:
        self.log.info("%s", START_FORMAT.format(job=self.job_id, token=self._token, **offsets))

    async def _new_feed(self) -> LineFeed:
        """Where this trigger's lines start: after what the try's trigger log files already hold."""
        start, skip = dict(self.offsets), None
        if self.job_id and self.stream_logs:
            start, skip = await resume_from_files(getattr(self, "task_instance", None), self.job_id, start)
            if start != self.offsets or any(skip.values()):
                self.log.info("orchesjob: the log of job %s is in the task's logs up to %d lines past "
                              "byte %d of stdout and %d lines past byte %d of stderr (another triggerer "
                              "wrote them); going on after them", self.job_id, skip["stdout"],
                              start["stdout"], skip["stderr"], start["stderr"])
        return LineFeed(self._write, self._start_line, start, skip)

    def _shown(self, watch: Watch) -> dict[str, int]:
        """Up to where the task's logs hold the job's log: the event's offsets."""
        return self._feed.offsets if self._feed is not None else dict(watch.offsets)

    def _hook(self) -> AsyncOrchesjobHook:
        return AgentAddress(self.ssh_conn_id, self.remote_python, self.state_dir).async_hook()

    def _event(self, status: str, watch: Watch, message: str, *, job_known: bool = True) -> TriggerEvent:
        job = watch.job if job_known else None
        event = WatchEvent(status, self.job_id, self.run_key, job, self._shown(watch), message)
        return TriggerEvent(event.to_payload())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self._token = secrets.token_hex(4)
        hook = self._hook()
        hook.acquire()
        try:
            if self.start is not None and not self.job_id:
                try:
                    await start_job(self, hook)
                except StartFailed as e:
                    yield TriggerEvent(WatchEvent(e.kind, None, self.run_key, None, {}, str(e)).to_payload())
                    return
            self._feed = feed = await self._new_feed()
            watch = Watch(self.log, feed.offsets, deadline=self.timeout_at, show=feed.feed,
                          max_failures=self.max_reconnect_attempts, stream_logs=self.stream_logs)
            watch_tried = not self.use_watch
            while True:
                if self.job_id and not watch_tried:
                    watch_tried = True
                    event = await self._wait_watching(hook, watch)
                    if event is not None:
                        yield event
                        return
                if watch.expired:
                    yield self._event(EVENT_TIMEOUT, watch, "timed out waiting for the remote job")
                    return
                try:
                    if not self.job_id and not await self._resolve_run_key(hook):
                        await asyncio.sleep(self._sleep_for(watch))
                        continue
                    assert self.job_id is not None
                    res = await hook.poll_job(self.job_id, watch.offsets if self.stream_logs else None)
                except AgentUnavailable as e:
                    delay = watch.failed(e)
                    if delay is None:
                        yield self._event(EVENT_ERROR, watch, watch.give_up_message(e))
                        return
                    await asyncio.sleep(delay)
                    continue
                except OrchesjobError as e:
                    yield self._event(EVENT_ERROR, watch, str(e))
                    return
                if res.job is None:
                    message = f"job {self.job_id} is not known on {hook.where}"
                    message += " (state dir cleaned or changed?)"
                    yield self._event(EVENT_ERROR, watch, message, job_known=False)
                    return
                watch.seen(res, show=not res.job.is_terminal)  # an end's lines: the task's (see above)
                if res.job.is_terminal:  # (every poll recorded the offsets shown before it)
                    yield await self._end(hook, watch, res)
                    return
                if res.more:
                    continue
                await asyncio.sleep(self._sleep_for(watch))
        except asyncio.CancelledError:
            if not TRIGGER_HAS_ON_KILL:
                budget = abort_timeout(self.abort_grace_seconds) + READ_TIMEOUT * 5
                await finish_despite_cancels(self._abort_if_task_killed(), budget, self.log)
            raise
        finally:
            hook.release()

    async def _wait_watching(self, hook: AsyncOrchesjobHook, watch: Watch) -> TriggerEvent | None:
        """Wait on the host's watch channel: the event to yield, or None to poll instead (the
        channel cannot run there). Offsets stay ours: an event that does not start at them is
        not shown; the channel is asked again from them."""
        assert self.job_id is not None
        channel = hook.watch_channel
        if not channel.supported:
            return None
        sub = channel.subscribe(self.job_id, watch.offsets if self.stream_logs else None)
        try:
            while True:
                if watch.expired:
                    return self._event(EVENT_TIMEOUT, watch, "timed out waiting for the remote job")
                try:
                    res = await sub.next(watch.capped(60.0))
                except WatchUnsupported as e:
                    self.log.info("orchesjob: no watch channel on %s (%s); polling instead", hook.where, e)
                    return None
                except AgentUnavailable as e:
                    delay = watch.failed(e)  # the channel reconnects with its own backoff
                    if delay is None:
                        return self._event(EVENT_ERROR, watch, watch.give_up_message(e))
                    continue
                if res is None:
                    continue
                if res.job is None:
                    message = (
                        f"job {self.job_id} is not known on {hook.where} (state dir cleaned or changed?)"
                    )
                    return self._event(EVENT_ERROR, watch, message, job_known=False)
                if self.stream_logs and not starts_at(res, watch.offsets):
                    sub.resubscribe()
                    continue
                terminal = res.job.is_terminal
                watch.seen(res, show=not terminal)  # an end's lines: the task's (see above)
                if self.stream_logs and not terminal and watch.showed_bytes(res):
                    sub.shown(self._shown(watch))
                if terminal:
                    if not await sub.wait_recorded(5.0):
                        self.log.debug("Could not record log offsets of job %s", self.job_id)
                    return await self._end(hook, watch, res)
        finally:
            sub.close()

    async def _end(self, hook: AsyncOrchesjobHook, watch: Watch, res: Any) -> TriggerEvent:
        """The terminal event, with the offsets the task's logs really reach (log_files.py); or,
        with ``end_from_trigger``, the task's own success when the trigger may end it here."""
        assert res.job is not None
        message = f"job {res.job.job_id} {res.job.status}"
        if self._feed is None or not self.stream_logs or not self.job_id:
            return self._event(EVENT_TERMINAL, watch, message)
        if self.end_from_trigger and res.job.succeeded:
            job = await finish_here(self, hook, self._feed, res, dict(watch.offsets))
            if job is not None:
                return TaskSuccessEvent(xcoms=xcoms_of(job, self.push_xcom))
        else:
            self._feed.feed(res, write=False)  # pieces another triggerer wrote still go by
        ti = getattr(self, "task_instance", None)
        offsets = await settled_offsets(ti, self.job_id, self._feed, self._token)
        if offsets != self._feed.offsets:
            self.log.info("orchesjob: the task's log file lacks lines written here; the task prints "
                          "job %s's log from byte %d of stdout and %d of stderr", self.job_id,
                          offsets["stdout"], offsets["stderr"])
        event = WatchEvent(EVENT_TERMINAL, self.job_id, self.run_key, watch.job, offsets, message)
        return TriggerEvent(event.to_payload())

    async def _resolve_run_key(self, hook: AsyncOrchesjobHook) -> bool:
        """Sensor use: find the run key's latest job; False while there is none yet."""
        assert self.run_key is not None
        job = await hook.status(run_key=self.run_key)
        if job is None:
            return False
        self.job_id = job.job_id
        self.log.info("Run key %r: watching job %s (%s)", self.run_key, job.job_id, job.status)
        return True

    def _sleep_for(self, watch: Watch) -> float:
        return max(0.05, watch.capped(self.poll_interval))

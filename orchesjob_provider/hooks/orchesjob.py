"""The sync hook: run and watch jobs on a remote host through the orchesjob agent, over SSH.

``OrchesjobHook`` (paramiko through the SSH provider's ``SSHHook``) is used by operators and
sensors in the worker; ``AsyncOrchesjobHook`` (asyncssh, hooks/async_orchesjob.py) by the
trigger. Both speak the JSON protocol of docs/agent/protocol.md (orchesjob_provider/client/wire.py): one
fixed command line per call, the request on stdin::

    <remote_python> -I -S -c <remote/launch.py> ~/.orchesjob/agent/agent-<sha256[:16]> rpc

No user string ever reaches the remote shell. The launcher checks the agent directory first;
when it is missing, damaged or not safely ours it exits 86 and the hook deploys the bundle
(remote/deploy.py: verifies, repairs, prunes) once and resends (retry.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchesjob_provider.bundle import DEPLOY_TIMEOUT, AgentBundle, deploy_command, get_bundle, rpc_command
from orchesjob_provider.client.records import (
    DEFAULT_LOG_LIMIT,
    JobLogs,
    JobRecord,
    LogChunk,
    normalize_offsets,
)
from orchesjob_provider.client.retry import DEPLOY, CallRetry
from orchesjob_provider.client.starts import (
    MAX_BATCH,
    BusyResend,
    GroupCommit,
    StartAnswer,
    call_seconds,
    fields_of,
    outcome,
    start_fields,
)
from orchesjob_provider.client.wire import CALL_SLACK, abort_timeout, build_request, check_deploy, poll_args
from orchesjob_provider.exceptions import (
    AgentUnavailable,
    OrchesjobBadRequest,
    OrchesjobBusy,
    OrchesjobError,
    OrchesjobNotFound,
    OrchesjobWrongState,
)
from orchesjob_provider.hooks.ssh.paramiko_transport import ParamikoTransport
from orchesjob_provider.utils import metrics
from orchesjob_provider.version_compat import BaseHook

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook


def __getattr__(name: str) -> Any:
    """``AsyncOrchesjobHook`` stays importable from here, loaded on first use: a task process that
    only starts a job then defers never loads the asyncssh side (~15 ms of its CPU)."""
    if name == "AsyncOrchesjobHook":
        from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

        return AsyncOrchesjobHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the names users import from this module stay importable from here
__all__ = [
    "AgentUnavailable",
    "AsyncOrchesjobHook",
    "JobLogs",
    "JobRecord",
    "LogChunk",
    "OrchesjobBadRequest",
    "OrchesjobBusy",
    "OrchesjobError",
    "OrchesjobHook",
    "OrchesjobNotFound",
    "OrchesjobWrongState",
]

class OrchesjobHook(ParamikoTransport, BaseHook):
    """
    Run and watch jobs on a remote host through the orchesjob agent, over SSH.

    Built on the SSH provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook`, which reads the
    ``ssh`` connection (login, password, ``private_key``/``key_file`` extras, ``host_key``,
    ``no_host_key_check``, ``conn_timeout``, proxy command from ``~/.ssh/config``...). Host keys are
    verified unless the connection sets ``no_host_key_check`` (also with old SSH providers whose
    default was not to check). One paramiko client per hook instance, reused for every call, with
    TCP_NODELAY on its socket. Each call is one SSH exec; the agent is uploaded on first use.

    :param ssh_conn_id: an Airflow connection of type ``ssh``.
    :param remote_python: the interpreter on the target (a name on its PATH or an absolute path).
    :param state_dir: the agent's state dir on the target (default: the agent's default for the
        SSH user, ``~/.local/state/orchesjob``).
    :param conn_timeout: overrides the connection's ``conn_timeout`` (seconds).
    :param ssh_hook_kwargs: more keyword arguments for ``SSHHook``.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "Orchesjob (SSH)"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        remote_python: str = "python3",
        state_dir: str | None = None,
        conn_timeout: int | None = None,
        ssh_hook_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.remote_python = remote_python or "python3"
        self.state_dir = state_dir or None
        self.conn_timeout = conn_timeout
        self.ssh_hook_kwargs = dict(ssh_hook_kwargs or {})
        self._ssh_hook: Any = None
        self._connect_attempts = 1  # our retries of network errors (see ssh_hook)
        self._client: Any = None
        self.exec_count = 0  # SSH execs made by this hook (the hot path is one per call)
        self._lost = False  # the connection was lost: the next one made is a reconnect (metrics)
        # threads starting jobs through this hook at the same time share one call (client/starts.py);
        # made on the first start (a lock does not copy: operators and hooks get deep-copied)
        self._starts: GroupCommit[dict[str, Any], tuple[str, JobRecord]] | None = None

    # -- deploy -------------------------------------------------------------------------------
    def deploy(self) -> AgentBundle:
        """Upload the agent to its content-addressed directory (idempotent)."""
        bundle = get_bundle()
        where, size = f"{self.where}:{bundle.remote_path}", len(bundle.data)
        self.log.info("Deploying the orchesjob agent to %s (%d bytes)", where, size)
        command = deploy_command(self.remote_python, bundle)
        rc, out, err = self._exec_retrying(command, bundle.data, DEPLOY_TIMEOUT, "deploy")
        check_deploy(rc, out, err, where=self.where, remote_path=bundle.remote_path)
        metrics.agent_deploy(self.ssh_conn_id, metrics.WORKER)
        return bundle

    # -- protocol -----------------------------------------------------------------------------
    def call(self, op: str, *, call_timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Run one agent operation and return its reply (``ok`` true), or raise a typed error."""
        payload = build_request(op, self.state_dir, args)
        timeout = call_timeout if call_timeout is not None else CALL_SLACK
        command = rpc_command(self.remote_python, get_bundle())
        retry = CallRetry(op, remote_python=self.remote_python)
        while True:
            step = retry.after(*self._exec_retrying(command, payload, timeout, op), where=self.where)
            if step.reply is not None:
                return step.reply
            if step.action == DEPLOY:
                self.deploy()
            else:
                time.sleep(step.delay)

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def start(
        self,
        argv: Sequence[str],
        run_key: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        strict: bool = False,
        mode: str = "resume",
        start_timeout: float = 10,
        rerun_unknown: bool = False,
        epoch: str | None = None,
        grace_seconds: float = 5,
        check: Mapping[str, Any] | None = None,
        locks: Mapping[str, Sequence[str]] | None = None,
        slots: Mapping[str, int] | None = None,
        queue_timeout: float | None = None,
        task_instance: str | None = None,
    ) -> tuple[str, JobRecord]:
        """Start (or, in ``resume`` mode, reattach to/adopt) the job for ``run_key``.

        ``rerun_unknown``: in resume mode, run the key again even if its latest job's outcome is
        unknown (LOST after its target started); otherwise the action is ``unknown``.
        ``epoch`` (resume mode): changes whenever the task is cleared in Airflow. When the key's
        job was started under another epoch, the agent aborts it (SIGTERM, SIGKILL after
        ``grace_seconds``) if still active, acknowledges it, and starts a new attempt: the
        returned action is ``started`` and ``job.raw["superseded"]`` names the replaced job.
        ``task_instance`` (with ``epoch``): the Airflow task instance starting it. A retry of the
        same task instance and epoch adopts the key's SUCCEEDED job even if it was acknowledged
        (Airflow retries only when it did not record the success); a failure runs again.
        ``check`` (``{"argv": [...], "timeout": s}``): the agent runs it before the command
        (passes: SUCCEEDED, phase ``satisfied``, nothing runs) and after a run that exited 0
        (still failing: FAILED, phase ``recheck_failed``); it also decides an unknown outcome.
        ``locks`` (``{"write": [...], "read": [...]}``), ``slots`` (``{name: capacity}``) and
        ``queue_timeout``: a new job waits on the host for its turn (status WAITING, with
        ``waiting_for``); the reply comes at once.
        Threads sharing this hook that start at the same time are sent together, in one
        ``starts`` call (client/starts.py: a group commit, no waiting for company).
        """
        fields = start_fields(
            argv, run_key, cwd=cwd, env=env, strict=strict, mode=mode, start_timeout=start_timeout,
            rerun_unknown=rerun_unknown, epoch=epoch, grace_seconds=grace_seconds, check=check,
            locks=locks, slots=slots, queue_timeout=queue_timeout, task_instance=task_instance,
        )
        if self._starts is None:
            self._starts = GroupCommit(self._send_starts)
        return self._starts.submit(fields)

    def start_many(self, starts: Sequence[Mapping[str, Any]]) -> list[StartAnswer]:
        """Start many jobs on this host in as few calls as possible (up to MAX_BATCH per exec).

        Each mapping holds :meth:`start`'s keyword arguments. Each start is decided by the agent
        in its own transaction, in the order given; the answer for each is ``(action, job)`` or
        the error that start alone would have raised (returned, not raised, so one bad start
        does not hide the others' jobs). A failure of the whole call (SSH) is raised.
        """
        fields = [fields_of(s) for s in starts]
        out: list[StartAnswer] = []
        for i in range(0, len(fields), MAX_BATCH):
            out.extend(self._send_starts(fields[i : i + MAX_BATCH], raise_single=False))
        return out

    def _send_starts(self, batch: list[dict[str, Any]], raise_single: bool = True) -> list[StartAnswer]:
        """One ``start`` call for a batch of one, one ``starts`` call for more; the starts the
        agent rolled back as busy are sent again (with the call's backoff), the rest answered."""
        if len(batch) == 1 and raise_single:
            one = batch[0]
            return [outcome(self.call("start", call_timeout=call_seconds([one]), **one))]
        plan = BusyResend(batch, where=self.where)
        while (part := plan.part()) is not None:
            time.sleep(plan.take(self.call("starts", starts=part, call_timeout=call_seconds(part))))
        return plan.answers()

    def poll(
        self,
        jobs: Iterable[tuple[str, Mapping[str, int] | None]],
        limit: int = DEFAULT_LOG_LIMIT,
        record: bool = False,
    ) -> list[JobLogs]:
        """Status (and new log bytes, for entries with offsets) of many jobs in one call.

        ``record=True``: the offsets sent are the bytes the caller has already shown; the agent
        stores them as the job's ``log_shown`` so a later try continues the task log from there.
        """
        reply = self.call("poll", **poll_args(jobs, limit, record))
        return [JobLogs.from_reply(str(j.get("job_id")), j) for j in reply.get("jobs") or []]

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.poll([(job_id, None)])[0].job

    def wait(
        self,
        job_id: str,
        timeout: float = 30,
        offsets: Mapping[str, int] | None = None,
        until: str = "terminal",
        limit: int = DEFAULT_LOG_LIMIT,
        record: bool = False,
    ) -> JobLogs:
        """Block (on the host) up to ``timeout`` s until the job is terminal, or has new output."""
        reply = self.call(
            "wait",
            job_id=job_id,
            timeout=max(0.0, float(timeout)),
            until=until,
            offsets=normalize_offsets(offsets) if offsets is not None else None,
            limit=limit,
            record=True if record and offsets is not None else None,
            call_timeout=float(timeout) + CALL_SLACK,
        )
        return JobLogs.from_reply(job_id, reply, timed_out=bool(reply.get("timed_out")))

    def ack(self, job_id: str) -> JobRecord:
        return JobRecord.from_dict(self.call("ack", job_id=job_id)["job"])

    def abort(
        self, job_id: str, reason: str = "aborted by Airflow", grace_seconds: float = 5, ack: bool = False
    ) -> dict[str, Any]:
        """Abort a running job; ``ack=True`` also acknowledges it (a finished one too, which still
        raises :class:`OrchesjobWrongState`), so the next try of its run key starts a new attempt."""
        return self.call(
            "abort",
            job_id=job_id,
            reason=reason,
            grace_seconds=grace_seconds,
            ack=True if ack else None,
            call_timeout=abort_timeout(grace_seconds),
        )

    def status(self, *, run_key: str | None = None, job_id: str | None = None) -> JobRecord | None:
        """Latest job of a run key (or a job by id); None when there is none yet."""
        if job_id:
            return self.get_job(job_id)
        if not run_key:
            raise OrchesjobBadRequest("status needs a run_key or a job_id")
        try:
            reply = self.call("status", run_key=run_key)
        except OrchesjobNotFound:
            return None
        job = reply.get("job")
        return JobRecord.from_dict(job) if job else None

    def read_logs(
        self, job_id: str, offsets: Mapping[str, int], limit: int = 1 << 20, record: bool = False
    ) -> Iterable[tuple[JobLogs, dict[str, int]]]:
        """Read every log byte past ``offsets`` (terminal jobs: to EOF), one chunk set per yield."""
        offsets = normalize_offsets(offsets)
        while True:
            res = self.poll([(job_id, offsets)], limit=limit, record=record)[0]
            offsets = res.next_offsets(offsets)
            yield res, offsets
            if res.job is None or not res.more:
                return

    def test_connection(self) -> tuple[bool, str]:
        try:
            info = self.ping()
            return (
                True,
                f"orchesjob agent {info.get('agent_version')} on {self.where}, home {info.get('home')}",
            )
        except Exception as e:
            return False, str(e)

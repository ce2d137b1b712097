"""OrchesjobOperator: run a job on a remote host; a retry resumes the same job."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

from orchesjob_provider.client.records import JobLogs, JobRecord, normalize_offsets
from orchesjob_provider.client.starts import fields_of
from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.operators.outcome import OutcomeMixin
from orchesjob_provider.operators.rendering import RenderingMixin
from orchesjob_provider.operators.validation import (
    bad,
    has_template,
    seconds,
    start_spec,
    validate_check,
    validate_command,
    validate_end_from_trigger,
    validate_env,
    validate_locks,
    validate_skip_codes,
    validate_slots,
    validate_start_in_triggerer,
)
from orchesjob_provider.triggers.events import EVENT_REFUSED, EVENT_TERMINAL, EVENT_TIMEOUT, WatchEvent
from orchesjob_provider.triggers.task_end import ENDED_PAYLOAD
from orchesjob_provider.utils import metrics
from orchesjob_provider.utils.address import AgentTaskMixin
from orchesjob_provider.utils.messages import start_lines, unknown_outcome_message, waiting_message
from orchesjob_provider.utils.sealed import can_seal
from orchesjob_provider.utils.task_state import TaskIdent, clear_epoch
from orchesjob_provider.utils.waiting import MaskedLog, Watch, log_chunk_lines
from orchesjob_provider.version_compat import AirflowException, BaseOperator, Context, conf
from remote_agent.common.vocab import UNKNOWN


class OrchesjobOperator(OutcomeMixin, RenderingMixin, AgentTaskMixin, BaseOperator):
    """
    Run a command on a remote host through the orchesjob agent, over SSH, so that an Airflow retry
    never starts a second copy of a job that is still running or already finished.

    Every try calls ``start`` in *resume* mode with a run key that is the same on every try:
    a running job is reattached, a finished job whose result was not yet acknowledged is adopted,
    a SUCCEEDED job of an earlier try of this task instance and clear epoch is adopted even if
    acknowledged (a retry means Airflow never recorded that success), and only a failure this
    operator already acknowledged, or a success the user cleared, is run again. ``strict=True``
    never runs a key twice.

    Each start sends the task's clear epoch (``max_tries:clear_number``): a job started before the
    task was cleared is aborted and acknowledged by the agent, and a new attempt runs. On a kill,
    the task instance's state says why (``task_state``): a user's clear or mark, or a timeout,
    aborts and acknowledges the job; a worker shutdown leaves it running for the next try.

    :param ssh_conn_id: an ``ssh`` connection (templated? no: fixed per task).
    :param command: argv list (templated), or a string run by ``[shell or "/bin/sh", "-c", command]``.
    :param shell: the shell for a string command (default ``/bin/sh``).
    :param env: extra environment variables for the job (templated); sent on stdin, never on a
        command line, never stored on the host, never logged.
    :param secret_env: names of ``env`` keys whose values are secrets: masked (``***``) in the
        task log (also in the job's own output) and in the rendered fields. Values of keys that
        Airflow's masker treats as sensitive by name (``password``, ``secret``, ``token``,
        ``api_key``... and ``[core] sensitive_var_conn_names``) are masked without being listed.
    :param cwd: working directory on the host (templated).
    :param run_key: idempotency key (templated); default ``af/<dag_id>/<task_id>/<map_index>/<run_id>``.
    :param strict: never run the key again once it ran (unless ``orchesjob unlock``).
    :param remote_python: the interpreter on the host (a name on its PATH or an absolute path).
    :param state_dir: the agent's state dir on the host (default: the SSH user's default).
    :param poll_interval: seconds between status checks (worker) or polls (triggerer).
    :param timeout: seconds or timedelta per try; then the remote job is aborted and the task fails.
    :param skip_on_exit_code: exit code(s) that mark the task skipped instead of failed.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param abort_on_kill: abort and acknowledge the remote job when a user kills the task (clear,
        mark failed/success; worker or deferred) or it times out. False: never abort on a kill.
        A worker shutdown never aborts.
    :param wait: False = start (or reattach) and return the job record without waiting.
    :param abort_grace_seconds: SIGTERM → SIGKILL grace when aborting.
    :param start_timeout: seconds the agent waits for the job's process to be up.
    :param rerun_unknown_outcome: run the key again even when its latest job's outcome is unknown
        (LOST after it started: the supervisor died, the job may have completed). Default False:
        the task fails saying so, and ``orchesjob unlock --run-key <key>`` on the host releases it.
    :param max_reconnect_attempts: consecutive SSH failures tolerated while waiting (worker and
        trigger) before this try fails; the job keeps running and the next try reattaches.
    :param locks: named resources on the host (templated): ``{"write": [...], "read": [...]}``. A
        job that writes a resource never runs beside another job that reads or writes it, a
        reader beside a writer; enforced by the agent for every client of the same state dir.
    :param slots: named slots with a capacity (templated), ``{"heavy-io": 2}``: at most 2 jobs of
        the slot at once on the host. A job whose locks or slots are taken waits on the host in
        first-come order (status WAITING; the task log says for what and who holds it); a retry
        reattaches to the waiting job.
    :param queue_timeout: seconds or timedelta a job may wait for its locks and slots; then it is
        CANCELLED without running and the task fails saying so. Default: wait as long as it takes.
    :param end_from_trigger: with ``deferrable=True``, a job that SUCCEEDED ends the task in the
        triggerer (no worker slot to finish it); any other end resumes on a worker as before
        (triggers/task_end.py). Not with ``outlets``: Airflow emits no asset event then.
    :param start_in_triggerer: with ``deferrable=True``, the worker renders and checks everything
        (run key, clear epoch) and defers at once; the trigger sends the start over the
        triggerer's shared connection to the host (batched with other triggers' starts), then
        watches: the task process opens no SSH connection.
    """

    template_fields: Sequence[str] = ("command", "env", "cwd", "run_key", "check_command", "locks", "slots")
    template_fields_renderers = {"command": "py", "env": "json", "check_command": "py"}
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        command: list[str] | str,
        shell: str | None = None,
        env: dict[str, str] | None = None,
        secret_env: Collection[str] | None = None,
        cwd: str | None = None,
        run_key: str | None = None,
        strict: bool = False,
        remote_python: str = "python3",
        state_dir: str | None = None,
        poll_interval: float = 5,
        timeout: timedelta | float | None = None,
        skip_on_exit_code: int | Collection[int] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        abort_on_kill: bool = True,
        wait: bool = True,
        abort_grace_seconds: float = 5,
        start_timeout: float = 10,
        max_reconnect_attempts: int = 5,
        rerun_unknown_outcome: bool = False,
        check_command: list[str] | str | None = None,
        check_timeout: timedelta | float = 300,
        locks: dict[str, list[str]] | None = None,
        slots: dict[str, int] | None = None,
        queue_timeout: timedelta | float | None = None,
        end_from_trigger: bool = False,
        start_in_triggerer: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.end_from_trigger = validate_end_from_trigger(end_from_trigger, deferrable, self.outlets)
        self.start_in_triggerer = validate_start_in_triggerer(start_in_triggerer, deferrable, wait)
        self.check_command = check_command
        self.check_timeout = seconds(check_timeout, "check_timeout")
        self.locks = locks
        self.slots = slots
        self.queue_timeout = seconds(queue_timeout, "queue_timeout") if queue_timeout != 0 else 0.0
        if not has_template(locks):
            validate_locks(locks)
        if not has_template(slots):
            validate_slots(slots)
        if self.queue_timeout is not None and locks is None and slots is None:
            raise bad("queue_timeout needs locks or slots")
        self.rerun_unknown_outcome = bool(rerun_unknown_outcome)
        self.max_reconnect_attempts = max_reconnect_attempts
        self.ssh_conn_id = ssh_conn_id
        self.command = command
        self.shell = shell
        self.env = env
        if isinstance(secret_env, str) or not all(isinstance(k, str) and k for k in secret_env or ()):
            raise bad("secret_env must be a list of env variable names")
        self.secret_env = list(secret_env or ())
        self.cwd = cwd
        self.run_key = run_key
        self.strict = strict
        self.remote_python = remote_python
        self.state_dir = state_dir
        self.poll_interval = float(poll_interval)
        self.timeout_seconds = seconds(timeout, "timeout")
        self.skip_on_exit_code = validate_skip_codes(skip_on_exit_code)
        self.deferrable = deferrable
        self.abort_on_kill = abort_on_kill
        self.wait = wait
        self.abort_grace_seconds = abort_grace_seconds
        self.start_timeout = start_timeout
        if not ssh_conn_id or not isinstance(ssh_conn_id, str):
            raise bad("ssh_conn_id is required")
        if self.poll_interval <= 0:
            raise bad("poll_interval must be > 0")
        # Static values are checked at DAG parse time; templated ones again after rendering.
        if isinstance(command, (list, tuple)) or (isinstance(command, str) and "{{" not in command):
            validate_command(command, shell)
        elif not isinstance(command, str) and not hasattr(command, "resolve"):
            validate_command(command, shell)
        if isinstance(env, Mapping) or (env is not None and not hasattr(env, "resolve")):
            validate_env(env)
        static_check = isinstance(check_command, str) and "{{" not in check_command
        if isinstance(check_command, (list, tuple)) or static_check:
            validate_check(check_command, shell)
        self._job_id: str | None = None
        self._run_key: str | None = None
        self._task_ident: TaskIdent | None = None
        self._hook = None

    # -- helpers --------------------------------------------------------------------------------
    def _print_logs(self, res: JobLogs) -> None:
        """Write the new log lines of one poll/wait answer to the task log."""
        log_chunk_lines(MaskedLog(self.log, self._secret_values()), res)

    @staticmethod
    def default_run_key(context: Context) -> str:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        if map_index is None:
            map_index = -1
        return f"af/{ti.dag_id}/{ti.task_id}/{map_index}/{ti.run_id}"

    # -- execute --------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        argv = validate_command(self.command, self.shell)
        self._mask_secret_env()  # again: execute() may be called without rendering (tests, subclasses)
        env = validate_env(self._job_env())
        if self.cwd is not None and (not isinstance(self.cwd, str) or not self.cwd):
            raise bad("cwd must be a non-empty str")
        run_key = self.run_key or self.default_run_key(context)
        if not isinstance(run_key, str) or not run_key.strip():
            raise bad("run_key must be a non-empty str")
        deadline = time.time() + self.timeout_seconds if self.timeout_seconds else None

        self._run_key = run_key  # lets on_kill find the job even while start is in flight
        self._task_ident = TaskIdent.of(context.get("ti"))
        check = None
        if self.check_command is not None:
            check = {"argv": validate_check(self.check_command, self.shell), "timeout": self.check_timeout}
        spec = start_spec(argv, run_key, self, env=env, check=check, epoch=clear_epoch(context))
        if self.start_in_triggerer:  # (__init__ checked: deferrable, wait)
            return self._defer(None, {}, deadline, start=fields_of(spec))
        action, job = self.hook.start(**spec)
        self._job_id = job.job_id
        metrics.start_action(action, metrics.task_tags(self))
        for level, line in start_lines(action, job, self.hook.where, run_key):
            getattr(self.log, level)("%s", line)
        if action == UNKNOWN:
            # Not acknowledged (nothing to consume: the agent returns it until it is released).
            raise AirflowException(unknown_outcome_message(job, self.hook.where))
        if not self.wait:
            self.log.info("wait=False: returning the job record; the job's result is not acknowledged here")
            return job.to_dict()

        # How far earlier tries showed this job's log (kept on the host: XCom is cleared between
        # tries); this try continues from there, so no byte appears twice across tries.
        offsets = normalize_offsets(job.raw.get("log_shown"))
        if any(offsets.values()):
            self.log.info("Continuing the job's log after what an earlier try showed (bytes %s)", offsets)
        if job.is_terminal:
            return self._finish(job, offsets)
        if self.deferrable:
            self._defer(job.job_id, offsets, deadline)
        return self._wait_in_worker(job, offsets, deadline)

    def _defer(self, job_id: str | None, offsets: dict[str, int], deadline: float | None,
               start: dict[str, Any] | None = None) -> None:
        """Hand the wait to the triggerer; ``start``: the start request too (start_in_triggerer)."""
        # loaded here: the trigger pulls in the async hook, which a task that never defers skips
        from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

        if start is not None:
            self.log.info("Deferring: the triggerer starts (or resumes) the job of run key %s and watches it",
                          start["run_key"])
        else:
            self.log.info("Deferring: the triggerer watches job %s from log offsets %s", job_id, offsets)
        agent = self.agent
        trigger = OrchesjobTrigger(
            ssh_conn_id=agent.ssh_conn_id,
            remote_python=agent.remote_python,
            state_dir=agent.state_dir,
            job_id=job_id,
            run_key=start["run_key"] if start is not None else None,
            start=start,
            offsets=offsets,
            poll_interval=self.poll_interval,
            timeout_at=deadline,
            abort_on_kill=self.abort_on_kill,
            abort_grace_seconds=self.abort_grace_seconds,
            max_reconnect_attempts=max(self.max_reconnect_attempts, 20),
            secret_values=self._secret_values(),
            end_from_trigger=self.end_from_trigger,
            push_xcom=bool(self.do_xcom_push),
        )
        if trigger.holds_secrets and not can_seal():
            self.log.warning("No Fernet key ([core] fernet_key) is configured: the job's secret values "
                             "(with start_in_triggerer, its env) go into the trigger's kwargs unencrypted, "
                             "which Airflow before 3.3 shows in its REST API")
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            # the job this try waits for: an event of any other job must not decide this try
            kwargs={"job_id": job_id, "deadline": deadline},
        )

    def _wait_in_worker(self, job: JobRecord, offsets: dict[str, int], deadline: float | None) -> Any:
        job_id = job.job_id
        min_gap = min(1.0, self.poll_interval)
        tries = self.max_reconnect_attempts
        watch = Watch(self.log, offsets, deadline=deadline, max_failures=tries, show=self._print_logs)
        watch.waiting = waiting_message(job)  # execute() logged it already
        while True:
            if watch.expired:
                return self._timed_out(job_id, watch.offsets)
            wait_for = watch.capped(self.poll_interval)
            t0 = time.monotonic()
            try:
                res = self.hook.wait(
                    job_id, timeout=wait_for, offsets=watch.offsets, until="output", record=True
                )
            except AgentUnavailable as e:
                # A network blip should not cost an Airflow retry; a long outage fails this try
                # (the job runs on, and the next try reattaches to it).
                delay = watch.failed(e)
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            watch.seen(res)
            assert res.job is not None
            if res.job.is_terminal:
                return self._finish(res.job, watch.offsets)
            if not res.more:
                # Do not spin when the job writes a little output all the time.
                elapsed = time.monotonic() - t0
                if elapsed < min_gap:
                    time.sleep(min_gap - elapsed)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Resume after the trigger: print the logs past the trigger's offsets, then finish.

        ``job_id`` is the job this try deferred on (None for a try deferred by a provider before
        0.5.0). An event of another job (an old try's trigger still being cancelled; on SQLite
        Airflow reuses the trigger's id) is logged and this try goes on waiting for its own job.
        """
        if not event:
            raise AirflowException("OrchesjobOperator resumed without a trigger event")
        if event == ENDED_PAYLOAD:  # dag.test(): the trigger ended the task (its kwargs dropped)
            return self._ended_by_trigger(job_id, self.run_key or self.default_run_key(context))
        ev = WatchEvent.from_payload(event)
        if job_id is not None and not ev.is_for(job_id):
            self.log.warning(
                "Ignoring an event of remote job %s (%s): this try waits for job %s, not that one",
                ev.job_id, ev.status, job_id,
            )
            return self._wait_again(job_id, deadline)
        self._job_id = ev.job_id
        if ev.status == EVENT_TERMINAL and ev.job is not None:
            return self._finish(ev.job, ev.offsets)
        if ev.status == EVENT_TIMEOUT:
            return self._timed_out(str(ev.job_id), ev.offsets)
        if ev.status == EVENT_REFUSED:  # start_in_triggerer: the agent's answer says why
            raise AirflowException(ev.message)
        if ev.job_id is None:  # start_in_triggerer: the host was not reached
            raise AirflowException(f"Starting the remote job failed: {ev.message}; the next try starts it, "
                                   "or reattaches to it if this start reached the host")
        raise AirflowException(
            f"Watching remote job {ev.job_id} failed: {event.get('message')}; the job may still run: "
            f"the next try reattaches to it"
        )

    def _wait_again(self, job_id: str, deadline: float | None) -> Any:
        """Go on waiting for ``job_id`` after a stray event: finish it if it ended, else defer."""
        self._job_id = job_id
        job = self.hook.get_job(job_id)
        if job is None:
            raise AirflowException(f"Remote job {job_id} is not known on {self.hook.where}")
        offsets = normalize_offsets(job.raw.get("log_shown"))
        if job.is_terminal:
            return self._finish(job, offsets)
        self._defer(job_id, offsets, deadline)

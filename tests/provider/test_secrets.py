"""Secrets in ``env`` never show in the task log (also when the job prints them, in the worker
and in the deferrable path) nor in the rendered fields Airflow stores, on both Airflow legs.

A value is secret when its key is listed in ``secret_env`` or when Airflow's masker hides values
of that name (API_TOKEN: "token"). The job echoes every value; the log must show ``***`` instead
of the secrets and the plain value as it is. That they never appear on a command line on the
target (``ps``) is proven by test_input_and_errors.py::test_secret_env_not_in_ps_nor_task_log_nor_state_db.
"""

from __future__ import annotations

import json
import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, kw, new_dag_id, our_log_messages, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]


def _redact(message: str) -> str:
    try:
        from airflow.sdk.log import redact  # Airflow 3: what the mask_logs processor calls
    except ImportError:
        from airflow.utils.log.secrets_masker import redact  # Airflow 2.10
    return str(redact(message))


def _rendered_fields(dag_id: str) -> dict:
    """What Airflow stored as the task's rendered fields (Airflow 3: what the task runner sent
    to the execution API; Airflow 2.10: written by the task itself)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RTIF).filter(RTIF.dag_id == dag_id).all()
        assert len(rows) == 1, rows
        return dict(rows[0].rendered_fields)


#: how the try waits: the worker; the triggerer; the triggerer starting and ending it too (the job's
#: env then travels in the trigger's kwargs, and the trigger writes the last lines)
WAYS = {
    "worker": {"deferrable": False},
    "deferrable": {"deferrable": True},
    "triggerer": {"deferrable": True, "start_in_triggerer": True, "end_from_trigger": True},
}


@pytest.mark.parametrize("way", list(WAYS))
def test_secret_env_values_are_masked_in_log_and_rendered_fields(
    way, orch_conn, state_dir, capfd, caplog
):
    by_name = f"s3cr3t-value-1-{uuid.uuid4().hex[:8]}"  # API_TOKEN: hidden by Airflow's name rule
    listed = f"s3cr3t-value-2-{uuid.uuid4().hex[:8]}"  # LICENSE_ID: hidden because listed
    templated = f"s3cr3t-value-3-{uuid.uuid4().hex[:8]}"  # comes from a template
    dag_id = new_dag_id("secrets")
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command=[
                "sh",
                "-c",
                'sleep 1; echo "token=$API_TOKEN plain=$PLAIN lic=$LICENSE_ID tpl=$TPL_KEY"; '
                'echo "stderr lic=$LICENSE_ID" >&2',
            ],
            env={
                "API_TOKEN": by_name,
                "PLAIN": "visible",
                "LICENSE_ID": listed,
                "TPL_KEY": "{{ params.tpl }}",
            },
            secret_env=["LICENSE_ID", "TPL_KEY"],
            params={"tpl": templated},
            poll_interval=0.5,
            **WAYS[way],
        )
        + ")",
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    printed = captured(capfd)
    # The task log is what Airflow's masker makes of the operator's/trigger's records (Airflow 3:
    # the ``mask_logs`` structlog processor; Airflow 2.10: the SecretsMasker filter of the task
    # handler): both call ``redact`` on the message with the values registered by mask_secret.
    raw = our_log_messages(printed, caplog)
    assert any("plain=visible" in m for m in raw), raw  # the job's output reached the log
    task_log = "\n".join(_redact(m) for m in raw)
    assert "token=*** plain=visible lic=*** tpl=***" in task_log
    assert "stderr lic=***" in task_log
    # without a [core] fernet_key the secrets go into the trigger's kwargs as they are: said once
    from orchesjob_provider.utils.sealed import can_seal

    warned = [m for m in raw if m.startswith("No Fernet key ([core] fernet_key) is configured")]
    assert len(warned) == (0 if way == "worker" or can_seal() else 1), raw
    for secret in (by_name, listed, templated):
        assert secret not in task_log
        assert secret not in printed  # whatever Airflow printed to the console

    rendered = json.dumps(_rendered_fields(dag_id))
    assert "visible" in rendered  # the plain value is shown as it is
    for secret in (by_name, listed, templated):
        assert secret not in rendered


def test_secret_env_must_be_names():
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator

    for bad in ("DB_PASSWORD", [""], [1]):
        with pytest.raises(Exception, match="secret_env must be a list of env variable names"):
            OrchesjobOperator(task_id="t", ssh_conn_id="c", command=["true"], secret_env=bad)


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_short_common_and_multiline_secrets_never_show(deferrable, orch_conn, state_dir, capfd, caplog):
    """Issue 18: Airflow's masker leaves values under 5 characters and ``airflow`` alone and
    matches a multi-line value only whole; the job's output is masked line by line and the
    rendered fields hold ``***`` for every secret value whatever its length."""
    short = "q7Z"
    tag = uuid.uuid4().hex[:8]
    multi = f"-----BEGIN KEY-----\nmulti-line-one-{tag}\nmulti-line-two-{tag}\n-----END KEY-----"
    dag_id = new_dag_id("secrets2")
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command=["sh", "-c", 'echo "short=$SHORT common=$COMMON"; printf "%s\\n" "$MULTI"'],
            env={"SHORT": short, "COMMON": "airflow", "MULTI": multi, "PLAIN": "visible"},
            secret_env=["SHORT", "COMMON", "MULTI"],
            deferrable=deferrable,
            poll_interval=0.5,
        )
        + ")",
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    printed = captured(capfd)
    raw = our_log_messages(printed, caplog)
    task_log = "\n".join(_redact(m) for m in raw)
    assert "short=*** common=***" in task_log, task_log
    for line in (f"multi-line-one-{tag}", f"multi-line-two-{tag}"):
        assert line not in task_log and line not in printed
    assert f"short={short}" not in printed and "common=airflow" not in printed
    rendered = _rendered_fields(dag_id)
    env = rendered["env"]
    assert env["SHORT"] == env["COMMON"] == env["MULTI"] == "***", rendered
    assert env["PLAIN"] == "visible"
    assert f"multi-line-one-{tag}" not in json.dumps(rendered)

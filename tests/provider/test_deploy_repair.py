"""Deploys over the real loopback sshd: a damaged agent directory on the target is repaired by
the next call (sync and async hook), and a login shell that prints a banner on stdout does not
break the first deploy.

Each test uses a bundle of its own (a nonce in __main__.py gives it a new content address), so
it is surely not deployed yet and tests running in parallel keep using the real one undisturbed.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")


@pytest.fixture
def own_bundle(monkeypatch, remote):
    from orchesjob_provider import bundle as agent_bundle

    nonce = uuid.uuid4().hex
    monkeypatch.setattr(agent_bundle, "_MAIN", agent_bundle._MAIN + f"# test {nonce}\n".encode())
    bundle = agent_bundle.build_bundle()
    monkeypatch.setattr(agent_bundle, "_cached", bundle)
    where = f"~/.orchesjob/agent/{bundle.file_name}"
    assert remote(f"test -e {where} && echo deployed || echo absent").strip() == "absent"
    yield bundle, where
    remote(f"rm -rf {where}")


@pytest.mark.ssh
def test_a_truncated_file_on_the_target_is_redeployed_by_the_next_call(
    orch_conn, state_dir, remote, own_bundle
):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    _bundle, where = own_bundle
    OrchesjobHook(orch_conn, state_dir=state_dir).ping()
    victim = f"{where}/remote_agent/frontends/rpc.py"
    size = int(remote(f"stat -c %s {victim}"))
    remote(f": > {victim}")  # what a crash or a full disk during a deploy leaves

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    assert hook.ping()["ok"] is True
    assert hook.exec_count == 3  # exit 86 from the bootstrap, the deploy (repairs), the resend
    assert int(remote(f"stat -c %s {victim}")) == size

    # the async hook (triggerer) takes the same decision on the same damage
    remote(f"rm {where}/remote_agent/store/jobsql.py")  # a module every call loads
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook

    async def main() -> dict:
        return await AsyncOrchesjobHook(orch_conn, state_dir=state_dir).call("ping")

    assert asyncio.run(main())["ok"] is True
    assert remote(f"test -s {where}/remote_agent/store/jobsql.py && echo back").strip() == "back"


@pytest.mark.ssh
def test_a_login_shell_banner_on_stdout_does_not_break_the_first_deploy(
    orch_conn, state_dir, remote, own_bundle
):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    bundle, _where = own_bundle
    # Only commands naming this test's bundle see the banner: other tests on this sshd are spared.
    rc_line = (f'case "$BASH_EXECUTION_STRING" in *{bundle.file_name}*) '
               f'echo "Welcome to the target host (banner)";; esac  # orchesjob test banner')
    saved = remote("cat ~/.bashrc 2>/dev/null; echo END-OF-RC")
    existed = remote("test -e ~/.bashrc && echo yes || echo no").strip() == "yes"
    remote(f"printf '%s\\n' {_shell_quote(rc_line)} | cat - ~/.bashrc > ~/.bashrc.orchtest.$$ 2>/dev/null"
           f" || printf '%s\\n' {_shell_quote(rc_line)} > ~/.bashrc.orchtest.$$;"
           f" mv ~/.bashrc.orchtest.$$ ~/.bashrc")
    try:
        seen = remote(f"echo {bundle.file_name} >/dev/null; echo after")
        assert seen.startswith("Welcome to the target host (banner)"), (
            "the login shell does not print the banner for ssh commands: this test would prove nothing")
        hook = OrchesjobHook(orch_conn, state_dir=state_dir)
        assert hook.ping()["ok"] is True
        assert hook.exec_count == 3  # exit 86, deploy, resend: the banner hid nothing
    finally:
        if existed:
            body = saved[: saved.rindex("END-OF-RC")]
            remote(f"printf '%s' {_shell_quote(body)} > ~/.bashrc")
        else:
            remote("rm -f ~/.bashrc")
    assert "orchesjob test banner" not in remote("cat ~/.bashrc 2>/dev/null; true")


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.mark.ssh
def test_a_tilde_state_dir_is_the_ssh_users_home_on_the_target(orch_conn, remote):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    name = f"oj-state/tilde-{uuid.uuid4().hex[:12]}"
    hook = OrchesjobHook(orch_conn, state_dir=f"~/{name}")
    assert hook.ping()["home"] == remote("echo $HOME").strip() + "/" + name
    hook.start(["true"], f"test/tilde/{uuid.uuid4().hex}")
    assert remote(f"test -f ~/{name}/orchesjob.db && stat -c %a ~/{name}").strip() == "700"
    remote(f"rm -rf ~/{name}")

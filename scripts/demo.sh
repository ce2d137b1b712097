#!/usr/bin/env bash
# The demo (README's first command): `bash scripts/demo.sh`
#
#   0 prereqs the missing system packages it needs (openssh-server/-client, python3), once,
#             with apt-get (scripts/prereqs.sh, shared with scripts/test.sh)
#   1 venvs   scripts/setup_venvs.sh (only .venvs/af3 is needed: Airflow 3.3 + the project)
#   2 sshd    a loopback OpenSSH server + throwaway user `orchtest` (python3 -m testkit.sshd,
#             own state dir .tmp/demo-sshd; stopped again at the end if this script started it)
#   3 demo    scripts/demo_driver.py: a real Airflow 3 stack (SQLite + LocalExecutor: api-server,
#             scheduler, dag-processor, triggerer) in .tmp/demo-airflow runs
#             dags_examples/resume_demo.py; try 1 starts a ~20 s job over SSH and is killed with
#             kill -9 mid-job; try 2 reattaches to the same job; the side effect happens once.
#
# Knobs: DEMO_KILL=worker (kill the whole task tree: Airflow notices by heartbeat timeout; longer
#        job), DEMO_KEEP=1 (keep the Airflow home), ORCHESJOB_VENVS (default "af3" here).
# Takes ~2-4 minutes on a small machine (most of it is Airflow starting), plus the first venv build.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
AF3="$REPO/.venvs/af3/bin/python"
SSHD_STATE="$REPO/.tmp/demo-sshd"
AF_HOME="$REPO/.tmp/demo-airflow"
SSHD_STARTED=0
T0=$SECONDS

banner() { printf '\n==== %s  (t+%ds)\n' "$*" "$((SECONDS - T0))"; }

cleanup() {
    local rc=$?
    set +e
    # The driver stops Airflow itself; this catches an interrupted or killed driver.
    if [[ -f "$AF_HOME/stack.json" ]]; then
        "$AF3" -m testkit.airflow_stack stop --home "$AF_HOME" >/dev/null 2>&1
    fi
    if [[ $SSHD_STARTED == 1 ]]; then
        python3 -m testkit.sshd --state-dir "$SSHD_STATE" stop >/dev/null 2>&1
    fi
    printf '\n==== demo %s in %ds\n' "$([[ $rc == 0 ]] && echo finished || echo FAILED "(exit $rc)")" \
        "$((SECONDS - T0))"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

banner "0/3 system packages (scripts/prereqs.sh)"
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
prereqs_install openssh-server openssh-client python3

banner "1/3 virtualenv (.venvs/af3: Airflow 3.3 + this project, editable)"
ORCHESJOB_VENVS="${ORCHESJOB_VENVS:-af3}" bash scripts/setup_venvs.sh
if ! "$AF3" -c 'import orchesjob_provider, remote_agent' 2>/dev/null; then
    echo "installing the project into .venvs/af3 (editable)"
    uv pip install -q -p "$AF3" -e . --no-deps 2>/dev/null \
        || python3 -m uv pip install -q -p "$AF3" -e . --no-deps
fi
"$AF3" -c 'import airflow; print("Airflow", airflow.__version__)'

banner "2/3 SSH target (loopback sshd, user orchtest)"
mkdir -p "$REPO/.tmp"
if python3 -m testkit.sshd --state-dir "$SSHD_STATE" status >/dev/null 2>&1; then
    echo "reusing the sshd already running from ${SSHD_STATE#"$REPO"/}"
else
    python3 -m testkit.sshd --state-dir "$SSHD_STATE" start >/dev/null
    SSHD_STARTED=1
fi

banner "3/3 demo: kill a task mid-job, watch the retry reattach"
args=(--sshd-json "$SSHD_STATE/sshd.json" --home "$AF_HOME" --kill "${DEMO_KILL:-task}")
[[ "${DEMO_KEEP:-0}" == 1 ]] && args+=(--keep)
# PYTHONPATH: the driver imports the test kit (testkit/ at the repo root, not installed)
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$AF3" scripts/demo_driver.py "${args[@]}"

#!/usr/bin/env bash
# The project's test command (README: `bash scripts/test.sh`; CI: .ci/run; docs/development/testing.md).
#
#   0 prereqs  system packages (openssh-server/-client, nftables, iproute2, python3, sshfs,
#              redis-server, postgresql): the missing ones, once, with apt-get
#              (scripts/prereqs.sh); nothing later runs apt-get
#   1 venvs    scripts/setup_venvs.sh (.venvs/af3 = Airflow 3.3, .venvs/af2 = MWAA 2.10.3 pins,
#              .venvs/af32 = MWAA 3.2.1 pins)
#   2 lint     ruff, mypy (af3), vermin: remote_agent must run on CPython 3.6
#   2b docs    scripts/gen_cli_docs.py --check (docs/agent/cli-reference.md matches the parser),
#              mkdocs build --strict (every internal link, anchor and included example resolves)
#   3 sshd     loopback OpenSSH server + throwaway user (python -m testkit.sshd)
#   4 af3      pytest under .venvs/af3 (Airflow 3): tests/ except faults and e2e (so tests/unit
#              too); then tests/faults under .venvs/af3 and under .venvs/af2, on xdist workers
#              (the fault legs run before the lanes start: they wait out cuts and timeouts)
#   5 e2e lane IN THE BACKGROUND from here on (its output goes to its logs, printed when it is
#              joined at the end): tests/e2e without xdist (one real Airflow stack on a throwaway
#              PostgreSQL with two schedulers and two triggerers running every event case at
#              once, then the control-plane cases one phase each, tests/e2e/events_runner.py;
#              the stack stops its PostgreSQL at teardown), then the CeleryExecutor stack
#              (Redis + two Celery workers, tests/e2e/test_celery_executor.py). Both mostly wait
#              on Airflow's loops, so they run beside the legs below instead of after them.
#   6 agent    pytest tests/agent (the whole suite, on xdist workers) with AGENT_PYTHON = each
#              pyenv CPython 3.6..3.13 other than the af3 venv's own (the af3 leg covers that
#              one): in a second background lane, one interpreter after the other
#   7 af2      tests/unit + tests/provider under .venvs/af2 (MWAA 2.10.3 pins)
#   8 af32     tests/unit + tests/provider under .venvs/af32 (Airflow 3.2.1, MWAA 3.2.1 pins)
#   9 join     wait for both lanes; print their legs' output
#
# Load: a sampler appends /proc/loadavg to <logs>/loadavg.log every LOADAVG_INTERVAL s (default
# 5) with the current step and the lane legs then running; the recap prints min/median/max of
# the 1-minute load average per step and per lane leg. STRESS=1 starts STRESS_BURNERS CPU
# burners (default: one per core, busy loops) before the first pytest leg and keeps them for the
# whole run (the EXIT trap kills them): every leg, the agent lane's included, must pass with
# the cores saturated (docs/development/testing-under-load.md; one command: scripts/stress.sh).
#
# Under CI=true a skipped fault/e2e test is a failure (tests/conftest.py).
# Fails fast. The last lines printed are the pytest summary line of every leg that ran.
# Knobs: STRESS=1 (+ STRESS_BURNERS=N), LOADAVG_INTERVAL (s),
#        PYTEST_TIMEOUT (per test, default 300 s), PYTEST_ARGS (extra args for every leg),
#        PYTEST_WORKERS (xdist workers of the parallel legs, default 3; 0 = no xdist),
#        SKIP_LINT=1, SKIP_OLD_PYTHONS=1, KEEP_GOING=1 (run every pytest leg, fail at the end),
#        E2E_LANE=serial, AGENT_LANE=serial (run that lane's legs in the foreground instead).
set -euo pipefail
{ # The whole script is one block, read before it runs: editing this file mid-run is harmless.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
AF3="$REPO/.venvs/af3/bin/python"
AF2="$REPO/.venvs/af2/bin/python"
AF32="$REPO/.venvs/af32/bin/python"
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-300}"
# Most tests wait (on SSH, on jobs, on Airflow's polls) far more than they compute: 3 workers on
# 2 cores halve the wall time of those legs (measured; see docs/development/testing.md).
PYTEST_WORKERS="${PYTEST_WORKERS:-3}"
XDIST=(-n "$PYTEST_WORKERS")
read -r -a EXTRA_ARGS <<< "${PYTEST_ARGS:-}"
# Let Python cache bytecode (this image exports PYTHONDONTWRITEBYTECODE=1): otherwise every
# process recompiles what it imports, Airflow included, and every agent call its modules (uv
# installs without .pyc). Measured on the agent suite: 62 -> 49 CPU-s per interpreter.
unset PYTHONDONTWRITEBYTECODE

mkdir -p "$REPO/.tmp"
# old runs' scratch dirs (logs, AIRFLOW_HOMEs); recent ones may belong to a concurrent run
find "$REPO/.tmp" -maxdepth 1 -name 'run.*' -type d -mmin +120 -exec rm -rf {} + 2>/dev/null || true
RUN_TMP="$(mktemp -d "$REPO/.tmp/run.XXXXXX")"
LOGS="$RUN_TMP/logs"
mkdir -p "$LOGS"
# shellcheck source=scripts/stress_lib.sh
source "$REPO/scripts/stress_lib.sh"
echo start > "$LOGS/step.current"
loadavg_start "$LOGS/loadavg.log" "$LOGS/step.current" "${LOADAVG_INTERVAL:-5}"

T_START=$SECONDS
STEP_NAME=""
STEP_T0=0
RECAP=()        # "name  seconds  result"
SUMMARIES=()    # pytest summary line per leg
SSHD_STARTED=0
FAILED_LEGS=()  # only used with KEEP_GOING=1
STEP_RESULT=ok

step() {  # step <name> <description>
    end_step "$STEP_RESULT"; STEP_RESULT=ok
    STEP_NAME="$1"; STEP_T0=$SECONDS
    # for the load-average sampler (renamed into place: it never reads a half-written file)
    echo "$1" > "$LOGS/step.current.tmp" && mv -f "$LOGS/step.current.tmp" "$LOGS/step.current"
    printf '\n==== [%s] %s  (t+%ds)\n' "$1" "$2" "$((SECONDS - T_START))"
}
end_step() {
    if [[ -n "$STEP_NAME" ]]; then
        RECAP+=("$(printf '%-22s %5ds  %s' "$STEP_NAME" "$((SECONDS - STEP_T0))" "$1")")
        STEP_NAME=""
    fi
}

on_exit() {
    local rc=$?
    set +e
    [[ $rc == 0 ]] || STEP_RESULT=FAILED
    end_step "$STEP_RESULT"
    lane_abort
    stress_stop
    loadavg_stop
    if [[ $SSHD_STARTED == 1 ]]; then
        "$AF3" -m testkit.sshd stop >/dev/null 2>&1
    fi
    # Airflow test processes started by suites must not outlive the run; nothing else to clean.
    printf '\n==== recap (total %ds, logs in %s)\n' "$((SECONDS - T_START))" "${LOGS#"$REPO"/}"
    local line
    for line in "${RECAP[@]+"${RECAP[@]}"}"; do printf '  %s\n' "$line"; done
    [[ "${STRESS:-0}" == 1 ]] && printf '==== STRESS=1: %s CPU burner(s) ran beside every leg\n' \
        "${STRESS_BURNERS:-$(nproc)}"
    loadavg_recap "$LOGS/loadavg.log"
    if [[ ${#SUMMARIES[@]} -gt 0 ]]; then
        printf '==== pytest summaries\n'
        for line in "${SUMMARIES[@]}"; do printf '%s\n' "$line"; done
        # one line over every leg, in the plain 'N passed, N failed' form
        printf '%s\n' "${SUMMARIES[@]}" | awk '
            { for (i = 2; i <= NF; i++) {
                  w = $i; gsub(/[^a-z]/, "", w)
                  if (w == "passed") p += $(i-1); else if (w == "failed") f += $(i-1)
                  else if (w == "skipped") s += $(i-1); else if (w == "error" || w == "errors") f += $(i-1) } }
            END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }'
    fi
    [[ $rc == 0 ]] && echo "test.sh: OK" || echo "test.sh: FAILED (exit $rc)"
    exit $rc
}
trap on_exit EXIT

# run_pytest <leg-name> <python> <allow-empty:0|1> <pytest args...>   (foreground, output live)
# Exit code 5 (no tests collected / all deselected) passes only when allow-empty=1.
run_pytest() {
    local leg="$1" py="$2" allow_empty="$3"; shift 3
    local log="$LOGS/$leg.log" rc
    echo "+ ${py#"$REPO"/} -m pytest $*"
    set +e
    "$py" -m pytest -p no:cacheprovider -ra --durations=10 --timeout="$PYTEST_TIMEOUT" \
        "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    finish_leg "$leg" "$allow_empty" "$rc"
}

# finish_leg <leg-name> <allow-empty> <rc>: record the summary line; fail (or note) on error.
finish_leg() {
    local leg="$1" allow_empty="$2" rc="$3" summary
    summary="$(grep -E '^=+ .*( in [0-9.]+s| in [0-9:]+ ).*=+$' "$LOGS/$leg.log" | tail -n 1 || true)"
    if [[ $rc == 5 && $allow_empty == 1 ]]; then
        echo "($leg: no tests collected/selected - not a failure for this leg)"
        SUMMARIES+=("$(printf '%-16s %s' "[$leg]" "${summary:-no tests} (no tests: ok)")")
        return 0
    fi
    SUMMARIES+=("$(printf '%-16s %s' "[$leg]" "${summary:-pytest exit $rc, no summary line}")")
    if [[ $rc != 0 ]]; then
        echo "$leg: pytest exited with $rc" >&2
        if [[ "${KEEP_GOING:-0}" == 1 ]]; then FAILED_LEGS+=("$leg"); STEP_RESULT=FAILED; return 0; fi
        return "$rc"
    fi
}

# ---- the background lane: legs that run one after the other beside the foreground legs
# Each leg's output goes to its log only; lane_join prints it (in full when the leg failed).
LANE_PIDS=()    # one per background lane
LANE_LEGS=()    # "leg allow-empty" per leg of every lane, in order
# lane_leg <leg> <python> <pytest args...>   (inside the lane's subshell)
lane_leg() {
    local leg="$1" py="$2" t0=$SECONDS rc; shift 2
    "$py" -m pytest -p no:cacheprovider -ra --durations=10 --timeout="$PYTEST_TIMEOUT" \
        "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}" "$@" > "$LOGS/$leg.log" 2>&1 &
    echo $! > "$LOGS/$leg.pid"
    wait $! && rc=0 || rc=$?
    echo "$rc" > "$LOGS/$leg.rc"
    echo "$((SECONDS - t0))" > "$LOGS/$leg.secs"
}
# lane_join: wait for the lanes; print and record each of their legs like a foreground leg.
lane_join() {
    [[ ${#LANE_PIDS[@]} -gt 0 ]] || return 0
    step lane-join "wait for the background lanes (${LANE_LEGS[*]%% *})"
    local pid
    for pid in "${LANE_PIDS[@]}"; do wait "$pid" || true; done
    LANE_PIDS=()
    local entry leg allow rc secs
    for entry in "${LANE_LEGS[@]}"; do
        leg="${entry%% *}"; allow="${entry##* }"
        rc="$(cat "$LOGS/$leg.rc" 2>/dev/null || echo 1)"
        secs="$(cat "$LOGS/$leg.secs" 2>/dev/null || echo 0)"
        printf '\n==== [%s] (background lane) %ss, exit %s: %s\n' "$leg" "$secs" "$rc" \
            "$([[ $rc == 0 ]] && echo "last lines" || echo "full output")"
        if [[ $rc == 0 ]]; then tail -n 15 "$LOGS/$leg.log"; else cat "$LOGS/$leg.log"; fi
        RECAP+=("$(printf '%-22s %5ds  %s' "  $leg (bg)" "$secs" "$([[ $rc == 0 ]] && echo ok || echo FAILED)")")
        finish_leg "$leg" "$allow" "$rc"
    done
}
# on an early exit: interrupt the lane's pytest (SIGINT: its fixtures stop their stacks and sshds)
lane_abort() {
    [[ ${#LANE_PIDS[@]} -gt 0 ]] || return 0
    local entry pid pids=() i alive
    for pid in "${LANE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true   # the lane starts no further leg
        wait "$pid" 2>/dev/null || true
    done
    for entry in "${LANE_LEGS[@]}"; do
        pid="$(cat "$LOGS/${entry%% *}.pid" 2>/dev/null || true)"
        if [[ -n "$pid" ]] && kill -INT "$pid" 2>/dev/null; then pids+=("$pid"); fi
    done
    for ((i = 0; i < 60; i++)); do   # up to 60 s for their teardown
        alive=0
        for pid in "${pids[@]+"${pids[@]}"}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 1
    done
    LANE_PIDS=()
}

# --------------------------------------------------------------------------- 0 prereqs
step prereqs "system packages (scripts/prereqs.sh): openssh-server, nftables, iproute2, ..."
# shellcheck source=scripts/prereqs.sh
source scripts/prereqs.sh
prereqs_install

# --------------------------------------------------------------------------- 1 venvs
step venvs "scripts/setup_venvs.sh"
bash scripts/setup_venvs.sh

# --------------------------------------------------------------------------- 2 lint
if [[ "${SKIP_LINT:-0}" != 1 ]]; then
    step ruff "ruff check ."
    .venvs/af3/bin/ruff check .
    step mypy "mypy remote_agent orchesjob_provider"
    .venvs/af3/bin/mypy remote_agent orchesjob_provider
    step vermin "vermin: remote_agent and orchesjob_provider/remote must need no more than CPython 3.6"
    # -t=3.6- : every file must work on 3.6 (or older); --violations makes vermin exit 1 on any
    # construct/module/function that needs a newer Python.
    .venvs/af3/bin/vermin -t=3.6- --no-tips --violations --eval-annotations remote_agent orchesjob_provider/remote
fi

# --------------------------------------------------------------------------- 2b docs
# The docs site (mkdocs.yml, docs/): the CLI reference must match the parser, then a strict
# build in which every internal link and anchor must resolve and every included example exist.
step docs "docs: scripts/gen_cli_docs.py --check, mkdocs build --strict"
"$AF3" scripts/gen_cli_docs.py --check
.venvs/af3/bin/mkdocs build --strict --quiet --site-dir "$RUN_TMP/site"

step package "scripts/check_package.sh: build, twine check, the wheel under the MWAA 2.10.3 and 3.3.1 pins"; bash scripts/check_package.sh

# --------------------------------------------------------------------------- 3 sshd
step sshd "loopback sshd (python -m testkit.sshd)"
# A state dir of this run's own (so a concurrent run or a manual start/stop elsewhere cannot
# stop it under us); ORCHESJOB_SSHD_STATE set by the caller wins (e.g. to reuse a server).
export ORCHESJOB_SSHD_STATE="${ORCHESJOB_SSHD_STATE:-$RUN_TMP/sshd}"
if "$AF3" -m testkit.sshd status >/dev/null 2>&1; then
    echo "reusing the sshd already running from $ORCHESJOB_SSHD_STATE"
else
    "$AF3" -m testkit.sshd start >/dev/null
    SSHD_STARTED=1
fi
eval "$("$AF3" -m testkit.sshd env)"
echo "sshd: $ORCHESJOB_SSH_USER@$ORCHESJOB_SSH_HOST:$ORCHESJOB_SSH_PORT" \
     "(host key $ORCHESJOB_SSH_HOST_KEY_FINGERPRINT, target python $ORCHESJOB_SSH_TARGET_PYTHON)"

# Every leg gets its own fresh AIRFLOW_HOME (never ~/airflow); suites may override it.
export AIRFLOW__CORE__LOAD_EXAMPLES=False

if [[ "${STRESS:-0}" == 1 ]]; then
    step stress "STRESS=1: CPU burners on every core for the rest of the run"
    stress_start "${STRESS_BURNERS:-$(nproc)}"
fi

# --------------------------------------------------------------------------- 4 af3
step pytest-af3 "pytest tests/ except faults, e2e under .venvs/af3 (Airflow 3), ${PYTEST_WORKERS} workers"
export AIRFLOW_HOME="$RUN_TMP/airflow-af3"
run_pytest af3 "$AF3" 0 "${XDIST[@]}" --ignore=tests/faults --ignore=tests/e2e tests
# Fault tests mostly wait out cuts and timeouts (each has its own namespace host); on their own
# pool they share the machine only with each other. They assert no time (issue 15: the loop
# check is an audit of blocking calls on the loop's thread), so they also pass under STRESS=1.
# Both Airflow generations' fault legs run here, before the background lanes start.
step pytest-af3-faults "pytest tests/faults under .venvs/af3, ${PYTEST_WORKERS} workers"
run_pytest af3-faults "$AF3" 0 "${XDIST[@]}" tests/faults
step pytest-af2-faults "pytest tests/faults under .venvs/af2, ${PYTEST_WORKERS} workers"
export AIRFLOW_HOME="$RUN_TMP/airflow-af2-faults"
run_pytest af2-faults "$AF2" 0 "${XDIST[@]}" tests/faults

# --------------------------------------------------------------------------- 5 the lanes
# Which CPythons the agent suite runs under (pytest itself runs under the af3 venv; every agent
# process the tests start runs under the leg's python).
AGENT_PYS=()    # "version path" per interpreter
step agent-pythons "find the older CPythons for tests/agent"
if [[ "${SKIP_OLD_PYTHONS:-0}" == 1 ]]; then
    echo "skip: SKIP_OLD_PYTHONS=1"
elif ! command -v pyenv >/dev/null 2>&1 && [[ ! -d "${PYENV_ROOT:-$HOME/.pyenv}/versions" ]]; then
    echo "skip: no pyenv"
else
    PYROOT="$( (pyenv root 2>/dev/null) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    AF3_BASE_VER="$("$AF3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    for minor in 6 7 8 9 10 11 12 13; do   # newest patch release of each minor, oldest first
        py="$(ls -d "$PYROOT"/versions/3."$minor".*/bin/python3 2>/dev/null \
              | grep -E "/versions/3\.$minor\.[0-9]+/bin/python3$" | sort -V | tail -n 1 || true)"
        if [[ -z "$py" ]]; then echo "skip: no 3.$minor in $PYROOT/versions"; continue; fi
        if [[ "3.$minor" == "$AF3_BASE_VER" ]]; then
            echo "skip: 3.$minor (already covered: the af3 leg runs the agent under it)"; continue
        fi
        AGENT_PYS+=("$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') $py")
    done
    if [[ ${#AGENT_PYS[@]} == 0 ]]; then echo "skip: no pyenv CPython 3.6..3.13 found"; fi
    echo "agent suite under: ${AGENT_PYS[*]%% *}"
fi
# agent_leg <lane|fg> "<version> <path>"
agent_leg() {
    local how="$1" ver="${2%% *}" py="${2#* }"
    if [[ $how == lane ]]; then
        AGENT_PYTHON="$py" AIRFLOW_HOME="$RUN_TMP/airflow-agent-$ver" \
            lane_leg "agent-$ver" "$AF3" "${XDIST[@]}" tests/agent
    else
        AGENT_PYTHON="$py" AIRFLOW_HOME="$RUN_TMP/airflow-agent-$ver" \
            run_pytest "agent-$ver" "$AF3" 0 "${XDIST[@]}" tests/agent
    fi
}

# The real-stack legs time what they observe (heartbeat timeouts, trigger polls) but mostly wait:
# measured beside the legs below they pass with the same margins (docs/development/testing.md).
# The agent suite keeps the cores ~57 % busy (57 CPU-s in 50 s) and the provider legs mostly
# wait (af2: 63 CPU-s in 131 s), so from here on three streams share the machine: the
# foreground (af2, af32), the e2e lane and the agent lane. Never two agent legs at once: with
# the last two legs moved into the e2e lane (two agent suites side by side) three tests failed
# on timing in one run (864 s); with one agent lane the run took 881 s.
E2E_ARGS=(tests/e2e --ignore=tests/e2e/test_celery_executor.py)
CELERY_ARGS=(tests/e2e/test_celery_executor.py)
SERIAL_AGENT=()
if [[ "${AGENT_LANE:-background}" == serial ]]; then
    SERIAL_AGENT=("${AGENT_PYS[@]+"${AGENT_PYS[@]}"}"); AGENT_PYS=()
fi
LANE_AGENT=("${AGENT_PYS[@]+"${AGENT_PYS[@]}"}")
if [[ "${E2E_LANE:-background}" == serial ]]; then
    step pytest-af3-e2e "pytest tests/e2e under .venvs/af3: one stack, every case at once"
    export AIRFLOW_HOME="$RUN_TMP/airflow-e2e"
    run_pytest af3-e2e "$AF3" 0 "${E2E_ARGS[@]}"
    step pytest-af3-celery "pytest tests/e2e/test_celery_executor.py: CeleryExecutor, Redis, two workers"
    run_pytest af3-celery "$AF3" 0 "${CELERY_ARGS[@]}"
else
    step e2e-lane "start in the background: tests/e2e (events stack), then the CeleryExecutor stack"
    LANE_LEGS+=("af3-e2e 0" "af3-celery 0")
    (
        export AIRFLOW_HOME="$RUN_TMP/airflow-e2e"
        lane_leg af3-e2e "$AF3" "${E2E_ARGS[@]}"
        lane_leg af3-celery "$AF3" "${CELERY_ARGS[@]}"
    ) &
    LANE_PIDS+=($!)
    echo "e2e lane pid $!; logs: ${LOGS#"$REPO"/}/af3-e2e.log, af3-celery.log"
fi
if [[ ${#LANE_AGENT[@]} -gt 0 ]]; then
    step agent-lane "start in the background: tests/agent under ${LANE_AGENT[*]%% *}"
    for entry in "${LANE_AGENT[@]}"; do LANE_LEGS+=("agent-${entry%% *} 0"); done
    (
        for entry in "${LANE_AGENT[@]}"; do agent_leg lane "$entry"; done
    ) &
    LANE_PIDS+=($!)
    echo "agent lane pid $!; logs: ${LOGS#"$REPO"/}/agent-*.log"
fi

# --------------------------------------------------------------------------- 7 af2
step pytest-af2 "pytest tests/unit tests/provider under .venvs/af2 (MWAA 2.10.3 pins), ${PYTEST_WORKERS} workers"
export AIRFLOW_HOME="$RUN_TMP/airflow-af2"
run_pytest af2 "$AF2" 0 "${XDIST[@]}" tests/unit tests/provider

# --------------------------------------------------------------------------- 8 af32
step pytest-af32 "pytest tests/unit tests/provider under .venvs/af32 (Airflow 3.2.1, MWAA 3.2.1 pins), ${PYTEST_WORKERS} workers"
export AIRFLOW_HOME="$RUN_TMP/airflow-af32"
run_pytest af32 "$AF32" 0 "${XDIST[@]}" tests/unit tests/provider
if [[ ${#SERIAL_AGENT[@]} -gt 0 ]]; then
    step agent-pythons "tests/agent with AGENT_PYTHON = each older CPython (AGENT_LANE=serial)"
    for entry in "${SERIAL_AGENT[@]}"; do agent_leg fg "$entry"; done
fi

# --------------------------------------------------------------------------- 9 join
lane_join
end_step "$STEP_RESULT"   # before a KEEP_GOING failure exit, so the recap blames the right step
if [[ ${#FAILED_LEGS[@]} -gt 0 ]]; then
    echo "failed legs (KEEP_GOING=1): ${FAILED_LEGS[*]}" >&2
    exit 1
fi
exit 0
}

#!/usr/bin/env bash
# Create / refresh the two test virtualenvs with uv. Idempotent: a stamp file per venv records
# a hash of everything that decides its contents (this script's dependency lists, pyproject.toml,
# the base interpreter, uv's version); when the stamp matches, the venv is left alone (~0.1 s).
#
#   .venvs/af3  latest apache-airflow 3.3.x + latest SSH provider + dev tools (mkdocs too) + project (-e)
#   .venvs/af2  the MWAA 2.10.3 pin set (docs/installation.md "What Amazon MWAA pins") + pytest + project (-e, --no-deps)
#   .venvs/af32 the MWAA 3.2.1 pin set (Airflow 3.2.1) + pytest + project (-e, --no-deps)
#
# Env knobs: VENV_ROOT (default <repo>/.venvs), ORCHESJOB_BASE_PYTHON (base interpreter),
# ORCHESJOB_VENVS="af3 af2" (which venvs to build), FORCE_VENVS=1 (ignore stamps).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ROOT="${VENV_ROOT:-$REPO/.venvs}"
VENVS="${ORCHESJOB_VENVS:-af3 af2 af32}"

# ---- dependency lists (part of the stamp) -------------------------------------------------
AF3_DEPS=(
    "apache-airflow==3.3.*"
    "apache-airflow-providers-ssh"
    "asyncssh"
    # the CeleryExecutor end-to-end test (tests/e2e/test_celery_executor.py): the executor MWAA
    # runs; its redis client comes with the provider (celery[redis])
    "apache-airflow-providers-celery"
    # the e2e events stack's metadata DB is PostgreSQL (testkit/postgres.py): Airflow's postgres
    # extra (the postgres provider: psycopg2-binary for the sync engine, asyncpg for the
    # api-server's async one); the stack's own read queries use psycopg2 too
    "apache-airflow[postgres]==3.3.*"
    "pytest" "pytest-timeout" "pytest-xdist"
    "ruff" "mypy" "vermin"
    # the docs step of scripts/test.sh: `mkdocs build --strict` (built-in theme, no network)
    "mkdocs>=1.6,<2" "pymdown-extensions"
)
# MWAA 2.10.3 image pins. Without Airflow's constraint file (not reachable here) the resolver
# picks the newest transitive deps; AF2_EXTRA_PINS holds the ones that must be held back.
AF2_DEPS=(
    "apache-airflow==2.10.3"
    "apache-airflow-providers-ssh==3.14.0"
    "paramiko==3.5.0"
    "asyncssh==2.18.0"
    "sshtunnel==0.4.0"
    "pytest" "pytest-timeout" "pytest-xdist"
)
AF2_EXTRA_PINS=(
    # cryptography 51 made MultiFernet a Rust class whose attributes cannot be set, and Airflow
    # 2.10.3's get_fernet() sets `is_encrypted` on it: with a [core] fernet_key every Fernet use
    # (connections, trigger kwargs) raises AttributeError. Airflow's 2.10.3 constraints (what
    # MWAA installs under) pin an older one; 50.0.2 is what this leg ran with until 2026-12-06.
    "cryptography<51"
)
# MWAA 3.2.1 image pins (the leg that proves Airflow 3.0-3.2: dag.test() of tests/provider).
AF32_DEPS=(
    "apache-airflow==3.2.1"
    "apache-airflow-providers-ssh==5.0.0"
    "apache-airflow-providers-common-compat==1.14.3"
    "paramiko==3.5.1"
    "asyncssh==2.22.0"
    "pytest" "pytest-timeout" "pytest-xdist"
    # Without MWAA's constraint file the resolver takes the newest FastAPI (and with it cadwyn 9):
    # Airflow 3.2.1's in-process execution API then fails to build its schema ("Model
    # 'TITerminalStatePayload' needs a discriminator field") and every dag.test() fails.
    # Airflow 3.3 itself caps fastapi <0.137; MWAA's 3.2.1 image has an older one still.
    "fastapi<0.137"
)

log() { printf '[setup_venvs] %s\n' "$*" >&2; }

# ---- uv ------------------------------------------------------------------------------------
find_uv() {
    if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
        UV=(uv); return 0
    fi
    if python3 -m uv --version >/dev/null 2>&1; then
        UV=(python3 -m uv); return 0
    fi
    return 1
}
if ! find_uv; then
    log "uv not found: python3 -m pip install uv"
    python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
    hash -r
    find_uv || { log "ERROR: uv still not usable after pip install"; exit 1; }
fi

# ---- base interpreter ----------------------------------------------------------------------
find_base_python() {
    if [[ -n "${ORCHESJOB_BASE_PYTHON:-}" ]]; then echo "$ORCHESJOB_BASE_PYTHON"; return 0; fi
    local root="" cand
    if command -v pyenv >/dev/null 2>&1; then root="$(pyenv root 2>/dev/null || true)"; fi
    root="${root:-${PYENV_ROOT:-$HOME/.pyenv}}"
    for minor in 3.12 3.11; do
        # newest patch release first
        cand="$(ls -d "$root"/versions/"$minor".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)"
        if [[ -n "$cand" && -x "$cand" ]]; then echo "$cand"; return 0; fi
    done
    for name in python3.12 python3.11; do
        cand="$(command -v "$name" 2>/dev/null || true)"
        # skip pyenv shims that point at a version which is not installed
        if [[ -n "$cand" ]] && "$cand" -c 'import sys' >/dev/null 2>&1; then echo "$cand"; return 0; fi
    done
    return 1
}
BASE_PY="$(find_base_python)" || { log "ERROR: no CPython 3.12/3.11 found (pyenv or PATH)"; exit 1; }
BASE_VER="$("$BASE_PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

stamp_of() {  # $1 = venv name
    local name="$1"
    {
        echo "name=$name base=$BASE_PY ver=$BASE_VER uv=$("${UV[@]}" --version)"
        case "$name" in
            af3) printf '%s\n' "${AF3_DEPS[@]}" ;;
            af2) printf '%s\n' "${AF2_DEPS[@]}" "${AF2_EXTRA_PINS[@]+"${AF2_EXTRA_PINS[@]}"}" ;;
            af32) printf '%s\n' "${AF32_DEPS[@]}" ;;
        esac
        cat "$REPO/pyproject.toml"
    } | sha256sum | cut -d' ' -f1
}

build_venv() {  # $1 = venv name
    local name="$1" dir="$VENV_ROOT/$1" want have t0
    want="$(stamp_of "$name")"
    have="$(cat "$dir/.orchesjob-stamp" 2>/dev/null || true)"
    if [[ "${FORCE_VENVS:-0}" != 1 && "$want" == "$have" && -x "$dir/bin/python" ]]; then
        log "$name: up to date ($dir)"
        return 0
    fi
    t0=$SECONDS
    log "$name: building in $dir (base $BASE_PY, $BASE_VER)"
    if [[ ! -x "$dir/bin/python" ]] || ! "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
        "${UV[@]}" venv --quiet --allow-existing --python "$BASE_PY" "$dir"
    fi
    rm -f "$dir/.orchesjob-stamp"
    case "$name" in
        af3) "${UV[@]}" pip install --quiet --python "$dir/bin/python" "${AF3_DEPS[@]}" ;;
        af2) "${UV[@]}" pip install --quiet --python "$dir/bin/python" \
                 "${AF2_DEPS[@]}" "${AF2_EXTRA_PINS[@]+"${AF2_EXTRA_PINS[@]}"}" ;;
        af32) "${UV[@]}" pip install --quiet --python "$dir/bin/python" "${AF32_DEPS[@]}" ;;
        *) log "unknown venv $name"; return 1 ;;
    esac
    # Import smoke test of the third-party stack, before the project is installed (the
    # project's provider entry point is loaded by Airflow on import and is not ours to test
    # here). Throwaway AIRFLOW_HOME so nothing lands in ~/airflow.
    # Skipped when the project is already installed in the venv (a rebuild).
    local ah; ah="$(mktemp -d)"
    if "${UV[@]}" pip show --quiet --python "$dir/bin/python" airflow-provider-orchesjob >/dev/null 2>&1; then
        log "$name: import smoke test skipped (project already installed)"
    elif ! (cd "$ah" && AIRFLOW_HOME="$ah" "$dir/bin/python" -W ignore -c \
            'import airflow, airflow.providers.ssh.hooks.ssh, paramiko, asyncssh' >/dev/null 2>"$ah/err"); then
        cat "$ah/err" >&2; rm -rf "$ah"; log "ERROR: $name: import smoke test failed"; return 1
    fi
    rm -rf "$ah"
    # The project itself, editable. af2: --no-deps, the pins above are what MWAA has and the
    # project must never pull newer ones (af32 likewise); `pip check` below proves its ranges admit them.
    case "$name" in
        af3) "${UV[@]}" pip install --quiet --python "$dir/bin/python" -e "$REPO" ;;
        af2|af32) "${UV[@]}" pip install --quiet --python "$dir/bin/python" --no-deps -e "$REPO" ;;
    esac
    if ! "${UV[@]}" pip check --quiet --python "$dir/bin/python" >/dev/null 2>&1; then
        "${UV[@]}" pip check --python "$dir/bin/python" >&2 || true
        log "ERROR: $name: pip check failed (do pyproject's ranges admit the pins?)"; return 1
    fi
    echo "$want" > "$dir/.orchesjob-stamp"
    log "$name: done in $((SECONDS - t0)) s"
}

mkdir -p "$VENV_ROOT"
for v in $VENVS; do build_venv "$v"; done

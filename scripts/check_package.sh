#!/usr/bin/env bash
# Ready to publish? Build the sdist and the wheel, check them, and install the WHEEL (not the
# checkout) into fresh venvs with the MWAA pin sets, then import every class there.
#
#   1 build    `uv build` (the PEP 517 build `python -m build` does; sdist first, wheel from it)
#   2 twine    `twine check --strict` on both (uvx: twine is never installed in the project venvs)
#   3 content  scripts/check_wheel.py: only remote_agent/ and orchesjob_provider/ in the wheel,
#              version = remote_agent.__version__, the provider entry point
#   3b agent   scripts/build_agent_dist.sh: orchesjob-agent (the agent alone), twine, its content,
#              installed with CPython 3.6's own pip (no index) and run: start --sync, status
#   4 install  per pin set (MWAA 2.10.3 and 3.3.1, docs/installation.md): a fresh venv, the wheel
#              and the pins in ONE resolve (so the wheel's ranges must admit the pins), then
#              scripts/package_smoke.py under `python -I` from a scratch dir (no Airflow DB)
#
# Fast because uv's cache is warm (setup_venvs.sh fills it with the same wheels): ~30-60 s here.
# Env: ORCHESJOB_BASE_PYTHON (interpreter for the venvs), PKG_PINSETS="2.10.3 3.3.1",
# KEEP_PKG_DIR=1 (keep the scratch dir and print it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINSETS="${PKG_PINSETS:-2.10.3 3.3.1}"

log() { printf '[check_package] %s\n' "$*" >&2; }
if command -v uv >/dev/null 2>&1; then UV=(uv); UVX=(uv tool run); else UV=(python3 -m uv); UVX=(python3 -m uv tool run); fi

pins_for() {  # the MWAA constraint pins that matter to us (docs/installation.md "What Amazon MWAA pins")
    case "$1" in
        2.10.3) echo "apache-airflow==2.10.3 apache-airflow-providers-ssh==3.14.0 paramiko==3.5.0 asyncssh==2.18.0 sshtunnel==0.4.0" ;;
        3.3.1) echo "apache-airflow==3.3.1 apache-airflow-providers-ssh==6.0.1 paramiko==5.0.0 asyncssh==2.24.0" ;;
        *) log "unknown pin set $1"; return 1 ;;
    esac
}

base_python() {  # the interpreter setup_venvs.sh uses (CPython 3.12, else 3.11); never a download
    if [[ -n "${ORCHESJOB_BASE_PYTHON:-}" ]]; then echo "$ORCHESJOB_BASE_PYTHON"; return; fi
    local root cand minor
    root="$( (pyenv root 2>/dev/null) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for minor in 3.12 3.11; do
        cand="$(ls -d "$root"/versions/"$minor".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)"
        if [[ -n "$cand" && -x "$cand" ]]; then echo "$cand"; return; fi
        cand="$(command -v "python$minor" 2>/dev/null || true)"
        if [[ -n "$cand" ]] && "$cand" -c 'import sys' 2>/dev/null; then echo "$cand"; return; fi
    done
    log "ERROR: no CPython 3.12/3.11 found"; return 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/orchesjob-pkg.XXXXXX")"
# Removing two Airflow venvs takes ~10 s of disk work: done in the background, off the clock.
if [[ "${KEEP_PKG_DIR:-0}" == 1 ]]; then log "scratch dir: $WORK"; else trap '(rm -rf "$WORK" &)' EXIT; fi
T0=$SECONDS
BASE_PY="$(base_python)"
VERSION="$("$BASE_PY" -I -c 'import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))' \
    "$REPO/remote_agent/__init__.py")"

log "build $VERSION"
"${UV[@]}" build --quiet --python "$BASE_PY" --out-dir "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/*.whl)"
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
log "twine check"
"${UVX[@]}" --quiet --python "$BASE_PY" twine check --strict "$WHEEL" "$SDIST"
"$BASE_PY" -I "$REPO/scripts/check_wheel.py" "$WHEEL" --version "$VERSION"
if tar tzf "$SDIST" | grep -qE '^[^/]+/(tests|testkit|scripts|benchmarks|docs)/'; then
    log "ERROR: the sdist holds tests, tooling or the docs site:"
    tar tzf "$SDIST" | grep -E '^[^/]+/(tests|testkit|scripts|benchmarks|docs)/' | head >&2
    exit 1
fi

# The agent alone (orchesjob-agent, packaging/orchesjob-agent): built from the same sources,
# installed with the OLDEST CPython we support (3.6, its own pip, no index), then run for real.
log "agent-only distribution (orchesjob-agent)"
bash "$REPO/scripts/build_agent_dist.sh" "$WORK/agent-dist" >/dev/null
AGENT_WHEEL="$(ls "$WORK"/agent-dist/orchesjob_agent-*.whl)"
AGENT_SDIST="$(ls "$WORK"/agent-dist/orchesjob_agent-*.tar.gz)"
"${UVX[@]}" --quiet --python "$BASE_PY" twine check --strict "$AGENT_WHEEL" "$AGENT_SDIST"
"$BASE_PY" -I "$REPO/scripts/check_wheel.py" "$AGENT_WHEEL" --version "$VERSION" --agent-only
OLDEST_PY="$(ls -d "$( (pyenv root 2>/dev/null) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"/versions/3.6.*/bin/python3 \
    2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$OLDEST_PY" ]]; then
    [[ "${CI:-}" == true ]] && { log "ERROR: no CPython 3.6 for the agent-only install (CI=true)"; exit 1; }
    OLDEST_PY="$BASE_PY"; log "no CPython 3.6 here: the agent-only install runs under $OLDEST_PY"
fi
"$OLDEST_PY" -m venv "$WORK/venv-agent"
"$WORK/venv-agent/bin/python" -m pip install --quiet --no-index "$AGENT_WHEEL"
got="$("$WORK/venv-agent/bin/orchesjob" --version)"
[[ "$got" == "orchesjob $VERSION" ]] || { log "ERROR: orchesjob --version said '$got'"; exit 1; }
ahome="$WORK/agent-home"
ORCHESJOB_HOME="$ahome" "$WORK/venv-agent/bin/orchesjob" start --run-key smoke --sync -- /bin/sh -c 'echo ran' >/dev/null
ORCHESJOB_HOME="$ahome" "$WORK/venv-agent/bin/orchesjob" status --run-key smoke | grep -q '"status": "SUCCEEDED"' \
    || { log "ERROR: the agent-only install did not run its smoke job"; exit 1; }
log "orchesjob-agent: $(basename "$AGENT_WHEEL") installs and runs under $("$OLDEST_PY" -c 'import platform; print(platform.python_version())')"

install_and_smoke() {  # <pinset>: a fresh venv, the wheel + the pins in one resolve, the smoke test
    local pinset="$1" t=$SECONDS venv="$WORK/venv-$1" home="$WORK/airflow-home-$1"
    local -a pins
    read -r -a pins <<< "$(pins_for "$pinset")"
    "${UV[@]}" venv --quiet --python "$BASE_PY" "$venv"
    "${UV[@]}" pip install --quiet --python "$venv/bin/python" "$WHEEL" "${pins[@]}"
    mkdir -p "$home"
    # -I: no PYTHONPATH, no cwd on sys.path; run from the scratch dir: only the wheel is importable
    (cd "$WORK" && AIRFLOW_HOME="$home" AIRFLOW__CORE__LOAD_EXAMPLES=False \
        "$venv/bin/python" -I -W ignore "$REPO/scripts/package_smoke.py")
    log "MWAA $pinset pins: ok in $((SECONDS - t)) s"
}
# The pin sets in parallel (mostly file copies from uv's cache and imports): ~20 s saved.
pids=()
for pinset in $PINSETS; do
    install_and_smoke "$pinset" > "$WORK/pinset-$pinset.log" 2>&1 &
    pids+=("$!")
done
failed=0
i=0
for pinset in $PINSETS; do
    if ! wait "${pids[$i]}"; then failed=1; log "ERROR: MWAA $pinset pins:"; fi
    cat "$WORK/pinset-$pinset.log" >&2
    i=$((i + 1))
done
[[ $failed == 0 ]] || exit 1
log "ok: $(basename "$WHEEL"), $(basename "$SDIST"), $(basename "$AGENT_WHEEL") in $((SECONDS - T0)) s"

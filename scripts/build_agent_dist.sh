#!/usr/bin/env bash
# Build `orchesjob-agent`, the agent alone (packaging/orchesjob-agent/pyproject.toml): stage
# remote_agent/ with that pyproject, its README and the LICENSE in a scratch dir (setuptools
# builds only what is under its project directory), then `uv build` there.
#
#   bash scripts/build_agent_dist.sh OUT_DIR     # writes orchesjob_agent-<version>-py3-none-any.whl
#                                                # and orchesjob_agent-<version>.tar.gz into OUT_DIR
# Env: ORCHESJOB_BASE_PYTHON (the interpreter uv builds with; default: the one on PATH).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: build_agent_dist.sh OUT_DIR}"
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/orchesjob-agent-dist.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp "$REPO/packaging/orchesjob-agent/pyproject.toml" "$REPO/packaging/orchesjob-agent/README.md" \
   "$REPO/LICENSE" "$STAGE/"
# the sources only: no bytecode of this checkout's interpreters
(cd "$REPO" && find remote_agent -name '*.py' -print0 | xargs -0 cp --parents -t "$STAGE")
mkdir -p "$OUT"
"${UV[@]}" build --quiet ${ORCHESJOB_BASE_PYTHON:+--python "$ORCHESJOB_BASE_PYTHON"} --out-dir "$OUT" "$STAGE"
ls "$OUT"/orchesjob_agent-*

#!/usr/bin/env bash
# Run one command with every core burning (docs/development/testing-under-load.md):
#
#   bash scripts/stress.sh [-n BURNERS] [--] COMMAND [ARGS...]
#
# Starts BURNERS busy loops (default: nproc), runs COMMAND, kills the burners (on any exit) and
# prints the load average seen during the run (sampled every 2 s). Exit status: COMMAND's.
# Example: bash scripts/stress.sh .venvs/af3/bin/python -m pytest -q -n 3 tests/agent
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/stress_lib.sh
source "$REPO/scripts/stress_lib.sh"
n="$(nproc)"
if [[ "${1:-}" == -n ]]; then n="$2"; shift 2; fi
[[ "${1:-}" == -- ]] && shift
[[ $# -gt 0 ]] || { echo "usage: $0 [-n BURNERS] [--] COMMAND [ARGS...]" >&2; exit 2; }
tmp="$(mktemp -d)"
echo "stress.sh" > "$tmp/step"
cleanup() { local rc=$?; stress_stop; loadavg_stop; loadavg_recap "$tmp/loadavg.log"; rm -rf "$tmp"; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT TERM
stress_start "$n"
loadavg_start "$tmp/loadavg.log" "$tmp/step" 2
t0=$SECONDS
set +e
"$@"
rc=$?
set -e
echo "stress.sh: exit $rc after $((SECONDS - t0)) s with $n burner(s)"
exit $rc

# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/stress.sh (docs/development/testing-under-load.md).
#
#   stress_start [N]      N CPU burners (default: every core, `nproc`), each a busy loop at
#                         normal priority; their pids go to STRESS_PIDS
#   stress_stop           kill exactly those pids (nothing found by name)
#   loadavg_start <file> <stepfile> [interval]
#                         a sampler: every interval s (default 5) it appends
#                         "<epoch> <step> <load1> <running lane legs>" to <file>, where <step> is
#                         the first line of <stepfile> and the lane legs are the <leg>.pid files
#                         beside <file> with no <leg>.rc yet
#   loadavg_stop          kill the sampler
#   loadavg_recap <file>  min/median/max of load1 per step and per lane leg

STRESS_PIDS=()
LOADAVG_PID=""

stress_start() {
    local n="${1:-$(nproc)}" i
    for ((i = 0; i < n; i++)); do
        # a busy loop in its own bash; `exec` so the pid we keep is the loop itself
        bash -c 'exec -a orchesjob-stress-burner bash -c "while :; do :; done"' &
        STRESS_PIDS+=($!)
    done
    echo "STRESS: ${n} CPU burner(s) started (pids ${STRESS_PIDS[*]})"
}

stress_stop() {
    local pid
    for pid in "${STRESS_PIDS[@]+"${STRESS_PIDS[@]}"}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ ${#STRESS_PIDS[@]} -gt 0 ]] && echo "STRESS: burners stopped (pids ${STRESS_PIDS[*]})"
    STRESS_PIDS=()
}

loadavg_start() {
    local file="$1" stepfile="$2" interval="${3:-5}" dir
    dir="$(dirname "$file")"
    (
        trap 'exit 0' TERM
        while :; do
            local step legs="" f leg
            step="$(head -n 1 "$stepfile" 2>/dev/null || true)"
            for f in "$dir"/*.pid; do
                [[ -e "$f" ]] || continue
                leg="$(basename "$f" .pid)"
                [[ -e "$dir/$leg.rc" ]] || legs="${legs:+$legs,}$leg"
            done
            read -r l1 _ < /proc/loadavg
            echo "$(date +%s) ${step:--} $l1 ${legs:--}" >> "$file"
            sleep "$interval" & wait $!
        done
    ) &
    LOADAVG_PID=$!
}

loadavg_stop() {
    if [[ -n "$LOADAVG_PID" ]]; then
        kill "$LOADAVG_PID" 2>/dev/null || true
        wait "$LOADAVG_PID" 2>/dev/null || true
        LOADAVG_PID=""
    fi
}

loadavg_recap() {  # loadavg_recap <file>: one line per step, then one per lane leg
    local file="$1"
    [[ -s "$file" ]] || return 0
    printf '==== load average (1 min, /proc/loadavg every few s; %s)\n' "$file"
    awk '
        function stats(key, vals,   n, a, i, j, t, med) {
            n = split(vals, a, " ")
            for (i = 2; i <= n; i++) { t = a[i] + 0; j = i - 1
                while (j >= 1 && a[j] + 0 > t) { a[j + 1] = a[j]; j-- } a[j + 1] = t }
            med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            printf "  %-26s n=%-4d min %5.2f  median %5.2f  max %5.2f\n", key, n, a[1], med, a[n]
        }
        { if (!($2 in s)) order[++k] = $2; s[$2] = s[$2] " " $3
          if ($4 != "-") { m = split($4, legs, ",")
              for (i = 1; i <= m; i++) { key = legs[i] " (lane)"
                  if (!(key in s)) order[++k] = key; s[key] = s[key] " " $3 } } }
        END { for (i = 1; i <= k; i++) stats(order[i], s[order[i]]) }' "$file"
}

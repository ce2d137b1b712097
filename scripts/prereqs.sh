#!/usr/bin/env bash
# System packages the tests and the demo need, installed ONCE before anything else runs
# (sourced by scripts/test.sh and scripts/demo.sh; nothing under pytest runs apt-get: the test
# kit reports a missing package as "<pkg> is missing: run scripts/test.sh or apt-get install <pkg>").
#
#   prereqs_missing [pkg...]   prints the packages (of the list; default: all) that are missing
#   prereqs_install [pkg...]   apt-get installs those (update only when something is missing)
#
# A package counts as installed when its binary is there (same table as testkit/prereqs.py).
# PREREQS_ABSENT="nftables ..." pretends those are missing and PREREQS_DRY_RUN=1 prints the apt
# commands instead of running them (tests/unit/test_testkit.py checks the logic that way).

PREREQS_ALL=(openssh-server openssh-client nftables iproute2 python3 sshfs redis-server postgresql)

prereqs_binary() {  # the binary that proves a package is installed
    case "$1" in
        openssh-server) echo /usr/sbin/sshd ;;
        openssh-client) echo ssh-keygen ;;
        nftables) echo nft ;;
        iproute2) echo ip ;;
        python3) echo /usr/bin/python3 ;;
        sshfs) echo sshfs ;;
        redis-server) echo /usr/bin/redis-server ;;  # the Celery broker of the CeleryExecutor e2e
        # the e2e events stack's metadata DB (testkit/postgres.py); Debian keeps the server's
        # binaries off PATH, under /usr/lib/postgresql/<major>/bin; this one is the Debian default's
        postgresql) echo /usr/lib/postgresql/15/bin/initdb ;;
        *) echo "prereqs: unknown package $1" >&2; return 2 ;;
    esac
}

prereqs_missing() {
    local pkg bin out=()
    (( $# )) || set -- "${PREREQS_ALL[@]}"
    for pkg in "$@"; do
        bin="$(prereqs_binary "$pkg")" || return 2
        if [[ " ${PREREQS_ABSENT:-} " == *" $pkg "* ]]; then
            out+=("$pkg")
        elif [[ "$bin" == /* ]]; then
            [[ -x "$bin" ]] || out+=("$pkg")
        else
            command -v "$bin" >/dev/null 2>&1 || out+=("$pkg")
        fi
    done
    (( ${#out[@]} == 0 )) || echo "${out[*]}"
}

prereqs_install() {
    local missing run=()
    missing="$(prereqs_missing "$@")" || return 2
    if [[ -z "$missing" ]]; then
        echo "prereqs: all present ($(( $# ? $# : ${#PREREQS_ALL[@]} )) packages)"
        return 0
    fi
    [[ "${PREREQS_DRY_RUN:-0}" == 1 ]] && run=(echo "+")
    if [[ "${PREREQS_DRY_RUN:-0}" != 1 ]]; then
        if [[ $EUID != 0 ]]; then
            echo "prereqs: missing $missing and not root: apt-get install $missing as root" >&2
            return 1
        fi
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "prereqs: missing $missing and no apt-get on this machine" >&2
            return 1
        fi
    fi
    echo "prereqs: installing $missing"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq --no-install-recommends \
               -o Dpkg::Use-Pty=0 $missing \
        || { echo "prereqs: apt-get install $missing failed" >&2; return 1; }
    [[ "${PREREQS_DRY_RUN:-0}" == 1 ]] && return 0
    missing="$(prereqs_missing "$@")"
    if [[ -n "$missing" ]]; then
        echo "prereqs: still missing after apt-get: $missing" >&2
        return 1
    fi
}

#!/usr/bin/env bash
# Plan B's container image install steps: the Dockerfile runs each of them, and `all` runs the
# same steps on this machine, without a container daemon, in a fresh virtual environment under a
# temporary folder, then starts the app from it and probes it (tests/deploy/test_image.py).
# So the image recipe cannot rot unnoticed.
#
#   image-steps.sh wheels SRC WHEELS        build wheels of Plan B and every dependency
#   image-steps.sh install WHEELS VENV      a fresh virtual environment, installed from WHEELS only
#   image-steps.sh warm-up VENV CACHE       compile the Numba kernel into CACHE (NUMBA_CACHE_DIR)
#   image-steps.sh check-cache VENV CACHE   with CACHE read-only: the kernel loads, nothing compiles
#   image-steps.sh all [WORKDIR]            every step above, then `planb db upgrade`, `planb serve`
#                                           (CACHE and VENV read-only), /healthz and /readyz
set -euo pipefail

# What the image installs: Plan B with Redis support (shared rate limits over several workers).
REQUIREMENT="planb[redis]"
# Compile for any x86-64 (or aarch64) processor, not the build machine's: the image runs on other
# machines, and a cache compiled for another processor would be ignored and compiled again.
export NUMBA_CPU_NAME="${NUMBA_CPU_NAME:-generic}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR="${PIP_NO_CACHE_DIR:-1}"

say() { printf 'image-steps: %s\n' "$*" >&2; }

step_wheels() {  # SRC WHEELS
    local src=$1 wheels=$2
    say "wheels: ${REQUIREMENT} from ${src} into ${wheels}"
    python3 -m pip wheel --wheel-dir "${wheels}" "${src}[redis]"
}

step_install() {  # WHEELS VENV
    local wheels=$1 venv=$2
    say "install: ${REQUIREMENT} into a fresh ${venv}, from ${wheels} only"
    python3 -m venv "${venv}"
    "${venv}/bin/python" -m pip install --no-index --find-links "${wheels}" "${REQUIREMENT}"
    "${venv}/bin/planb" --version
}

step_warm_up() {  # VENV CACHE
    local venv=$1 cache=$2
    say "warm-up: compiling the Numba kernel into ${cache}"
    mkdir -p "${cache}"
    # -I: the installed package only, never a checkout in the current folder (the cache is keyed
    # by the source file's folder).
    NUMBA_CACHE_DIR="${cache}" "${venv}/bin/python" -I -c \
        'from inventory.impact.kernel import warm_up; warm_up()'
    if ! compgen -G "${cache}/*/kernel.propagate_arrays-*.nbi" >/dev/null; then
        say "warm-up: no compiled kernel in ${cache}"
        return 1
    fi
}

# The kernel's functions must all come from the cache: hits, and not one miss (a compilation).
CHECK_CACHE_PY='
import sys
from inventory.impact import kernel
kernel.warm_up()
functions = [kernel.propagate_arrays, kernel.reach_pairs, kernel.summarise_hits]
hits = sum(len(f.stats.cache_hits) for f in functions)
misses = sum(len(f.stats.cache_misses) for f in functions)
print(f"numba cache: {hits} loaded, {misses} compiled, from {kernel.numba_config.CACHE_DIR}")
sys.exit(0 if hits >= len(functions) and misses == 0 else 1)
'

step_check_cache() {  # VENV CACHE
    local venv=$1 cache=$2
    say "check-cache: the kernel loads from ${cache} (read-only) without compiling"
    # The copy the kernel module makes of a read-only cache goes to a scratch folder, not the image.
    local scratch status=0
    scratch=$(mktemp -d)
    read_only_command "${cache}" -- env TMPDIR="${scratch}" NUMBA_CACHE_DIR="${cache}" \
        "${venv}/bin/python" -I -c "${CHECK_CACHE_PY}"
    "${RO_COMMAND[@]}" || status=$?
    rm -rf "${scratch}"
    return "${status}"
}

# read_only_command DIR... -- COMMAND...: sets RO_COMMAND to COMMAND run with the folders read-only,
# as in the image (where they belong to root and the app runs as another user, often on a read-only
# root filesystem).  Root gets read-only bind mounts in a mount namespace of its own; another user
# who owns the folders loses the write permission on them (the Dockerfile's user never had it).
read_only_command() {
    local dirs=()
    while [ "$1" != "--" ]; do dirs+=("$1"); shift; done
    shift
    if [ "$(id -u)" != 0 ]; then
        local dir
        for dir in "${dirs[@]}"; do
            if [ -w "${dir}" ]; then chmod -R a-w "${dir}"; fi
        done
        RO_COMMAND=("$@")
        return
    fi
    # shellcheck disable=SC2016 # expanded by the inner shell
    RO_COMMAND=(unshare --mount sh -c '
        while [ "$1" != "--" ]; do
            mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" || exit 97
            shift
        done
        shift
        exec "$@"' sh "${dirs[@]}" -- "$@")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

probe() {  # URL: 0 when it answers 200
    python3 -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"
}

step_all() {  # [WORKDIR]
    local work=${1:-}
    if [ -z "${work}" ]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/planb-image-steps.XXXXXX")
    fi
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    local src=${here%/deploy}
    local wheels=${work}/wheels venv=${work}/venv cache=${work}/numba-cache data=${work}/data
    unset PIP_NO_CACHE_DIR   # not an image layer: pip's cache may speed up the wheels step
    step_wheels "${src}" "${wheels}"
    step_install "${wheels}" "${venv}"
    step_warm_up "${venv}" "${cache}"
    step_check_cache "${venv}" "${cache}"

    say "serve: a throw-away SQLite database, the app started from ${venv}"
    mkdir -p "${data}" "${work}/tmp"
    local port
    port=$(free_port)
    # The image's configuration (Dockerfile ENV) except the address: 0.0.0.0 there, loopback here.
    export PLANB_HOST=127.0.0.1 PLANB_PORT="${port}" PLANB_INSTANCE_PATH="${data}"
    export PLANB_DATABASE_URL="sqlite:///${data}/planb.sqlite3" PLANB_LOG_LEVEL=WARNING
    export NUMBA_CACHE_DIR="${cache}" TMPDIR="${work}/tmp" PYTHONUNBUFFERED=1
    (cd "${data}" && "${venv}/bin/planb" db upgrade)
    # NUMBA_DEBUG_CACHE: Numba says what it loads from (and would save to) the cache.
    read_only_command "${cache}" "${venv}" -- env NUMBA_DEBUG_CACHE=1 "${venv}/bin/planb" serve --workers 2
    "${RO_COMMAND[@]}" >"${work}/serve.log" 2>&1 &   # one process: unshare, sh and env exec into planb
    local server=$!
    local ready=""
    for _ in $(seq 1 120); do
        if probe "http://127.0.0.1:${port}/healthz" && probe "http://127.0.0.1:${port}/readyz"; then
            ready=yes
            break
        fi
        kill -0 "${server}" 2>/dev/null || break
        sleep 0.5
    done
    # The image's HEALTHCHECK command, as Docker runs it.
    local health=1
    if [ -n "${ready}" ]; then
        PATH="${venv}/bin:${PATH}" python "${here}/healthcheck.py" && health=0
    fi
    kill -TERM "${server}" 2>/dev/null || true
    wait "${server}" || true
    if [ "$(id -u)" != 0 ]; then chmod -R u+w "${cache}" "${venv}"; fi   # so the folder can be removed
    if [ -z "${ready}" ] || [ "${health}" != 0 ]; then
        say "serve: /healthz and /readyz never both answered 200 (or the HEALTHCHECK failed); log:"
        cat "${work}/serve.log" >&2
        return 1
    fi
    if ! grep -q '\[cache\] data loaded from .*kernel\.propagate_arrays' "${work}/serve.log" \
            || grep -q '\[cache\] data saved' "${work}/serve.log"; then
        say "serve: the workers did not load the kernel from the image's cache; log:"
        cat "${work}/serve.log" >&2
        return 1
    fi
    say "all steps passed in ${work}: /healthz and /readyz answered 200, the kernel came from the cache"
}

main() {
    local step=${1:-}
    shift || true
    case "${step}" in
        wheels) step_wheels "$@" ;;
        install) step_install "$@" ;;
        warm-up) step_warm_up "$@" ;;
        check-cache) step_check_cache "$@" ;;
        all) step_all "$@" ;;
        *) say "usage: $0 wheels SRC WHEELS | install WHEELS VENV | warm-up VENV CACHE | check-cache VENV CACHE | all [WORKDIR]"
           return 2 ;;
    esac
}

main "$@"; exit  # one line: bash has read it all before the script could change under it

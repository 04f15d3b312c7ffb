#!/usr/bin/env bash
# Render the kustomize base and scan it with checkov (settings and skips: .checkov.yaml here).
# checkov runs offline; it lives in a virtual environment of its own (its pinned dependencies
# clash with Plan B's), created on first use under ~/.cache/planb.
#   deploy/kubernetes/checkov.sh [checkov options, e.g. -o json]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=${CHECKOV_VERSION:-3.3.30}
checkov=$(command -v checkov || true)
if [ -z "${checkov}" ]; then
    venv=${XDG_CACHE_HOME:-${HOME}/.cache}/planb/checkov-${version}
    if [ ! -x "${venv}/bin/checkov" ]; then
        python3 -m venv "${venv}"
        "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==${version}"
    fi
    checkov=${venv}/bin/checkov
fi
rendered=$(mktemp -d)
trap 'rm -rf "${rendered}"' EXIT
kubectl kustomize "${here}" > "${rendered}/planb.yaml"
"${checkov}" --config-file "${here}/.checkov.yaml" --file "${rendered}/planb.yaml" "$@"

#!/usr/bin/env bash
# Installs whatever is missing, then runs the end-to-end demo in throwaway network namespaces:
# an outsider scans and finds nothing, a client knocks and connects, the pinhole expires.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec node test-rig/src/demo.ts "$@"

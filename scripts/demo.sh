#!/usr/bin/env bash
# Installs whatever is missing, then runs the end-to-end demo in throwaway network namespaces:
# a controller, an enrolled gateway, a PostgreSQL server behind it, a client and an outsider —
# the outsider finds nothing, a device reaches PostgreSQL through its tunnel, a revocation cuts it.
# `--standalone` runs the dark gateway alone instead (a policy file, no controller).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
if [ "${1:-}" = "--standalone" ]; then
  shift
  exec node test-rig/src/demo.ts "$@"
fi
exec node test-rig/src/demo-session.ts "$@"

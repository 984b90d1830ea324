#!/usr/bin/env bash
# Installs whatever is missing, then runs every check: type check, lint, unit tests, and the
# integration tests that build network namespaces (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
npm run --silent typecheck
echo "typecheck: ok"
npm run --silent lint
npm run --silent test:unit
npm run --silent build            # the firmware bundle: the benchmark's smoke test runs it
npm run --silent test:integration

#!/usr/bin/env bash
# Quickstart: install what is missing, build, and run the default comparison.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
"$BUILD_DIR/moesim" compare "$ROOT/scenarios/quickstart.yaml" --convergence-band --out "$ROOT/out/quickstart" "$@"

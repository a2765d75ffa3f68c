#!/usr/bin/env bash
# Quickstart: install what is missing, build the CLI only, and run the default comparison.
# The tests, benchmarks and CUDA module are built by scripts/test.sh in the same build folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_TARGETS=moesim
source "$ROOT/scripts/setup.sh"
"$BUILD_DIR/moesim" compare "$ROOT/scenarios/quickstart.yaml" --convergence-band --out "$ROOT/out/quickstart" "$@"

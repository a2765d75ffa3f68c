#!/usr/bin/env bash
# Quickstart: install what is missing, build the CLI only, run the default comparison, then build
# the Python extension.
# The tests, benchmarks and CUDA module are built by scripts/test.sh in the same build folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_TARGETS=moesim
source "$ROOT/scripts/setup.sh"
"$BUILD_DIR/moesim" compare "$ROOT/scenarios/quickstart.yaml" --convergence-band --out "$ROOT/out/quickstart" "$@"
# Then the Python package's extension, so that `import moesim` works from the repository root
# (docs/python.md); after the first table, not before it.
# (The target list is read whole first: grep -q closing the pipe early fails it under pipefail.)
targets_list="$(cmake --build "$BUILD_DIR" --target help 2>/dev/null || true)"
if grep -q "_moesim" <<< "$targets_list"; then
  echo "quickstart: building the Python package's extension (build/python/) for 'import moesim'"
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target _moesim >/dev/null
fi

#!/usr/bin/env bash
# Install what is missing, build (warnings are errors in CI), and run the whole test suite.
# With MOESIM_SANITIZERS=ON (what .ci/run sets) it then builds the suite again with ASan + UBSan
# and runs it, and runs each fuzz target for FUZZ_SECONDS (default 60): see scripts/sanitize.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "${MOESIM_SANITIZERS:-OFF}" = "ON" ] && export EXTRA_PACKAGES="clang libclang-rt-14-dev"
source "$ROOT/scripts/setup.sh"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" "$@"
if [ "${MOESIM_SANITIZERS:-OFF}" = "ON" ]; then
  bash "$ROOT/scripts/sanitize.sh"
fi

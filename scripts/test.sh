#!/usr/bin/env bash
# Install what is missing, build (warnings are errors in CI), and run the whole test suite.
# With MOESIM_SANITIZERS=ON (what .ci/run sets) it then builds the suite again with ASan + UBSan
# and runs it, and runs each fuzz target for FUZZ_SECONDS (default 60): see scripts/sanitize.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# ccache: scripts/test_embed.sh's second build of the library hits the first one's objects.
export EXTRA_PACKAGES="ccache"
# CI also installs Chromium (about 420 MB with its dependencies), so that the report's headless
# browser check (tests/report/test_report_browser.py) runs there rather than skipping.
[ "${CI:-}" = "true" ] && EXTRA_PACKAGES+=" chromium"
[ "${MOESIM_SANITIZERS:-OFF}" = "ON" ] && EXTRA_PACKAGES+=" clang libclang-rt-14-dev"
BUILD_TARGETS=""  # everything: the quickstart builds only the CLI
source "$ROOT/scripts/setup.sh"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" "$@"
# examples/embed against the installed package and as add_subdirectory, then every command of
# docs/tutorial.md; not when ctest was given a selection (`scripts/test.sh -R name`).
if [ $# -eq 0 ]; then
  bash "$ROOT/scripts/test_embed.sh"
  bash "$ROOT/scripts/test_tutorial.sh"
fi
if [ "${MOESIM_SANITIZERS:-OFF}" = "ON" ]; then
  bash "$ROOT/scripts/sanitize.sh"
fi

#!/usr/bin/env bash
# The test suite under ASan + UBSan (-O1; UBSan does not recover, so a finding fails its test),
# then every fuzz target for FUZZ_RUNS inputs from a fixed seed (default 50,000; FUZZ_SECONDS=0 skips them). Under clang one build
# folder (build-sanitize/, or SANITIZE_BUILD_DIR) serves both; without clang the suite is built
# with g++ and the fuzz pass is skipped. Run by scripts/test.sh when MOESIM_SANITIZERS=ON.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
common=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g" "${launcher[@]}" -DMOESIM_CUDA=OFF
        -DMOESIM_BUILD_BENCH=OFF -DMOESIM_BUILD_TESTS=ON)
start=$(date +%s)
if command -v clang++ >/dev/null; then
  cmake -S "$ROOT" -B "$BUILD" "${common[@]}" -DCMAKE_CXX_COMPILER=clang++ -DMOESIM_FUZZ=ON >/dev/null
else
  echo "sanitize.sh: clang++ not found: the suite is built with g++, the fuzz targets are skipped"
  FUZZ_SECONDS=0
  cmake -S "$ROOT" -B "$BUILD" "${common[@]}" -DMOESIM_SANITIZE=ON >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)"
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
# OpenMPI leaks its start-up allocations from components it has unloaded (no stack to suppress
# by), so the test that starts mpirun runs without leak checking; the rest with it.
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" -E mpirun &&
   ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ctest --output-on-failure -R mpirun)
# Determinism across builds: the Release binary and this one, --jobs 1 and 2, byte for byte.
release="${RELEASE_BUILD_DIR:-$ROOT/build}/moesim"
if [ -x "$release" ]; then
  bash "$ROOT/scripts/check_determinism.sh" "$release" "$BUILD/moesim"
else
  echo "sanitize.sh: no Release binary at $release: determinism across builds not checked"
fi
tested=$(date +%s)
echo "sanitize.sh: build $((built - start)) s, tests and determinism $((tested - built)) s"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  # A fixed number of inputs from a fixed seed, so that CI's pass is the same every run (a
  # campaign with fresh seeds is scripts/fuzz.sh SECONDS).
  FUZZ_RUNS="${FUZZ_RUNS:-50000}" FUZZ_BUILD_DIR="$BUILD" FUZZ_BUILD_TESTS=ON bash "$ROOT/scripts/fuzz.sh" "$FUZZ_SECONDS"
  echo "sanitize.sh: fuzzing $(( $(date +%s) - tested )) s"
fi

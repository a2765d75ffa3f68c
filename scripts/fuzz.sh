#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for SECONDS each (default 60), building them first under
# clang with ASan + UBSan (build-fuzz/, or FUZZ_BUILD_DIR). FUZZ_TARGETS="trace study" picks some.
# Seeds come from fuzz/corpus/NAME (left untouched); what the fuzzer adds goes to
# FUZZ_BUILD_DIR/corpus/NAME, and an input that fails to FUZZ_BUILD_DIR/artifacts/. Exit status 1
# when any target found something (each still runs), with its reproducer named.
# FUZZ_RUNS=N runs N inputs per target from seed FUZZ_SEED (default 1) instead of SECONDS: the same
# inputs every time, so a CI pass is reproducible (scripts/sanitize.sh uses it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-60}"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${FUZZ_BUILD_JOBS:-$(nproc)}"
CXX_CLANG="${FUZZ_CXX:-$(command -v clang++ || true)}"
if [ -z "$CXX_CLANG" ]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2
  exit 2
fi
targets=()
if [ -n "${FUZZ_TARGETS:-}" ]; then
  for t in $FUZZ_TARGETS; do targets+=("fuzz_${t#fuzz_}"); done
else
  for f in "$ROOT"/fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 keeps the sanitizers' reports readable and the build short; tests are built too when
# MOESIM_BUILD_TESTS is left on (scripts/test.sh runs them from the same folder).
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DCMAKE_CXX_COMPILER="$CXX_CLANG" "${launcher[@]}" -DMOESIM_FUZZ=ON -DMOESIM_CUDA=OFF \
  -DMOESIM_BUILD_BENCH=OFF -DMOESIM_BUILD_TESTS="${FUZZ_BUILD_TESTS:-OFF}" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
mkdir -p "$BUILD/artifacts"
failed=()
for t in "${targets[@]}"; do
  name="${t#fuzz_}"
  work="$BUILD/corpus/$name"
  mkdir -p "$work"
  log="$BUILD/artifacts/$name.log"
  if [ -n "${FUZZ_RUNS:-}" ]; then
    bound=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}")
    echo "fuzz.sh: $t for $FUZZ_RUNS inputs from seed ${FUZZ_SEED:-1}"
  else
    bound=(-max_total_time="$SECONDS_EACH")
    echo "fuzz.sh: $t for ${SECONDS_EACH}s"
  fi
  # 2 GB of RSS and 10 s per input: past either is a finding (unbounded allocation, a hang).
  if "$BUILD/$t" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$name-" "$work" "$ROOT/fuzz/corpus/$name" \
       >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz.sh: $t: no finding, $runs executions"
  else
    failed+=("$t")
    echo "fuzz.sh: $t FOUND something; log $log:" >&2
    grep -E "ERROR|SUMMARY|Test unit written|terminate called|what\(\)" "$log" | head -8 >&2 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: every target ran without a finding"

#!/usr/bin/env bash
# Builds examples/embed both ways a project can use moesim, and checks what it prints:
#   1. find_package(moesim) against `cmake --install BUILD_DIR --prefix TMP` (reuses BUILD_DIR's build);
#   2. add_subdirectory(<this source tree>): a fresh build of the library and the example only
#      (tests, benchmarks and CUDA off).
# Each example run must print the mean iteration time that `BUILD_DIR/moesim compare` writes for the
# same scenario, policy and iterations. Called by scripts/test.sh after ctest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
SCENARIO="$ROOT/scenarios/quickstart.yaml"
POLICY=symi
ITERATIONS=20
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
jobs="$(nproc)"

echo "test_embed: installing $BUILD_DIR into a temporary prefix"
cmake --install "$BUILD_DIR" --prefix "$tmp/prefix" >/dev/null
config="$tmp/prefix/lib/cmake/moesim/moesimConfig.cmake"
[ -f "$config" ] || { echo "test_embed: FAIL: no $config"; exit 1; }
# The installed package must stand on its own: nothing in it may point into the source tree.
if grep -rqF "$ROOT" "$tmp/prefix/lib/cmake/moesim"; then
  echo "test_embed: FAIL: the installed package files name the source tree $ROOT:"
  grep -rnF "$ROOT" "$tmp/prefix/lib/cmake/moesim"
  exit 1
fi
"$tmp/prefix/bin/moesim" list >/dev/null

echo "test_embed: examples/embed with find_package(moesim)"
cmake -S "$ROOT/examples/embed" -B "$tmp/installed" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
found="$(sed -n 's/^moesim_DIR:PATH=//p' "$tmp/installed/CMakeCache.txt")"
[ "$found" = "$tmp/prefix/lib/cmake/moesim" ] || { echo "test_embed: FAIL: found moesim at '$found'"; exit 1; }
cmake --build "$tmp/installed" -j "$jobs" >/dev/null
echo "test_embed: $((SECONDS - start)) s so far"

echo "test_embed: examples/embed with add_subdirectory($ROOT)"
# BUILD_DIR's build type, warnings and compiler launcher: with ccache the library's objects are
# then those of BUILD_DIR (compiled in seconds); CUDA is off, so only kernels/backend.cpp differs.
cached() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD_DIR/CMakeCache.txt"; }
cmake -S "$ROOT/examples/embed" -B "$tmp/subdir" -DMOESIM_SOURCE_DIR="$ROOT" -DMOESIM_CUDA=OFF \
      -DCMAKE_BUILD_TYPE="$(cached CMAKE_BUILD_TYPE)" -DMOESIM_WERROR="$(cached MOESIM_WERROR)" \
      -DCMAKE_CXX_COMPILER_LAUNCHER="$(cached CMAKE_CXX_COMPILER_LAUNCHER)" >/dev/null
# Inside a parent project moesim's tests and benchmarks default to off.
for option in MOESIM_BUILD_TESTS MOESIM_BUILD_BENCH; do
  grep -q "^$option:BOOL=OFF$" "$tmp/subdir/CMakeCache.txt" || { echo "test_embed: FAIL: $option is not OFF"; exit 1; }
done
cmake --build "$tmp/subdir" -j "$jobs" >/dev/null
echo "test_embed: $((SECONDS - start)) s so far"

"$BUILD_DIR/moesim" compare "$SCENARIO" --policies "$POLICY" --set run.max_iterations="$ITERATIONS" \
    --set run.stop_at_convergence=false --expert-stats 0 --quiet --out "$tmp/cli"
"$tmp/installed/embed" "$SCENARIO" "$POLICY" "$ITERATIONS" > "$tmp/installed.txt"
"$tmp/subdir/embed" "$SCENARIO" "$POLICY" "$ITERATIONS" > "$tmp/subdir.txt"
python3 - "$tmp/cli/compare.json" "$ITERATIONS" "$tmp/installed.txt" "$tmp/subdir.txt" <<'PY'
import json, re, sys
compare, iterations, outputs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
data = json.load(open(compare))
# A list of rows, or (should compare.json grow a header) an object holding them.
rows = data if isinstance(data, list) else next(data[k] for k in ("results", "policies", "rows") if k in data)
(row,) = rows
expected = float(row["mean_iteration_ns"])
ok = True
for path in outputs:
    text = open(path).read()
    m = re.fullmatch(r"quickstart (\S+): (\d+) iterations, mean_iteration_ns (\S+)\n", text)
    if not m or int(m.group(2)) != iterations or float(m.group(3)) != expected:
        print(f"test_embed: FAIL: {path} printed {text!r}; moesim compare wrote mean_iteration_ns {expected!r} "
              f"over {iterations} iterations")
        ok = False
    else:
        print(f"test_embed: {path.rsplit('/', 1)[1]}: {text.strip()} (moesim compare: {expected!r})")
sys.exit(0 if ok else 1)
PY
echo "test_embed: OK in $((SECONDS - start)) s"

#!/usr/bin/env bash
# Determinism across builds (issue 16, item 6): the same scenarios and seeds give byte-identical
# output folders from every binary given (a Release and a sanitizer build, say) and under
# --jobs 1 and --jobs 2. Covers `compare` (with a timeline and per-expert samples), a flow-mode
# `run`, and a `sweep` of a small study; the scenarios are cut to a few iterations so that a
# sanitizer binary takes seconds.
#   bash scripts/check_determinism.sh build/moesim build-sanitize/moesim
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: check_determinism.sh MOESIM_BINARY [MOESIM_BINARY...]" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/study.yaml" <<EOF
name: determinism
base: $ROOT/scenarios/swiftmoe-gpt-small.yaml
set: {run.max_iterations: 20, run.stop_at_convergence: false}
grid: {trace.skew: [0.5, 1.5]}
policies: [static, symi, {name: flexmoe, label: flexmoe-10, interval: 10}]
seeds: [1, 2]
EOF
runs=()
for bin in "$@"; do
  for jobs in 1 2; do
    d="$work/run${#runs[@]}"
    mkdir -p "$d"
    "$bin" compare "$ROOT/scenarios/quickstart.yaml" --set run.max_iterations=30 --jobs "$jobs" \
      --timeline "$d/timeline.json" --timeline-iterations 0,29 --out "$d/compare" >/dev/null
    "$bin" compare "$ROOT/scenarios/quickstart.yaml" --policies symi --set network.model=flow \
      --set run.max_iterations=4 --out "$d/flow" >/dev/null
    "$bin" sweep "$work/study.yaml" --jobs "$jobs" --out "$d/sweep" >/dev/null
    runs+=("$bin --jobs $jobs")
  done
done
status=0
for i in "${!runs[@]}"; do
  [ "$i" -eq 0 ] && continue
  if ! diff -r "$work/run0" "$work/run$i" >"$work/diff" 2>&1; then
    echo "check_determinism: outputs of '${runs[$i]}' differ from '${runs[0]}':" >&2
    head -20 "$work/diff" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "check_determinism: ${#runs[@]} runs (${runs[*]}) gave byte-identical outputs"
exit "$status"

#pragma once
// Tokens that follow their experts from one MoE layer to the next (LayerDispatch::tokens_follow):
// the exchange between the two layers carries, for every pair of GPUs, the assignments whose
// expert at layer l lives on the first and whose expert at layer l + 1 lives on the second, so a
// placement that keeps consecutive experts of a token path on one GPU saves that traffic. The
// joint of the two layers' choices comes from the trace's cross-layer pairs, reconciled with the
// iteration's loads (docs/model.md, "Cross-layer token flow").
#include <vector>

#include "sim/policy.hpp"

namespace moesim {

// Scales the non-negative E x E matrix `pairs` so that its row sums are `rows` and its column
// sums `cols` (iterative proportional fitting until the columns are within 1e-6 of their targets
// or 50 sweeps, ending on the rows, which are then exact). `cols` is first rescaled to the total of `rows`.
// A row (column) with a target but no weight where the other side has targets gets the other
// side's targets as its weights (no recorded affinity: independent choices).
[[nodiscard]] std::vector<double> reconcile_pairs(const std::vector<double>& pairs, const std::vector<double>& rows,
                                                  const std::vector<double>& cols, int experts);

// The G x G matrix [from GPU * G + to GPU] of assignments moving from layer l's experts to layer
// l + 1's within one expert-parallel group of G GPUs, given both layers' dispatches and layouts
// (expert of each slot) and the pair profile of (l, l + 1). An expert's assignments leave each
// of its replicas in proportion to what that replica accepted and arrive at the next expert's
// replicas in proportion to what they accepted (the replica used at l + 1 does not depend on the
// one used at l). The diagonal stays on its GPU.
[[nodiscard]] std::vector<double> follow_hops(const LayerDispatch& from, const std::vector<int>& from_layout,
                                              const LayerDispatch& to, const std::vector<int>& to_layout,
                                              int slots_per_gpu, const std::vector<double>& pairs, int experts);

}  // namespace moesim

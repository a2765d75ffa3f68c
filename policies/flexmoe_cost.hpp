#pragma once
// FlexMoE's movement and cost-model pieces (policies/flexmoe.cpp): the sharded re-partition of
// a plan's optimizer state, and the estimates of a placement's expert sync and optimizer step
// that the cost model weighs. Exposed for tests/test_flexmoe_cost.cpp.
#include <vector>

#include "sim/policy.hpp"

namespace moesim {

// The movements turning `from` into `to` when an expert's replicas shard its optimizer state.
[[nodiscard]] std::vector<Movement> flexmoe_sharded_moves(const PolicyContext& ctx, const Placement& from,
                                                          const Placement& to);

// Seconds of one ring reduce-scatter or all-gather of `bytes` over `gpus` (ascending).
[[nodiscard]] double flexmoe_ring_seconds(const PolicyContext& ctx, const std::vector<int>& gpus,
                                          double bytes);

// Seconds of the expert sync of a placement given as its replica groups, groups[layer][expert]
// = the holding GPUs (ascending). `sharded`: reduce-scatter then all-gather, else all-reduce.
// `free_s` is scratch.
[[nodiscard]] double flexmoe_sync_seconds(const PolicyContext& ctx,
                                          const std::vector<std::vector<std::vector<int>>>& groups,
                                          bool sharded, std::vector<double>& free_s);

// Seconds of the slowest GPU's expert optimizer step, `params[g]` = expert parameters GPU g steps.
[[nodiscard]] double flexmoe_optimizer_seconds(const PolicyContext& ctx, const std::vector<double>& params);

// Reorders collectives (issued in list order on every GPU) so that each next one is the one
// whose members are all free first under flexmoe_ring_seconds (ties to the earlier one).
void flexmoe_greedy_order(const PolicyContext& ctx, std::vector<CollectiveOp>& ops);

}  // namespace moesim

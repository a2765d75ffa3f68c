#pragma once
// Building blocks shared by the placement policies: dispatching tokens over replicas under a
// capacity, and the data movements a placement change implies.
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "sim/policy.hpp"

namespace moesim {

// GPUs holding each expert of `layer` (distinct, ascending), and its slots.
[[nodiscard]] std::vector<std::vector<int>> expert_slots(const Placement& p, int layer, int experts);

// Division by one divisor many times, exact: a floating-point quotient corrected by the exact
// 64-bit remainder (a 64-bit idiv per cell dominated the dispatch). For 0 <= p < 2^62 and
// 0 < d < 2^32 the estimate is within 1 of floor(p / d), and the loops make it exact.
struct ExactDivider {
  std::int64_t d = 1;
  double inv = 1.0;
  explicit ExactDivider(std::int64_t divisor) : d(divisor), inv(1.0 / static_cast<double>(divisor)) {}
  // q = p / d and r = p % d (C++'s, equal to floor and mod for p >= 0).
  void divmod(std::int64_t p, std::int64_t& q, std::int64_t& r) const {
    q = static_cast<std::int64_t>(static_cast<double>(p) * inv);
    r = p - q * d;
    while (r < 0) {
      --q;
      r += d;
    }
    while (r >= d) {
      ++q;
      r -= d;
    }
  }
};

// out[c * rows + r] = in[r * cols + c]: a rows x cols matrix transposed, in cache-sized blocks.
void transpose(const std::int64_t* in, int rows, int cols, std::int64_t* out);

struct EvenDispatchOptions {
  // Per-replica capacity in assignments, summed over all sources; < 0: unlimited.
  std::int64_t replica_capacity = -1;
  // Send a source's tokens only to replicas on its own node when the expert has any there
  // (FlexMoE's routing rule); otherwise spread over all replicas.
  bool prefer_local_node = false;
  int gpus_per_node = 1;
};

// Splits each source's assignments of each expert evenly over the expert's replicas (the
// remainder goes one by one to the replicas after the source's own index, so no replica is
// favoured). With a capacity, an expert with r replicas accepts at most r * capacity
// assignments in total; sources keep shares proportional to what they sent (largest remainder,
// ties to the lower source) and the rest is dropped. Buffers are not padded (buffered =
// accepted). Experts without a replica drop everything.
void dispatch_even(const Placement& p, int layer, int experts, const std::int64_t* counts,
                   const EvenDispatchOptions& opt, LayerDispatch& out);

// The movements turning `from` into `to`: every slot whose expert changes receives the expert's
// weights (plus its optimizer state when `with_optimizer`) from a GPU that holds that expert in
// `from` (same node first, then the lowest GPU id), or from the host of the slot's node when no
// GPU holds it. `what` names layer, expert and slot.
[[nodiscard]] std::vector<Movement> placement_moves(const PolicyContext& ctx, const Placement& from,
                                                    const Placement& to, bool with_optimizer, bool blocking);

// Owner-and-copies layouts (prophet, ultraep): GPU g owns experts [g * owned, (g + 1) * owned)
// in its first `owned` slots and keeps their optimizer state; its other slots hold temporary
// copies. The placement with every expert in its owner's slots and the copy slots empty.
[[nodiscard]] Placement owned_placement(const PolicyContext& ctx, int owned);
// The sync plan of such a layout: the owners' optimizer, no replica all-reduce (a copy has no
// optimizer of its own), and every copy slot of `current` sends its gradients to the owner.
[[nodiscard]] SyncPlan owner_sync_plan(const PolicyContext& ctx, const Placement& current, int owned);

// Tokens per expert of one layer, summed over sources.
[[nodiscard]] std::vector<std::int64_t> expert_loads(const std::int64_t* counts, int gpus, int experts);
// The same into `out[0, experts)`, for callers that reuse a buffer.
void expert_loads(const std::int64_t* counts, int gpus, int experts, std::int64_t* out);

// Expert loads of the last iterations, per layer, oldest first.
using LoadHistory = std::vector<std::deque<std::vector<std::int64_t>>>;

// Appends this iteration's expert loads of every layer to `history`, keeping the last `window`.
void record_loads(const PolicyContext& ctx, const IterationCounts& counts, std::int64_t window,
                  LoadHistory& history);

// The periodic re-plan that Lazarus and SmartMoE share (one copy, so the two cannot drift
// apart): record the loads, and every `interval` iterations lay each layer out anew with
// `plan(load, current_layout)` from its load summed over the window, as `Load` (the type
// the policy's planner works in). Changed layers move weights and optimizer state, blocking.
template <class Load, class Plan>
[[nodiscard]] PolicyDecision replan_from_load_window(const PolicyContext& ctx, int iteration,
                                                     const IterationCounts& counts, const Placement& current,
                                                     std::int64_t interval, std::int64_t window,
                                                     LoadHistory& history, Plan&& plan) {
  record_loads(ctx, counts, window, history);
  PolicyDecision d;
  if ((static_cast<std::int64_t>(iteration) + 1) % interval != 0) return d;
  Placement next = current;
  bool changed = false;
  for (int l = 0; l < ctx.moe_layers; ++l) {
    std::vector<Load> load(ctx.experts, Load{0});
    for (const auto& v : history[l])
      for (int e = 0; e < ctx.experts; ++e) load[e] += static_cast<Load>(v[e]);
    std::vector<int> layout = plan(load, current.expert_of_slot[l]);
    if (layout != current.expert_of_slot[l]) {
      next.expert_of_slot[l] = std::move(layout);
      changed = true;
    }
  }
  if (!changed) return d;
  d.new_placement = true;
  d.movements = placement_moves(ctx, current, next, /*with_optimizer=*/true, /*blocking=*/true);
  d.placement = std::move(next);
  return d;
}

}  // namespace moesim

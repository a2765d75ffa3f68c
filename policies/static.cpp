// Static expert parallelism with capacity-factor token dropping, as in DeepSpeed-MoE (Rajbhandari
// et al., ICML 2022) and GShard/Switch: the placement never changes. With G*S slots for E
// experts, r = G*S/E replicas: GPUs form r expert-parallel groups of E/S GPUs, each group holds
// every expert once, and a source GPU sends only to its own group (expert-data parallelism; the
// replicas all-reduce their gradients). A budget that is not a multiple of E (or E not of S)
// has spare slots: slot i holds expert i mod E (the round-robin deal continued, chosen once,
// without load information), so the first G*S mod E experts have one replica more, and each
// expert's sources are split over its replicas in contiguous blocks (docs/policies.md).
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "policies/capacity.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class StaticPolicy final : public Policy {
 public:
  StaticPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: DeepSpeed-MoE defaults (deepspeed/moe/layer.py): capacity_factor 1.0,
    // min_capacity 4, drop_tokens true.
    capacity_factor_ = p.get_double("capacity_factor", 1.0, 0.0, 1e6);
    min_capacity_ = p.get_int("min_capacity", 4, 0, 1LL << 40);
    drop_tokens_ = p.get_bool("drop_tokens", true);
    // source: DeepSpeed ZeRO stage 1 partitions an expert's optimizer state over its
    // expert-data-parallel replicas (Rajbhandari et al., SC 2020; DeepSpeed-MoE).
    shard_optimizer_ = p.get_bool("shard_optimizer", true);
    if (drop_tokens_ && capacity_factor_ <= 0.0) {
      p.fail("capacity_factor", "must be > 0 when drop_tokens is true (use drop_tokens: false for dropless)");
    }
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts) {
      p.fail("", fmt::format("static placement needs at least one slot per expert: {} slots ({} GPUs x {} slots) "
                             "for {} experts; set placement.slots_per_gpu >= {}",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts,
                             (ctx.experts + ctx.gpus - 1) / std::max(ctx.gpus, 1)));
    }
    if (ctx.slots_per_gpu > ctx.experts) {
      p.fail("", fmt::format("static placement with placement.slots_per_gpu {} > {} experts would hold an expert "
                             "twice on one GPU; set placement.slots_per_gpu <= {}",
                             ctx.slots_per_gpu, ctx.experts, ctx.experts));
    }
    replicas_ = slots / ctx.experts;
    extra_replicas_ = slots % ctx.experts;
    // Whole expert-parallel groups (DeepSpeed's layout): each holds every expert once. Otherwise
    // the spare slots hold extra replicas and all GPUs form one expert-parallel group.
    const bool whole_groups = extra_replicas_ == 0 && ctx.experts % ctx.slots_per_gpu == 0;
    group_gpus_ = whole_groups ? ctx.gpus / replicas_ : ctx.gpus;
    // The replicas of each expert, in slot order (the placement never changes).
    replica_slots_.assign(static_cast<std::size_t>(ctx.experts), {});
    for (int slot = 0; slot < slots; ++slot) replica_slots_[static_cast<std::size_t>(slot % ctx.experts)].push_back(slot);
  }

  [[nodiscard]] std::string name() const override { return "static"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    std::vector<int> layout(pl.num_slots());
    // Group j = GPUs [j*group_gpus, (j+1)*group_gpus); expert e on GPU j*group_gpus + e/S.
    // With spare slots the deal goes on: slot i holds expert i mod E whatever the budget.
    for (int slot = 0; slot < pl.num_slots(); ++slot) layout[slot] = slot % ctx_.experts;
    pl.expert_of_slot.assign(ctx_.moe_layers, layout);
    return pl;
  }

  void dispatch(int /*layer*/, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int E = ctx_.experts, G = pl.gpus, slots = pl.num_slots();
    out.reset(pl.gpus, slots);
    std::int64_t cap = deepspeed_capacity(ctx_.tokens_per_gpu, ctx_.top_k, E, capacity_factor_, min_capacity_);
    const int groups = G / group_gpus_;
    for (int group = 0; group < groups; ++group) {
      const int first = group * group_gpus_;
      if (!drop_tokens_) {
        // Dropless but padded: the capacity is the largest count any source of the group has
        // for any expert (DeepSpeed all-reduces this maximum over the expert-parallel group).
        cap = 0;
        for (int src = first; src < first + group_gpus_; ++src)
          for (int e = 0; e < E; ++e) cap = std::max(cap, counts[static_cast<std::size_t>(src) * E + e]);
      }
      const std::vector<int>& slot_of = target_slots(G);
      for (int src = first; src < first + group_gpus_; ++src) {
        for (int e = 0; e < E; ++e) {
          const std::int64_t n = counts[static_cast<std::size_t>(src) * E + e];
          const int slot = slot_of[static_cast<std::size_t>(src) * E + e];
          const std::size_t idx = static_cast<std::size_t>(src) * slots + slot;
          const std::int64_t acc = std::min(n, cap);
          out.accepted[idx] = acc;
          out.buffered[idx] = cap;  // padded buffer, whatever the real load
          out.routed += n;
          out.dropped += n - acc;
        }
      }
    }
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts&, const Placement&) override {
    return {};
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    return default_sync_plan(ctx_, current, shard_optimizer_);
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"capacity_factor", capacity_factor_},
            {"shard_optimizer", shard_optimizer_},
            {"min_capacity", min_capacity_},
            {"drop_tokens", drop_tokens_},
            {"replicas_per_expert", replicas_},
            {"experts_with_extra_replica", extra_replicas_},
            {"expert_parallel_group_gpus", group_gpus_}};
  }

 private:
  double capacity_factor_ = 1.0;
  std::int64_t min_capacity_ = 4;
  bool drop_tokens_ = true;
  bool shard_optimizer_ = true;
  int replicas_ = 1;        // replicas every expert has: floor(G S / E)
  int extra_replicas_ = 0;  // experts 0 .. G S mod E - 1 have one more (the spare slots)
  int group_gpus_ = 1;
  std::vector<std::vector<int>> replica_slots_;  // [expert] -> its slots, ascending
  // The slot of each (source, expert) for `gpus` sources, [src * E + e]: computed once (a 64-bit
  // division each), not in every layer of every iteration.
  const std::vector<int>& target_slots(int gpus) {
    if (target_gpus_ == gpus) return target_slots_;
    const int E = ctx_.experts;
    target_slots_.assign(static_cast<std::size_t>(gpus) * E, 0);
    for (int src = 0; src < gpus; ++src)
      for (int e = 0; e < E; ++e) {
        // Expert e's replicas take its sources in contiguous blocks: source src sends to
        // replica floor(src r_e / G), which is its own group's copy under whole groups.
        const std::vector<int>& reps = replica_slots_[static_cast<std::size_t>(e)];
        const auto r_e = static_cast<std::int64_t>(reps.size());
        target_slots_[static_cast<std::size_t>(src) * E + e] =
            reps[static_cast<std::size_t>(static_cast<std::int64_t>(src) * r_e / gpus)];
      }
    target_gpus_ = gpus;
    return target_slots_;
  }
  int target_gpus_ = -1;
  std::vector<int> target_slots_;
};

}  // namespace

PolicyInfo moesim_policy_static() {
  return {"static",
          "DeepSpeed-MoE static expert parallelism: fixed placement, r replicas (spare slots: round-robin "
          "extra replicas), capacity-factor drops "
          "(Rajbhandari et al., ICML 2022)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<StaticPolicy>(ctx, p);
          }};
}

}  // namespace moesim

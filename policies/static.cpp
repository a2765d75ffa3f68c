// Static expert parallelism with capacity-factor token dropping, as in DeepSpeed-MoE (Rajbhandari
// et al., ICML 2022) and GShard/Switch: the placement never changes. With G*S slots for E
// experts, r = G*S/E replicas: GPUs form r expert-parallel groups of E/S GPUs, each group holds
// every expert once, and a source GPU sends only to its own group (expert-data parallelism; the
// replicas all-reduce their gradients).
#include <fmt/format.h>

#include <algorithm>

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
    if (slots < ctx.experts || slots % ctx.experts != 0) {
      p.fail("", fmt::format("static placement needs the {} slots ({} GPUs x {} slots) to be a multiple of "
                             "the {} experts",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    replicas_ = slots / ctx.experts;
    group_gpus_ = ctx.gpus / replicas_;
    if (ctx.gpus % replicas_ != 0 || ctx.experts % ctx.slots_per_gpu != 0) {
      p.fail("", fmt::format("static placement needs experts ({}) divisible by slots_per_gpu ({}) so that "
                             "each expert-parallel group holds every expert once",
                             ctx.experts, ctx.slots_per_gpu));
    }
  }

  [[nodiscard]] std::string name() const override { return "static"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    std::vector<int> layout(pl.num_slots());
    // Group j = GPUs [j*group_gpus, (j+1)*group_gpus); expert e on GPU j*group_gpus + e/S.
    for (int slot = 0; slot < pl.num_slots(); ++slot) layout[slot] = slot % ctx_.experts;
    pl.expert_of_slot.assign(ctx_.moe_layers, layout);
    return pl;
  }

  void dispatch(int /*layer*/, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int E = ctx_.experts, S = pl.slots_per_gpu, slots = pl.num_slots();
    out.reset(pl.gpus, slots);
    std::int64_t cap = deepspeed_capacity(ctx_.tokens_per_gpu, ctx_.top_k, E, capacity_factor_, min_capacity_);
    for (int group = 0; group < replicas_; ++group) {
      const int first = group * group_gpus_;
      if (!drop_tokens_) {
        // Dropless but padded: the capacity is the largest count any source of the group has
        // for any expert (DeepSpeed all-reduces this maximum over the expert-parallel group).
        cap = 0;
        for (int src = first; src < first + group_gpus_; ++src)
          for (int e = 0; e < E; ++e) cap = std::max(cap, counts[static_cast<std::size_t>(src) * E + e]);
      }
      for (int src = first; src < first + group_gpus_; ++src) {
        for (int e = 0; e < E; ++e) {
          const std::int64_t n = counts[static_cast<std::size_t>(src) * E + e];
          const int slot = first * S + e;  // expert e of this group
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
            {"expert_parallel_group_gpus", group_gpus_}};
  }

 private:
  double capacity_factor_ = 1.0;
  std::int64_t min_capacity_ = 4;
  bool drop_tokens_ = true;
  bool shard_optimizer_ = true;
  int replicas_ = 1;
  int group_gpus_ = 1;
};

}  // namespace

PolicyInfo moesim_policy_static() {
  return {"static",
          "DeepSpeed-MoE static expert parallelism: fixed placement, r replicas, capacity-factor drops "
          "(Rajbhandari et al., ICML 2022)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<StaticPolicy>(ctx, p);
          }};
}

}  // namespace moesim

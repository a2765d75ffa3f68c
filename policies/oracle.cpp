// Oracle: perfect balance with no movement cost, a lower bound that shows each policy's headroom.
// Not a published system. Tokens are treated as fungible: every GPU processes exactly its share
// of a layer's assignments (total / G, the remainder one each to the lowest GPUs), nothing is
// dropped or padded, every source sends 1/G of its own assignments to each GPU (a uniform
// all-to-all of the real counts, 1/G staying local), and no placement ever changes.
//
// The placement is static's (slot j holds expert j mod E: each expert once, or r = G*S/E times
// in expert-parallel groups) and only serves the sync plan, which by default is static's too
// (ZeRO-1 sharding over the replicas), so the oracle differs from `static` only in its dispatch.
// The dispatch ignores the placement: it is the one policy whose slots receive tokens of other
// experts.
#include <fmt/format.h>

#include "policies/registry.hpp"

namespace moesim {
namespace {

class OraclePolicy final : public Policy {
 public:
  OraclePolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // Same default as `static` (DeepSpeed ZeRO-1 over an expert's replicas), so that the bound
    // is charged the same gradient synchronisation as the static baseline.
    shard_optimizer_ = p.get_bool("shard_optimizer", true);
    // false: a looser bound without the expert gradient collectives (the optimizer step stays).
    charge_gradient_sync_ = p.get_bool("charge_gradient_sync", false);
    if (ctx.gpus * ctx.slots_per_gpu < ctx.experts) {
      p.fail("", fmt::format("oracle needs at least one slot per expert: {} GPUs x {} slots < {} experts",
                             ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
  }

  [[nodiscard]] std::string name() const override { return "oracle"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    std::vector<int> layout(static_cast<std::size_t>(pl.num_slots()));
    for (int slot = 0; slot < pl.num_slots(); ++slot)
      layout[static_cast<std::size_t>(slot)] = slot % ctx_.experts;
    pl.expert_of_slot.assign(static_cast<std::size_t>(ctx_.moe_layers), layout);
    return pl;
  }

  // The layer's assignments, taken source by source, are dealt round-robin: the p-th one goes to
  // GPU p mod G and, within it, to slot (p / G) mod S. Every GPU thus gets total / G (+1 for the
  // first total mod G GPUs), every slot total / (G S) within one, and every source sends each GPU
  // n_src / G within one.
  void dispatch(int /*layer*/, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int E = ctx_.experts, G = pl.gpus, S = pl.slots_per_gpu, slots = pl.num_slots();
    out.reset(G, slots);
    const std::int64_t GS = static_cast<std::int64_t>(G) * S;
    std::int64_t pos = 0;  // position of the source's first assignment in the layer's sequence
    for (int src = 0; src < G; ++src) {
      std::int64_t n = 0;
      for (int e = 0; e < E; ++e) n += counts[static_cast<std::size_t>(src) * E + e];
      out.routed += n;
      // Positions [pos, pos + n): position q maps to GPU q mod G, slot (q / G) mod S, i.e. to
      // r = q mod GS with slot index (r mod G) * S + r / G. Each r gets n / GS, plus one for
      // the n mod GS residues that follow pos mod GS.
      const std::int64_t base = n / GS, extra = n % GS, start = pos % GS;
      for (std::int64_t r = 0; r < GS; ++r) {
        const std::int64_t offset = (r - start + GS) % GS;
        const std::int64_t v = base + (offset < extra ? 1 : 0);
        if (v == 0) continue;
        const std::int64_t slot = (r % G) * S + r / G;
        const std::size_t idx = static_cast<std::size_t>(src) * slots + static_cast<std::size_t>(slot);
        out.accepted[idx] += v;
        out.buffered[idx] += v;
      }
      pos += n;
    }
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts&, const Placement&) override {
    return {};
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    SyncPlan plan = default_sync_plan(ctx_, current, shard_optimizer_);
    if (!charge_gradient_sync_) {
      plan.replica_allreduce = false;
      plan.copy_allreduce = false;
      plan.grad_collectives.clear();
      plan.post_collectives.clear();
    }
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"shard_optimizer", shard_optimizer_}, {"charge_gradient_sync", charge_gradient_sync_}};
  }

 private:
  bool shard_optimizer_ = true;
  bool charge_gradient_sync_ = false;
};

}  // namespace

PolicyInfo moesim_policy_oracle() {
  return {"oracle",
          "Lower bound: every GPU processes exactly 1/G of each layer's assignments, uniform all-to-all, no "
          "drops, "
          "no movements (not a published system)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<OraclePolicy>(ctx, p);
          }};
}

}  // namespace moesim

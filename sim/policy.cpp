#include "sim/policy.hpp"

#include <algorithm>

namespace moesim {

std::vector<int> Placement::replicas(int layer, int expert) const {
  std::vector<int> out;
  const auto& slots = expert_of_slot[layer];
  for (int s = 0; s < static_cast<int>(slots.size()); ++s)
    if (slots[s] == expert) out.push_back(s);
  return out;
}

SyncPlan Policy::sync_plan(int /*iteration*/, const Placement& current, const Placement& /*next*/) {
  return default_sync_plan(ctx_, current, false);
}

SyncPlan default_sync_plan(const PolicyContext& ctx, const Placement& placement, bool shard_over_replicas) {
  SyncPlan plan;
  const int nodes = ctx.cluster->nodes;
  plan.resize(ctx.gpus, nodes);
  plan.replica_allreduce = !shard_over_replicas;
  const bool offload = ctx.training->optimizer_offload;
  const int S = placement.slots_per_gpu;
  const int wbytes = dtype_bytes(ctx.model->dtype);
  for (const auto& layer : placement.expert_of_slot) {
    std::vector<std::vector<int>> holders(ctx.experts);
    for (int sl = 0; sl < static_cast<int>(layer.size()); ++sl) {
      const int e = layer[sl];
      if (e < 0) continue;
      const int g = sl / S;
      if (holders[e].empty() || holders[e].back() != g) holders[e].push_back(g);
    }
    for (int e = 0; e < ctx.experts; ++e) {
      auto& h = holders[e];
      if (h.empty()) continue;
      std::sort(h.begin(), h.end());
      h.erase(std::unique(h.begin(), h.end()), h.end());
      const double share = shard_over_replicas ? ctx.expert_params / static_cast<double>(h.size()) : ctx.expert_params;
      if (shard_over_replicas && h.size() > 1) {
        plan.grad_collectives.push_back({Collective::ReduceScatter, ctx.expert_grad_bytes, h, "expert gradients"});
        plan.post_collectives.push_back({Collective::AllGather, ctx.expert_weight_bytes, h, "expert weights"});
      }
      for (int g : h) {
        if (offload) {
          plan.host_optimizer_params[ctx.cluster->node_of(g)] += share;
          plan.d2h_bytes[g] += share * ctx.training->grad_bytes_per_param;
          plan.h2d_bytes[g] += share * wbytes;
        } else {
          plan.gpu_optimizer_params[g] += share;
        }
      }
    }
  }
  return plan;
}

}  // namespace moesim

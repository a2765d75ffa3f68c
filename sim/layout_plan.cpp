#include "sim/layout_plan.hpp"

#include <algorithm>

namespace moesim {

ClusterSpec group_cluster(const ClusterSpec& cluster, int ep, int etp) {
  ClusterSpec c = cluster;
  c.gpus_per_node = std::min(ep, cluster.gpus_per_node / etp);
  c.nodes = std::max(1, ep * etp / cluster.gpus_per_node);
  c.topology.reset();  // an explicit graph describes the whole cluster, not a group of it
  return c;
}

GroupPlanMap::GroupPlanMap(const LayoutGroups& groups, const ClusterSpec& cluster)
    : groups_(groups), cluster_(cluster),
      group_gpus_per_node_(
          std::min(groups.layout().expert, cluster.gpus_per_node / groups.layout().expert_tensor)) {}

Endpoint GroupPlanMap::endpoint(int stage, int copy, Endpoint e) const {
  if (!e.host) return Endpoint{false, global_gpu(stage, copy, e.index)};
  return Endpoint{true, cluster_.node_of(global_gpu(stage, copy, e.index * group_gpus_per_node_))};
}

std::vector<int> GroupPlanMap::union_of(int stage, int etp_rank, const std::vector<int>& gpus) const {
  std::vector<int> out;
  const int etp = groups_.layout().expert_tensor;
  for (int k = etp_rank; k < groups_.ep_groups_per_stage(); k += etp)
    for (int g : gpus) out.push_back(global_gpu(stage, k, g));
  std::sort(out.begin(), out.end());
  return out;
}

void GroupPlanMap::add_sync(int stage, const SyncPlan& local, SyncPlan& global) const {
  const int copies = groups_.ep_groups_per_stage();
  if (global.gpu_optimizer_params.empty()) global.resize(groups_.gpus(), cluster_.nodes);
  if (global.decision_ns.empty() && !local.decision_ns.empty())
    global.decision_ns.assign(static_cast<std::size_t>(groups_.gpus()), 0);
  global.replica_allreduce = local.replica_allreduce;
  global.copy_allreduce = local.copy_allreduce;
  const int etp = groups_.layout().expert_tensor;
  auto ops = [&](const std::vector<CollectiveOp>& from, std::vector<CollectiveOp>& to) {
    for (const CollectiveOp& op : from)
      for (int t = 0; t < etp; ++t) {
        CollectiveOp g = op;
        g.gpus = union_of(stage, t, op.gpus);
        g.bytes = op.bytes / etp;
        to.push_back(std::move(g));
      }
  };
  ops(local.pre_collectives, global.pre_collectives);
  ops(local.grad_collectives, global.grad_collectives);
  ops(local.post_collectives, global.post_collectives);
  // With ZeRO >= 1 an expert's optimizer state is sharded over its expert-data-parallel copies
  // (DeepSpeed-MoE and Megatron-Core's distributed optimizer): each copy keeps 1/copies of it.
  // With expert_tensor each of the etp ranks of a group GPU holds 1/etp of its experts' state,
  // and moves 1/etp of what the plan moves.
  const double shard = groups_.layout().zero_stage >= 1 ? 1.0 / copies : 1.0 / etp;
  for (int k = 0; k < copies; ++k) {
    for (const Transfer& t : local.gradient_transfers)
      global.gradient_transfers.push_back(Transfer{endpoint(stage, k, t.src), endpoint(stage, k, t.dst), t.bytes / etp});
    for (const Transfer& t : local.weight_transfers)
      global.weight_transfers.push_back(Transfer{endpoint(stage, k, t.src), endpoint(stage, k, t.dst), t.bytes / etp});
    for (std::size_t j = 0; j < local.gpu_optimizer_params.size(); ++j) {
      const auto g = static_cast<std::size_t>(global_gpu(stage, k, static_cast<int>(j)));
      global.gpu_optimizer_params[g] += local.gpu_optimizer_params[j] * shard;
      if (j < local.d2h_bytes.size()) global.d2h_bytes[g] += local.d2h_bytes[j] * shard;
      if (j < local.h2d_bytes.size()) global.h2d_bytes[g] += local.h2d_bytes[j] * shard;
      if (j < local.decision_ns.size()) global.decision_ns[g] = local.decision_ns[j];
    }
    for (std::size_t n = 0; n < local.host_optimizer_params.size(); ++n) {
      const Endpoint h = endpoint(stage, k, Endpoint{true, static_cast<int>(n)});
      global.host_optimizer_params[static_cast<std::size_t>(h.index)] += local.host_optimizer_params[n] * shard;
    }
  }
}

void GroupPlanMap::add_movements(int stage, const std::vector<Movement>& local, std::vector<Movement>& global) const {
  const int etp = groups_.layout().expert_tensor;
  for (int k = 0; k < groups_.ep_groups_per_stage(); ++k)
    for (const Movement& m : local) {
      Movement g = m;
      g.transfer.src = endpoint(stage, k, m.transfer.src);
      g.transfer.dst = endpoint(stage, k, m.transfer.dst);
      g.transfer.bytes = m.transfer.bytes / etp;
      global.push_back(std::move(g));
    }
}

}  // namespace moesim

#include "app/staged_policy.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "policies/registry.hpp"

namespace moesim {

namespace {

// Stage `st`'s per-micro-batch work (SyncPlan::micro_batch_*, over its group's GPUs and its
// MoE layers) in every expert-parallel group of the stage, by global GPU and MoE layer: each
// group exchanges and decides on its own GPUs, and moves its 1/etp shard (as add_movements).
void add_micro_batch_work(const GroupPlanMap& map, const LayoutGroups& groups, int st, const std::vector<int>& layers,
                          std::size_t moe_layers, const SyncPlan& local, SyncPlan& global) {
  if (local.micro_batch_collectives.empty() && local.micro_batch_decision_ns.empty() &&
      local.micro_batch_transfers.empty())
    return;
  global.micro_batch_collectives.resize(moe_layers);
  global.micro_batch_decision_ns.resize(moe_layers);
  global.micro_batch_transfers.resize(moe_layers);
  const int copies = groups.ep_groups_per_stage(), etp = groups.layout().expert_tensor;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto l = static_cast<std::size_t>(layers[i]);
    for (int k = 0; k < copies; ++k) {
      if (i < local.micro_batch_collectives.size())
        for (const CollectiveOp& op : local.micro_batch_collectives[i]) {
          CollectiveOp g = op;
          for (int& r : g.gpus) r = map.global_gpu(st, k, r);
          std::sort(g.gpus.begin(), g.gpus.end());
          global.micro_batch_collectives[l].push_back(std::move(g));
        }
      if (i < local.micro_batch_decision_ns.size() && !local.micro_batch_decision_ns[i].empty()) {
        std::vector<TimeNs>& d = global.micro_batch_decision_ns[l];
        d.resize(static_cast<std::size_t>(groups.gpus()), 0);
        for (std::size_t j = 0; j < local.micro_batch_decision_ns[i].size(); ++j)
          d[static_cast<std::size_t>(map.global_gpu(st, k, static_cast<int>(j)))] = local.micro_batch_decision_ns[i][j];
      }
      if (i < local.micro_batch_transfers.size())
        for (const Transfer& t : local.micro_batch_transfers[i])
          global.micro_batch_transfers[l].push_back(
              Transfer{map.endpoint(st, k, t.src), map.endpoint(st, k, t.dst), t.bytes / etp});
    }
  }
}

}  // namespace

std::int64_t tokens_per_source(const Scenario& s) {
  return s.model.tokens_per_gpu() * s.layout.micro_batches / s.layout.tensor;
}

PolicyContext stage_policy_context(const Scenario& s, const LayoutGroups& groups, int stage,
                                   const ClusterSpec& group_cluster) {
  PolicyContext ctx;
  const bool flat = groups.stages() == 1 && groups.ep_groups_per_stage() == 1;
  ctx.cluster = flat ? &s.cluster : &group_cluster;
  ctx.model = &s.model;
  ctx.gpus = groups.layout().expert;
  ctx.slots_per_gpu = s.slots_per_gpu;
  int layers = 0;
  for (int l = 0; l < s.model.layers; ++l)
    if (s.model.is_moe_layer(l) && groups.stage_of_layer(l) == stage) ++layers;
  ctx.moe_layers = layers;
  ctx.experts = s.model.experts;
  ctx.tokens_per_gpu = tokens_per_source(s);
  ctx.top_k = s.model.top_k;
  ctx.training = &s.training;
  ctx.expert_params = s.model.expert_params();
  ctx.expert_weight_bytes = s.model.expert_params() * dtype_bytes(s.model.dtype);
  ctx.expert_grad_bytes = s.model.expert_params() * s.training.grad_bytes_per_param;
  ctx.expert_optimizer_bytes = s.model.expert_params() * s.training.optimizer_bytes_per_param;
  ctx.seed = s.seed;
  return ctx;
}

StagedPolicy::StagedPolicy(const Scenario& s, const LayoutGroups& groups, std::size_t index,
                           const CrossLayerPairs* cross_layer)
    : s_(s), groups_(groups), group_cluster_(group_cluster(s.cluster, groups.layout().expert, groups.layout().expert_tensor)),
      map_(groups, s.cluster), flat_(groups.stages() == 1 && groups.ep_groups_per_stage() == 1) {
  const PolicyEntry& e = s.policies[index];
  stages_.resize(static_cast<std::size_t>(groups.stages()));
  for (int l = 0, moe = 0; l < s.model.layers; ++l)
    if (s.model.is_moe_layer(l)) stages_[static_cast<std::size_t>(groups.stage_of_layer(l))].moe_layers.push_back(moe++);
  for (int st = 0; st < groups.stages(); ++st) {
    Stage& x = stages_[static_cast<std::size_t>(st)];
    x.ctx = stage_policy_context(s, groups, st, group_cluster_);
    // A randomised policy draws differently on each stage, as independent planners would.
    x.ctx.seed = s.seed + static_cast<std::uint64_t>(st);
    if (cross_layer != nullptr && !x.moe_layers.empty()) {
      x.cross_layer = cross_layer->slice(x.moe_layers.front(), static_cast<int>(x.moe_layers.size()));
      x.ctx.cross_layer = &x.cross_layer;
    }
    Cfg p(e.params, e.origin, fmt::format("policies[{}]", index));
    x.policy = make_policy(x.ctx, p);
  }
  dispatch_.resize(static_cast<std::size_t>(s.model.num_moe_layers()));
  for (GroupDispatch& d : dispatch_) d.resize(static_cast<std::size_t>(groups.ep_groups_per_stage()));
}

void StagedPolicy::begin() {
  for (Stage& x : stages_) {
    x.placement = x.policy->initial_placement();
  }
  rebuild_placement();
  pending_.clear();
}

void StagedPolicy::rebuild_placement() {
  if (flat_) {
    const Stage& x = stages_.front();
    placement_ = x.in_iteration ? x.run_on : x.placement;
    return;
  }
  placement_.gpus = groups_.layout().expert;
  placement_.slots_per_gpu = s_.slots_per_gpu;
  placement_.expert_of_slot.assign(dispatch_.size(), {});
  for (const Stage& x : stages_)
    for (std::size_t i = 0; i < x.moe_layers.size(); ++i)
      placement_.expert_of_slot[static_cast<std::size_t>(x.moe_layers[i])] =
          (x.in_iteration ? x.run_on : x.placement).expert_of_slot[i];
}

void StagedPolicy::plan(int it, const IterationCounts& counts) {
  if (flat_) {
    Stage& x = stages_.front();
    x.in_iteration = x.policy->plan_in_iteration(it, counts, x.placement, x.run_on);
    if (x.in_iteration) rebuild_placement();
    const Placement& current = x.in_iteration ? x.run_on : x.placement;
    for (int l = 0; l < x.ctx.moe_layers; ++l) x.policy->dispatch(l, counts.layer_ptr(l), current, dispatch_[l][0]);
    // The policy sees this iteration's counts and decides the next placement; the sync plan
    // says how this iteration's gradients and weights flow (possibly to the new placement).
    x.decision = x.policy->after_iteration(it, counts, current);
    const Placement& next = x.decision.new_placement ? x.decision.placement : x.placement;
    sync_ = x.policy->sync_plan(it, current, next);
    return;
  }
  const int ep = groups_.layout().expert, copies = groups_.ep_groups_per_stage(), E = s_.model.experts;
  sync_ = SyncPlan{};
  bool in_iteration = false;
  for (std::size_t st = 0; st < stages_.size(); ++st) {
    Stage& x = stages_[st];
    x.counts.reset(TraceShape{static_cast<int>(x.moe_layers.size()), ep, E});
    for (std::size_t i = 0; i < x.moe_layers.size(); ++i) {
      const std::int64_t* c = counts.layer_ptr(x.moe_layers[i]);
      for (int k = 0; k < copies; ++k) {
        const std::int64_t* group = c + static_cast<std::size_t>(k) * ep * E;
        for (int j = 0; j < ep; ++j)
          for (int e = 0; e < E; ++e) x.counts.at(static_cast<int>(i), j, e) += group[static_cast<std::size_t>(j) * E + e];
      }
    }
    // A plan inside the iteration sees the stage's counts summed over its groups, as
    // after_iteration does: the placement is the same in every group.
    x.in_iteration = x.policy->plan_in_iteration(it, x.counts, x.placement, x.run_on);
    in_iteration = in_iteration || x.in_iteration;
    const Placement& current = x.in_iteration ? x.run_on : x.placement;
    for (std::size_t i = 0; i < x.moe_layers.size(); ++i) {
      const int l = x.moe_layers[i];
      const std::int64_t* c = counts.layer_ptr(l);
      for (int k = 0; k < copies; ++k)
        x.policy->dispatch(static_cast<int>(i), c + static_cast<std::size_t>(k) * ep * E, current,
                           dispatch_[static_cast<std::size_t>(l)][static_cast<std::size_t>(k)]);
    }
    x.decision = x.policy->after_iteration(it, x.counts, current);
    const Placement& next = x.decision.new_placement ? x.decision.placement : x.placement;
    const SyncPlan local = x.policy->sync_plan(it, current, next);
    map_.add_sync(static_cast<int>(st), local, sync_);
    add_micro_batch_work(map_, groups_, static_cast<int>(st), x.moe_layers, dispatch_.size(), local, sync_);
  }
  if (in_iteration) rebuild_placement();
}

void StagedPolicy::commit() {
  bool changed = false;
  pending_.clear();
  for (std::size_t st = 0; st < stages_.size(); ++st) {
    Stage& x = stages_[st];
    changed = changed || x.in_iteration;  // back to the placement the policy keeps
    x.in_iteration = false;
    if (x.decision.new_placement) {
      x.placement = std::move(x.decision.placement);
      changed = true;
    }
    if (flat_) pending_ = std::move(x.decision.movements);
    else map_.add_movements(static_cast<int>(st), x.decision.movements, pending_);
  }
  if (changed) rebuild_placement();
}

}  // namespace moesim

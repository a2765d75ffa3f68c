#pragma once
// A policy plans for one expert-parallel group of one pipeline stage (GPUs 0 .. ep - 1, the
// group's nodes); every expert-data-parallel copy of the group runs the same plan on its own
// GPUs. These functions carry such a plan to global ranks: transfers, optimizer placement and
// decision time are repeated in every copy; collectives over the group's GPUs become one
// collective over the same ranks of every copy, since an expert's gradients and updated weights
// are reduced across all its copies (Megatron-Core's expert-data-parallel group). With
// expert_tensor etp > 1 each group GPU is etp GPUs holding 1/etp of its experts: every transfer,
// collective and optimizer share is split into etp shards, one per etp rank.
#include <vector>

#include "models/specs.hpp"
#include "sim/layout.hpp"
#include "sim/policy.hpp"

namespace moesim {

// The cluster as one expert-parallel group sees it: `ep` GPUs on ep x etp / gpus_per_node nodes
// (gpus_per_node / etp of them a node), or part of one node (its host then serves the group's
// GPUs only). Per-GPU figures are unchanged: with etp > 1 a group GPU stands for etp GPUs that
// split its experts, whose transfers GroupPlanMap splits into etp shards.
[[nodiscard]] ClusterSpec group_cluster(const ClusterSpec& cluster, int ep, int etp);

class GroupPlanMap {
 public:
  GroupPlanMap(const LayoutGroups& groups, const ClusterSpec& cluster);
  // Adds stage `stage`'s group plan `local` to `global` (resized for every GPU and node).
  void add_sync(int stage, const SyncPlan& local, SyncPlan& global) const;
  void add_movements(int stage, const std::vector<Movement>& local, std::vector<Movement>& global) const;
  [[nodiscard]] int global_gpu(int stage, int copy, int gpu) const { return groups_.ep_group_rank(stage, copy, gpu); }
  [[nodiscard]] Endpoint endpoint(int stage, int copy, Endpoint e) const;

 private:
  // The ranks of `gpus` in every expert-parallel group of `stage` with etp rank `etp_rank`.
  [[nodiscard]] std::vector<int> union_of(int stage, int etp_rank, const std::vector<int>& gpus) const;
  const LayoutGroups& groups_;
  const ClusterSpec& cluster_;
  int group_gpus_per_node_ = 1;
};

}  // namespace moesim

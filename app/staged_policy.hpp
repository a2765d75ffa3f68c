#pragma once
// One placement policy under a parallel layout: an instance per pipeline stage, each planning
// for one expert-parallel group of its stage over that stage's MoE layers, its plan repeated in
// every expert-data-parallel copy of the group (sim/layout_plan.hpp). Without pipeline stages
// and with one expert-parallel group over the cluster this is the policy itself, unchanged.
#include <memory>
#include <vector>

#include "app/scenario.hpp"
#include "sim/layout_plan.hpp"
#include "sim/policy.hpp"

namespace moesim {

// The context of a policy planning for one expert-parallel group of `stage`: the group's GPUs
// and nodes (`group_cluster`, which must outlive it), the stage's MoE layers and the tokens each
// source routes per iteration.
[[nodiscard]] PolicyContext stage_policy_context(const Scenario& s, const LayoutGroups& groups, int stage,
                                                 const ClusterSpec& group_cluster);
// Tokens one source GPU routes through one MoE layer per iteration: all micro-batches of its
// data-parallel rank, 1/tensor of each with sequence parallelism.
[[nodiscard]] std::int64_t tokens_per_source(const Scenario& s);

class StagedPolicy {
 public:
  // Builds the policy of entry `index` for every stage (errors in its parameters are InputErrors).
  // `cross_layer`: the trace's pair profile over all MoE layers (nullptr: none); each stage's
  // policy sees the part over its own layers.
  StagedPolicy(const Scenario& s, const LayoutGroups& groups, std::size_t index,
               const CrossLayerPairs* cross_layer = nullptr);

  [[nodiscard]] Policy& first() { return *stages_.front().policy; }
  // Starts a run: every stage's initial placement, nothing pending.
  void begin();
  // Dispatches `counts` ([MoE layer][stage rank][expert]) of iteration `it` and asks every stage
  // for its decision and sync plan.
  void plan(int it, const IterationCounts& counts);
  // The placement this iteration runs on, every MoE layer, one expert-parallel group's view.
  [[nodiscard]] const Placement& placement() const { return placement_; }
  [[nodiscard]] const std::vector<GroupDispatch>& dispatch() const { return dispatch_; }
  // Movements decided after the previous iteration and charged in this one (global GPUs).
  [[nodiscard]] const std::vector<Movement>& pending() const { return pending_; }
  [[nodiscard]] const SyncPlan& sync() const { return sync_; }
  // Applies the decisions of plan(): next placement, next movements.
  void commit();

 private:
  struct Stage {
    PolicyContext ctx;
    std::unique_ptr<Policy> policy;
    std::vector<int> moe_layers;  // global MoE layer indices, ascending
    Placement placement;
    PolicyDecision decision;
    IterationCounts counts;         // summed over the stage's expert-parallel groups
    CrossLayerPairs cross_layer;    // over the stage's MoE layers (consecutive ones)
    Placement run_on;               // this iteration's, when the policy planned in it
    bool in_iteration = false;      // Policy::plan_in_iteration said so
  };
  void rebuild_placement();

  const Scenario& s_;
  const LayoutGroups& groups_;
  ClusterSpec group_cluster_;
  GroupPlanMap map_;
  bool flat_;
  std::vector<Stage> stages_;
  Placement placement_;
  std::vector<GroupDispatch> dispatch_;
  std::vector<Movement> pending_;
  SyncPlan sync_;
};

}  // namespace moesim

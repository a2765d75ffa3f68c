#pragma once
// Fully sharded experts, shared by Hecate / FSSDP (policies/hecate.cpp) and LAER-MoE / FSEP
// (policies/laer.cpp). Every expert's parameters and optimizer state live as shards on GPUs (its
// *owners*); the replicas an iteration computes with are not state of their own but are
// materialised from the shards each iteration (a sparse all-gather: every owner sends its part of
// the expert to every GPU holding a replica), and their gradients go back to the owners (a sparse
// reduce-scatter: every holder sends each owner that owner's part). Re-placing replicas therefore
// moves no optimizer state; only changing the owners (re-sharding) does.
//
// Also here: the replica placement both systems use (spread an expert's replicas over nodes
// first, then onto the least-loaded GPU) and LAER's candidate replica counts and cost.
#include <cstdint>
#include <vector>

#include "sim/policy.hpp"

namespace moesim::sharded {

// A part of one expert held by one GPU: `fraction` of its parameters and optimizer state.
struct Shard {
  int gpu = 0;
  double fraction = 0.0;
};

// The owners of every (layer, expert), GPUs ascending, fractions summing to 1.
struct ShardMap {
  int experts = 0;
  std::vector<std::vector<Shard>> owners;  // [layer * experts + expert]

  [[nodiscard]] const std::vector<Shard>& of(int layer, int expert) const {
    return owners[static_cast<std::size_t>(layer) * experts + expert];
  }
  [[nodiscard]] int layers() const { return experts == 0 ? 0 : static_cast<int>(owners.size()) / experts; }
  // Expert parameters' worth (in experts) each GPU owns, summed over layers and experts.
  [[nodiscard]] std::vector<double> experts_owned(int gpus) const;
};

// Every expert split evenly over all `gpus` GPUs (1/G each): FSDP's even sharding.
[[nodiscard]] ShardMap uniform_shards(int layers, int experts, int gpus);
// Heterogeneous sharding: each expert split evenly over the distinct GPUs holding a replica of it
// in `p`, so that a hot expert (many replicas) is spread over many owners and a replica finds its
// own part locally; an expert held nowhere is split over all GPUs.
[[nodiscard]] ShardMap replica_shards(const Placement& p, int experts);

// Distinct GPUs holding each expert of `layer` in `p`, ascending.
[[nodiscard]] std::vector<std::vector<int>> holder_gpus(const Placement& p, int layer, int experts);

// The layout of one layer ([gpu * slots_per_gpu + s] -> expert, -1 empty) for `count[e]`
// replicas of each expert (sum at most gpus * slots_per_gpu), replica weight load[e] / count[e].
// Replicas are placed heaviest first (ties: lower expert), each on the GPU with a free slot that
// minimises, in this order: already holding the expert (no before yes), the replicas of the
// expert on the GPU's node (spread across nodes first), the weight already placed on the GPU
// (least loaded), the GPU index. Each GPU's slots fill in order.
[[nodiscard]] std::vector<int> spread_placement(const std::vector<double>& load, const std::vector<int>& count,
                                                int gpus, int slots_per_gpu, int gpus_per_node);

// The sync plan of a fully sharded iteration that ran on `current` and whose next iteration runs
// on `next`, with owners `shards`:
//  - no replica all-reduce; every GPU holding an expert in `current` sends each other owner g its
//    fraction of the expert's gradients (gradient_transfers: the sparse reduce-scatter);
//  - under a parallel layout with expert-data-parallel copies of the group, the copies' owners
//    of the same rank all-reduce their shards' gradients (one grad_collectives entry per owner
//    GPU, of the gradient bytes it owns; GroupPlanMap spans it over the copies), as HSDP shards
//    within a group and replicates across groups; copy_allreduce is off;
//  - each owner steps the Adam state of its fraction: on its GPU, or on its node's host under
//    training.optimizer_offload (gradients down, weights up over PCIe, as default_sync_plan);
//  - each owner sends its fraction of the updated weights to every other GPU holding the expert in
//    `next` (weight_transfers: the sparse all-gather that materialises the next iteration's
//    replicas) and, with `rematerialize`, once more to every GPU holding it in `current` (the
//    gather that rebuilds the replicas freed after the forward pass for the backward pass; the
//    model has no hook before the backward pass, so it is charged here, on the same links).
// Transfers between the same pair of GPUs are merged into one (src, dst ascending).
[[nodiscard]] SyncPlan sharded_sync_plan(const PolicyContext& ctx, const Placement& current, const Placement& next,
                                         const ShardMap& shards, bool rematerialize);

// The movements of optimizer state (and fp32 master weights, both in expert_optimizer_bytes) that
// turn owners `from` into `to`: per (layer, expert), every GPU whose fraction grows receives the
// growth from the GPUs whose fraction shrinks (both in GPU order), GPU to GPU. Under
// training.optimizer_offload the state is on the owners' hosts: nothing moves between GPUs of one
// node, and between nodes the bytes are charged GPU to GPU (the network models no host-to-host
// transfer; the PCIe legs are not charged). Merged per (src, dst).
[[nodiscard]] std::vector<Movement> reshard_moves(const PolicyContext& ctx, const ShardMap& from, const ShardMap& to,
                                                  bool blocking);

// LAER-MoE's planner, on one layer's counts [src][expert] (already averaged over the history
// window) for `gpus` x `slots_per_gpu` slots.
struct LaerCostModel {
  double comm_weight = 4.0;
  double compute_weight = 3.0;
  double token_bytes = 0.0;     // bytes of one dispatched token
  double nic_bps = 1e9;         // one GPU's share of its node's NICs, bytes/s
  double intra_bps = 1e9;       // GPU to GPU inside a node, bytes/s
  double flop_per_token = 0.0;  // one token through one expert, forward (2 x expert parameters)
  double flop_rate = 1e12;      // FLOP/s of one GPU
  int gpus_per_node = 1;
};
struct LaerCost {
  double comm_s = 0.0;     // sum over source GPUs of their dispatch send time
  double compute_s = 0.0;  // the busiest GPU's forward expert compute
  double total_s = 0.0;    // comm_weight * comm_s + compute_weight * compute_s
};
// Cost of `layout` under an even split of each source's tokens of an expert over its replicas:
// GPU g sends c[g][e] / r_e tokens to each replica of e not on g (over the NIC to another node, the
// intra-node link inside its own), and each GPU computes what its slots receive.
[[nodiscard]] LaerCost laer_cost(const std::vector<double>& counts, int experts, const std::vector<int>& layout,
                                 int gpus, int slots_per_gpu, const LaerCostModel& m);
// The candidate replica-count vectors, in the order they are tried (duplicates removed, the first
// kept): uniform (floor(G S / E) each, the rest one each to the heaviest experts, ties: lower
// index); the heap (one replica each, then every further slot to the largest load per replica:
// EPLB's replication); then `perturbations` variants of the heap: the i-th moves one replica from
// the i-th lightest expert by load per replica among those with more than one to the i-th
// heaviest (skipped when that is the same expert or there is no such donor).
[[nodiscard]] std::vector<std::vector<int>> laer_candidates(const std::vector<double>& load, int slots,
                                                            int perturbations);
struct LaerPlan {
  std::vector<int> layout;
  std::vector<int> count;
  int candidate = 0;  // index in laer_candidates' order
  LaerCost cost;
};
// Every candidate placed with spread_placement and costed; the cheapest kept (ties: the first).
[[nodiscard]] LaerPlan laer_plan(const std::vector<double>& counts, int gpus, int experts, int slots_per_gpu,
                                 int perturbations, const LaerCostModel& m);

}  // namespace moesim::sharded

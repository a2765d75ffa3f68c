#pragma once
// The DeepSeek EPLB planner (github.com/deepseek-ai/EPLB, eplb.py), one MoE layer at a time,
// exposed for tests and benchmarks. Written from the algorithm's description: balanced packing,
// replication by load per replica, and the hierarchical (groups -> nodes -> GPUs) or global
// policy. The numbering conventions (which physical index each replica gets) follow the
// reference so that its README example reproduces exactly.
#include <utility>
#include <vector>

namespace moesim::eplb {

// Items assigned to packs: item i goes to pack[i] at position rank[i] (the order in which the
// pack received its items).
struct Packing {
  std::vector<int> pack;
  std::vector<int> rank;
};

// Heaviest item first (ties: lower item index), each to the lightest pack that is not yet full
// (ties: lower pack index); every pack gets exactly n / packs items. As in the reference, when
// n == packs item i simply goes to pack i. Requires n % packs == 0.
[[nodiscard]] Packing balanced_packing(const std::vector<double>& weight, int packs);

// Physical experts for logical ones: physical i < n is logical i; every further physical
// expert replicates the logical expert with the largest load per replica (ties: lower index).
struct Replication {
  std::vector<int> phy2log;  // [physical]
  std::vector<int> rank;     // [physical]: which replica of its logical expert (0 = first)
  std::vector<int> count;    // [logical]: replicas
};
[[nodiscard]] Replication replicate_experts(const std::vector<double>& weight, int physical);

// One layer's plan. Physical expert j lives on GPU j / (physical / gpus).
struct LayerPlan {
  std::vector<int> phy2log;       // [physical]
  std::vector<int> replica_rank;  // [physical]
  std::vector<int> count;         // [logical]
  bool hierarchical = false;      // which policy produced it
};

// The hierarchical policy: whole groups packed onto nodes by group load, replication within
// each node, then the node's physical experts (weight load / replicas) packed onto its GPUs.
// Requires experts % groups == 0, groups % nodes == 0, gpus % nodes == 0, physical % gpus == 0,
// physical >= experts. Throws std::invalid_argument otherwise.
[[nodiscard]] LayerPlan rebalance_hierarchical(const std::vector<double>& weight, int physical, int groups,
                                               int nodes, int gpus);

// EPLB's entry point: the hierarchical policy when groups % nodes == 0, otherwise the global
// policy (the hierarchical one with one group and one node).
[[nodiscard]] LayerPlan rebalance(const std::vector<double>& weight, int physical, int groups, int nodes, int gpus);

// The same planner (identical results) with its working buffers kept between calls, so that
// re-planning every MoE layer allocates nothing after the first layer. The returned plan is
// valid until the next call. Not for concurrent use.
class Planner {
 public:
  const LayerPlan& rebalance_hierarchical(const std::vector<double>& weight, int physical, int groups,
                                          int nodes, int gpus);
  const LayerPlan& rebalance(const std::vector<double>& weight, int physical, int groups, int nodes,
                             int gpus);

  // Buffers of the packing step, shared with balanced_packing.
  struct PackScratch {
    std::vector<double> load;  // [pack]
    std::vector<int> items;    // [pack]: items received so far
    std::vector<int> heap;     // packs that are not full
  };

 private:
  void plan_node(int n, int physical, int gpus);

  LayerPlan plan_;
  Packing group_packing_, gpu_packing_;
  Replication rep_;
  PackScratch pack_scratch_;
  std::vector<double> group_load_, w_, per_phy_, per_replica_, item_weight_;
  std::vector<int> mlog2log_, count_, by_load_, first_, order_, item_expert_, item_rank_;
  std::vector<std::pair<double, int>> rep_heap_;
};

}  // namespace moesim::eplb

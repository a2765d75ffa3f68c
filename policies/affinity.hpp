#pragma once
// What the inter-layer affinity placements (exflow, moetuner) share: a static placement planned
// once from the trace's cross-layer pair profile (sim/routing.hpp, CrossLayerPairs), one copy of
// each expert, ceil(E / G) experts at most per GPU, dropless even dispatch, and tokens that follow
// their experts from layer to layer (LayerDispatch::tokens_follow), so that the tokens whose
// consecutive experts share a GPU cross no link between the two layers.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/policy.hpp"

namespace moesim::affinity {

// Each expert's load per MoE layer from the profile: the row sums of the pair (l, l + 1), or for
// a layer without one the column sums of (l - 1, l); 1 each when neither was recorded.
[[nodiscard]] std::vector<std::vector<double>> profile_loads(const CrossLayerPairs& pairs, int layers, int experts);

// w[j * G + g]: profile weight of pairs (l, l + 1) whose layer-l expert is on GPU g and whose
// layer-(l + 1) expert is j, for the layer-l GPU of each expert `gpu_of`.
[[nodiscard]] std::vector<double> affinity_to_gpus(const std::vector<double>& pair, const std::vector<int>& gpu_of,
                                                   int gpus, int experts);

// Longest processing time first: experts by load, heaviest first (ties to the lower id), each to
// the least-loaded GPU (ties to the lower id) that has fewer than `cap` experts.
[[nodiscard]] std::vector<int> balance_lpt(const std::vector<double>& load, int gpus, int cap);

// Share of the profile's pairs (all layer pairs) whose two experts are on one GPU.
[[nodiscard]] double local_share(const CrossLayerPairs& pairs, const std::vector<std::vector<int>>& gpu_of);

class AffinityPolicy : public Policy {
 public:
  AffinityPolicy(const PolicyContext& ctx, Cfg& p, std::string name);
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] Placement initial_placement() override;
  void dispatch(int layer, const std::int64_t* counts, const Placement& placement, LayerDispatch& out) override;
  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override;
  [[nodiscard]] nlohmann::json parameters() const override;

  // The plan: GPU of each expert per MoE layer (computed once, on first use).
  [[nodiscard]] const std::vector<std::vector<int>>& gpu_of_expert() const;

 protected:
  // The GPU of each expert of every layer, at most cap() a GPU.
  [[nodiscard]] virtual std::vector<std::vector<int>> plan() const = 0;
  [[nodiscard]] virtual nlohmann::json own_parameters() const = 0;
  [[nodiscard]] int cap() const { return cap_; }
  [[nodiscard]] const CrossLayerPairs& pairs() const { return *ctx_.cross_layer; }

 private:
  std::string name_;
  int cap_ = 1;
  bool follow_ = true;
  mutable std::vector<std::vector<int>> gpu_of_;  // the plan, made on first use
};

}  // namespace moesim::affinity

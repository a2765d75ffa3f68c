#pragma once
// Cross-layer pair profiles (sim/routing.hpp, CrossLayerPairs): generated with the synthetic
// trace's popularity and an affinity, or read from a long CSV such as the OLMoE/Mixtral set in
// shared/data/real/olmoe-routing (docs/trace-format.md, "Cross-layer pairs").
#include <map>
#include <string>
#include <vector>

#include "sim/routing.hpp"
#include "traces/trace.hpp"

namespace moesim {

// The synthetic generator's cross-layer profile. Each expert's partner at the next layer is the
// expert of the same popularity rank there (the generator's base Zipf popularity, before drift);
// an assignment to expert i at layer l is followed at l + 1 by its partner with probability
// `affinity` and otherwise by an expert drawn from layer l + 1's popularity:
//   C_l[i][j] = p_l(i) * (affinity * [j = partner_l(i)] + (1 - affinity) * p_{l+1}(j)).
// affinity 0: independent layers; 1: every token path stays on one chain of partners.
[[nodiscard]] CrossLayerPairs synthetic_cross_layer(const TraceShape& shape, const SyntheticTraceSpec& spec,
                                                    double affinity);

// The synthetic generator's base log-popularity, [layer][expert] (its seed's Zipf permutation).
[[nodiscard]] std::vector<double> synthetic_base_logp(const TraceShape& shape, const SyntheticTraceSpec& spec);

struct CrossLayerCsvOptions {
  int layers = 0;   // MoE layers of the scenario
  int experts = 0;  // experts per layer
  std::map<std::string, std::string> select;  // selector columns pinned to one value each
  // true: the recorded layer ids (of `layer` and `next_layer`), in increasing order, become MoE
  // layers 0, 1, ... (as the count importers map them), so a recorded pair (0, 7) becomes (0, 1);
  // every pair must then join consecutive recorded layers. false: ids are MoE layers and
  // next_layer must be layer + 1.
  bool map_recorded_layers = false;
};

// Reads `layer,next_layer,expert,next_expert,count` rows (any order, other columns are selectors
// that `select` must leave at one value; repeated cells add up). Errors name the file and line.
[[nodiscard]] CrossLayerPairs load_cross_layer_csv(const std::string& path, const CrossLayerCsvOptions& options);

}  // namespace moesim

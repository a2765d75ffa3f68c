#pragma once
// Shared pieces of the policy unit tests. SingleGpuNodes, a small world: `gpus` single-GPU
// nodes, one routed expert of 1000 parameters (2000 bytes of weights and of gradients, 12000 of
// Adam state), and the policy that the YAML mapping `params` names. `tune`, when given, changes
// the cluster, model or context before the policy is built (tests whose hand-worked numbers need
// other round figures).
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/registry.hpp"
#include "traces/trace.hpp"

namespace moesim::testing {

// What every policy fixture sets alike: `nodes` x `gpus_per_node` GPUs with `slots` each, and
// an expert of 1000 parameters (2000 bytes of weights and of gradients, 12000 of Adam state).
// A fixture sets the rest, then builds the policy with `build`.
struct PolicyWorld {
  ClusterSpec cluster;
  MoeModelSpec model;
  TrainingSpec training;
  PolicyContext ctx;
  std::unique_ptr<Policy> policy;

  PolicyWorld(int nodes, int gpus_per_node, int slots, int experts, int layers, std::int64_t tokens) {
    cluster.nodes = nodes;
    cluster.gpus_per_node = gpus_per_node;
    model.experts = experts;
    ctx.cluster = &cluster;
    ctx.model = &model;
    ctx.training = &training;
    ctx.gpus = nodes * gpus_per_node;
    ctx.slots_per_gpu = slots;
    ctx.moe_layers = layers;
    ctx.experts = experts;
    ctx.tokens_per_gpu = tokens;
    ctx.top_k = 1;
    ctx.expert_params = 1000.0;
    ctx.expert_weight_bytes = 2000.0;
    ctx.expert_grad_bytes = 2000.0;
    ctx.expert_optimizer_bytes = 12000.0;
  }
  // The policy that the YAML mapping `params` names.
  void build(const std::string& params) {
    YAML::Node n = YAML::Load(params);
    Cfg c(n, "test.yaml", "policies[0]");
    policy = make_policy(ctx, c);
  }
  PolicyWorld(const PolicyWorld&) = delete;
  PolicyWorld& operator=(const PolicyWorld&) = delete;
};

struct SingleGpuNodes : PolicyWorld {
  SingleGpuNodes(int gpus, int slots, int experts, int layers, std::int64_t tokens, const std::string& params,
                 const std::function<void(SingleGpuNodes&)>& tune = {})
      : PolicyWorld(gpus, 1, slots, experts, layers, tokens) {
    model.hidden = 100;
    if (tune) tune(*this);
    build(params);
  }
  // Round hardware for hand-worked times: one 8 Gb/s NIC per node at efficiency 1 (1e9 B/s per
  // GPU) and GPUs of 1 TFLOP/s at GEMM efficiency 1.
  void unit_hardware() {
    cluster.nics_per_node = 1;
    cluster.nic_gbit = 8.0;
    cluster.nic_efficiency = 1.0;
    cluster.gpu.peak_tflops = 1.0;
    cluster.gpu.gemm_efficiency = 1.0;
  }
};

// Random counts for the invariant tests: every source sends `tokens` tokens of each layer, each
// to an expert drawn with the weights `weight(layer, expert)` (called in expert order, so a
// weight that draws from `rng` keeps the tests' sequences).
template <class Weight>
[[nodiscard]] IterationCounts drawn_counts(const TraceShape& shape, std::int64_t tokens, std::mt19937_64& rng,
                                           Weight&& weight) {
  IterationCounts ic;
  ic.reset(shape);
  for (int l = 0; l < shape.layers; ++l) {
    std::vector<double> w(shape.experts);
    for (int e = 0; e < shape.experts; ++e) w[e] = weight(l, e);
    std::discrete_distribution<int> pick(w.begin(), w.end());
    for (int g = 0; g < shape.gpus; ++g)
      for (std::int64_t t = 0; t < tokens; ++t) ic.at(l, g, pick(rng))++;
  }
  return ic;
}

// Layer `layer` of `counts` dispatched by `policy` on `pl`, which must count every assignment as
// routed.
[[nodiscard]] inline LayerDispatch dispatch_checked(Policy& policy, int layer, const IterationCounts& counts,
                                                    const Placement& pl) {
  const std::int64_t* c = counts.layer_ptr(layer);
  LayerDispatch d;
  policy.dispatch(layer, c, pl, d);
  std::int64_t routed = 0;
  for (int i = 0; i < counts.shape.gpus * counts.shape.experts; ++i) routed += c[i];
  REQUIRE(d.routed == routed);
  return d;
}

// Whether `dec` re-places; a decision that keeps the placement must move nothing, and a new
// placement keeps the GPUs x slots shape.
[[nodiscard]] inline bool replaced(const PolicyDecision& dec, int gpus, int slots_per_gpu) {
  if (!dec.new_placement) {
    REQUIRE(dec.movements.empty());
    return false;
  }
  REQUIRE(dec.placement.gpus == gpus);
  REQUIRE(dec.placement.slots_per_gpu == slots_per_gpu);
  return true;
}

// The end-to-end smoke run of the re-planning policies: 30 synthetic iterations of a 2-layer
// model on 4 swiftmoe-cloud nodes, `policy` re-planning every 5 iterations (result 0) against
// the same policy frozen by an interval of 1000 (result 1).
[[nodiscard]] inline std::vector<PolicyResult> replanned_and_frozen(const std::string& policy,
                                                                    int slots_per_gpu) {
  const std::string text = fmt::format(R"(
name: {0}-smoke
seed: 5
cluster: {{preset: swiftmoe-cloud, nodes: 4}}
model: {{preset: gpt-small-moe, layers: 2}}
placement: {{slots_per_gpu: {1}}}
trace: {{kind: synthetic, skew: 1.0, drift_sigma: 0.02}}
run: {{max_iterations: 30, stop_at_convergence: false}}
policies:
  - {{name: {0}, interval: 5, label: {0}}}
  - {{name: {0}, interval: 1000, label: frozen}}
)",
                                       policy, slots_per_gpu);
  Scenario s = load_scenario_text(text, "smoke.yaml", {}, std::nullopt);
  auto res = run_scenario(s, RunOptions{false, {}});
  REQUIRE(res.size() == 2);
  REQUIRE_FALSE(res[0].oom);
  CHECK(res[0].iterations_run == 30);
  return res;
}

}  // namespace moesim::testing

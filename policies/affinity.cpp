#include "policies/affinity.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "policies/common.hpp"

namespace moesim::affinity {

std::vector<std::vector<double>> profile_loads(const CrossLayerPairs& pairs, int layers, int experts) {
  const auto E = static_cast<std::size_t>(experts);
  std::vector<std::vector<double>> load(static_cast<std::size_t>(layers), std::vector<double>(E, 0.0));
  for (int l = 0; l < layers; ++l) {
    auto& out = load[static_cast<std::size_t>(l)];
    if (pairs.has(l)) {
      const auto& w = pairs.weight[static_cast<std::size_t>(l)];
      for (std::size_t i = 0; i < E; ++i)
        for (std::size_t j = 0; j < E; ++j) out[i] += w[i * E + j];
    } else if (pairs.has(l - 1)) {
      const auto& w = pairs.weight[static_cast<std::size_t>(l - 1)];
      for (std::size_t i = 0; i < E; ++i)
        for (std::size_t j = 0; j < E; ++j) out[j] += w[i * E + j];
    } else {
      std::fill(out.begin(), out.end(), 1.0);
    }
  }
  return load;
}

std::vector<double> affinity_to_gpus(const std::vector<double>& pair, const std::vector<int>& gpu_of, int gpus,
                                     int experts) {
  const auto E = static_cast<std::size_t>(experts), G = static_cast<std::size_t>(gpus);
  std::vector<double> w(E * G, 0.0);
  for (std::size_t i = 0; i < E; ++i) {
    const auto g = static_cast<std::size_t>(gpu_of[i]);
    for (std::size_t j = 0; j < E; ++j) w[j * G + g] += pair[i * E + j];
  }
  return w;
}

std::vector<int> balance_lpt(const std::vector<double>& load, int gpus, int cap) {
  const std::size_t E = load.size();
  std::vector<std::size_t> order(E);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return load[a] > load[b]; });
  std::vector<double> sum(static_cast<std::size_t>(gpus), 0.0);
  std::vector<int> count(static_cast<std::size_t>(gpus), 0), gpu_of(E, -1);
  for (std::size_t e : order) {
    int best = -1;
    for (int g = 0; g < gpus; ++g)
      if (count[static_cast<std::size_t>(g)] < cap && (best < 0 || sum[static_cast<std::size_t>(g)] < sum[static_cast<std::size_t>(best)]))
        best = g;
    gpu_of[e] = best;
    sum[static_cast<std::size_t>(best)] += load[e];
    ++count[static_cast<std::size_t>(best)];
  }
  return gpu_of;
}

double local_share(const CrossLayerPairs& pairs, const std::vector<std::vector<int>>& gpu_of) {
  const auto E = static_cast<std::size_t>(pairs.experts);
  double local = 0.0, total = 0.0;
  for (std::size_t l = 0; l + 1 < gpu_of.size(); ++l) {
    if (!pairs.has(static_cast<int>(l))) continue;
    const auto& w = pairs.weight[l];
    for (std::size_t i = 0; i < E; ++i)
      for (std::size_t j = 0; j < E; ++j) {
        total += w[i * E + j];
        if (gpu_of[l][i] == gpu_of[l + 1][j]) local += w[i * E + j];
      }
  }
  return total > 0.0 ? local / total : 0.0;
}

AffinityPolicy::AffinityPolicy(const PolicyContext& ctx, Cfg& p, std::string name) : Policy(ctx), name_(std::move(name)) {
  // Tokens go from expert to expert (ExFlow's context-coherent flow); false charges the usual
  // combine and dispatch, to separate the placement from the flow.
  follow_ = p.get_bool("follow_tokens", true);
  if (ctx.cross_layer == nullptr)
    p.fail("", fmt::format("{} plans on cross-layer routing and the trace has none: add trace.cross_layer: "
                           "{{affinity: A}} (synthetic traces) or {{path: PAIRS.csv, select: {{...}}}} "
                           "(docs/trace-format.md, \"Cross-layer pairs\")",
                           name_));
  if (ctx.cross_layer->experts != ctx.experts)
    p.fail("", fmt::format("the cross-layer pairs have {} experts but the model has {}", ctx.cross_layer->experts,
                           ctx.experts));
  cap_ = (ctx.experts + ctx.gpus - 1) / ctx.gpus;
  if (cap_ > ctx.slots_per_gpu)
    p.fail("", fmt::format("{} holds every expert once, {} per GPU, and placement.slots_per_gpu is {}; set it to at "
                           "least {}",
                           name_, cap_, ctx.slots_per_gpu, cap_));
}

const std::vector<std::vector<int>>& AffinityPolicy::gpu_of_expert() const {
  if (gpu_of_.empty()) gpu_of_ = plan();
  return gpu_of_;
}

Placement AffinityPolicy::initial_placement() {
  const auto& plan_gpus = gpu_of_expert();
  Placement pl;
  pl.gpus = ctx_.gpus;
  pl.slots_per_gpu = ctx_.slots_per_gpu;
  pl.expert_of_slot.assign(static_cast<std::size_t>(ctx_.moe_layers), std::vector<int>(pl.num_slots(), -1));
  for (int l = 0; l < ctx_.moe_layers; ++l) {
    std::vector<int> used(static_cast<std::size_t>(ctx_.gpus), 0);
    for (int e = 0; e < ctx_.experts; ++e) {
      const int g = plan_gpus[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)];
      pl.expert_of_slot[static_cast<std::size_t>(l)][static_cast<std::size_t>(g * ctx_.slots_per_gpu + used[static_cast<std::size_t>(g)]++)] = e;
    }
  }
  return pl;
}

void AffinityPolicy::dispatch(int layer, const std::int64_t* counts, const Placement& placement, LayerDispatch& out) {
  dispatch_even(placement, layer, ctx_.experts, counts, EvenDispatchOptions{}, out);
  out.tokens_follow = follow_;
}

PolicyDecision AffinityPolicy::after_iteration(int, const IterationCounts&, const Placement&) { return {}; }

nlohmann::json AffinityPolicy::parameters() const {
  nlohmann::json j = own_parameters();
  j["follow_tokens"] = follow_;
  j["planned_local_share"] = local_share(*ctx_.cross_layer, gpu_of_expert());
  return j;
}

}  // namespace moesim::affinity

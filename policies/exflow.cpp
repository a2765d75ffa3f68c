// ExFlow (Yao et al., "Exploiting Inter-Layer Expert Affinity for Accelerating Mixture-of-Experts
// Model Inference", IPDPS 2024, arXiv 2401.08383): experts that consecutive layers' tokens visit
// together are placed on the same GPU, so fewer tokens change GPU between layers, and tokens
// stay with their experts between layers instead of returning to their sources (one exchange a
// layer instead of two). Reconstruction (shared/reference/policies.md gives the objective, not
// the solver): layer 0 balanced by load (LPT); each next layer greedily takes, for the pairs
// (expert j, GPU g) in decreasing profile weight from the previous layer's experts on g, the ones
// whose expert is unplaced and GPU has room; then pairwise swaps while one keeps more pairs local.
// Balance beyond layer 0 is not an objective (MoETuner's difference).
#include <algorithm>
#include <numeric>
#include <tuple>

#include "policies/affinity.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class ExFlowPolicy final : public affinity::AffinityPolicy {
 public:
  ExFlowPolicy(const PolicyContext& ctx, Cfg& p) : AffinityPolicy(ctx, p, "exflow") {
    swap_passes_ = static_cast<int>(p.get_int("swap_passes", 20, 0, 1000));
  }

  // One layer's GPUs given the affinity w[j * G + g] to the previous layer's GPUs.
  [[nodiscard]] static std::vector<int> place_layer(const std::vector<double>& w, int G, int E, int cap, int passes) {
    std::vector<std::tuple<double, int, int>> cand;
    cand.reserve(static_cast<std::size_t>(E) * G);
    for (int j = 0; j < E; ++j)
      for (int g = 0; g < G; ++g) cand.emplace_back(-w[static_cast<std::size_t>(j) * G + g], j, g);
    std::sort(cand.begin(), cand.end());
    std::vector<int> gpu_of(static_cast<std::size_t>(E), -1), count(static_cast<std::size_t>(G), 0);
    for (const auto& [neg, j, g] : cand) {
      if (gpu_of[static_cast<std::size_t>(j)] >= 0 || count[static_cast<std::size_t>(g)] >= cap) continue;
      gpu_of[static_cast<std::size_t>(j)] = g;
      ++count[static_cast<std::size_t>(g)];
    }
    auto W = [&](int j, int g) { return w[static_cast<std::size_t>(j) * G + g]; };
    for (int pass = 0; pass < passes; ++pass) {
      bool swapped = false;
      for (int a = 0; a < E; ++a)
        for (int b = a + 1; b < E; ++b) {
          const int ga = gpu_of[static_cast<std::size_t>(a)], gb = gpu_of[static_cast<std::size_t>(b)];
          if (ga == gb) continue;
          // Relative margin so that rounding cannot make two swaps undo each other forever.
          const double gain = W(a, gb) + W(b, ga) - W(a, ga) - W(b, gb);
          if (gain > 1e-12 * (W(a, ga) + W(b, gb) + 1e-300)) {
            gpu_of[static_cast<std::size_t>(a)] = gb;
            gpu_of[static_cast<std::size_t>(b)] = ga;
            swapped = true;
          }
        }
      if (!swapped) break;
    }
    return gpu_of;
  }

 protected:
  [[nodiscard]] std::vector<std::vector<int>> plan() const override {
    const int L = ctx_.moe_layers, E = ctx_.experts, G = ctx_.gpus;
    const auto load = affinity::profile_loads(pairs(), L, E);
    std::vector<std::vector<int>> gpu_of(static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      if (l == 0 || !pairs().has(l - 1)) {
        gpu_of[static_cast<std::size_t>(l)] = affinity::balance_lpt(load[static_cast<std::size_t>(l)], G, cap());
        continue;
      }
      const auto w = affinity::affinity_to_gpus(pairs().weight[static_cast<std::size_t>(l - 1)],
                                                gpu_of[static_cast<std::size_t>(l - 1)], G, E);
      gpu_of[static_cast<std::size_t>(l)] = place_layer(w, G, E, cap(), swap_passes_);
    }
    return gpu_of;
  }
  [[nodiscard]] nlohmann::json own_parameters() const override { return {{"swap_passes", swap_passes_}}; }

 private:
  int swap_passes_ = 20;
};

}  // namespace

PolicyInfo moesim_policy_exflow() {
  return {"exflow",
          "ExFlow (IPDPS 2024, arXiv 2401.08383): inter-layer affinity placement, tokens follow their experts between "
          "layers",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> { return std::make_unique<ExFlowPolicy>(ctx, p); }};
}

}  // namespace moesim

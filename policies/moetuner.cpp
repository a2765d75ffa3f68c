// MoETuner (Go and Mahajan, "MoETuner: Optimized Mixture of Expert Serving with Balanced Expert
// Placement and Token Routing", arXiv 2502.06643): a two-stage integer program over a routing
// profile. Stage 1, per layer: group the experts into one group per GPU (at most ceil(E / G)
// each) so that the heaviest group's token load is least. Stage 2, layer by layer: assign each
// layer's groups to GPUs so that the most cross-layer pairs (tokens at expert a of layer l and
// b of layer l + 1) stay on one GPU, given the previous layer's assignment. Both are solved with
// GLPK (policies/ilp.hpp) under a time limit; a program that hits it is replaced by a greedy
// plan (stage 1: LPT; stage 2: pairs by decreasing weight), reported in summary.json
// (`ilp_fallbacks`) and on stderr. Tokens follow their experts between layers, as in exflow.
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <numeric>
#include <tuple>

#include "policies/affinity.hpp"
#include "policies/ilp.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class MoETunerPolicy final : public affinity::AffinityPolicy {
 public:
  MoETunerPolicy(const PolicyContext& ctx, Cfg& p) : AffinityPolicy(ctx, p, "moetuner") {
    // Assumptions (the paper's solver settings were not available): 2 s per program and a 1 %
    // relative gap; a planner run offline before training can afford more (raise them).
    // 0: no programs, the greedy plan only (reported as a fallback like a program that timed out).
    time_limit_ms_ = static_cast<int>(p.get_int("time_limit_ms", 2000, 0, 3600000));
    mip_gap_ = p.get_double("mip_gap", 0.01, 0.0, 1.0);
    // Subproblems branch and bound may select before it stops with its best solution: a limit
    // that, unlike time, gives the same plan on every machine (assumption, like the two above).
    node_limit_ = static_cast<int>(p.get_int("node_limit", 200, 1, 100000000));
  }

  // Stage 1: the group of each expert (groups 0..G-1, at most `cap` experts each).
  [[nodiscard]] std::vector<int> balance_groups(const std::vector<double>& load, int G, int cap, int layer) const {
    const int E = static_cast<int>(load.size());
    if (cap == 1) return affinity::balance_lpt(load, G, cap);  // one expert a group: nothing to balance
    std::vector<int> order(static_cast<std::size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return load[static_cast<std::size_t>(a)] > load[static_cast<std::size_t>(b)]; });
    double mean = 0.0;
    for (double x : load) mean += x;
    mean = mean > 0.0 ? mean / E : 1.0;
    ilp::Program prog;
    // x[r][g] for the r-th heaviest expert and g <= r: groups are interchangeable, so the r-th
    // expert need not try a group after the first r + 1 (symmetry breaking).
    std::vector<std::vector<std::pair<int, int>>> vars(static_cast<std::size_t>(E));  // (group, variable)
    for (int r = 0; r < E; ++r)
      for (int g = 0; g <= std::min(r, G - 1); ++g) vars[static_cast<std::size_t>(r)].emplace_back(g, prog.add_var(true, 0.0));
    const int z = prog.add_var(false, 1.0);
    std::vector<ilp::Program::Row> cap_rows(static_cast<std::size_t>(G)), load_rows(static_cast<std::size_t>(G));
    for (int r = 0; r < E; ++r) {
      ilp::Program::Row one;
      one.lo = one.hi = 1.0;
      for (const auto& [g, v] : vars[static_cast<std::size_t>(r)]) {
        one.terms.emplace_back(v, 1.0);
        cap_rows[static_cast<std::size_t>(g)].terms.emplace_back(v, 1.0);
        load_rows[static_cast<std::size_t>(g)].terms.emplace_back(v, load[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])] / mean);
      }
      prog.rows.push_back(std::move(one));
    }
    for (int g = 0; g < G; ++g) {
      auto& c = cap_rows[static_cast<std::size_t>(g)];
      c.has_lo = false;
      c.hi = cap;
      auto& l = load_rows[static_cast<std::size_t>(g)];
      l.terms.emplace_back(z, -1.0);
      l.has_lo = false;
      l.hi = 0.0;
      prog.rows.push_back(std::move(c));
      prog.rows.push_back(std::move(l));
    }
    // The greedy plan as the start: the program only has to improve on it (or prove it good).
    const std::vector<int> lpt = affinity::balance_lpt(load, G, cap);
    {
      // LPT's groups renumbered in order of their heaviest expert, so that the r-th heaviest
      // expert is in a group <= r as the symmetry breaking requires.
      std::vector<int> renumber(static_cast<std::size_t>(G), -1);
      int next = 0;
      prog.start.assign(prog.binary.size(), 0.0);
      double worst = 0.0;
      std::vector<double> sum(static_cast<std::size_t>(G), 0.0);
      for (int r = 0; r < E; ++r) {
        const int e = order[static_cast<std::size_t>(r)];
        int& g = renumber[static_cast<std::size_t>(lpt[static_cast<std::size_t>(e)])];
        if (g < 0) g = next++;
        for (const auto& [gg, v] : vars[static_cast<std::size_t>(r)])
          if (gg == g) prog.start[static_cast<std::size_t>(v)] = 1.0;
        sum[static_cast<std::size_t>(g)] += load[static_cast<std::size_t>(e)] / mean;
        worst = std::max(worst, sum[static_cast<std::size_t>(g)]);
      }
      prog.start[static_cast<std::size_t>(z)] = worst;
    }
    const ilp::Solution sol = solve(prog);
    if (!sol.solved) {
      fallback(layer, 1, sol.why);
      return lpt;
    }
    std::vector<int> group(static_cast<std::size_t>(E), 0);
    for (int r = 0; r < E; ++r)
      for (const auto& [g, v] : vars[static_cast<std::size_t>(r)])
        if (sol.x[static_cast<std::size_t>(v)] > 0.5) group[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])] = g;
    return group;
  }

  // Stage 2: the GPU of each group, maximising sum of w[group * G + gpu].
  [[nodiscard]] std::vector<int> assign_groups(const std::vector<double>& w, int G, int layer) const {
    ilp::Program prog;
    prog.maximize = true;
    std::vector<ilp::Program::Row> by_gpu(static_cast<std::size_t>(G));
    for (int k = 0; k < G; ++k) {
      ilp::Program::Row one;
      one.lo = one.hi = 1.0;
      for (int g = 0; g < G; ++g) {
        const int v = prog.add_var(true, w[static_cast<std::size_t>(k) * G + g]);
        one.terms.emplace_back(v, 1.0);
        by_gpu[static_cast<std::size_t>(g)].terms.emplace_back(v, 1.0);
      }
      prog.rows.push_back(std::move(one));
    }
    for (auto& r : by_gpu) {
      r.lo = r.hi = 1.0;
      prog.rows.push_back(std::move(r));
    }
    const ilp::Solution sol = solve(prog);
    std::vector<int> gpu(static_cast<std::size_t>(G), -1);
    if (sol.solved) {
      for (int k = 0; k < G; ++k)
        for (int g = 0; g < G; ++g)
          if (sol.x[static_cast<std::size_t>(k) * G + g] > 0.5) gpu[static_cast<std::size_t>(k)] = g;
      return gpu;
    }
    fallback(layer, 2, sol.why);
    std::vector<std::tuple<double, int, int>> cand;
    for (int k = 0; k < G; ++k)
      for (int g = 0; g < G; ++g) cand.emplace_back(-w[static_cast<std::size_t>(k) * G + g], k, g);
    std::sort(cand.begin(), cand.end());
    std::vector<char> taken(static_cast<std::size_t>(G), 0);
    for (const auto& [neg, k, g] : cand)
      if (gpu[static_cast<std::size_t>(k)] < 0 && taken[static_cast<std::size_t>(g)] == 0) {
        gpu[static_cast<std::size_t>(k)] = g;
        taken[static_cast<std::size_t>(g)] = 1;
      }
    return gpu;
  }

 protected:
  [[nodiscard]] std::vector<std::vector<int>> plan() const override {
    const int L = ctx_.moe_layers, E = ctx_.experts, G = ctx_.gpus;
    const auto load = affinity::profile_loads(pairs(), L, E);
    std::vector<std::vector<int>> gpu_of(static_cast<std::size_t>(L), std::vector<int>(static_cast<std::size_t>(E)));
    for (int l = 0; l < L; ++l) {
      const std::vector<int> group = balance_groups(load[static_cast<std::size_t>(l)], G, cap(), l);
      std::vector<int> gpu_of_group(static_cast<std::size_t>(G));
      std::iota(gpu_of_group.begin(), gpu_of_group.end(), 0);
      if (l > 0 && pairs().has(l - 1)) {
        const auto to_gpu = affinity::affinity_to_gpus(pairs().weight[static_cast<std::size_t>(l - 1)],
                                                       gpu_of[static_cast<std::size_t>(l - 1)], G, E);
        std::vector<double> w(static_cast<std::size_t>(G) * G, 0.0);
        for (int j = 0; j < E; ++j)
          for (int g = 0; g < G; ++g)
            w[static_cast<std::size_t>(group[static_cast<std::size_t>(j)]) * G + g] += to_gpu[static_cast<std::size_t>(j) * G + g];
        gpu_of_group = assign_groups(w, G, l);
      }
      for (int e = 0; e < E; ++e)
        gpu_of[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)] = gpu_of_group[static_cast<std::size_t>(group[static_cast<std::size_t>(e)])];
    }
    return gpu_of;
  }

  [[nodiscard]] nlohmann::json own_parameters() const override {
    (void)gpu_of_expert();  // the fallbacks are known once the plan is made
    return {{"time_limit_ms", time_limit_ms_}, {"mip_gap", mip_gap_},   {"node_limit", node_limit_},
            {"ilp_fallbacks", fallbacks_},     {"ilp_node_limit_stops", stops_}};
  }

 private:
  [[nodiscard]] ilp::Solution solve(const ilp::Program& prog) const {
    if (time_limit_ms_ == 0) return {false, "no time (time_limit_ms 0)", {}};
    ilp::Solution s = ilp::solve(prog, time_limit_ms_, mip_gap_, node_limit_);
    if (s.solved && s.node_limit)
      stops_.push_back(fmt::format("a program stopped at the node limit {} with gap {:.4f}", node_limit_, s.gap));
    return s;
  }
  void fallback(int layer, int stage, const std::string& why) const {
    const std::string what = fmt::format("layer {} stage {}: {} ({} ms), greedy plan used", layer, stage, why, time_limit_ms_);
    std::cerr << "moetuner: " << what << "\n";
    fallbacks_.push_back(what);
  }

  int time_limit_ms_ = 2000;
  double mip_gap_ = 0.01;
  int node_limit_ = 200;
  mutable std::vector<std::string> stops_;
  mutable std::vector<std::string> fallbacks_;
};

}  // namespace

PolicyInfo moesim_policy_moetuner() {
  return {"moetuner",
          "MoETuner (arXiv 2502.06643): two-stage integer program, balanced expert groups then cross-layer-aware "
          "group-to-GPU assignment (GLPK)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> { return std::make_unique<MoETunerPolicy>(ctx, p); }};
}

}  // namespace moesim

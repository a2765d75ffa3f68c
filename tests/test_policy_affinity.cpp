// exflow and moetuner: plans worked out by hand on small pair profiles, and the integer program.
#include <catch2/catch.hpp>

#include <algorithm>

#include "policies/affinity.hpp"
#include "policies/ilp.hpp"
#include "policy_fixture.hpp"

using namespace moesim;
using moesim::testing::PolicyWorld;

namespace {

struct AffinityWorld : PolicyWorld {
  CrossLayerPairs pairs;
  AffinityWorld(int gpus, int slots, int experts, std::vector<std::vector<double>> weight)
      : PolicyWorld(gpus, 1, slots, experts, static_cast<int>(weight.size()) + 1, 100) {
    pairs.experts = experts;
    pairs.weight = std::move(weight);
    ctx.cross_layer = &pairs;
  }
  [[nodiscard]] const std::vector<std::vector<int>>& plan() {
    return dynamic_cast<affinity::AffinityPolicy&>(*policy).gpu_of_expert();
  }
};

std::vector<double> matrix(int E, const std::vector<std::tuple<int, int, double>>& cells) {
  std::vector<double> w(static_cast<std::size_t>(E) * E, 0.0);
  for (const auto& [i, j, x] : cells) w[static_cast<std::size_t>(i) * E + j] = x;
  return w;
}

}  // namespace

TEST_CASE("exflow: layer 0 by load, the next layer with its partners", "[exflow]") {
  // Pairs 0->3 (5), 1->2 (4), 2->1 (3), 3->0 (2); loads 5, 4, 3, 2 at layer 0. LPT on 2 GPUs of
  // 2: 0 -> GPU 0 (5), 1 -> GPU 1 (4), 2 -> GPU 1 (7), 3 -> GPU 0 (7). Layer 1 follows: 3 and 0
  // with 0 and 3 on GPU 0, 2 and 1 on GPU 1; every pair stays local.
  AffinityWorld w(2, 2, 4, {matrix(4, {{0, 3, 5}, {1, 2, 4}, {2, 1, 3}, {3, 0, 2}})});
  w.build("{name: exflow}");
  const auto& plan = w.plan();
  CHECK(plan[0] == std::vector<int>{0, 1, 1, 0});
  CHECK(plan[1] == std::vector<int>{0, 1, 1, 0});
  CHECK(w.policy->parameters()["planned_local_share"] == 1.0);
  const Placement pl = w.policy->initial_placement();
  CHECK(pl.expert_of_slot[0] == std::vector<int>{0, 3, 1, 2});
  // Dropless, and the tokens follow their experts.
  std::vector<std::int64_t> counts{10, 0, 0, 5, 0, 7, 1, 0};
  LayerDispatch d;
  w.policy->dispatch(0, counts.data(), pl, d);
  CHECK(d.dropped == 0);
  CHECK(d.tokens_follow);
}

TEST_CASE("exflow: a swap that keeps more pairs local is taken", "[exflow]") {
  // Pairs 0->0 10, 0->1 9, 1->0 9 (row sums 19 and 9: LPT puts layer 0's expert 0 on GPU 0, 1
  // on GPU 1). Layer 1, one slot a GPU: greedy takes (expert 0, GPU 0) = 10 first and leaves
  // expert 1 on GPU 1 (0): 10 local. Swapping them keeps 9 + 9 = 18 of the 28 local.
  AffinityWorld w(2, 1, 2, {matrix(2, {{0, 0, 10}, {0, 1, 9}, {1, 0, 9}})});
  w.build("{name: exflow}");
  CHECK(w.plan()[0] == std::vector<int>{0, 1});
  CHECK(w.plan()[1] == std::vector<int>{1, 0});
  CHECK(w.policy->parameters()["planned_local_share"] == Approx(18.0 / 28.0));
  // Without swap passes the greedy plan stays.
  AffinityWorld g(2, 1, 2, {matrix(2, {{0, 0, 10}, {0, 1, 9}, {1, 0, 9}})});
  g.build("{name: exflow, swap_passes: 0}");
  CHECK(g.plan()[1] == std::vector<int>{0, 1});
}

TEST_CASE("moetuner: the integer program balances groups where LPT does not", "[moetuner]") {
  // Loads 3, 3, 2, 2, 2 on 2 GPUs of at most 3 experts: LPT gives 3+2+2 = 7 and 3+2 = 5; the
  // program finds {3, 3} and {2, 2, 2}, 6 each. Pairs on the diagonal: layer 1 has the same
  // loads, and stage 2 puts each layer-1 group where the same experts are at layer 0.
  const auto diag = matrix(5, {{0, 0, 3}, {1, 1, 3}, {2, 2, 2}, {3, 3, 2}, {4, 4, 2}});
  AffinityWorld w(2, 3, 5, {diag});
  w.build("{name: moetuner}");
  const auto& plan = w.plan();
  CHECK(plan[0][0] == plan[0][1]);
  CHECK(plan[0][2] == plan[0][3]);
  CHECK(plan[0][3] == plan[0][4]);
  CHECK(plan[0][0] != plan[0][2]);
  CHECK(plan[1] == plan[0]);
  CHECK(w.policy->parameters()["ilp_fallbacks"].empty());
  CHECK(w.policy->parameters()["planned_local_share"] == 1.0);
  // No time for the programs: the greedy plan, reported.
  AffinityWorld g(2, 3, 5, {diag});
  g.build("{name: moetuner, time_limit_ms: 0}");
  const auto& lpt = g.plan();
  std::vector<double> sum(2, 0.0);
  const std::vector<double> load{3, 3, 2, 2, 2};
  for (int e = 0; e < 5; ++e) sum[static_cast<std::size_t>(lpt[0][static_cast<std::size_t>(e)])] += load[static_cast<std::size_t>(e)];
  CHECK(std::max(sum[0], sum[1]) == 7.0);
  CHECK(g.policy->parameters()["ilp_fallbacks"].size() == 3);  // stage 1 of layers 0 and 1, stage 2 of layer 1
}

TEST_CASE("affinity policies refuse a trace without pairs and too few slots", "[exflow][moetuner]") {
  PolicyWorld w(2, 1, 2, 4, 2, 100);
  CHECK_THROWS_WITH(w.build("{name: exflow}"), Catch::Contains("trace.cross_layer"));
  CrossLayerPairs p{4, {std::vector<double>(16, 1.0)}, ""};
  w.ctx.cross_layer = &p;
  w.ctx.slots_per_gpu = 1;
  CHECK_THROWS_WITH(w.build("{name: moetuner}"), Catch::Contains("slots_per_gpu") && Catch::Contains("at least 2"));
}

TEST_CASE("the 0-1 program solver: a small assignment by hand", "[moetuner][ilp]") {
  // Maximise 4 x0 + 3 x1 + 2 x2 with x0 + x1 <= 1 and x1 + x2 <= 1: x0 = x2 = 1 (6).
  ilp::Program p;
  p.maximize = true;
  for (double c : {4.0, 3.0, 2.0}) (void)p.add_var(true, c);
  ilp::Program::Row a, b;
  a.terms = {{0, 1.0}, {1, 1.0}};
  a.has_lo = false;
  a.hi = 1.0;
  b.terms = {{1, 1.0}, {2, 1.0}};
  b.has_lo = false;
  b.hi = 1.0;
  p.rows = {a, b};
  const ilp::Solution s = ilp::solve(p, 1000, 0.0, 1000);
  REQUIRE(s.solved);
  CHECK(s.x == std::vector<double>{1.0, 0.0, 1.0});
  // Infeasible: x0 = 1 and x0 <= 0.
  ilp::Program q;
  (void)q.add_var(true, 1.0);
  ilp::Program::Row eq, le;
  eq.terms = {{0, 1.0}};
  eq.lo = eq.hi = 1.0;
  le.terms = {{0, 1.0}};
  le.has_lo = false;
  le.hi = 0.0;
  q.rows = {eq, le};
  const ilp::Solution t = ilp::solve(q, 1000, 0.0, 1000);
  CHECK_FALSE(t.solved);
  CHECK(t.why == "infeasible");
}

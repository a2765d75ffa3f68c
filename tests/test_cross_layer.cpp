// Cross-layer pairs: the reconciliation with a layer's loads, the tokens that change GPU between
// layers, the generator's and the CSV reader's profiles, and an iteration charged by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "app/runner.hpp"
#include "core/error.hpp"
#include "hand_fixture.hpp"
#include "sim/cross_layer.hpp"
#include "traces/cross_layer.hpp"

using namespace moesim;

namespace {

std::string temp_file(const std::string& name, const std::string& content) {
  auto p = std::filesystem::temp_directory_path() / ("moesim_xl_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << content;
  return p.string();
}

}  // namespace

TEST_CASE("reconcile_pairs keeps the odds ratio and meets both marginals", "[cross_layer]") {
  // Already consistent: unchanged.
  std::vector<double> j = reconcile_pairs({3, 1, 1, 3}, {4, 4}, {4, 4}, 2);
  CHECK(j[0] == Approx(3.0));
  CHECK(j[1] == Approx(1.0));
  // Rows 6 and 2, columns 4 and 4: J = [[a, 6 - a], [4 - a, a - 2]] with the odds ratio 9 of the
  // pairs: a (a - 2) = 9 (6 - a)(4 - a), a^2 - 11 a + 27 = 0, a = (11 - sqrt 13) / 2 = 3.697224.
  j = reconcile_pairs({3, 1, 1, 3}, {6, 2}, {4, 4}, 2);
  const double a = (11.0 - std::sqrt(13.0)) / 2.0;
  CHECK(j[0] == Approx(a).epsilon(1e-5));
  CHECK(j[1] == Approx(6.0 - a).epsilon(1e-5));
  CHECK(j[2] == Approx(4.0 - a).epsilon(1e-5));
  CHECK(j[3] == Approx(a - 2.0).epsilon(1e-5));
  // Columns are rescaled to the rows' total (8 -> 4: 1 and 3); a row with no recorded pair takes
  // the column targets (independent).
  j = reconcile_pairs({0, 0, 1, 1}, {2, 2}, {2, 6}, 2);
  CHECK(j[0] + j[1] == Approx(2.0));
  CHECK(j[2] + j[3] == Approx(2.0));
  CHECK(j[0] + j[2] == Approx(1.0).epsilon(1e-6));
  CHECK(j[1] + j[3] == Approx(3.0).epsilon(1e-6));
}

TEST_CASE("follow_hops counts the assignments whose next expert is on another GPU", "[cross_layer]") {
  // Two GPUs, one slot each, expert e on GPU e at both layers; every source sends 3 to one expert
  // and 1 to the other, so each expert holds 4 at each layer.
  LayerDispatch a, b;
  a.reset(2, 2);
  a.accepted = {3, 1, 1, 3};
  b = a;
  const std::vector<double> pairs{3, 1, 1, 3};
  std::vector<double> h = follow_hops(a, {0, 1}, b, {0, 1}, 1, pairs, 2);
  // J = pairs: 3 of expert 0's 4 go on to expert 0 (same GPU), 1 to expert 1 (GPU 1).
  CHECK(h[0] == Approx(3.0));
  CHECK(h[1] == Approx(1.0));
  CHECK(h[2] == Approx(1.0));
  CHECK(h[3] == Approx(3.0));
  // The next layer's experts swapped over the GPUs: the 3s cross.
  h = follow_hops(a, {0, 1}, b, {1, 0}, 1, pairs, 2);
  CHECK(h[1] == Approx(3.0));
  CHECK(h[2] == Approx(3.0));
  // Two replicas of expert 0 at layer l + 1 (slots 0 and 1 on GPUs 0, 1 with S = 1, expert 1
  // absent): its arrivals split as the replicas accepted (1 : 3).
  LayerDispatch c;
  c.reset(2, 2);
  c.accepted = {1, 3, 0, 4};  // totals 1 and 7 of expert 0
  h = follow_hops(a, {0, 1}, c, {0, 0}, 1, pairs, 2);
  // All 8 arrivals go to expert 0: from GPU 0 (4) 1/8 stay, 7/8 cross; the same from GPU 1.
  CHECK(h[0] == Approx(0.5));
  CHECK(h[1] == Approx(3.5));
  CHECK(h[2] == Approx(0.5));
  CHECK(h[3] == Approx(3.5));
}

TEST_CASE("the synthetic profile: affinity 1 is one partner per expert, 0 is independence", "[cross_layer]") {
  SyntheticTraceSpec spec;
  spec.skew = 1.0;
  spec.seed = 7;
  const TraceShape shape{3, 1, 8};
  const CrossLayerPairs one = synthetic_cross_layer(shape, spec, 1.0);
  REQUIRE(one.weight.size() == 2);
  REQUIRE(one.layers() == 3);
  for (const auto& w : one.weight) {
    double total = 0.0;
    for (int i = 0; i < 8; ++i) {
      int nonzero = 0;
      for (int j = 0; j < 8; ++j) nonzero += w[static_cast<std::size_t>(i * 8 + j)] > 0.0 ? 1 : 0;
      CHECK(nonzero == 1);
      for (int j = 0; j < 8; ++j) total += w[static_cast<std::size_t>(i * 8 + j)];
    }
    CHECK(total == Approx(1.0));
  }
  const CrossLayerPairs zero = synthetic_cross_layer(shape, spec, 0.0);
  // Independent: every 2 x 2 minor vanishes.
  const auto& w = zero.weight[0];
  CHECK(w[0] * w[9] == Approx(w[1] * w[8]));
  CHECK(w[3 * 8 + 5] * w[6 * 8 + 2] == Approx(w[3 * 8 + 2] * w[6 * 8 + 5]));
  CHECK_THROWS_AS(synthetic_cross_layer(shape, spec, 1.5), InputError);
}

TEST_CASE("the cross-layer CSV reader maps recorded layers and names bad rows", "[cross_layer]") {
  CrossLayerCsvOptions o;
  o.layers = 3;
  o.experts = 2;
  const std::string good = temp_file("good.csv",
                                     "model,layer,next_layer,expert,next_expert,count\n"
                                     "m,0,1,0,1,5\nm,0,1,0,1,2\nm,1,2,1,0,3\n");
  CrossLayerPairs p = load_cross_layer_csv(good, o);
  REQUIRE(p.has(0));
  REQUIRE(p.has(1));
  CHECK(p.weight[0][1] == 7.0);  // repeated cells add up
  CHECK(p.weight[1][2] == 3.0);
  // Recorded layers 0, 7, 15 become MoE layers 0, 1, 2 when mapped; unmapped, 7 is not 0 + 1.
  const std::string gap = temp_file("gap.csv", "layer,next_layer,expert,next_expert,count\n0,7,0,0,1\n7,15,1,1,2\n");
  o.map_recorded_layers = true;
  p = load_cross_layer_csv(gap, o);
  CHECK(p.weight[1][3] == 2.0);
  o.map_recorded_layers = false;
  o.layers = 16;
  CHECK_THROWS_WITH(load_cross_layer_csv(gap, o), Catch::Contains(":2") && Catch::Contains("not layer + 1"));
  // A pair that skips a recorded layer cannot be used.
  o.map_recorded_layers = true;
  const std::string skip = temp_file("skip.csv", "layer,next_layer,expert,next_expert,count\n0,7,0,0,1\n0,15,1,1,2\n");
  CHECK_THROWS_WITH(load_cross_layer_csv(skip, o), Catch::Contains(":3") && Catch::Contains("skips recorded layers"));
  // An open selector column with two values; an unknown selector; an expert out of range.
  o.map_recorded_layers = false;
  o.layers = 3;
  const std::string two = temp_file("two.csv", "domain,layer,next_layer,expert,next_expert,count\nc4,0,1,0,0,1\narxiv,0,1,0,0,1\n");
  CHECK_THROWS_WITH(load_cross_layer_csv(two, o), Catch::Contains(":3") && Catch::Contains("pin it with select"));
  o.select = {{"domain", "c4"}};
  CHECK(load_cross_layer_csv(two, o).weight[0][0] == 1.0);
  o.select = {{"nope", "x"}};
  CHECK_THROWS_WITH(load_cross_layer_csv(two, o), Catch::Contains("not a selector column"));
  o.select.clear();
  const std::string big = temp_file("big.csv", "layer,next_layer,expert,next_expert,count\n0,1,0,2,1\n");
  CHECK_THROWS_WITH(load_cross_layer_csv(big, o), Catch::Contains("'next_expert'") && Catch::Contains("0..1"));
  const std::string cols = temp_file("cols.csv", "layer,expert,next_expert,count\n0,0,0,1\n");
  CHECK_THROWS_WITH(load_cross_layer_csv(cols, o), Catch::Contains("no column 'next_layer'"));
}

TEST_CASE("the real OLMoE pairs load as two consecutive layer pairs", "[cross_layer][real]") {
  const std::string found = std::string(MOESIM_SOURCE_DIR) + "/../shared/data/real/olmoe-routing/crosslayer_pairs.csv";
  if (!std::filesystem::exists(found)) {
    WARN("shared/data/real/olmoe-routing is not here: skipped");
    return;
  }
  CrossLayerCsvOptions o;
  o.layers = 3;
  o.experts = 64;
  o.map_recorded_layers = true;
  o.select = {{"model", "olmoe"}, {"domain", "c4"}, {"kind", "top1"}};
  const CrossLayerPairs p = load_cross_layer_csv(found, o);
  REQUIRE(p.has(0));
  REQUIRE(p.has(1));
  // top1: one event per token, 208,896 tokens (the set's README).
  for (const auto& w : p.weight) {
    double total = 0.0;
    for (double x : w) total += x;
    CHECK(total == 208896.0);
  }
}

namespace {

// The hand scenario with two MoE layers, every source sending 512 tokens to each expert at both.
Scenario two_layer_hand(const std::string& pairs_csv, const std::string& policy) {
  const std::string trace = temp_file("two.csv",
                                      "iteration,layer,src_gpu,expert,tokens\n"
                                      "0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n"
                                      "0,1,0,0,512\n0,1,0,1,512\n0,1,1,0,512\n0,1,1,1,512\n");
  std::string yaml = moesim::testing::hand_scenario(trace);
  yaml.replace(yaml.find("  layers: 1"), 11, "  layers: 2");
  yaml.replace(yaml.find("trace: {kind: csv, path: " + trace + "}"), std::string("trace: {kind: csv, path: " + trace + "}").size(),
               "trace: {kind: csv, path: " + trace + ", cross_layer: {path: " + pairs_csv + "}}");
  yaml.replace(yaml.find("  - {name: static, capacity_factor: 1.0, min_capacity: 0}"),
               std::string("  - {name: static, capacity_factor: 1.0, min_capacity: 0}").size(), "  - " + policy);
  return load_scenario_text(yaml, "hand.yaml", {}, std::nullopt);
}

}  // namespace

TEST_CASE("tokens that follow their experts cross only where the next expert is elsewhere", "[cross_layer][iteration]") {
  // As in test_iteration's hand case, one all-to-all of 512 tokens each way costs
  // 512 * 1024 * 2 B / 10 GB/s = 104858 ns + 22400 ns latency = 127258 ns.
  const TimeNs full = 127258;
  auto a2a = [](const Scenario& s) {
    const auto r = run_scenario(s);
    return r.at(0).rows.at(0).result;
  };
  // Perfect affinity, expert 0 -> expert 1 and 1 -> 0: exflow puts layer 1's expert 1 with
  // layer 0's expert 0, no token changes GPU between the layers, and layer 0's combine and
  // layer 1's dispatch (forward and backward) cost nothing: 4 of the 8 exchanges remain.
  const std::string swap = temp_file("swap.csv", "layer,next_layer,expert,next_expert,count\n0,1,0,1,9\n0,1,1,0,9\n");
  IterationResult r = a2a(two_layer_hand(swap, "exflow"));
  CHECK(r.phase_ns[static_cast<int>(Phase::AllToAll)] == 4 * full);
  CHECK(r.a2a_bytes == 4 * 2 * 1048576.0);
  // Without following, the placement alone saves nothing: 8 exchanges.
  r = a2a(two_layer_hand(swap, "{name: exflow, follow_tokens: false}"));
  CHECK(r.phase_ns[static_cast<int>(Phase::AllToAll)] == 8 * full);
  // Pairs 3 : 1 with the same expert: exflow keeps the layout; of each GPU's 1024 assignments
  // 256 go on to the other GPU: 256 * 2048 B = 524288 B / 10 GB/s = 52429 ns + 22400 ns, in
  // the forward and the backward pass.
  const std::string mostly = temp_file("mostly.csv",
                                       "layer,next_layer,expert,next_expert,count\n0,1,0,0,3\n0,1,0,1,1\n0,1,1,0,1\n0,1,1,1,3\n");
  r = a2a(two_layer_hand(mostly, "exflow"));
  CHECK(r.phase_ns[static_cast<int>(Phase::AllToAll)] == 4 * full + 2 * (52429 + 22400));
  CHECK(r.a2a_bytes == 4 * 2 * 1048576.0 + 2 * 2 * 524288.0);
  // moetuner plans the same here (one expert a GPU, the swap keeps the pairs local).
  r = a2a(two_layer_hand(swap, "moetuner"));
  CHECK(r.phase_ns[static_cast<int>(Phase::AllToAll)] == 4 * full);
}

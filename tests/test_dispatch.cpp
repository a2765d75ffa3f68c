// Hierarchical (DeepEP-style) dispatch: one copy per destination node over the network, one per
// destination GPU over NVLink, node-limited routing, and the scenario keys.
#include <catch2/catch.hpp>

#include "app/scenario.hpp"
#include "sim/layout.hpp"

using namespace moesim;

TEST_CASE("hierarchical dispatch: a token crosses the network once per node", "[dispatch]") {
  // 2 nodes x 2 GPUs. GPU 0 sends 100 copies to GPU 2 and 100 to GPU 3 with top-2: 100 tokens,
  // every one bound for node 1, so 100 tokens go to GPU 0's rail peer there (GPU 2). GPU 3's
  // share of the copies is 1/2: 100 (1 - (1 - 1/2)^2) = 75 distinct tokens forwarded 2 -> 3.
  // The direct exchange would put all 200 copies on GPU 0's NIC.
  const std::vector<int> gpus{0, 1, 2, 3};
  std::vector<double> a(16, 0.0);
  a[0 * 4 + 2] = 100;
  a[0 * 4 + 3] = 100;
  const std::vector<double> b = hierarchical_exchange(a, gpus, 2, 2, 10.0, 0);
  CHECK(b[0 * 4 + 2] == 1000.0);
  CHECK(b[2 * 4 + 3] == 750.0);
  CHECK(b[0 * 4 + 3] == 0.0);
  double total = 0.0;
  for (double x : b) total += x;
  CHECK(total == 1750.0);
  // A copy for the source's own node goes straight over NVLink, once per GPU: 50 copies of
  // 50 top-1 tokens to GPU 1.
  std::vector<double> local(16, 0.0);
  local[0 * 4 + 1] = 50;
  CHECK(hierarchical_exchange(local, gpus, 2, 1, 10.0, 0)[0 * 4 + 1] == 500.0);
}

TEST_CASE("hierarchical dispatch: node-limited routing bounds the nodes a token reaches", "[dispatch]") {
  // 4 nodes of 1 GPU; GPU 0's 400 top-4 copies spread evenly: 100 tokens, a token reaches node
  // n with probability 1 - (3/4)^4 = 175/256, 4 x 175/256 = 2.734375 nodes on average. With at
  // most 2 nodes per token every node's share scales by 2 / 2.734375 = 0.731428...: the three
  // remote nodes get 100 x 175/256 x 2 / 2.734375 = 50 tokens each.
  const std::vector<int> gpus{0, 1, 2, 3};
  std::vector<double> a(16, 0.0);
  for (int j = 0; j < 4; ++j) a[static_cast<std::size_t>(j)] = 100;
  const std::vector<double> free = hierarchical_exchange(a, gpus, 1, 4, 1.0, 0);
  CHECK(free[1] == Approx(100.0 * 175.0 / 256.0));
  const std::vector<double> limited = hierarchical_exchange(a, gpus, 1, 4, 1.0, 2);
  for (int j = 1; j < 4; ++j) CHECK(limited[static_cast<std::size_t>(j)] == Approx(50.0));
  // A bound above what tokens reach changes nothing.
  CHECK(hierarchical_exchange(a, gpus, 1, 4, 1.0, 3)[1] == free[1]);
}

namespace {
const char* kBase = R"(
cluster: {preset: dgx-h100, nodes: 2}
model: {preset: qwen3-30b-a3b}
policies: [static]
)";
}

TEST_CASE("hierarchical dispatch: scenario keys and their errors", "[dispatch][scenario]") {
  Scenario s = load_scenario_text(std::string(kBase) + "dispatch: {algorithm: hierarchical}\nrouting: {max_nodes_per_token: 2}\n",
                                  "h.yaml", {}, std::nullopt);
  CHECK(s.dispatch.hierarchical);
  CHECK(s.dispatch.max_nodes_per_token == 2);
  CHECK(s.to_json()["dispatch"]["algorithm"] == "hierarchical");
  CHECK(s.to_json()["routing"]["max_nodes_per_token"] == 2);
  CHECK_FALSE(load_scenario_text(kBase, "h.yaml", {}, std::nullopt).dispatch.hierarchical);
  REQUIRE_THROWS_WITH(load_scenario_text(std::string(kBase) + "dispatch: {algorithm: ring}\n", "h.yaml", {}, std::nullopt),
                      Catch::Matchers::Contains("h.yaml:5") && Catch::Matchers::Contains("dispatch.algorithm") &&
                          Catch::Matchers::Contains("allowed: direct, hierarchical"));
  REQUIRE_THROWS_WITH(load_scenario_text(std::string(kBase) + "routing: {max_nodes_per_token: 2}\n", "h.yaml", {}, std::nullopt),
                      Catch::Matchers::Contains("routing.max_nodes_per_token") &&
                          Catch::Matchers::Contains("only dispatch.algorithm: hierarchical"));
  REQUIRE_THROWS_WITH(load_scenario_text(std::string(kBase) + "dispatch: {algorithm: hierarchical}\nrouting: {max_nodes_per_token: 3}\n",
                                         "h.yaml", {}, std::nullopt),
                      Catch::Matchers::Contains("routing.max_nodes_per_token") && Catch::Matchers::Contains("[0, 2]"));
}

#include "app/validate_dispatch.hpp"

TEST_CASE("validate dispatch: DeepEP's shape, counted as DeepEP counts, within the documented misses", "[dispatch][validate]") {
  const auto rows = dispatch_validation_rows("deepseek-h800");
  REQUIRE(rows.size() == 8);
  for (const auto& r : rows) {
    INFO("ep " << r.ep << (r.combine ? " combine" : " dispatch"));
    // DeepEP's EP 16 count: 4096 tokens x 2 (1 - 1/2^8) = 8160 (token, node) pairs of 7392 B (FP8).
    if (r.ep == 16 && !r.combine) CHECK(r.counted_bytes == 8160.0 * 7392.0);
    // EP 64: at most 4 of 8 nodes per token (8 (1 - (7/8)^8) = 5.25 unbounded): 4 x 4096 tokens.
    if (r.ep == 64 && !r.combine) CHECK(r.counted_bytes == 4.0 * 4096 * 7392.0);
    // The model is an upper bound on the kernels: every row at or above DeepEP's figure, within
    // 12 % at EP 32 and 64 and the misses docs/validation.md explains at EP 8 and 16.
    CHECK(r.error_pct >= 0.0);
    CHECK(r.error_pct <= (r.ep >= 32 ? 12.0 : 35.0));
  }
}

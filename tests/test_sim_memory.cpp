// The simulator's own memory: the up-front estimate behind run.max_memory_bytes (issue 16).
#include <catch2/catch.hpp>

#include <string>

#include "app/runner.hpp"
#include "app/sim_memory.hpp"
#include "error_fixture.hpp"

using namespace moesim;
using Catch::Matchers::Contains;

namespace {
// 2 nodes x 8 GPUs, 4 layers of which 2 are MoE (moe_every 2), 8 experts, 2 slots a GPU.
std::string small(const std::string& extra = "") {
  return "cluster: {preset: dgx-h100, nodes: 2}\n"
         "model: {preset: mixtral-8x7b, layers: 4, moe_layer_interval: 2}\n"
         "placement: {slots_per_gpu: 2}\n"
         "run: {max_iterations: 10" +
         extra + "}\npolicies: [static, symi]\n";
}
}  // namespace

TEST_CASE("estimate: each part as the structures it counts, worked out by hand", "[sim_memory]") {
  const Scenario s = load_scenario_text(small(), "<test>", {}, std::nullopt);
  REQUIRE(s.model.num_moe_layers() == 2);
  REQUIRE(s.cluster.num_gpus() == 16);
  const SimulatorMemory m = estimate_simulator_memory(s, 1);
  // One iteration: 2 layers x 16 GPUs x 8 experts x 8 bytes = 2,048; three copies in one world,
  // and the replay cache (2 policies) holds all 10 iterations: 6,144 + 20,480.
  CHECK(m.trace_bytes == 26624.0);
  // Reading 4 iterations ahead holds 3 more copies (6 in all): 12,288 + 20,480; off holds 3.
  CHECK(estimate_simulator_memory(s, 1, 4).trace_bytes == 32768.0);
  CHECK(estimate_simulator_memory(s, 1, 0).trace_bytes == 26624.0);
  // Per policy and layer: 16 GPUs x (16 x 2 group slots) x 2 matrices x 8 bytes = 8,192, plus the
  // placement 16 x 2 x 4 = 128; 2 policies x 2 layers.
  CHECK(m.dispatch_bytes == 4.0 * (8192.0 + 128.0));
  // Graph 16 x 600 bytes; pairs 16 x (16 + 1 + 8) at 80 bytes.
  CHECK(m.routes_bytes == 16 * 600.0 + 16.0 * 25 * 80);
  CHECK(m.total() > m.fixed_bytes);
}

TEST_CASE("estimate: threads multiply each world's trace and routes, not the policies' state",
          "[sim_memory]") {
  const Scenario s = load_scenario_text(small(), "<test>", {}, std::nullopt);
  const SimulatorMemory one = estimate_simulator_memory(s, 1), two = estimate_simulator_memory(s, 2);
  CHECK(two.routes_bytes == 2 * one.routes_bytes);
  CHECK(two.trace_bytes == one.trace_bytes + 6144.0);
  CHECK(two.dispatch_bytes == one.dispatch_bytes);
  // More threads than policies run no more worlds.
  CHECK(estimate_simulator_memory(s, 8).routes_bytes == two.routes_bytes);
}

TEST_CASE("run.max_memory_bytes: a run that would need more is refused before it starts", "[sim_memory]") {
  const Scenario s = load_scenario_text(small(", max_memory_bytes: 1e6"), "tiny.yaml", {}, std::nullopt);
  const std::string msg = testing::input_error([&] { (void)run_scenario(s); });
  CHECK_THAT(msg, Contains("tiny.yaml: run.max_memory_bytes"));
  CHECK_THAT(msg, Contains("the limit is 0.00 GB (the scenario's)"));
  CHECK_THAT(msg, Contains("16 GPUs, 2 MoE layers x 8 experts, 2 policies"));
  // check_scenario (what sweep runs on every point first) refuses it too.
  CHECK_THAT(testing::input_error([&] { check_scenario(s); }), Contains("run.max_memory_bytes"));
  // With room, the same scenario runs.
  const Scenario ok = load_scenario_text(small(", max_memory_bytes: 1e12"), "tiny.yaml", {}, std::nullopt);
  CHECK(run_scenario(ok).size() == 2);
}

TEST_CASE("run.max_memory_bytes: 32,768 GPUs with a 64-layer model go over a 4 GB limit", "[sim_memory]") {
  const Scenario s = load_scenario_text(
      "cluster: {preset: dgx-h100, nodes: 4096, gpu: {hbm_bytes: 1e15}}\nmodel: {preset: deepseek-v3}\n"
      "parallelism: {expert: 64}\nplacement: {slots_per_gpu: 4}\nrun: {max_iterations: 1000, "
      "max_memory_bytes: 4e9}\n"
      "policies: [static, eplb, symi]\n",
      "big.yaml", {}, std::nullopt);
  const SimulatorMemory m = estimate_simulator_memory(s, 1);
  // 58 MoE layers x 32,768 GPUs x 256 experts x 8 bytes is 3.9 GB per trace copy.
  CHECK(m.trace_bytes > 3 * 3.8e9);
  CHECK_THAT(testing::input_error([&] { check_scenario(s); }), Contains("for 32768 GPUs"));
}

TEST_CASE("run.max_memory_bytes: the range is checked, the default is a share of this machine",
          "[sim_memory]") {
  CHECK_THAT(testing::input_error([] {
               (void)load_scenario_text(small(", max_memory_bytes: 10"), "r.yaml", {}, std::nullopt);
             }),
             Contains("max_memory_bytes"));
  const double d = default_max_memory_bytes();
  CHECK(d > 1e8);
  const Scenario s = load_scenario_text(small(), "<test>", {}, std::nullopt);
  CHECK(max_memory_bytes(s) == d);
}

// Programs run without the event queue unless a timeline is recorded (sim/program.hpp,
// run_direct). Recording every iteration forces the queue, so the two runs of each shipped
// layout below must agree on every iteration's figures, the engine's event count and the clock.
#include <catch2/catch.hpp>

#include <numeric>
#include <string>
#include <vector>

#include "app/runner.hpp"

using namespace moesim;

namespace {

void check_same(const std::string& file, const std::vector<std::string>& overrides, const std::string& policies) {
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/" + file, overrides, std::nullopt);
  s.policies = parse_policy_specs(policies);
  RunOptions direct, queued;
  queued.timeline_iterations.resize(static_cast<std::size_t>(s.run.max_iterations));
  std::iota(queued.timeline_iterations.begin(), queued.timeline_iterations.end(), 0);
  const std::vector<PolicyResult> a = run_scenario(s, direct), b = run_scenario(s, queued);
  REQUIRE(a.size() == b.size());
  for (std::size_t p = 0; p < a.size(); ++p) {
    INFO(file << " " << a[p].label);
    CHECK(a[p].events == b[p].events);
    CHECK(a[p].simulated_ns == b[p].simulated_ns);
    REQUIRE(a[p].rows.size() == b[p].rows.size());
    for (std::size_t i = 0; i < a[p].rows.size(); ++i) {
      const IterationResult &x = a[p].rows[i].result, &y = b[p].rows[i].result;
      INFO("iteration " << i);
      CHECK(x.iteration_ns == y.iteration_ns);
      CHECK(x.phase_ns == y.phase_ns);
      CHECK(x.critical_gpu == y.critical_gpu);
      CHECK(x.exposed_comm_ns == y.exposed_comm_ns);
    }
  }
}

}  // namespace

TEST_CASE("direct run: the same iterations and events as the event queue", "[program]") {
  // Pipeline 4 with tensor 2 and sequence parallelism, expert 8, 16 micro-batches.
  check_same("mixtral-4x8-h100.yaml", {"run.max_iterations=3"}, "static:capacity_factor=1.25,symi");
  // Expert 8 per node, data 32, ZeRO-1; a re-placing policy.
  check_same("qwen3-30b-a3b-32xh100.yaml", {"run.max_iterations=3"}, "eplb:interval=1,fastermoe:shadow_slots=16");
  // The default layout with a straggler, and with chunked all-to-all overlap (two lanes: the
  // queue runs those).
  check_same("swiftmoe-gpt-small.yaml",
             {"run.max_iterations=12", "heterogeneity.stragglers=[{gpu: 3, slowdown_percent: 40}]"},
             "static:capacity_factor=1.0:min_capacity=2,flexmoe:interval=5");
  check_same("swiftmoe-gpt-small.yaml", {"run.max_iterations=4", "overlap.a2a_chunks=2"}, "symi");
}

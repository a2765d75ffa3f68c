// Per-expert samples (experts.csv): what the heatmap and replica pictures are drawn from (issue 7).
#include <catch2/catch.hpp>

#include <optional>
#include <sstream>
#include <string>

#include "app/outputs.hpp"
#include "app/runner.hpp"

using namespace moesim;

namespace {
Scenario quickstart(std::vector<std::string> sets) {
  return load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml", sets, std::nullopt);
}
}  // namespace

TEST_CASE("expert samples add up to the iteration's routed and dropped assignments", "[outputs][experts]") {
  const Scenario s = quickstart({"run.max_iterations=12", "run.stop_at_convergence=false"});
  RunOptions ro;
  ro.expert_stats_every = 5;  // iterations 0, 5, 10
  const std::vector<PolicyResult> results = run_scenario(s, ro);
  const int L = s.model.num_moe_layers(), E = s.model.experts;
  const int slots = s.cluster.num_gpus() * s.slots_per_gpu;  // 16 GPUs x 4 slots
  REQUIRE(slots == 64);
  for (const PolicyResult& r : results) {
    INFO(r.label);
    REQUIRE(r.expert_samples.size() == 3);
    for (std::size_t k = 0; k < 3; ++k) {
      const ExpertSample& x = r.expert_samples[k];
      CHECK(x.iteration == static_cast<std::int64_t>(5 * k));
      const IterationResult& it = r.rows[static_cast<std::size_t>(x.iteration)].result;
      std::int64_t routed = 0, dropped = 0;
      for (int l = 0; l < L; ++l) {
        int replicas = 0;
        for (int e = 0; e < E; ++e) {
          const auto i = static_cast<std::size_t>(l * E + e);
          routed += x.routed[i];
          dropped += x.routed[i] - x.processed[i];
          CHECK(x.processed[i] >= 0);
          // The oracle's slots take any expert's tokens; everyone else's only their expert's.
          if (r.name != "oracle") CHECK(x.processed[i] <= x.routed[i]);
          CHECK(x.replicas[i] >= 1);  // every expert keeps a replica
          replicas += x.replicas[i];
        }
        CHECK(replicas == slots);  // every slot of this scenario holds an expert
      }
      // Conservation against the iteration model's own counts: a bug in either breaks it.
      CHECK(routed == it.tokens_routed);
      CHECK(dropped == it.tokens_dropped);
      // Top-1 gating: each of the 16 GPUs' tokens is one assignment per MoE layer.
      CHECK(routed == static_cast<std::int64_t>(L) * s.cluster.num_gpus() * s.model.tokens_per_gpu());
    }
  }
  // The static policy never changes its placement: 64 slots / 16 experts = 4 replicas each.
  for (int v : results.front().expert_samples.back().replicas) CHECK(v == 4);
}

TEST_CASE("a capped sample list keeps every other sample and doubles the stride", "[outputs][experts]") {
  const Scenario s = quickstart({"run.max_iterations=10", "run.stop_at_convergence=false"});
  RunOptions ro;
  ro.expert_stats_every = 1;
  ro.expert_stats_max_samples = 4;
  const std::vector<PolicyResult> results = run_scenario(s, ro);
  // Worked by hand: 0..4 is five samples > 4, so stride 2 keeps 0, 2, 4; then 6, 8 make five
  // again, so stride 4 keeps 0, 4, 8; iteration 9 is not a multiple of 4.
  std::vector<std::int64_t> got;
  for (const auto& x : results.front().expert_samples) got.push_back(x.iteration);
  CHECK(got == std::vector<std::int64_t>{0, 4, 8});
}

TEST_CASE("experts.csv has one row per policy, sample, layer and expert", "[outputs][experts]") {
  const Scenario s = quickstart({"run.max_iterations=3", "run.stop_at_convergence=false"});
  RunOptions ro;
  ro.expert_stats_every = 2;  // iterations 0 and 2
  const std::vector<PolicyResult> results = run_scenario(s, ro);
  const std::string csv = experts_csv(results);
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  CHECK(line == "label,iteration,layer,expert,tokens_routed,tokens_processed,replicas");
  std::size_t rows = 0;
  while (std::getline(in, line)) ++rows;
  CHECK(rows == results.size() * 2 * static_cast<std::size_t>(s.model.num_moe_layers() * s.model.experts));
  CHECK(csv.find("\nstatic-cf1,2,0,0,") != std::string::npos);
  // Not asked for: nothing recorded.
  const std::vector<PolicyResult> none = run_scenario(s, RunOptions{});
  for (const auto& r : none) CHECK(r.expert_samples.empty());
}

TEST_CASE("an OOM report names a few incoming transfers and counts the rest", "[outputs][memory]") {
  // EPLB's first re-plan on the DGX-H100 Qwen3 scenario moves hundreds of experts with their Adam
  // state into GPU 0 at once, which does not fit in its 80 GB.
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/dgx-h100-qwen3.yaml",
                             {"run.max_iterations=12"}, std::nullopt);
  s.policies = parse_policy_specs("eplb");
  const std::vector<PolicyResult> results = run_scenario(s, RunOptions{});
  REQUIRE(results.size() == 1);
  const PolicyResult& r = results.front();
  REQUIRE(r.oom);
  INFO(r.oom_report);
  CHECK_THAT(r.oom_report, Catch::Matchers::StartsWith("OOM on GPU "));
  CHECK_THAT(r.oom_report, Catch::Matchers::Contains("transfers in all"));
  CHECK_THAT(r.oom_report, Catch::Matchers::Contains("move temporaries"));
  // Six transfers named, then the count: a few hundred characters, not tens of thousands.
  CHECK(r.oom_report.size() < 1000);
}

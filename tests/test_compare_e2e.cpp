// The SwiftMoE comparison end to end: orderings that follow from the model.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>

#include "app/runner.hpp"
#include "core/error.hpp"

using namespace moesim;

TEST_CASE("SwiftMoE comparison: orderings the model implies", "[compare][e2e]") {
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml",
                             {"run.max_iterations=60", "run.stop_at_convergence=false"}, std::nullopt);
  s.policies = parse_policy_specs(
      "static:capacity_factor=1.0:min_capacity=2,static:drop_tokens=false,flexmoe:interval=10,symi,eplb,"
      "fastermoe:shadow_slots=3,smartmoe,lazarus,prophet:extra_slots=3,oracle");
  const auto results = run_scenario(s, RunOptions{false, {}});
  std::map<std::string, const PolicyResult*> by;
  for (const auto& r : results) by[r.label] = &r;
  const PolicyResult& oracle = *by.at("oracle");
  for (const auto& r : results) {
    INFO(r.label);
    REQUIRE_FALSE(r.oom);
    CHECK(r.iterations_run == 60);
    // Perfect balance, nothing moved and no replica sync: no policy iterates faster.
    CHECK(oracle.mean_iteration_ns <= r.mean_iteration_ns);
  }
  // Dropless policies drop nothing; capacity-bound ones do on a skewed trace.
  for (const char* l : {"static:drop_tokens=false", "fastermoe:shadow_slots=3", "smartmoe", "prophet:extra_slots=3", "oracle"})
    CHECK(by.at(l)->drop_rate == 0.0);
  const double static_drops = by.at("static:capacity_factor=1.0:min_capacity=2")->drop_rate;
  CHECK(static_drops > 0.2);
  // SYMI replicates hot experts every iteration: far fewer drops than static at the same capacity.
  CHECK(by.at("symi")->drop_rate < static_drops / 2);
  // Padding to the largest count makes dropless static's iterations the slowest of the static ones.
  CHECK(by.at("static:drop_tokens=false")->mean_iteration_ns >
        by.at("static:capacity_factor=1.0:min_capacity=2")->mean_iteration_ns);
  // Only the policies that move experts move bytes.
  CHECK(by.at("static:capacity_factor=1.0:min_capacity=2")->mean_moved_bytes == 0.0);
  CHECK(by.at("symi")->mean_moved_bytes == 0.0);
  CHECK(by.at("eplb")->mean_moved_bytes > 0.0);
}

TEST_CASE("quickstart and SwiftMoE scenarios switch network models; flow is never faster", "[compare][flow][e2e]") {
  for (const char* file : {"/scenarios/quickstart.yaml", "/scenarios/swiftmoe-gpt-small.yaml"}) {
    INFO(file);
    const std::string path = std::string(MOESIM_SOURCE_DIR) + file;
    Scenario a = load_scenario(path, {"run.max_iterations=15", "run.stop_at_convergence=false"}, std::nullopt);
    Scenario f = load_scenario(path, {"run.max_iterations=15", "run.stop_at_convergence=false", "network.model=flow"},
                               std::nullopt);
    a.policies = f.policies = parse_policy_specs("static:min_capacity=2,symi,eplb,oracle");
    const auto ra = run_scenario(a, RunOptions{false, {}});
    const auto rf = run_scenario(f, RunOptions{false, {}});
    REQUIRE(ra.size() == rf.size());
    for (std::size_t i = 0; i < ra.size(); ++i) {
      INFO(ra[i].label);
      CHECK(rf[i].mean_iteration_ns >= ra[i].mean_iteration_ns);
      CHECK(rf[i].drop_rate == ra[i].drop_rate);  // the network changes time, not routing
    }
  }
}

TEST_CASE("the quickstart runs on each synthetic preset and the real OLMoE counts run end to end", "[compare][traces][e2e]") {
  const std::string dir = std::string(MOESIM_SOURCE_DIR) + "/scenarios/";
  for (const char* preset : {"gpt-small-16e", "qwen3-128e"}) {
    INFO(preset);
    Scenario s = load_scenario(dir + "quickstart.yaml",
                               {std::string("trace.preset=") + preset, "run.max_iterations=5"}, std::nullopt);
    const auto r = run_scenario(s, RunOptions{false, {}});
    REQUIRE(r.size() == 5);
    for (const auto& p : r) CHECK(p.iterations_run == 5);
  }
  if (!std::filesystem::exists(std::string(MOESIM_SOURCE_DIR) + "/../shared/data/real/olmoe/expert_counts_long.csv")) {
    WARN("shared/data/real is not beside the checkout: the OLMoE import is not run");
    return;
  }
  Scenario o = load_scenario(dir + "olmoe-real.yaml", {"run.max_iterations=5"}, std::nullopt);
  const auto r = run_scenario(o, RunOptions{false, {}});
  REQUIRE(r.size() == 4);
  // 2 nodes x 8 GPUs x 2048 tokens x top-8 per MoE layer, 3 recorded layers, 5 iterations.
  for (const auto& p : r) CHECK(p.iterations_run == 5);
  CHECK(r.back().drop_rate == 0.0);
}

TEST_CASE("a scenario runs on a calibration profile instead of the roofline", "[compare][profile][e2e]") {
  const std::string q = std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml";
  Scenario roof = load_scenario(q, {"run.max_iterations=3"}, std::nullopt);
  Scenario prof = load_scenario(q, {"run.max_iterations=3", "compute.profile=h100-sxm-measured", "compute.fallback=roofline"},
                                std::nullopt);
  roof.policies = prof.policies = parse_policy_specs("static:min_capacity=2");
  const auto a = run_scenario(roof, RunOptions{false, {}}).at(0);
  const auto b = run_scenario(prof, RunOptions{false, {}}).at(0);
  // Measured kernels differ from the roofline's 70 % of peak: compute time changes, routing does not.
  CHECK(a.mean_phase_ns[static_cast<int>(Phase::Compute)] != b.mean_phase_ns[static_cast<int>(Phase::Compute)]);
  CHECK(a.drop_rate == b.drop_rate);
  // A profile that does not exist is refused when the scenario loads, at the key that names it.
  CHECK_THROWS_WITH(load_scenario(q, {"run.max_iterations=1", "compute.profile=no-such-profile"}, std::nullopt),
                    Catch::Contains("--set 'compute.profile=no-such-profile': key 'compute.profile': profile "
                                    "'no-such-profile' is neither a shipped profile"));
}

TEST_CASE("every shipped scenario runs in both network models", "[compare][flow][e2e]") {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(MOESIM_SOURCE_DIR) / "scenarios";
  std::vector<fs::path> files;
  for (const fs::path& dir : {root, root / "regression"}) {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".yaml") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 6);
  const bool real_data = fs::exists(fs::path(MOESIM_SOURCE_DIR) / ".." / "shared" / "data" / "real");
  for (const fs::path& file : files) {
    INFO(file.string());
    if (file.filename().string().rfind("olmoe-real", 0) == 0 && !real_data) continue;  // olmoe-real*.yaml
    for (const char* net : {"analytical", "flow"}) {
      INFO(net);
      Scenario s = load_scenario(
          file.string(), {"run.max_iterations=2", "run.stop_at_convergence=false", std::string("network.model=") + net},
          std::nullopt);
      // A cluster of more than 256 GPUs (deepseek-v3-2048.yaml: 2,048 GPUs, 120 micro-batches)
      // runs its first policy for one iteration, which keeps the test within seconds.
      int iterations = 2;
      if (s.cluster.num_gpus() > 256) {
        iterations = 1;
        s.run.max_iterations = 1;
        s.policies.resize(1);
      }
      const auto results = run_scenario(s, RunOptions{false, {}});
      REQUIRE_FALSE(results.empty());
      for (const auto& r : results) {
        INFO(r.label);
        CHECK(r.iterations_run == iterations);
        CHECK(r.mean_iteration_ns > 0.0);
      }
    }
  }
}

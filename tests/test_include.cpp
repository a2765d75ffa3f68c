// A scenario's `include:` (app/scenario_include.hpp), a GPU mapping over the cluster preset's GPU,
// training.layer_overhead_ns and forward-only iterations: what `moesim fit` and its overlays use.
#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "tests/error_fixture.hpp"
#include "tests/file_fixture.hpp"

using Catch::Matchers::Contains;
using moesim::InputError;
using moesim::load_scenario;
using moesim::PolicyResult;
using moesim::RunOptions;
using moesim::run_scenario;
using moesim::Scenario;
using moesim::testing::TempDir;

namespace {

const std::string kBase =
    "name: base\n"
    "cluster:\n"
    "  preset: swiftmoe-cloud\n"
    "  nodes: 16\n"
    "model:\n"
    "  preset: gpt-small-moe\n"
    "placement:\n"
    "  slots_per_gpu: 4\n"
    "training:\n"
    "  optimizer_offload: true\n"
    "run:\n"
    "  max_iterations: 1\n"
    "policies:\n"
    "  - {name: static, capacity_factor: 1.0, min_capacity: 2}\n";

using moesim::testing::input_error;

PolicyResult run_one(const Scenario& s, bool forward_only) {
  RunOptions o;
  o.forward_only = forward_only;
  o.keep_rows = false;
  return run_scenario(s, o).front();
}

}  // namespace

TEST_CASE("include: later files over earlier ones, the own keys over all, mappings merged", "[scenario][include]") {
  TempDir d;
  d.write("base.yaml", kBase);
  d.write("fits/overlay.yaml", "cluster:\n  nic_efficiency: 0.5\n  gpu:\n    gemm_efficiency: 0.25\ntraining:\n"
                               "  host_adam_params_per_s: 2.0e9\n");
  const std::string main = d.write("main.yaml",
                                   "include: [base.yaml, fits/overlay.yaml]\n"
                                   "name: main\n"
                                   "training:\n  host_adam_params_per_s: 3.0e9\n");
  const Scenario s = load_scenario(main, {}, std::nullopt);
  CHECK(s.name == "main");                               // own key over the base's
  CHECK(s.cluster.nodes == 16);                          // from the base
  CHECK(s.cluster.nic_efficiency == 0.5);                // the overlay over the preset
  CHECK(s.cluster.gpu.gemm_efficiency == 0.25);          // over the cluster preset's GPU ...
  CHECK(s.cluster.gpu.name == "a100-pcie-80gb");         // ... which stays that GPU
  CHECK(s.cluster.gpu.peak_tflops == 312.0);
  CHECK(s.training.optimizer_offload);                   // base and own `training` merged
  CHECK(s.training.host_adam_params_per_s == 3.0e9);     // own over the overlay
  REQUIRE(s.policies.size() == 1);
  CHECK(s.policies[0].origin == d.file("base.yaml"));    // policy errors name the base file

  // --set wins over every file; a later include over an earlier one.
  const Scenario t = load_scenario(main, {"cluster.nic_efficiency=0.75"}, std::nullopt);
  CHECK(t.cluster.nic_efficiency == 0.75);
  d.write("low.yaml", "cluster:\n  nic_efficiency: 0.1\n");
  const std::string two = d.write("two.yaml", "include: [base.yaml, low.yaml, fits/overlay.yaml]\n");
  CHECK(load_scenario(two, {}, std::nullopt).cluster.nic_efficiency == 0.5);
  CHECK(load_scenario(two, {}, std::nullopt).name == "base");  // the base's name: two.yaml sets none

  // A null in a higher file means "not given": the lower value shows through.
  const std::string nul = d.write("null.yaml", "include: fits/overlay.yaml\ncluster:\n  preset: swiftmoe-cloud\n"
                                               "  nic_efficiency:\nmodel: {preset: gpt-small-moe}\n"
                                               "placement: {slots_per_gpu: 4}\npolicies: [static]\n");
  CHECK(load_scenario(nul, {}, std::nullopt).cluster.nic_efficiency == 0.5);
}

TEST_CASE("include: errors name the file and position they come from", "[scenario][include]") {
  TempDir d;
  d.write("base.yaml", kBase);
  // An unknown key in an included file: that file's line and column.
  d.write("bad.yaml", "cluster:\n  nic_efficency: 0.5\n");
  const std::string a = d.write("a.yaml", "include: [base.yaml, bad.yaml]\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(a, {}, std::nullopt); }),
             Contains(d.file("bad.yaml") + ":2:3: unknown key 'cluster.nic_efficency'"));
  // An out-of-range value there, too.
  d.write("range.yaml", "training:\n  layer_overhead_ns: -5\n");
  const std::string r = d.write("r.yaml", "include: [base.yaml, range.yaml]\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(r, {}, std::nullopt); }),
             Contains(d.file("range.yaml") + ":2:22: key 'training.layer_overhead_ns': -5 is out of range; allowed [0, "
                                             "10000000000]"));
  // A missing file, at the include's item.
  const std::string m = d.write("m.yaml", "include: [base.yaml, nothere.yaml]\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(m, {}, std::nullopt); }),
             Contains(m + ":1:22: key 'include': '" + d.file("nothere.yaml") + "' is not a file"));
  // A cycle, with the chain.
  d.write("c1.yaml", "include: c2.yaml\n");
  d.write("c2.yaml", "include: c1.yaml\n");
  const std::string e = input_error([&] { (void)load_scenario(d.file("c1.yaml"), {}, std::nullopt); });
  CHECK_THAT(e, Contains(d.file("c2.yaml") + ":1:10: key 'include'"));
  CHECK_THAT(e, Contains("an include cycle"));
  d.write("self.yaml", "include: self.yaml\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(d.file("self.yaml"), {}, std::nullopt); }),
             Contains("includes itself"));
  // A mapping over a scalar: both files named, nothing silently dropped.
  d.write("gpu.yaml", "cluster:\n  gpu:\n    gemm_efficiency: 0.3\n");
  const std::string g = d.write("g.yaml", "include: gpu.yaml\ncluster: {preset: swiftmoe-cloud, gpu: a100-sxm-80gb}\n"
                                          "model: {preset: gpt-small-moe}\npolicies: [static]\n");
  const std::string ge = input_error([&] { (void)load_scenario(g, {}, std::nullopt); });
  CHECK_THAT(ge, Contains(g + ":2:40: key 'cluster.gpu': 'a100-sxm-80gb' cannot be merged with the mapping"));
  CHECK_THAT(ge, Contains(d.file("gpu.yaml") + ":3:5"));
  // The key's type, and an included file that is not a mapping.
  const std::string t = d.write("t.yaml", "include: {a: 1}\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(t, {}, std::nullopt); }),
             Contains(t + ":1:10: key 'include': expected a path or a list of paths, found a mapping"));
  d.write("list.yaml", "- 1\n- 2\n");
  const std::string l = d.write("l.yaml", "include: list.yaml\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(l, {}, std::nullopt); }),
             Contains(d.file("list.yaml") + ": an included file must be a mapping of scenario keys, found a list"));
}

TEST_CASE("include: a trace path is relative to the file that gives it", "[scenario][include]") {
  TempDir d;
  d.write("sub/trace.csv", "iteration,layer,gpu,expert,tokens\n0,0,0,0,1\n");
  d.write("sub/trace.yaml", "trace:\n  kind: csv\n  path: trace.csv\n");
  const std::string main = d.write("main.yaml", "include: sub/trace.yaml\ncluster: {preset: swiftmoe-cloud}\n"
                                                "model: {preset: gpt-small-moe}\npolicies: [static]\n");
  CHECK(load_scenario(main, {}, std::nullopt).trace.path == d.file("sub/trace.csv"));
  // --set replaces it: then relative to the scenario.
  d.write("other.csv", "iteration,layer,gpu,expert,tokens\n0,0,0,0,1\n");
  CHECK(load_scenario(main, {"trace.path=other.csv"}, std::nullopt).trace.path == d.file("other.csv"));
}

TEST_CASE("a GPU mapping without preset needs a GPU underneath", "[scenario][include]") {
  TempDir d;
  const std::string f = d.write("nogpu.yaml", "cluster:\n  nodes: 1\n  pcie_gbps: 32\n  host_memory_bytes: 1e11\n"
                                              "  gpu: {gemm_efficiency: 0.5}\nmodel: {preset: gpt-small-moe}\n"
                                              "policies: [static]\n");
  CHECK_THAT(input_error([&] { (void)load_scenario(f, {}, std::nullopt); }),
             Contains(f + ":5:8: key 'cluster.gpu.preset': is required"));
}

TEST_CASE("layer overhead: once per layer in each forward and backward, by hand", "[iteration][fit]") {
  TempDir d;
  const std::string f = d.write("s.yaml", kBase);
  const Scenario s0 = load_scenario(f, {}, std::nullopt);
  const Scenario s1 = load_scenario(f, {"training.layer_overhead_ns=12345.4"}, std::nullopt);
  const PolicyResult full0 = run_one(s0, false), full1 = run_one(s1, false);
  const PolicyResult fwd0 = run_one(s0, true), fwd1 = run_one(s1, true);
  // Every GPU runs the same 12 layers, so the 12345 ns (rounded) land on the critical path once
  // per layer forward (12) and again backward (12); nothing else moves.
  CHECK(fwd1.mean_iteration_ns - fwd0.mean_iteration_ns == 12.0 * 12345.0);
  CHECK(full1.mean_iteration_ns - full0.mean_iteration_ns == 24.0 * 12345.0);
  using moesim::Phase;
  auto phase = [](const PolicyResult& r, Phase p) { return r.mean_phase_ns[static_cast<std::size_t>(p)]; };
  CHECK(phase(full1, Phase::Compute) - phase(full0, Phase::Compute) == 24.0 * 12345.0);
  // The forward alone: no optimizer, no gradient synchronisation, and shorter than the iteration.
  CHECK(phase(fwd0, Phase::Optimizer) == 0.0);
  CHECK(phase(fwd0, Phase::GradSync) == 0.0);
  CHECK(phase(full0, Phase::Optimizer) > 0.0);
  CHECK(fwd0.mean_iteration_ns < full0.mean_iteration_ns - phase(full0, Phase::Optimizer));
  // A forward's compute is a third of forward plus backward (backward GEMMs count twice).
  CHECK(phase(fwd0, Phase::Compute) == Approx(phase(full0, Phase::Compute) / 3.0).epsilon(1e-6));
}

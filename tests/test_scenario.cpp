// Scenario loading: strict keys, types, ranges, presets, overrides and the errors a user sees.
// Every error test checks the exception type (moesim::InputError) and the message: the origin
// file, "file:LINE:COL" where the input has a position, the dotted key path, the value found and
// what is allowed.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "tests/error_fixture.hpp"
#include "tests/file_fixture.hpp"
#include "tests/network_fixture.hpp"

using Catch::Matchers::Contains;
using moesim::InputError;
using moesim::load_scenario;
using moesim::load_scenario_text;
using moesim::run_scenario;
using moesim::Scenario;
using moesim::testing::TempDir;

namespace fs = std::filesystem;

namespace {

const std::string kOrigin = "t.yaml";

// The smallest valid scenario: 16 single-GPU nodes, 16 experts, one static policy, 1 iteration.
// Tests append a `policies:` section or other keys.
const std::string kBase =
    "name: probe\n"
    "cluster:\n"
    "  preset: swiftmoe-cloud\n"
    "model:\n"
    "  preset: gpt-small-moe\n"
    "run:\n"
    "  max_iterations: 1\n";
const std::string kBasePolicies = kBase + "policies:\n  - static\n";

// "t.yaml:LINE:COL" (1-based) of the first occurrence of `needle` in `text`.
std::string pos(const std::string& text, const std::string& needle, const std::string& origin = kOrigin) {
  const std::string at = moesim::test::text_position(text, needle, origin);
  REQUIRE(!at.empty());
  return at;
}

using moesim::testing::input_error;

std::string load_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return input_error([&] { (void)load_scenario_text(text, kOrigin, overrides, std::nullopt); });
}

// Loads (must succeed) and runs; returns the message of the InputError the run throws.
std::string run_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  Scenario s = load_scenario_text(text, kOrigin, overrides, std::nullopt);
  return input_error([&] { (void)run_scenario(s, moesim::RunOptions{false, {}}); });
}

// Load and run, whichever throws.
std::string load_or_run_error(const std::string& text) {
  return input_error([&] {
    Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
    (void)run_scenario(s, moesim::RunOptions{false, {}});
  });
}

const std::string kQuickstart = std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml";

}  // namespace

TEST_CASE("scenario: a minimal scenario loads and runs one iteration", "[scenario]") {
  Scenario s = load_scenario_text(kBasePolicies, kOrigin, {}, std::nullopt);
  CHECK(s.name == "probe");
  CHECK(s.cluster.num_gpus() == 16);
  CHECK(s.model.experts == 16);
  CHECK(s.slots_per_gpu == 1);  // default: experts / GPUs
  REQUIRE(s.policies.size() == 1);
  CHECK(s.policies[0].name == "static");
  CHECK(s.policies[0].label == "static");
  const auto results = run_scenario(s, moesim::RunOptions{false, {}});
  REQUIRE(results.size() == 1);
  CHECK(results[0].iterations_run == 1);
  CHECK(results[0].mean_iteration_ns > 0.0);

  // Without `name:` the scenario is named after the file.
  Scenario unnamed = load_scenario_text(kBasePolicies.substr(kBasePolicies.find('\n') + 1), "dir/my-run.yaml", {},
                                        std::nullopt);
  CHECK(unnamed.name == "my-run");
}

TEST_CASE("scenario: unknown keys are errors that list the allowed keys", "[scenario]") {
  SECTION("top level") {
    const std::string text = kBasePolicies + "colour: red\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "colour") + ": unknown key 'colour'"));
    CHECK_THAT(msg, Contains("allowed keys here: cluster, compute, convergence, description, dispatch, heterogeneity, "
                             "model, name, network, overlap, parallelism, placement, policies, routing, run, seed, trace, training"));
  }
  SECTION("nested key in a flow mapping") {
    const std::string text = "cluster: {preset: dgx-a100, nodez: 2}\nmodel: {preset: gpt-small-moe}\npolicies: [static]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("t.yaml:1:29: unknown key 'cluster.nodez'"));
    CHECK_THAT(msg, Contains("allowed keys here:"));
    CHECK_THAT(msg, Contains("nodes"));
    CHECK_THAT(msg, Contains("gpus_per_node"));
    CHECK_THAT(msg, Contains("nic_gbit"));
    CHECK_THAT(msg, Contains("preset"));
  }
  SECTION("nested key inside a GPU mapping") {
    const std::string text =
        "cluster:\n  preset: dgx-a100\n  gpu:\n    preset: h100-sxm\n    hbm: 1\nmodel: {preset: gpt-small-moe}\n"
        "policies: [static]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "hbm:") + ": unknown key 'cluster.gpu.hbm'"));
    CHECK_THAT(msg, Contains("hbm_bytes"));
    CHECK_THAT(msg, Contains("hbm_gbps"));
  }
  SECTION("a synthetic-only key with a csv trace") {
    TempDir dir;
    const std::string scen = (dir.path() / "s.yaml").string();
    dir.write("trace.csv", "iteration,layer,src_gpu,expert,tokens\n");
    const std::string text = kBasePolicies + "trace:\n  kind: csv\n  path: trace.csv\n  skew: 1.0\n";
    const std::string msg =
        input_error([&] { (void)load_scenario_text(text, scen, {}, std::nullopt); });
    CHECK_THAT(msg, Contains(pos(text, "skew", scen) + ": unknown key 'trace.skew'"));
    CHECK_THAT(msg, Contains("allowed keys here: kind, on_end, path"));
  }
}

TEST_CASE("scenario: a misspelt policy parameter is reported when the run validates the policies", "[scenario]") {
  // The first entry is fine; the second is misspelt: the error must come before anything runs.
  const std::string text = kBase +
                           "policies:\n"
                           "  - name: static\n"
                           "    label: a\n"
                           "  - name: static\n"
                           "    label: b\n"
                           "    capacity_factr: 1.5\n";
  Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);  // parameters are checked by the policy
  bool ran = false;
  const std::string msg = input_error([&] {
    (void)run_scenario(s, moesim::RunOptions{false, [&](const std::string&, std::int64_t) { ran = true; }});
  });
  CHECK_FALSE(ran);
  CHECK_THAT(msg, Contains(pos(text, "capacity_factr") + ": unknown key 'policies[1].capacity_factr'"));
  CHECK_THAT(msg, Contains("allowed keys here: capacity_factor, drop_tokens, label, min_capacity, name"));

  const std::string one = kBase + "policies:\n  - name: static\n    capacity_factr: 1.5\n";
  const std::string msg0 = run_error(one);
  CHECK_THAT(msg0, Contains(pos(one, "capacity_factr") + ": unknown key 'policies[0].capacity_factr'; allowed keys "
                                                         "here: capacity_factor, drop_tokens, label, min_capacity, "
                                                         "name"));
}

TEST_CASE("scenario: wrong types name the key, the value found and what is expected", "[scenario]") {
  SECTION("a string where an integer goes") {
    const std::string text = "cluster: {preset: swiftmoe-cloud, nodes: two}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "two") + ": key 'cluster.nodes': expected an integer in [1, 1048576], "
                                                 "found 'two'"));
  }
  SECTION("a string where a number goes") {
    const std::string text = kBasePolicies + "trace: {skew: high}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "high") + ": key 'trace.skew': expected a number in [0, 10], found 'high'"));
  }
  SECTION("a string where a boolean goes") {
    const std::string text = kBasePolicies + "training:\n  optimizer_offload: maybe\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "maybe") + ": key 'training.optimizer_offload': expected true or false, "
                                                   "found 'maybe'"));
  }
  SECTION("a scalar where a section goes") {
    const std::string text = "cluster: 5\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("t.yaml:1:10: key 'cluster': expected a mapping, found '5'"));
  }
  SECTION("a list where a string goes") {
    const std::string text = kBasePolicies + "description: [a, b]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "[a, b]") + ": key 'description': expected a string, found a list"));
  }
  SECTION("a scenario that is not a mapping") {
    CHECK_THAT(load_error("- a\n- b\n"), Contains("t.yaml: a scenario must be a YAML mapping"));
    CHECK_THAT(load_error(""), Contains("t.yaml: the scenario is empty"));
  }
}

TEST_CASE("scenario: out-of-range values name the key, the value and the range", "[scenario]") {
  SECTION("cluster.nodes: 0") {
    const std::string text = "cluster: {preset: swiftmoe-cloud, nodes: 0}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "0}") + ": key 'cluster.nodes': 0 is out of range; allowed [1, 1048576]"));
  }
  SECTION("trace.skew: -1") {
    const std::string text = kBasePolicies + "trace: {skew: -1}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "-1}") + ": key 'trace.skew': -1 is out of range; allowed [0, 10]"));
  }
  SECTION("run.max_iterations: 0") {
    // kBase already has a run section: use a document without it.
    const std::string t2 = "cluster: {preset: swiftmoe-cloud}\nmodel: {preset: gpt-small-moe}\nrun: {max_iterations: 0}\n"
                           "policies: [static]\n";
    const std::string msg = load_error(t2);
    CHECK_THAT(msg, Contains(pos(t2, "0}") + ": key 'run.max_iterations': 0 is out of range; allowed [1, 100000000]"));
  }
  SECTION("seed: -1") {
    const std::string text = kBasePolicies + "seed: -1\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "-1") + ": key 'seed': -1 is out of range; allowed [0, "));
  }
  SECTION("a policy parameter out of range") {
    const std::string text = kBase + "policies:\n  - name: static\n    capacity_factor: -1\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "-1") + ": key 'policies[0].capacity_factor': -1 is out of range; "
                                                "allowed [0, 1000000]"));
  }
  SECTION("capacity_factor 0 with drop_tokens") {
    const std::string text = kBase + "policies:\n  - name: static\n    capacity_factor: 0\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "0\n") + ": key 'policies[0].capacity_factor': must be > 0 when drop_tokens "
                                                 "is true"));
  }
  SECTION("top_k above experts") {
    const std::string text = "cluster: {preset: swiftmoe-cloud}\nmodel: {preset: gpt-small-moe, top_k: 32}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "32}") + ": key 'model.top_k': 32 exceeds experts (16)"));
  }
}

TEST_CASE("scenario: enum values must be one of the allowed ones", "[scenario]") {
  SECTION("trace.kind") {
    const std::string text = kBasePolicies + "trace: {kind: parquet}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "parquet") + ": key 'trace.kind': 'parquet' is not allowed; allowed: "
                                                     "synthetic, csv, binary, import"));
  }
  SECTION("trace.on_end") {
    const std::string text = kBasePolicies + "trace: {on_end: wrap}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "wrap") + ": key 'trace.on_end': 'wrap' is not allowed; allowed: loop, stop"));
  }
  SECTION("model.dtype") {
    const std::string text = "cluster: {preset: swiftmoe-cloud}\nmodel: {preset: gpt-small-moe, dtype: int8}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "int8") + ": key 'model.dtype': 'int8' is not allowed; allowed: bf16, fp16, "
                                                  "fp32"));
  }
  SECTION("cluster.intra_node") {
    const std::string text = "cluster: {preset: dgx-a100, intra_node: infiniband}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "infiniband") + ": key 'cluster.intra_node': 'infiniband' is not allowed; "
                                                        "allowed: nvswitch, pcie, none"));
  }
  SECTION("network.model") {
    const std::string text = kBasePolicies + "network: {model: packet}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "packet") + ": key 'network.model': 'packet' is not allowed; allowed: "
                                                    "analytical"));
  }
  SECTION("convergence.form") {
    const std::string text = kBasePolicies + "convergence: {form: cubic}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "cubic") + ": key 'convergence.form': 'cubic' is not allowed; allowed: "
                                                   "linear, table, effective_tokens"));
  }
}

TEST_CASE("scenario: unknown presets list the available ones", "[scenario]") {
  SECTION("cluster") {
    const std::string text = "cluster:\n  preset: dgx-b200\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "dgx-b200") + ": key 'cluster.preset': unknown preset 'dgx-b200'; available: "
                                                      "deepseek-h800, dgx-a100, dgx-h100-fat-tree, dgx-h100, swiftmoe-cloud"));
  }
  SECTION("model") {
    const std::string text = "cluster: {preset: dgx-a100}\nmodel: {preset: llama-moe}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "llama-moe") + ": key 'model.preset': unknown preset 'llama-moe'; available: "
                                                       "deepseek-v3, gpt-small-moe, mixtral-8x7b, olmoe-1b-7b, "
                                                       "qwen3-30b-a3b"));
  }
  SECTION("gpu given as a name") {
    const std::string text = "cluster: {preset: dgx-a100, gpu: b200}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "b200}") + ": key 'cluster.gpu': unknown preset 'b200'; available: "
                                                   "a100-pcie-80gb, a100-sxm-80gb, h100-sxm, h200-sxm, h800-sxm"));
  }
  SECTION("gpu given as a mapping") {
    const std::string text = "cluster:\n  preset: dgx-a100\n  gpu:\n    preset: b200\n    hbm_bytes: 1.9e11\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "b200") + ": key 'cluster.gpu.preset': unknown preset 'b200'; available: "
                                                  "a100-pcie-80gb, a100-sxm-80gb, h100-sxm, h200-sxm, h800-sxm"));
  }
  SECTION("a gpu mapping needs preset: when no cluster preset gives the GPU") {
    const std::string text = "cluster:\n  pcie_gbps: 32\n  gpu:\n    hbm_bytes: 1.9e11\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "hbm_bytes") + ": key 'cluster.gpu.preset': is required (a string)"));
  }
}

TEST_CASE("scenario: presets with overrides", "[scenario]") {
  const std::string text =
      "cluster:\n"
      "  preset: dgx-a100\n"
      "  nodes: 2\n"
      "  nic_gbit: 400\n"
      "  gpu:\n"
      "    preset: h100-sxm\n"
      "    hbm_bytes: 9.6e10\n"
      "model:\n"
      "  preset: gpt-small-moe\n"
      "  top_k: 2\n"
      "policies: [static]\n";
  Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
  CHECK(s.cluster.name == "dgx-a100");
  CHECK(s.cluster.nodes == 2);
  CHECK(s.cluster.gpus_per_node == 8);  // from the preset
  CHECK(s.cluster.nic_gbit == 400);
  CHECK(s.cluster.nics_per_node == 8);
  CHECK(s.cluster.gpu.name == "h100-sxm");
  CHECK(s.cluster.gpu.arch == "hopper");
  CHECK(s.cluster.gpu.hbm_bytes == 9.6e10);
  CHECK(s.cluster.gpu.peak_tflops == 989);
  CHECK(s.model.top_k == 2);
  CHECK(s.model.hidden == 768);
  CHECK(s.slots_per_gpu == 1);  // 16 experts over 16 GPUs
}

TEST_CASE("scenario: the policies list", "[scenario]") {
  SECTION("missing") {
    const std::string msg = load_error(kBase);
    CHECK_THAT(msg, Contains("t.yaml:1:1: key 'policies': is required: a list of policy names or {name: ..., "
                             "<parameters>}"));
  }
  SECTION("not a list") {
    const std::string text = kBase + "policies: static\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "static") + ": key 'policies': expected a non-empty list of policies"));
  }
  SECTION("empty") {
    const std::string text = kBase + "policies: []\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "[]") + ": key 'policies': expected a non-empty list of policies"));
  }
  SECTION("an item that is neither a name nor a mapping") {
    const std::string text = kBase + "policies:\n  - [static]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "- [") + ": key 'policies': item 0 must be a policy name or a mapping with "
                                                 "name:"));
  }
  SECTION("a mapping without name:") {
    const std::string text = kBase + "policies:\n  - label: x\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "label") + ": key 'policies[0].name': is required (a string)"));
  }
  SECTION("unknown policy name") {
    const std::string text = kBase + "policies:\n  - name: fancy\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "fancy") + ": key 'policies[0].name': unknown policy 'fancy'; registered "
                                                   "policies: static"));
  }
  SECTION("duplicate labels") {
    const std::string text = kBase + "policies:\n  - static\n  - static\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "- static") + ": key 'policies': item 1: label 'static' is used twice"));
  }
  SECTION("duplicate explicit labels") {
    const std::string text = kBase +
                             "policies:\n  - name: static\n    label: x\n  - name: static\n    label: x\n"
                             "    capacity_factor: 2\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "- name") + ": key 'policies': item 1: label 'x' is used twice"));
  }
  SECTION("distinct labels for the same policy are fine") {
    const std::string text = kBase + "policies:\n  - static\n  - name: static\n    label: cf2\n    capacity_factor: 2\n";
    Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
    REQUIRE(s.policies.size() == 2);
    CHECK(s.policies[1].label == "cf2");
    const auto r = run_scenario(s, moesim::RunOptions{false, {}});
    REQUIRE(r.size() == 2);
    CHECK(r[1].parameters["capacity_factor"] == 2.0);
    CHECK(r[0].parameters["min_capacity"] == 4);  // DeepSpeed default
    CHECK(r[0].parameters["drop_tokens"] == true);
  }
}

TEST_CASE("scenario: an unknown policy given as a plain name reports its line", "[scenario]") {
  // The scalar form `- fancy` loses the position: the message is "t.yaml: key 'policies[0].name': ..."
  // although the name sits at a known line and column.
  const std::string text = kBase + "policies:\n  - fancy\n";
  const std::string msg = run_error(text);
  CHECK_THAT(msg, Contains("key 'policies[0]"));
  CHECK_THAT(msg, Contains("unknown policy 'fancy'; registered policies: static"));  // first of the list
  CHECK_THAT(msg, Contains(pos(text, "fancy")));
}

TEST_CASE("scenario: a policy label that is not a string is an input error", "[scenario]") {
  // load_policies calls item["label"].as<std::string>() unchecked: a mapping throws
  // YAML::TypedBadConversion instead of InputError.
  const std::string text = kBase + "policies:\n  - name: static\n    label: {a: 1}\n";
  const std::string msg = load_error(text);
  CHECK_THAT(msg, Contains(pos(text, "{a: 1}")));
  CHECK_THAT(msg, Contains("policies[0].label"));
  CHECK_THAT(msg, Contains("a mapping"));
}

TEST_CASE("scenario: trace files", "[scenario]") {
  SECTION("a csv trace that does not exist, relative to the scenario file") {
    TempDir dir;
    const std::string scen = (dir.path() / "s.yaml").string();
    const std::string text = kBasePolicies + "trace:\n  kind: csv\n  path: traces/none.csv\n";
    const std::string msg = input_error([&] { (void)load_scenario_text(text, scen, {}, std::nullopt); });
    const std::string expected = (dir.path() / "traces" / "none.csv").lexically_normal().string();
    CHECK_THAT(msg, Contains(pos(text, "traces/none.csv", scen) + ": key 'trace.path': trace file '" + expected +
                             "' does not exist"));
  }
  SECTION("an existing csv trace is found relative to the scenario file") {
    TempDir dir;
    dir.write("traces/t.csv", "iteration,layer,src_gpu,expert,tokens\n");
    const std::string scen = dir.write("sub/../s.yaml", kBasePolicies + "trace:\n  kind: csv\n  path: traces/t.csv\n");
    Scenario s = load_scenario(scen, {}, std::nullopt);
    CHECK(s.trace.kind == "csv");
    CHECK(fs::equivalent(s.trace.path, dir.path() / "traces" / "t.csv"));
    const auto j = s.to_json();
    CHECK(j["trace"]["path"] == s.trace.path);
    CHECK_FALSE(j["trace"].contains("skew"));
  }
  SECTION("csv without path") {
    const std::string text = kBasePolicies + "trace:\n  kind: csv\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "kind") + ": key 'trace.path': is required (a string)"));
  }
  SECTION("path with kind synthetic") {
    const std::string text = kBasePolicies + "trace:\n  kind: synthetic\n  path: a.csv\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "a.csv") + ": key 'trace.path': is only allowed with kind: csv, binary or import"));
  }
  SECTION("a scenario file that does not exist") {
    const std::string msg = input_error([] { (void)load_scenario("/nonexistent/moesim/s.yaml", {}, std::nullopt); });
    CHECK_THAT(msg, Contains("/nonexistent/moesim/s.yaml: cannot open file"));
  }
}

TEST_CASE("scenario: impossible clusters", "[scenario]") {
  SECTION("too few expert slots") {
    const std::string text =
        "cluster: {preset: dgx-a100}\nmodel: {preset: gpt-small-moe}\nplacement:\n  slots_per_gpu: 1\n"
        "policies: [static]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "1\npolicies") + ": key 'placement.slots_per_gpu': 1 slots x 8 GPUs = 8 slots "
                                                         "cannot hold the 16 experts"));
  }
  SECTION("slots_per_gpu required when experts do not divide over the GPUs") {
    const std::string text = "cluster: {preset: swiftmoe-cloud}\nmodel: {preset: mixtral-8x7b}\npolicies: [static]\n";
    const std::string msg = load_error(text);
    // No placement section in the file, so there is no position to report.
    CHECK_THAT(msg, Contains("t.yaml: key 'placement.slots_per_gpu': is required: 8 experts do not divide evenly "
                             "over 16 GPUs"));
  }
  SECTION("slots_per_gpu out of range") {
    const std::string text = kBasePolicies + "placement: {slots_per_gpu: 0}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "0}") + ": key 'placement.slots_per_gpu': 0 is out of range; allowed [1, 4096]"));
  }
  SECTION("GPU memory exceeded") {
    const std::string text = "cluster: {preset: dgx-a100}\nmodel: {preset: deepseek-v3}\nrun: {max_iterations: 1}\n"
                             "policies: [static]\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains("t.yaml"));
    CHECK_THAT(msg, Contains("placement.slots_per_gpu 32"));  // 256 experts over 8 GPUs
    CHECK_THAT(msg, Contains("each GPU needs"));
    CHECK_THAT(msg, Contains("but a100-sxm-80gb has 80.00 GB"));
    CHECK_THAT(msg, Contains("training.optimizer_offload"));
  }
  SECTION("GPU memory exceeded by slots on a preset that fits otherwise") {
    // gpt-small-moe fits with 1 slot; each slot adds 12 layers x 4.7M params.
    const std::string text = kBasePolicies + "placement: {slots_per_gpu: 4096}\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains("placement.slots_per_gpu 4096"));
    CHECK_THAT(msg, Contains("but a100-pcie-80gb has 80.00 GB"));
  }
  SECTION("intra_node none with several GPUs per node") {
    const std::string text = "cluster: {preset: swiftmoe-cloud, gpus_per_node: 2}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("key 'cluster.intra_node': is none but gpus_per_node is 2; use nvswitch or pcie"));
    CHECK_THAT(msg, Contains("t.yaml:1:"));
  }
  SECTION("nvswitch on a GPU without NVLink") {
    const std::string text = "cluster: {preset: dgx-a100, gpu: a100-pcie-80gb}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("key 'cluster.intra_node': is nvswitch but GPU 'a100-pcie-80gb' has no NVLink links"));
    CHECK_THAT(msg, Contains("t.yaml:1:"));
  }
}

TEST_CASE("scenario: static placement errors name the policy entry and the slots", "[scenario]") {
  // StaticPolicy fails with p.fail("", ...); Cfg::where("") prints only the position, not the key path
  // ('policies[0]'), so the message does not say which entry or key is at fault.
  SECTION("more slots a GPU than experts") {
    const std::string text = "cluster: {preset: dgx-a100}\nmodel: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 17}\n"
                             "run: {max_iterations: 1}\npolicies:\n  - name: static\n";
    const std::string msg = run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "name: static")));
    CHECK_THAT(msg, Contains("static placement with placement.slots_per_gpu 17 > 16 experts would hold an expert "
                             "twice on one GPU; set placement.slots_per_gpu <= 16"));
    CHECK_THAT(msg, Contains("policies[0]"));
  }
  SECTION("spare slots (16 experts, 16 GPUs x 3 slots) are replicas, not an error") {
    const std::string text = kBase + "placement: {slots_per_gpu: 3}\npolicies:\n  - name: static\n";
    Scenario s3 = load_scenario_text(text, kOrigin, {}, std::nullopt);
    const auto r = run_scenario(s3, moesim::RunOptions{false, {}});
    REQUIRE(r.size() == 1);
    CHECK(r[0].parameters["replicas_per_expert"] == 3);
    CHECK(r[0].max_filled_slots == 48);
  }
}

TEST_CASE("scenario: a cluster or model without a preset must give every figure", "[scenario]") {
  // Without a preset, absent keys would default to 0 (an infinitely slow link, zero tokens).
  SECTION("cluster without nic_gbit") {
    const std::string text =
        "cluster:\n  nodes: 2\n  gpus_per_node: 1\n  gpu: a100-pcie-80gb\n  intra_node: none\n  pcie_gbps: 32\n"
        "  nccl_pci_gbps: 12\n  nics_per_node: 1\n  nic_efficiency: 0.96\n  nic_latency_ns: 5000\n"
        "  host_memory_bytes: 2.0e11\nmodel: {preset: gpt-small-moe}\nrun: {max_iterations: 1}\npolicies: [static]\n";
    const std::string msg = load_or_run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "nodes: 2") + ": key 'cluster.nic_gbit': is required (no preset sets it); it "
                                                      "must be > 0"));
  }
  SECTION("cluster without gpu") {
    const std::string text = "cluster: {nodes: 1, gpus_per_node: 1, pcie_gbps: 32, host_memory_bytes: 1e11}\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("t.yaml:1:10: key 'cluster.gpu': is required (a GPU preset name or a mapping with "
                             "preset:)"));
  }
  SECTION("a single-node cluster needs no NIC") {
    const std::string text =
        "cluster: {gpu: h100-sxm, gpus_per_node: 4, intra_node: nvswitch, pcie_gbps: 64, host_memory_bytes: 1e12}\n"
        "model: {preset: gpt-small-moe}\nrun: {max_iterations: 1}\npolicies: [static]\n";
    Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
    CHECK(s.cluster.name.empty());
    CHECK(s.cluster.num_gpus() == 4);
    CHECK(s.slots_per_gpu == 4);
    CHECK(run_scenario(s, moesim::RunOptions{false, {}}).size() == 1);
  }
  SECTION("model without seq_len") {
    const std::string text =
        "cluster: {preset: swiftmoe-cloud}\nmodel:\n  layers: 2\n  hidden: 64\n  heads: 4\n  experts: 16\n"
        "  ffn_hidden: 256\n  expert_ffn_hidden: 256\n  vocab: 1000\n  micro_batch_per_gpu: 1\n"
        "run: {max_iterations: 1}\npolicies: [static]\n";
    const std::string msg = load_or_run_error(text);
    CHECK_THAT(msg, Contains(pos(text, "layers") + ": key 'model.seq_len': is required (no preset sets it); it must "
                                                    "be >= 1"));
  }
  SECTION("a complete model without a preset") {
    const std::string text =
        "cluster: {preset: swiftmoe-cloud}\nmodel:\n  layers: 2\n  hidden: 64\n  heads: 4\n  experts: 16\n"
        "  ffn_hidden: 256\n  expert_ffn_hidden: 256\n  vocab: 1000\n  seq_len: 128\n  micro_batch_per_gpu: 1\n"
        "run: {max_iterations: 1}\npolicies: [static]\n";
    Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
    CHECK(s.model.kv_heads == 4);   // defaults to heads
    CHECK(s.model.head_dim == 16);  // defaults to hidden / heads
    CHECK(s.model.top_k == 1);
    CHECK(s.model.ffn_matrices == 2);
    CHECK(s.model.dtype == moesim::DType::BF16);
    CHECK(s.model.tokens_per_gpu() == 128);
  }
}

TEST_CASE("scenario: non-string sources are an input error", "[scenario]") {
  // read_sources / parse_gpu call s.as<std::string>() unchecked: YAML::TypedBadConversion escapes.
  const std::string text = "cluster: {preset: swiftmoe-cloud, sources: [{a: 1}]}\n";
  const std::string msg = load_error(text);
  CHECK_THAT(msg, Contains("cluster.sources"));
  CHECK_THAT(msg, Contains("t.yaml:1:"));
}

TEST_CASE("scenario: YAML syntax errors report line and column", "[scenario]") {
  SECTION("bad indentation") {
    const std::string msg = load_error("name: a\nseed: 1\n  bad: 2\n");
    CHECK_THAT(msg, Contains("t.yaml:3:6: YAML syntax error: illegal map value"));
  }
  SECTION("unclosed flow mapping") {
    const std::string msg = load_error("name: a\ncluster: {preset: dgx-a100\nmodel: x\n");
    CHECK_THAT(msg, Contains("t.yaml:3:"));
    CHECK_THAT(msg, Contains("YAML syntax error"));
  }
  SECTION("in a file") {
    TempDir dir;
    const std::string f = dir.write("bad.yaml", "name: a\npolicies:\n  - static\n - x\n");
    const std::string msg = input_error([&] { (void)load_scenario(f, {}, std::nullopt); });
    CHECK_THAT(msg, Contains(f + ":4:2: YAML syntax error"));
  }
}

TEST_CASE("scenario: --set overrides", "[scenario]") {
  SECTION("cluster.nodes=4 changes the cluster") {
    Scenario s = load_scenario_text(kBasePolicies, kOrigin, {"cluster.nodes=4"}, std::nullopt);
    CHECK(s.cluster.nodes == 4);
    CHECK(s.cluster.num_gpus() == 4);
    CHECK(s.slots_per_gpu == 4);  // the default follows: 16 experts / 4 GPUs
    CHECK(s.to_json()["cluster"]["gpus"] == 4);
    const auto r = run_scenario(s, moesim::RunOptions{false, {}});
    REQUIRE(r.size() == 1);
    CHECK(r[0].iterations_run == 1);
  }
  SECTION("overrides create missing sections and replace presets") {
    Scenario s = load_scenario_text(kBasePolicies, kOrigin,
                                    {"trace.skew=1.5", "training.optimizer_offload=true", "cluster.preset=dgx-h100",
                                     "cluster.nodes=2"},
                                    std::nullopt);
    CHECK(s.trace.synthetic.skew == 1.5);
    CHECK(s.training.optimizer_offload);
    CHECK(s.cluster.gpu.name == "h100-sxm");
    CHECK(s.cluster.num_gpus() == 16);
  }
  SECTION("the last of two overrides of a key wins") {
    Scenario s = load_scenario_text(kBasePolicies, kOrigin, {"cluster.nodes=2", "cluster.nodes=8"}, std::nullopt);
    CHECK(s.cluster.nodes == 8);
  }
  SECTION("a bad value") {
    const std::string msg = load_error(kBasePolicies, {"cluster.nodes=two"});
    CHECK_THAT(msg, Contains("key 'cluster.nodes': expected an integer in [1, 1048576], found 'two'"));
  }
  SECTION("a value out of range") {
    const std::string msg = load_error(kBasePolicies, {"trace.skew=11"});
    CHECK_THAT(msg, Contains("key 'trace.skew': 11 is out of range; allowed [0, 10]"));
  }
  SECTION("an unknown key") {
    const std::string msg = load_error(kBasePolicies, {"foo=1"});
    CHECK_THAT(msg, Contains("--set 'foo=1': unknown key 'foo'"));
    CHECK_THAT(msg, Contains("unknown key 'foo'; allowed keys here: cluster, compute, convergence, description, "
                             "dispatch, heterogeneity, model, name, network, overlap, parallelism, placement, policies, routing, run, "
                             "seed, trace, training"));
  }
  SECTION("an unknown nested key") {
    const std::string msg = load_error(kBasePolicies, {"cluster.nodez=2"});
    CHECK_THAT(msg, Contains("--set 'cluster.nodez=2': unknown key 'cluster.nodez'; allowed keys here:"));
  }
  SECTION("not an assignment") {
    const std::string msg = load_error(kBasePolicies, {"cluster.nodes"});
    CHECK_THAT(msg, Contains("--set 'cluster.nodes': expected key.path=value"));
  }
  SECTION("an empty path segment") {
    const std::string msg = load_error(kBasePolicies, {"cluster..nodes=2"});
    CHECK_THAT(msg, Contains("--set 'cluster..nodes=2': empty key in path 'cluster..nodes'"));
  }
  SECTION("a path through a list") {
    const std::string msg = load_error(kBasePolicies, {"policies.capacity_factor=2"});
    CHECK_THAT(msg, Contains("--set 'policies.capacity_factor=2': key 'policies' is not a mapping"));
  }
  SECTION("a value that is not valid YAML") {
    const std::string msg = load_error(kBasePolicies, {"cluster.nodes=[1"});
    CHECK_THAT(msg, Contains("--set 'cluster.nodes=[1': value is not valid YAML"));
  }
}

TEST_CASE("scenario: a bad --set value is attributed to --set, not to a line of the file", "[scenario]") {
  // The override's value node carries the mark of the one-line string it was parsed from, so the
  // message reads "t.yaml:1:1: key 'cluster.nodes': ..." and sends the user to line 1 of the file.
  const std::string msg = load_error(kBasePolicies, {"cluster.nodes=two"});
  CHECK_THAT(msg, Contains("key 'cluster.nodes': expected an integer in [1, 1048576], found 'two'"));
  CHECK_THAT(msg, Contains("--set"));
  CHECK_THAT(msg, !Contains("t.yaml:1:1"));
}

TEST_CASE("scenario: the convergence model", "[scenario]") {
  SECTION("table with mismatched list lengths") {
    const std::string text = kBasePolicies +
                             "convergence:\n  form: table\n  table_survival: [0.2, 0.5, 0.9]\n"
                             "  table_iterations: [900, 600]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "[900") + ": key 'convergence.table_iterations': has 2 points but "
                                                  "table_survival has 3; they must match and be non-empty"));
  }
  SECTION("table survival not increasing") {
    const std::string text = kBasePolicies +
                             "convergence:\n  form: table\n  table_survival: [0.5, 0.2]\n  table_iterations: [900, 600]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "[0.5") + ": key 'convergence.table_survival': must be strictly increasing"));
  }
  SECTION("table survival outside [0, 1]") {
    const std::string text = kBasePolicies +
                             "convergence:\n  form: table\n  table_survival: [0.5, 1.2]\n  table_iterations: [900, 600]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "[0.5") + ": key 'convergence.table_survival': item 1 is '1.2'; allowed "
                                                  "numbers in [0, 1]"));
  }
  SECTION("linear with N(1) < 1") {
    const std::string text = kBasePolicies + "convergence:\n  a_iterations: 100\n  b_iterations: 200\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains(pos(text, "200") + ": key 'convergence.b_iterations': a_iterations - b_iterations * 1 = "
                                                 "-100 iterations; it must be >= 1 for every survival in [0, 1]"));
  }
  SECTION("linear with N(0) < 1") {
    const std::string text = kBasePolicies + "convergence:\n  a_iterations: 1\n  b_iterations: 0.5\n";
    // N(0) = 1 is allowed; N(1) = 0.5 is not.
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("key 'convergence.b_iterations': a_iterations - b_iterations * 1 = 0.5 iterations"));
  }
  SECTION("a valid table") {
    const std::string text = kBasePolicies +
                             "convergence:\n  form: table\n  table_survival: [0.2, 0.6]\n  table_iterations: [1000, 600]\n";
    Scenario s = load_scenario_text(text, kOrigin, {}, std::nullopt);
    CHECK(s.convergence.iterations_needed(0.1) == Approx(1000));
    CHECK(s.convergence.iterations_needed(0.4) == Approx(800));
    CHECK(s.convergence.iterations_needed(0.9) == Approx(600));
    const auto j = s.to_json()["convergence"];
    CHECK(j["form"] == "table");
    CHECK(j["source"] == "scenario");
  }
}

TEST_CASE("scenario: quickstart resolves every default", "[scenario]") {
  Scenario s = load_scenario(kQuickstart, {}, std::nullopt);
  CHECK(s.seed == 42);
  CHECK(s.trace.synthetic.seed == 42);
  REQUIRE(s.policies.size() == 5);
  CHECK(s.policies[0].label == "static-cf1");
  CHECK(s.policies[1].label == "static-cf2");
  CHECK(s.policies[2].label == "static-dropless");
  CHECK(s.policies[3].label == "symi");
  CHECK(s.policies[4].label == "oracle");

  nlohmann::json j = s.to_json();
  CHECK(j["name"] == "quickstart");
  CHECK(j["file"] == kQuickstart);
  CHECK(j["seed"] == 42);
  // Cluster: swiftmoe-cloud preset, nothing overridden.
  CHECK(j["cluster"]["name"] == "swiftmoe-cloud");
  CHECK(j["cluster"]["nodes"] == 16);
  CHECK(j["cluster"]["gpus_per_node"] == 1);
  CHECK(j["cluster"]["gpus"] == 16);
  CHECK(j["cluster"]["intra_node"] == "none");
  CHECK(j["cluster"]["nic_gbit"] == 100);
  CHECK(j["cluster"]["nics_per_node"] == 1);
  CHECK(j["cluster"]["nic_efficiency"] == 0.96);
  CHECK(j["cluster"]["nic_latency_ns"] == 5000);
  CHECK(j["cluster"]["pcie_gbps"] == 32);
  CHECK(j["cluster"]["nccl_pci_gbps"] == 12);
  CHECK(j["cluster"]["host_memory_bytes"] == 2.0e11);
  CHECK(j["cluster"]["derived_nic_gbps_per_gpu"].get<double>() == Approx(12.0));  // 100 Gb/s x 0.96
  CHECK(j["cluster"]["derived_intra_gbps_per_gpu"] == 0.0);
  CHECK(j["cluster"]["gpu"]["name"] == "a100-pcie-80gb");
  CHECK(j["cluster"]["gpu"]["arch"] == "ampere");
  CHECK(j["cluster"]["gpu"]["peak_tflops"] == 312);
  CHECK(j["cluster"]["gpu"]["hbm_bytes"] == 80.0e9);
  CHECK(j["cluster"]["gpu"]["hbm_gbps"] == 1935);
  CHECK(j["cluster"]["gpu"]["nvlink_links"] == 0);
  CHECK(j["cluster"]["gpu"]["gemm_efficiency"] == 0.7);
  // Model: gpt-small-moe preset.
  CHECK(j["model"]["name"] == "gpt-small-moe");
  CHECK(j["model"]["layers"] == 12);
  CHECK(j["model"]["hidden"] == 768);
  CHECK(j["model"]["heads"] == 12);
  CHECK(j["model"]["kv_heads"] == 12);
  CHECK(j["model"]["head_dim"] == 64);
  CHECK(j["model"]["experts"] == 16);
  CHECK(j["model"]["top_k"] == 1);
  CHECK(j["model"]["ffn_matrices"] == 2);
  CHECK(j["model"]["seq_len"] == 512);
  CHECK(j["model"]["micro_batch_per_gpu"] == 4);
  CHECK(j["model"]["dtype"] == "bf16");
  CHECK(j["model"]["derived_moe_layers"] == 12);
  CHECK(j["model"]["derived_tokens_per_gpu"] == 2048);
  // The rest.
  CHECK(j["placement"]["slots_per_gpu"] == 4);
  CHECK(j["network"]["model"] == "analytical");
  CHECK(j["training"]["optimizer_offload"] == true);
  CHECK(j["training"]["grad_bytes_per_param"] == 2.0);
  CHECK(j["training"]["optimizer_bytes_per_param"] == 12.0);
  CHECK(j["training"]["adam_hbm_bytes_per_param"] == 28.0);
  CHECK(j["training"]["host_adam_params_per_s"] == 1.0e9);
  CHECK(j["trace"]["kind"] == "synthetic");
  CHECK(j["trace"]["on_end"] == "loop");
  CHECK(j["trace"]["skew"] == 1.0);
  CHECK(j["trace"]["drift_sigma"] == 0.05);
  CHECK(j["trace"]["drift_reversion"] == 0.05);
  CHECK(j["convergence"]["form"] == "linear");
  CHECK(j["convergence"]["a_iterations"] == 827.5);
  CHECK(j["convergence"]["b_iterations"] == 466.6);
  CHECK(j["convergence"]["iterations_at_full_survival"].get<double>() == Approx(827.5 - 466.6));
  CHECK_THAT(j["convergence"]["source"].get<std::string>(), Contains("2504.19925"));
  CHECK(j["run"]["max_iterations"] == 5000);
  CHECK(j["run"]["stop_at_convergence"] == true);

  // Every documented key is present and not null.
  const std::vector<std::pair<std::string, std::vector<std::string>>> sections{
      {"cluster",
       {"name", "nodes", "gpus_per_node", "gpus", "gpu", "intra_node", "pcie_gbps", "nccl_pci_gbps", "nic_gbit",
        "nics_per_node", "nic_efficiency", "nic_latency_ns", "host_memory_bytes", "sources"}},
      {"model",
       {"name", "layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "expert_ffn_hidden",
        "ffn_matrices", "experts", "top_k", "shared_experts", "first_dense_layers", "moe_layer_interval", "vocab",
        "seq_len", "micro_batch_per_gpu", "dtype", "sources"}},
      {"training",
       {"optimizer_offload", "grad_bytes_per_param", "optimizer_bytes_per_param", "adam_hbm_bytes_per_param",
        "host_adam_params_per_s"}},
      {"trace", {"kind", "on_end", "skew", "drift_sigma", "drift_reversion"}},
      {"convergence", {"form", "a_iterations", "b_iterations", "source"}},
      {"run", {"max_iterations", "stop_at_convergence"}},
      {"placement", {"slots_per_gpu"}},
      {"parallelism",
       {"tensor", "pipeline", "expert", "expert_tensor", "data", "virtual_stages", "micro_batches", "zero_stage",
        "sequence_parallel"}},
      {"dispatch", {"dtype"}},
      {"network", {"model"}}};
  for (const auto& [section, keys] : sections) {
    for (const auto& k : keys) {
      INFO(section << "." << k);
      REQUIRE(j[section].contains(k));
      CHECK_FALSE(j[section][k].is_null());
    }
  }
  for (const auto& k : {"name", "arch", "peak_tflops", "hbm_bytes", "hbm_gbps", "nvlink_links", "nvlink_gbps",
                        "nccl_nvlink_link_gbps", "gemm_efficiency", "sources"}) {
    INFO("cluster.gpu." << k);
    CHECK(j["cluster"]["gpu"].contains(k));
  }

  SECTION("--seed overrides the file's seed") {
    Scenario s7 = load_scenario(kQuickstart, {}, std::uint64_t{7});
    CHECK(s7.seed == 7);
    CHECK(s7.trace.synthetic.seed == 7);
    CHECK(s7.to_json()["seed"] == 7);
  }
  SECTION("runs one iteration of each policy") {
    Scenario s1 = load_scenario(kQuickstart, {"run.max_iterations=1"}, std::nullopt);
    const auto r = run_scenario(s1, moesim::RunOptions{false, {}});
    REQUIRE(r.size() == 5);
    CHECK(r[0].label == "static-cf1");
    CHECK(r[0].parameters["capacity_factor"] == 1.0);
    CHECK(r[0].parameters["min_capacity"] == 2);
    CHECK(r[2].parameters["drop_tokens"] == false);
    CHECK(r[2].drop_rate == 0.0);
    for (const auto& p : r) CHECK(p.iterations_run == 1);
  }
}

TEST_CASE("scenario: the annotated example in docs/scenario.md loads and runs", "[scenario]") {
  const std::string doc = std::string(MOESIM_SOURCE_DIR) + "/docs/scenario.md";
  std::ifstream in(doc);
  REQUIRE(in);
  const std::string md((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto section = md.find("## Annotated example");
  REQUIRE(section != std::string::npos);
  const auto begin = md.find("```yaml\n", section);
  REQUIRE(begin != std::string::npos);
  const auto end = md.find("```", begin + 8);
  REQUIRE(end != std::string::npos);
  const std::string text = md.substr(begin + 8, end - begin - 8);
  Scenario s = load_scenario_text(text, doc, {"run.max_iterations=1"}, std::nullopt);
  CHECK(s.name == "example");
  CHECK(s.cluster.num_gpus() == 32);
  CHECK(s.model.name == "olmoe-1b-7b");
  CHECK(s.slots_per_gpu == 4);
  CHECK(s.layout.expert == 32);
  CHECK(s.layout.data == 32);
  CHECK_FALSE(s.dispatch.fp8);
  REQUIRE(s.policies.size() == 2);
  const auto r = run_scenario(s, moesim::RunOptions{false, {}});
  REQUIRE(r.size() == 2);
  CHECK(r[0].parameters["replicas_per_expert"] == 2);
  CHECK(r[1].drop_rate == 0.0);
}

TEST_CASE("scenario: a key given twice is refused, not read as its first value (issue 16)", "[scenario]") {
  // yaml-cpp would find the first `run:` and ignore the second.
  const std::string text = kBasePolicies + "run:\n  max_iterations: 2\n";
  CHECK_THAT(load_error(text), Contains("t.yaml:10:1: key 'run' is given twice (first at line 6); each key may "
                                        "appear once"));
  const std::string nested = "name: probe\ncluster:\n  preset: swiftmoe-cloud\n  nodes: 2\n  nodes: 4\n"
                             "model:\n  preset: gpt-small-moe\npolicies:\n  - static\n";
  CHECK_THAT(load_error(nested), Contains("t.yaml:5:3: key 'cluster.nodes' is given twice (first at line 4)"));
}

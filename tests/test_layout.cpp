// The parallel layout: Megatron-Core's rank order and groups, the 1F1B and interleaved schedules,
// the layout rules, the `parallelism` and `dispatch` scenario sections and the FP8 token size.
// Expected values are worked out by hand from the rules quoted in sim/layout.hpp.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "app/scenario.hpp"
#include "core/error.hpp"
#include "sim/layout.hpp"
#include "tests/error_fixture.hpp"
#include "tests/file_fixture.hpp"
#include "tests/network_fixture.hpp"

using Catch::Matchers::Contains;
using moesim::check_layout;
using moesim::InputError;
using moesim::LayoutGroups;
using moesim::load_scenario;
using moesim::load_scenario_text;
using moesim::ParallelLayout;
using moesim::pipeline_schedule;
using moesim::Scenario;
using moesim::testing::TempDir;

namespace {

const std::string kOrigin = "t.yaml";

// 16 single-GPU nodes, gpt-small-moe (12 layers, 16 experts, all MoE).
const std::string kBase =
    "cluster: {preset: swiftmoe-cloud}\n"
    "model: {preset: gpt-small-moe}\n"
    "run: {max_iterations: 1}\n"
    "policies: [static]\n";
// 2 DGX-A100 nodes: 16 GPUs, 8 per node.
const std::string kDgx =
    "cluster: {preset: dgx-a100, nodes: 2}\n"
    "model: {preset: gpt-small-moe}\n"
    "run: {max_iterations: 1}\n"
    "policies: [static]\n";

std::string pos(const std::string& text, const std::string& needle, const std::string& origin = kOrigin) {
  const std::string at = moesim::test::text_position(text, needle, origin);
  REQUIRE(!at.empty());
  return at;
}

std::string load_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return moesim::testing::input_error([&] { (void)load_scenario_text(text, kOrigin, overrides, std::nullopt); });
}

Scenario load(const std::string& text) { return load_scenario_text(text, kOrigin, {}, std::nullopt); }

// "F<mb>.<chunk>" / "B<mb>.<chunk>" for each step.
std::vector<std::string> steps(int stage, int stages, int chunks, int micro_batches) {
  std::vector<std::string> out;
  for (const auto& s : pipeline_schedule(stage, stages, chunks, micro_batches))
    out.push_back(fmt::format("{}{}.{}", s.forward ? 'F' : 'B', s.micro_batch, s.chunk));
  return out;
}

// Every (micro-batch, chunk) runs forward once and backward once, forward first.
void check_complete(int stage, int stages, int chunks, int micro_batches) {
  INFO("stage " << stage << " of " << stages << ", " << chunks << " chunks, " << micro_batches << " micro-batches");
  std::map<std::pair<int, int>, int> fwd_at, bwd_at;
  const auto sched = pipeline_schedule(stage, stages, chunks, micro_batches);
  REQUIRE(sched.size() == static_cast<std::size_t>(2 * chunks * micro_batches));
  for (std::size_t i = 0; i < sched.size(); ++i) {
    const auto& s = sched[i];
    REQUIRE(s.micro_batch >= 0);
    REQUIRE(s.micro_batch < micro_batches);
    REQUIRE(s.chunk >= 0);
    REQUIRE(s.chunk < chunks);
    auto& at = s.forward ? fwd_at : bwd_at;
    CHECK(at.emplace(std::make_pair(s.micro_batch, s.chunk), static_cast<int>(i)).second);  // once each
  }
  CHECK(fwd_at.size() == static_cast<std::size_t>(chunks * micro_batches));
  CHECK(bwd_at.size() == static_cast<std::size_t>(chunks * micro_batches));
  for (const auto& [key, f] : fwd_at) {
    INFO("micro-batch " << key.first << " chunk " << key.second);
    REQUIRE(bwd_at.count(key) == 1);
    CHECK(f < bwd_at[key]);
  }
}

// A valid layout of 16 GPUs, 8 per node, 12 layers: the tests break one rule each.
ParallelLayout valid16() {
  ParallelLayout l;
  l.resolve(16);
  REQUIRE(l.data == 16);
  REQUIRE(l.expert == 16);
  REQUIRE(check_layout(l, 16, 8, 12, true).ok());
  return l;
}

}  // namespace

TEST_CASE("layout: groups of tensor 2 x pipeline 2 x data 4, expert 4 on 16 GPUs", "[layout]") {
  ParallelLayout l;
  l.tensor = 2;
  l.pipeline = 2;
  l.data = 4;
  l.expert = 4;
  l.virtual_stages = 2;
  l.micro_batches = 4;
  l.sequence_parallel = true;
  CHECK(l.check(16, 8, 8, true).empty());
  const LayoutGroups g(l, 16, 8);
  CHECK(g.gpus_per_stage() == 8);
  CHECK(g.ep_groups_per_stage() == 2);
  // Rank 5 = stage 0, dp rank 2, tp rank 1.
  CHECK(g.tp_rank(5) == 1);
  CHECK(g.dp_rank(5) == 2);
  CHECK(g.tp_group(5) == std::vector<int>{4, 5});
  CHECK(g.dp_group(5) == std::vector<int>{1, 3, 5, 7});
  CHECK(g.stage(5) == 0);
  CHECK(g.stage(9) == 1);
  CHECK(g.stage_gpus(1) == std::vector<int>{8, 9, 10, 11, 12, 13, 14, 15});
  CHECK(g.ep_group_rank(0, 1, 0) == 4);
  CHECK(g.ep_group_rank(1, 1, 0) == 12);
  // Rank 13 is local rank 5 of stage 1: ep rank 5 % 4, edp rank 5 / 4.
  CHECK(g.ep_rank(13) == 1);
  CHECK(g.edp_rank(13) == 1);
  CHECK(g.next_stage_rank(3) == 11);
  CHECK(g.prev_stage_rank(3) == -1);
  CHECK(g.prev_stage_rank(11) == 3);
  CHECK(g.next_stage_rank(11) == -1);
  // 8 layers over 2 stages x 2 chunks: 2 layers a chunk, virtual stage v = chunk * 2 + stage.
  CHECK(g.max_chunk_layers() == 2);
  const std::vector<int> stage_of{0, 0, 1, 1, 0, 0, 1, 1};
  for (int layer = 0; layer < 8; ++layer) {
    INFO("layer " << layer);
    CHECK(g.stage_of_layer(layer) == stage_of[static_cast<std::size_t>(layer)]);
  }
  CHECK(g.first_layer(0, 0) == 0);
  CHECK(g.first_layer(1, 0) == 2);
  CHECK(g.first_layer(0, 1) == 4);
  CHECK(g.first_layer(1, 1) == 6);
}

TEST_CASE("layout: expert_tensor 2 x expert 2 x two copies on a stage of 8 GPUs (Megatron-Core's order)", "[layout]") {
  ParallelLayout l;
  l.data = 8;
  l.expert = 2;
  l.expert_tensor = 2;
  CHECK(l.check(8, 8, 4, true).empty());
  const LayoutGroups g(l, 8, 4);
  // Order tp-ep-dp over the stage: etp_rank = i % 2, ep_rank = (i / 2) % 2, edp_rank = i / 4.
  CHECK(g.ep_groups_per_stage() == 4);
  CHECK(g.edp_copies() == 2);
  CHECK(g.etp_rank(5) == 1);
  CHECK(g.ep_rank(5) == 0);
  CHECK(g.edp_rank(5) == 1);
  CHECK(g.etp_group(5) == std::vector<int>{4, 5});
  // Group k = copy * 2 + etp_rank: the ranks of one etp_rank, 2 apart.
  CHECK(g.ep_group(0, 0) == std::vector<int>{0, 2});
  CHECK(g.ep_group(0, 1) == std::vector<int>{1, 3});
  CHECK(g.ep_group(0, 2) == std::vector<int>{4, 6});
  CHECK(g.ep_group(0, 3) == std::vector<int>{5, 7});
  for (int r = 0; r < 8; ++r) {
    INFO("rank " << r);
    CHECK(g.ep_group_rank(0, g.ep_group_of(r), g.ep_rank(r)) == r);
  }
  // The rules: shards inside a node, and groups covering whole nodes or part of one.
  CHECK_THAT(l.check(8, 1, 4, true), Catch::Matchers::Contains("expert_tensor 2 must divide the 1 GPUs of a node"));
  l.expert = 3;
  l.data = 12;
  CHECK_THAT(l.check(12, 4, 4, true),
             Catch::Matchers::Contains("expert 3 x expert_tensor 2 = 6 must divide or be a multiple of the 4 GPUs"));
}

TEST_CASE("layout: the default layout is one data- and expert-parallel group of every GPU", "[layout]") {
  ParallelLayout l;
  CHECK(l.is_default());
  l.resolve(16);
  CHECK(l.data == 16);
  CHECK(l.expert == 16);
  const LayoutGroups g(l, 16, 12);
  CHECK(g.stages() == 1);
  CHECK(g.ep_groups_per_stage() == 1);
  CHECK(g.tp_group(7) == std::vector<int>{7});
  CHECK(g.dp_group(7).size() == 16);
  CHECK(g.ep_rank(7) == 7);
  CHECK(g.stage_of_layer(11) == 0);
}

TEST_CASE("layout: layers that do not divide over the stages split as evenly as they go", "[layout]") {
  // DeepSeek-V3's 61 layers over 16 stages: v * 61 / 16 rounded down gives chunk starts
  // 0, 3, 7, 11, 15, 19, 22, 26, 30, 34, 38, 41, 45, 49, 53, 57: thirteen chunks of 4, three of 3.
  ParallelLayout l;
  l.pipeline = 16;
  l.resolve(16);
  const LayoutGroups g(l, 16, 61);
  const std::vector<int> first{0, 3, 7, 11, 15, 19, 22, 26, 30, 34, 38, 41, 45, 49, 53, 57};
  int total = 0;
  for (int s = 0; s < 16; ++s) {
    INFO("stage " << s);
    CHECK(g.first_layer(s, 0) == first[static_cast<std::size_t>(s)]);
    total += g.chunk_layers(s, 0);
    for (int layer = g.first_layer(s, 0); layer < g.first_layer(s, 0) + g.chunk_layers(s, 0); ++layer)
      CHECK(g.stage_of_layer(layer) == s);
  }
  CHECK(total == 61);
  CHECK(g.chunk_layers(0, 0) == 3);
  CHECK(g.chunk_layers(15, 0) == 4);
  CHECK(g.max_chunk_layers() == 4);
  CHECK(l.check(16, 8, 61, true).empty());
}

TEST_CASE("layout: 1F1B with 4 stages and 8 micro-batches", "[layout]") {
  // Warm-up of stages - stage - 1 forwards, then F/B alternately, then the remaining backwards.
  CHECK(steps(0, 4, 1, 8) == std::vector<std::string>{"F0.0", "F1.0", "F2.0", "F3.0", "B0.0", "F4.0", "B1.0",
                                                       "F5.0", "B2.0", "F6.0", "B3.0", "F7.0", "B4.0", "B5.0",
                                                       "B6.0", "B7.0"});
  CHECK(steps(3, 4, 1, 8) == std::vector<std::string>{"F0.0", "B0.0", "F1.0", "B1.0", "F2.0", "B2.0", "F3.0",
                                                       "B3.0", "F4.0", "B4.0", "F5.0", "B5.0", "F6.0", "B6.0",
                                                       "F7.0", "B7.0"});
  // Stage 1: 2 warm-up forwards.
  const auto s1 = steps(1, 4, 1, 8);
  CHECK(std::vector<std::string>(s1.begin(), s1.begin() + 4) ==
        std::vector<std::string>{"F0.0", "F1.0", "F2.0", "B0.0"});
  for (int s = 0; s < 4; ++s) {
    check_complete(s, 4, 1, 8);
    int f = 0, b = 0;
    for (const auto& st : pipeline_schedule(s, 4, 1, 8)) (st.forward ? f : b)++;
    CHECK(f == 8);
    CHECK(b == 8);
  }
  // Fewer micro-batches than stages: the warm-up is capped at the micro-batches.
  CHECK(steps(0, 4, 1, 2) == std::vector<std::string>{"F0.0", "F1.0", "B0.0", "B1.0"});
}

TEST_CASE("layout: interleaved 1F1B with 2 stages, 2 chunks, 4 micro-batches", "[layout]") {
  // p = 2, v = 2, m = 4: 8 virtual micro-batches per stage. Forward k: chunk (k % 4) / 2,
  // micro-batch (k / 4) * 2 + k % 2; backward k: the chunk reversed.
  //   forward order:  F0.0 F1.0 F0.1 F1.1 F2.0 F3.0 F2.1 F3.1
  //   backward order: B0.1 B1.1 B0.0 B1.0 B2.1 B3.1 B2.0 B3.0
  // Stage 0 warms up with (2 - 0 - 1) * 2 + (2 - 1) * 2 = 4 forwards, stage 1 with 0 + 2 = 2.
  CHECK(steps(0, 2, 2, 4) == std::vector<std::string>{"F0.0", "F1.0", "F0.1", "F1.1",                   // warm-up
                                                       "F2.0", "B0.1", "F3.0", "B1.1", "F2.1", "B0.0",  // steady
                                                       "F3.1", "B1.0",                                  //
                                                       "B2.1", "B3.1", "B2.0", "B3.0"});                // cool-down
  CHECK(steps(1, 2, 2, 4) == std::vector<std::string>{"F0.0", "F1.0",                                   // warm-up
                                                       "F0.1", "B0.1", "F1.1", "B1.1", "F2.0", "B0.0",  // steady
                                                       "F3.0", "B1.0", "F2.1", "B2.1", "F3.1", "B3.1",  //
                                                       "B2.0", "B3.0"});                                // cool-down
  check_complete(0, 2, 2, 4);
  check_complete(1, 2, 2, 4);
  // micro_batches == stages: Megatron-Core runs every forward first.
  CHECK(steps(0, 2, 2, 2) == std::vector<std::string>{"F0.0", "F1.0", "F0.1", "F1.1", "B0.1", "B1.1", "B0.0",
                                                       "B1.0"});
  for (int s = 0; s < 4; ++s) check_complete(s, 4, 3, 8);
}

TEST_CASE("layout: check names the rule broken and the key to blame", "[layout]") {
  ParallelLayout l = valid16();
  auto expect = [&](const std::string& key, const std::string& text, int gpus = 16, int gpn = 8, int layers = 12,
                    bool moe = true) {
    const auto v = check_layout(l, gpus, gpn, layers, moe);
    CHECK(v.key == key);
    CHECK_THAT(v.message, Contains(text));
    CHECK(l.check(gpus, gpn, layers, moe) == v.message);
  };
  SECTION("product mismatch") {
    l.tensor = 2;
    l.data = 4;
    l.sequence_parallel = true;
    expect("data", "tensor 2 x pipeline 1 x data 4 = 8 GPUs, but the cluster has 16: the product must equal the "
                   "number of GPUs");
  }
  SECTION("expert not dividing the GPUs of a stage") {
    l.expert = 3;
    expect("expert", "expert 3 must divide data 16 x tensor 1 / expert_tensor 1 = 16 (the GPUs of one pipeline "
                     "stage)");
  }
  SECTION("expert neither dividing nor a multiple of a node") {
    l.data = 12;  // 12 GPUs, 8 per node (1.5 nodes), expert 12
    l.expert = 12;
    expect("expert", "expert 12 must divide or be a multiple of the 8 GPUs of a node", 12);
  }
  SECTION("tensor across nodes") {
    l.tensor = 16;
    l.data = 1;
    l.expert = 16;
    l.sequence_parallel = true;
    expect("tensor", "tensor 16 must divide the 8 GPUs of a node");
  }
  SECTION("pipeline above the layers") {
    l.pipeline = 16;
    l.data = 1;
    l.expert = 1;
    expect("pipeline", "pipeline 16 x virtual_stages 1 = 16 model chunks, but the model has 12 layers");
  }
  SECTION("virtual stages above the layers") {
    l.pipeline = 4;
    l.data = 4;
    l.expert = 4;
    l.virtual_stages = 4;
    l.micro_batches = 4;
    expect("virtual_stages", "pipeline 4 x virtual_stages 4 = 16 model chunks, but the model has 12 layers");
  }
  SECTION("virtual stages without a pipeline") {
    l.virtual_stages = 2;
    expect("virtual_stages", "virtual_stages 2 needs pipeline >= 2");
  }
  SECTION("virtual stages with micro_batches not a multiple of pipeline") {
    l.pipeline = 2;
    l.data = 8;
    l.expert = 8;
    l.virtual_stages = 2;
    l.micro_batches = 3;
    expect("micro_batches", "micro_batches 3 must be a multiple of pipeline 2 with virtual_stages > 1");
    l.micro_batches = 4;
    CHECK(l.check(16, 8, 12, true).empty());
  }
  SECTION("expert_tensor across nodes") {
    l.expert_tensor = 16;
    l.expert = 1;
    expect("expert_tensor", "expert_tensor 16 must divide the 8 GPUs of a node");
  }
  SECTION("expert_tensor 2 with expert left at every GPU of the stage") {
    l.expert_tensor = 2;
    expect("expert", "expert 16 must divide data 16 x tensor 1 / expert_tensor 2 = 8");
  }
  SECTION("tensor 2 on an MoE model without sequence parallelism") {
    l.tensor = 2;
    l.data = 8;
    expect("sequence_parallel", "tensor 2 with MoE layers needs sequence_parallel: true");
    CHECK(l.check(16, 8, 12, false).empty());  // a dense model does not need it
    l.sequence_parallel = true;
    CHECK(l.check(16, 8, 12, true).empty());
  }
  SECTION("an unresolved or negative layout") {
    ParallelLayout u;
    expect("", "");  // the valid one
    CHECK(check_layout(u, 16, 8, 12, true).key == "data");
    CHECK_THAT(u.check(16, 8, 12, true), Contains("data 0: must be >= 1"));
    l.tensor = -1;
    l.pipeline = -1;
    expect("tensor", "tensor -1: must be >= 1");
  }
}

TEST_CASE("layout: dispatch token bytes", "[layout]") {
  // DeepSeek-V3, hidden 7168 in bf16: 14336 bytes; in fp8, 7168 + 4 x 56 scales = 7392.
  CHECK(moesim::dispatch_token_bytes(7168, 2, false) == 14336.0);
  CHECK(moesim::dispatch_token_bytes(7168, 2, true) == 7392.0);
  CHECK(moesim::dispatch_token_bytes(7168, 4, true) == 7392.0);  // fp8 does not depend on the model dtype
  CHECK(moesim::dispatch_token_bytes(768, 4, false) == 3072.0);
  // A partial block of 128 still carries a scale: 100 -> 1 scale, 129 -> 2.
  CHECK(moesim::dispatch_token_bytes(100, 2, true) == 104.0);
  CHECK(moesim::dispatch_token_bytes(129, 2, true) == 137.0);
}

TEST_CASE("layout: scenario parallelism section", "[layout][scenario]") {
  SECTION("the default layout is written out in full") {
    const Scenario s = load(kBase);
    CHECK(s.layout.is_default());
    const auto j = s.to_json();
    CHECK(j["parallelism"]["tensor"] == 1);
    CHECK(j["parallelism"]["pipeline"] == 1);
    CHECK(j["parallelism"]["data"] == 16);
    CHECK(j["parallelism"]["expert"] == 16);
    CHECK(j["parallelism"]["expert_tensor"] == 1);
    CHECK(j["parallelism"]["virtual_stages"] == 1);
    CHECK(j["parallelism"]["micro_batches"] == 1);
    CHECK(j["parallelism"]["zero_stage"] == 0);
    CHECK(j["parallelism"]["sequence_parallel"] == false);
    CHECK(j["dispatch"]["dtype"] == "model");
    CHECK(j["placement"]["slots_per_gpu"] == 1);
  }
  SECTION("a good layout resolves data and expert") {
    const Scenario s = load(kDgx +
                            "parallelism:\n  tensor: 2\n  pipeline: 2\n  virtual_stages: 2\n  micro_batches: 4\n"
                            "  zero_stage: 1\n  sequence_parallel: true\n");
    CHECK(s.layout.data == 4);
    CHECK(s.layout.expert == 8);  // data x tensor: every GPU of a stage
    CHECK(s.slots_per_gpu == 2);  // 16 experts / 8 GPUs of an expert-parallel group
    const auto j = s.to_json();
    CHECK(j["parallelism"]["tensor"] == 2);
    CHECK(j["parallelism"]["pipeline"] == 2);
    CHECK(j["parallelism"]["data"] == 4);
    CHECK(j["parallelism"]["expert"] == 8);
    CHECK(j["parallelism"]["virtual_stages"] == 2);
    CHECK(j["parallelism"]["micro_batches"] == 4);
    CHECK(j["parallelism"]["zero_stage"] == 1);
    CHECK(j["parallelism"]["sequence_parallel"] == true);
  }
  SECTION("explicit data and expert that agree") {
    const Scenario s = load(kDgx + "parallelism: {pipeline: 2, data: 8, expert: 4}\n");
    CHECK(s.layout.data == 8);
    CHECK(s.layout.expert == 4);
    CHECK(s.slots_per_gpu == 4);
  }
  SECTION("slots_per_gpu defaults to experts / expert group size") {
    const Scenario s = load(kBase + "parallelism: {expert: 4}\n");
    CHECK(s.layout.data == 16);
    CHECK(s.layout.expert == 4);
    CHECK(s.slots_per_gpu == 4);
  }
  SECTION("the slots of one expert group must hold the experts") {
    const std::string text = kBase + "parallelism: {expert: 4}\nplacement: {slots_per_gpu: 2}\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "2}") + ": key 'placement.slots_per_gpu': 2 slots x 4 GPUs per "
                                                             "expert-parallel group (parallelism.expert) = 8 slots "
                                                             "cannot hold the 16 experts"));
  }
  SECTION("experts that do not divide over an expert group need slots_per_gpu") {
    const std::string text =
        "cluster: {preset: swiftmoe-cloud, nodes: 32}\nmodel: {preset: mixtral-8x7b}\nparallelism: {expert: 16}\n"
        "policies: [static]\n";
    CHECK_THAT(load_error(text), Contains("t.yaml: key 'placement.slots_per_gpu': is required: 8 experts do not "
                                          "divide evenly over the 16 GPUs of an expert-parallel group "
                                          "(parallelism.expert)"));
  }
}

TEST_CASE("layout: scenario parallelism errors name the file, line, key, value and what is allowed",
          "[layout][scenario]") {
  SECTION("in a file: expert not dividing the GPUs") {
    TempDir dir;
    const std::string text = kBase + "parallelism:\n  expert: 3\n";
    const std::string f = dir.write("layout.yaml", text);
    std::string msg;
    try {
      (void)load_scenario(f, {}, std::nullopt);
    } catch (const InputError& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Contains(pos(text, "3\n", f) + ": key 'parallelism.expert': expert 3 must divide data 16 x "
                                                    "tensor 1 / expert_tensor 1 = 16 (the GPUs of one pipeline "
                                                    "stage)"));
  }
  SECTION("data inconsistent with tensor x pipeline") {
    const std::string text = kDgx + "parallelism: {tensor: 2, data: 4, sequence_parallel: true}\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "4,") + ": key 'parallelism.data': tensor 2 x pipeline 1 x data "
                                                             "4 = 8 GPUs, but the cluster has 16"));
  }
  SECTION("tensor x pipeline not dividing the GPUs when data is derived") {
    const std::string text = kBase + "parallelism: {pipeline: 3}\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "3}") + ": key 'parallelism.pipeline': tensor 1 x pipeline 3 = "
                                                             "3 must divide the 16 GPUs"));
  }
  SECTION("tensor across nodes") {
    const std::string text = kDgx + "parallelism:\n  tensor: 16\n  sequence_parallel: true\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "16\n") + ": key 'parallelism.tensor': tensor 16 must divide the "
                                                               "8 GPUs of a node"));
  }
  SECTION("pipeline above the layers") {
    const std::string text = kBase + "parallelism: {pipeline: 16}\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "16}") + ": key 'parallelism.pipeline': pipeline 16 x "
                                                              "virtual_stages 1 = 16 model chunks, but the model has "
                                                              "12 layers"));
  }
  SECTION("micro_batches not a multiple of pipeline when interleaved") {
    const std::string text = kBase + "parallelism: {pipeline: 2, virtual_stages: 2, micro_batches: 3}\n";
    CHECK_THAT(load_error(text), Contains(pos(text, "3}") + ": key 'parallelism.micro_batches': micro_batches 3 must "
                                                             "be a multiple of pipeline 2"));
  }
  SECTION("tensor without sequence parallelism on an MoE model") {
    const std::string text = kDgx + "parallelism: {tensor: 2}\n";
    // sequence_parallel is absent: the position is the parallelism mapping's.
    CHECK_THAT(load_error(text), Contains(pos(text, "{tensor") + ": key 'parallelism.sequence_parallel': tensor 2 "
                                                                  "with MoE layers needs sequence_parallel: true"));
  }
  SECTION("a derived expert group that breaks the node rule says it was derived") {
    // 3 nodes of 4 GPUs, pipeline 2: expert = data 6 x tensor 1 = 6, neither dividing nor a multiple of 4.
    const std::string text = "cluster: {preset: dgx-a100, nodes: 3, gpus_per_node: 4}\nmodel: {preset: "
                             "gpt-small-moe}\nparallelism: {pipeline: 2}\npolicies: [static]\n";
    const std::string msg = load_error(text);
    CHECK_THAT(msg, Contains("key 'parallelism.expert': expert 6 must divide or be a multiple of the 4 GPUs of a "
                             "node"));
    CHECK_THAT(msg, Contains("expert is not given"));
  }
  SECTION("out of range and unknown keys") {
    const std::string zero = kBase + "parallelism: {zero_stage: 4}\n";
    CHECK_THAT(load_error(zero), Contains(pos(zero, "4}") + ": key 'parallelism.zero_stage': 4 is out of range; "
                                                            "allowed [0, 3]"));
    const std::string tp = kBase + "parallelism: {tensor: 32}\n";
    CHECK_THAT(load_error(tp), Contains(pos(tp, "32}") + ": key 'parallelism.tensor': 32 is out of range; allowed "
                                                         "[1, 16]"));
    const std::string sp = kBase + "parallelism: {sequence_parallel: yes please}\n";
    CHECK_THAT(load_error(sp), Contains("key 'parallelism.sequence_parallel': expected true or false, found 'yes "
                                        "please'"));
    const std::string typo = kBase + "parallelism: {tensr: 2}\n";
    CHECK_THAT(load_error(typo), Contains(pos(typo, "tensr") + ": unknown key 'parallelism.tensr'; allowed keys "
                                                               "here: data, expert, expert_tensor, micro_batches, "
                                                               "pipeline, sequence_parallel, tensor, virtual_stages, "
                                                               "zero_stage"));
  }
  SECTION("a --set override is named as such") {
    CHECK_THAT(load_error(kBase, {"parallelism.expert=3"}),
               Contains("--set 'parallelism.expert=3': key 'parallelism.expert': expert 3 must divide"));
  }
}

TEST_CASE("layout: scenario dispatch section", "[layout][scenario]") {
  CHECK_FALSE(load(kBase).dispatch.fp8);
  CHECK_FALSE(load(kBase + "dispatch: {dtype: model}\n").dispatch.fp8);
  const Scenario s = load(kBase + "dispatch: {dtype: fp8}\n");
  CHECK(s.dispatch.fp8);
  CHECK(s.to_json()["dispatch"]["dtype"] == "fp8");
  const std::string bad = kBase + "dispatch: {dtype: fp4}\n";
  CHECK_THAT(load_error(bad), Contains(pos(bad, "fp4") + ": key 'dispatch.dtype': 'fp4' is not allowed; allowed: "
                                                         "model, fp8"));
  const std::string algo = kBase + "dispatch: {algorithm: deepep}\n";
  CHECK_THAT(load_error(algo), Contains(pos(algo, "deepep") + ": key 'dispatch.algorithm': 'deepep' is not allowed; "
                                                              "allowed: direct, hierarchical"));
  const std::string other = kBase + "dispatch: {chunks: 2}\n";
  CHECK_THAT(load_error(other), Contains(pos(other, "chunks") + ": unknown key 'dispatch.chunks'; allowed keys here: "
                                                                "algorithm, dtype"));
}

// An end-to-end scenario small enough to compute by hand, and the invariants of the timeline.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "app/runner.hpp"
#include "hand_fixture.hpp"
#include "models/roofline.hpp"

using namespace moesim;

namespace {

std::string temp_file(const std::string& name, const std::string& content) {
  auto p = std::filesystem::temp_directory_path() / ("moesim_test_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << content;
  return p.string();
}

using moesim::testing::hand_scenario;

}  // namespace

TEST_CASE("end to end: one iteration computed by hand", "[iteration][e2e]") {
  // Each GPU sends 512 tokens to each expert: capacity ceil(1024 / 2 * 1.0) = 512, no drops.
  auto trace = temp_file("hand.csv",
                         "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n");
  Scenario s = load_scenario_text(hand_scenario(trace), "hand.yaml", {}, std::nullopt);
  auto results = run_scenario(s);
  REQUIRE(results.size() == 1);
  const PolicyResult& r = results[0];
  const IterationResult& it = r.rows.at(0).result;

  // Forward compute per GPU (roofline = max(FLOPs / 1e5, bytes / 1000), each rounded up):
  //   QKV GEMM 1024x3072x1024: 6442450944 FLOPs -> 64425 ns (memory 14681 ns)
  //   scores, values, output projection: 1024^3 GEMMs, 2147483648 FLOPs -> 21475 ns each
  //   attention = 64425 + 3 * 21475 = 128850 ns
  //   gate GEMM 1024x2x1024: memory-bound, 2105344 bytes -> 2106 ns
  //   expert on 1024 tokens: two GEMMs of 8589934592 FLOPs -> 2 * 85900 = 171800 ns
  //   LM head 1024x1024x1024 -> 21475 ns
  // Backward: each of those twice.
  //   compute = 3 * (128850 + 2106 + 171800 + 21475) = 972693 ns
  CHECK(it.phase_ns[static_cast<int>(Phase::Compute)] == 972693);
  // Each all-to-all: 512 tokens * 1024 * 2 B = 1048576 B each way over 10 GB/s = 104858 ns,
  // plus one NCCL message latency (8.4 us base + 14 us network hop) = 127258 ns; 4 of them.
  CHECK(it.phase_ns[static_cast<int>(Phase::AllToAll)] == 4 * 127258);
  CHECK(it.a2a_bytes == 4 * 2 * 1048576.0);
  // Dense gradients: 1024*1024 embedding + 4196352 attention (+ norms) + 2048 router =
  // 5246976 params * 2 B = 10493952 B. Ring Simple over 2 nodes at 10 GB/s: alg bw 10 * 2/2 = 10,
  // ceil(1049395.2) = 1049396 ns; latency 8.4 + 2 * 14 = 36.4 us (both steps inter-node), times
  // 1.4 for NCCL's ring plateau across nodes = 50.96 us -> 1100356 ns. (Tree Simple: alg
  // 10 * 0.92 / 2 * 0.8 correction = 3.68, slower; LL128 with one GPU per node: 10 * 0.7 = 7.)
  // One expert replica each: no expert all-reduce.
  CHECK(it.phase_ns[static_cast<int>(Phase::GradSync)] == 1100356);
  // Adam on the GPU: (5246976 + 8388608 expert) params * 28 B / 1000 GB/s = 381797 ns.
  CHECK(it.phase_ns[static_cast<int>(Phase::Optimizer)] == 381797);
  CHECK(it.phase_ns[static_cast<int>(Phase::Wait)] == 0);
  CHECK(it.iteration_ns == 972693 + 4 * 127258 + 1100356 + 381797);  // 2963878 ns
  CHECK(it.survival == 1.0);

  // No drops: N(1) = 827.5 - 466.6 = 360.9 iterations; progress reaches 1 after 361.
  REQUIRE(r.converged);
  CHECK(r.iterations_to_converge == 361);
  CHECK(r.time_to_convergence_ns == 361LL * 2963878);
}

TEST_CASE("end to end: drops slow convergence by the convergence model", "[iteration][e2e]") {
  // GPU0 sends 768 to expert 0 and 256 to expert 1, GPU1 the reverse: capacity 512 drops 256
  // from each GPU (survival 1536 / 2048 = 0.75), N(0.75) = 827.5 - 466.6 * 0.75 = 477.55.
  auto trace = temp_file("drops.csv",
                         "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,768\n0,0,0,1,256\n0,0,1,0,256\n0,0,1,1,768\n");
  Scenario s = load_scenario_text(hand_scenario(trace), "hand.yaml", {"run.max_iterations=1000"}, std::nullopt);
  auto r = run_scenario(s).at(0);
  CHECK(r.rows[0].result.tokens_routed == 2048);
  CHECK(r.rows[0].result.tokens_dropped == 512);
  CHECK(r.drop_rate == 0.25);
  CHECK(r.iterations_to_converge == 478);
  // Padded buffers: the iteration costs the same as without drops.
  CHECK(r.rows[0].result.iteration_ns == 2963878);
}

TEST_CASE("a straggler makes the other GPUs wait at the next all-to-all", "[iteration]") {
  auto trace = temp_file("unused.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,1\n");
  Scenario s = load_scenario_text(hand_scenario(trace), "hand.yaml", {}, std::nullopt);
  Cluster cluster(s.cluster);
  RooflineCompute compute(s.cluster.gpu);
  AnalyticalNetwork net(cluster);
  IterationModel model(cluster, s.model, s.training, compute, net);
  Placement pl{2, 1, {{0, 1}}};
  std::vector<LayerDispatch> d(1);
  d[0].reset(2, 2);
  // Balanced: each GPU's expert processes 1024 tokens.
  d[0].buffered = {512, 512, 512, 512};
  Engine e;
  auto balanced = model.run(e, 0, pl, d, {}, SyncPlan{});
  // GPU0's expert gets 1536 tokens, GPU1's 512; the same bytes cross the network (512 each way).
  d[0].buffered = {1024, 512, 512, 0};
  auto skewed = model.run(e, balanced.iteration_ns, pl, d, {}, SyncPlan{});
  CHECK(skewed.a2a_bytes == balanced.a2a_bytes);
  // The iteration grows by the slow GPU's extra expert time, forward (1x) and backward (2x).
  const TimeNs extra = 3 * (model.expert_fwd_ns(1536) - model.expert_fwd_ns(1024));
  CHECK(skewed.iteration_ns == balanced.iteration_ns + extra);
  CHECK(skewed.start_ns == balanced.iteration_ns);
  // The parts of the critical GPU's timeline always add up to the iteration.
  for (const auto& res : {balanced, skewed}) {
    TimeNs sum = 0;
    for (TimeNs p : res.phase_ns) sum += p;
    CHECK(sum == res.iteration_ns);
  }
}

TEST_CASE("blocking movements lengthen the iteration; non-blocking ones only count bytes", "[iteration]") {
  auto trace = temp_file("unused2.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,1\n");
  Scenario s = load_scenario_text(hand_scenario(trace), "hand.yaml", {}, std::nullopt);
  Cluster cluster(s.cluster);
  RooflineCompute compute(s.cluster.gpu);
  AnalyticalNetwork net(cluster);
  IterationModel model(cluster, s.model, s.training, compute, net);
  Placement pl{2, 1, {{0, 1}}};
  std::vector<LayerDispatch> d(1);
  d[0].reset(2, 2);
  d[0].buffered = {512, 512, 512, 512};
  Engine e;
  auto base = model.run(e, 0, pl, d, {}, SyncPlan{});
  // 1e8 bytes GPU0 -> GPU1 over 10 GB/s: 1e7 ns + 22.4 us message latency.
  Movement m{Transfer{Endpoint{false, 0}, Endpoint{false, 1}, 1e8}, true, "expert 0 weights"};
  auto moved = model.run(e, e.now(), pl, d, {m}, SyncPlan{});
  CHECK(moved.phase_ns[static_cast<int>(Phase::Movement)] == 10'000'000 + 22'400);
  CHECK(moved.iteration_ns == base.iteration_ns + 10'022'400);
  CHECK(moved.moved_bytes == 1e8);
  m.blocking = false;
  auto overlapped = model.run(e, e.now(), pl, d, {m}, SyncPlan{});
  CHECK(overlapped.iteration_ns == base.iteration_ns);
  CHECK(overlapped.moved_bytes == 1e8);
}

TEST_CASE("a straggler window and a slow GPU stretch the critical path by hand", "[iteration][heterogeneity]") {
  auto trace = temp_file("strag.csv",
                         "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n");
  Scenario s = load_scenario_text(hand_scenario(trace) +
                                      "heterogeneity:\n  stragglers:\n    - {gpu: 1, slowdown_percent: 50, "
                                      "from_iteration: 2, to_iteration: 3}\n",
                                  "hand.yaml", {"run.max_iterations=6"}, std::nullopt);
  auto r = run_scenario(s).at(0);
  // GPU 1's compute ops take 1.5x, each rounded up: forward 193275 + 3159 + 257700 + 32213
  // (21475 * 1.5 = 32212.5) = 486347; backward 64425 + 515400 + 6318 + 386550 = 972693; in all
  // 1459040 ns instead of 972693. The others wait for it at every all-to-all.
  for (int it : {0, 1, 4, 5}) CHECK(r.rows[it].result.iteration_ns == 2963878);
  for (int it : {2, 3}) {
    CHECK(r.rows[it].result.iteration_ns == 2963878 + 486347);
    CHECK(r.rows[it].result.phase_ns[static_cast<int>(Phase::Compute)] + r.rows[it].result.phase_ns[static_cast<int>(Phase::Wait)] ==
          1459040);
  }
  // A permanent speed factor of 0.5 doubles every compute op of GPU 0: 2 * 972693.
  Scenario h = load_scenario_text(hand_scenario(trace) + "heterogeneity:\n  gpu_speed: [{gpu: 0, factor: 0.5}]\n",
                                  "hand.yaml", {"run.max_iterations=1"}, std::nullopt);
  CHECK(run_scenario(h).at(0).rows[0].result.iteration_ns == 2963878 + 972693);
  // Bad entries name the item.
  REQUIRE_THROWS_WITH(load_scenario_text(hand_scenario(trace) + "heterogeneity:\n  stragglers: [{gpu: 5, slowdown_percent: 1}]\n",
                                         "hand.yaml", {}, std::nullopt),
                      Catch::Matchers::Contains("key 'heterogeneity.stragglers[0].gpu': 5 is out of range; allowed [0, 1]"));
}

#include "app/outputs.hpp"

TEST_CASE("timeline: every operation named on its GPU's lane, at the hand-computed times", "[iteration][timeline]") {
  auto trace = temp_file("tl.csv",
                         "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n");
  Scenario s = load_scenario_text(hand_scenario(trace), "hand.yaml", {"run.max_iterations=3"}, std::nullopt);
  RunOptions ro;
  ro.timeline_iterations = {1};
  auto r = run_scenario(s, ro).at(0);
  const auto& ev = r.timeline;
  REQUIRE(!ev.empty());
  auto find = [&](const std::string& name, int tid) -> const nlohmann::json& {
    for (const auto& e : ev)
      if (e["name"] == name && e["tid"] == tid) return e;
    FAIL("no event " << name << " on lane " << tid);
    return ev[0];
  };
  // Iteration 1 starts at 2963878 ns. GPU 0's compute lane (tid 0): attention for 128850 ns, the
  // gate for 2106 ns; then its communication lane (tid 1) carries the dispatch all-to-all
  // (127258 ns) from 2963878 + 130956.
  const auto& att = find("forward attention (layer 0)", 0);
  CHECK(att["args"]["start_ns"] == 2963878);
  CHECK(att["args"]["duration_ns"] == 128850);
  CHECK(att["ph"] == "X");
  const auto& a2a = find("forward dispatch all-to-all (layer 0)", 1);
  CHECK(a2a["args"]["start_ns"] == 2963878 + 130956);
  CHECK(a2a["args"]["duration_ns"] == 127258);
  CHECK(find("dense gradient all-reduce", 3)["args"]["duration_ns"] == 1100356);
  // The spans of one GPU tile its iteration exactly: their durations add up to it.
  for (int gpu = 0; gpu < 2; ++gpu) {
    long long sum = 0;
    for (const auto& e : ev)
      if (e["tid"] == 2 * gpu || e["tid"] == 2 * gpu + 1) sum += e["args"]["duration_ns"].get<long long>();
    CHECK(sum == 2963878);
  }
  // Only iteration 1 was recorded; the file names the lanes.
  for (const auto& e : ev) CHECK(e["args"]["iteration"] == 1);
  const auto doc = nlohmann::json::parse(timeline_json(s, {r}));
  bool named = false;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == "M" && e["name"] == "thread_name" && e["args"]["name"] == "GPU 1 communication") named = true;
  CHECK(named);
}

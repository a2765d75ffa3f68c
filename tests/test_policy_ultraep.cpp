// UltraEP (reconstruction): the per-micro-batch duplicate planner on hand cases (its plan, its
// dispatch, the duplicate budget), what it charges in every micro-batch and once an iteration,
// the iteration model's charge of that per-micro-batch work by hand, and an end-to-end run.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <optional>

#include <unistd.h>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "models/roofline.hpp"
#include "policies/registry.hpp"
#include "tests/hand_fixture.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// 4 GPUs, 4 experts (expert g owned by GPU g), one layer; every source sends `row` [expert].
IterationCounts same_rows(const std::vector<std::int64_t>& row) {
  IterationCounts ic;
  ic.reset({1, 4, 4});
  for (int g = 0; g < 4; ++g)
    for (int e = 0; e < 4; ++e) ic.at(0, g, e) = row[static_cast<std::size_t>(e)];
  return ic;
}

std::vector<std::int64_t> gpu_tokens(const LayerDispatch& d, int slots_per_gpu) {
  std::vector<std::int64_t> t(static_cast<std::size_t>(d.gpus), 0);
  for (int src = 0; src < d.gpus; ++src)
    for (int sl = 0; sl < d.num_slots; ++sl)
      t[static_cast<std::size_t>(sl / slots_per_gpu)] += d.accepted[static_cast<std::size_t>(src) * d.num_slots + sl];
  return t;
}

std::int64_t slot_tokens(const LayerDispatch& d, int slot) {
  std::int64_t n = 0;
  for (int src = 0; src < d.gpus; ++src) n += d.accepted[static_cast<std::size_t>(src) * d.num_slots + slot];
  return n;
}

}  // namespace

// Every source sends [100, 50, 25, 25]: expert loads [400, 200, 100, 100], I = 800, mean 200,
// level 200, tolerance 1.05 (stop at <= 210). One duplicate slot per GPU.
//   start  [400, 200, 100, 100]
//   1: GPU0's e0 -> GPU2 (least loaded, first of 2 and 3): min(400, 400-200, 200-100) = 100
//          [300, 200, 200, 100]
//   2: e0 -> GPU3: min(300, 100, 100) = 100   [200, 200, 200, 200]; max 200 <= 210: stop.
// Dispatch of e0 (holders: slot 0 share 200, slot 5 = GPU2's duplicate 100, slot 7 = GPU3's
// 100; W = 400): each source's 100 split at cumulative 200, 300, 400 of 400 -> 50, 25, 25.
TEST_CASE("ultraep: the greedy plans duplicates from the counts being dispatched", "[ultraep]") {
  testing::SingleGpuNodes fx(4, 2, 4, 1, 200, "{name: ultraep}");
  const IterationCounts ic = same_rows({100, 50, 25, 25});
  Placement run_on;
  const Placement base = fx.policy->initial_placement();
  CHECK(base.expert_of_slot[0] == std::vector<int>{0, -1, 1, -1, 2, -1, 3, -1});
  REQUIRE(fx.policy->plan_in_iteration(0, ic, base, run_on));
  CHECK(run_on.expert_of_slot[0] == std::vector<int>{0, -1, 1, -1, 2, 0, 3, 0});
  const LayerDispatch d = testing::dispatch_checked(*fx.policy, 0, ic, run_on);
  for (int src = 0; src < 4; ++src) {
    CHECK(d.accepted[static_cast<std::size_t>(src) * 8 + 0] == 50);
    CHECK(d.accepted[static_cast<std::size_t>(src) * 8 + 5] == 25);
    CHECK(d.accepted[static_cast<std::size_t>(src) * 8 + 7] == 25);
  }
  CHECK(d.dropped == 0);
  CHECK(gpu_tokens(d, 2) == std::vector<std::int64_t>{200, 200, 200, 200});
  // The owners' placement stays: the duplicates live inside the iteration.
  const PolicyDecision dec = fx.policy->after_iteration(0, ic, run_on);
  CHECK_FALSE(dec.new_placement);
  CHECK(dec.movements.empty());
  // Without the plan (a placement it did not make), an expert's holders share evenly.
  const LayerDispatch plain = testing::dispatch_checked(*fx.policy, 0, ic, base);
  CHECK(gpu_tokens(plain, 2) == std::vector<std::int64_t>{400, 200, 100, 100});
}

// Every source sends [125, 65, 5, 5]: loads [500, 260, 20, 20], mean = level = 200.
//   1: e0 -> GPU2: min(500, 300, 180) = 180   [320, 260, 200, 20]
//   2: e0 -> GPU3: min(320, 120, 180) = 120   [200, 260, 200, 140]
//   3: b = GPU1 (260 > 210), e1. One slot a GPU: GPU2 and GPU3 spent theirs on e0; GPU0 (200)
//      is left: min(260, 60, 0) = 0, stop at max / mean = 1.3.
//   With two slots a GPU, step 3 takes GPU3 (140): min(260, 60, 60) = 60 -> all 200.
// Dispatch with one slot: e0's 125 a source at cumulative 200, 380, 500 of 500 -> 50, 45, 30.
TEST_CASE("ultraep: the duplicate budget per GPU stops the greedy", "[ultraep]") {
  const IterationCounts ic = same_rows({125, 65, 5, 5});
  {
    testing::SingleGpuNodes fx(4, 2, 4, 1, 200, "{name: ultraep}");
    Placement run_on;
    REQUIRE(fx.policy->plan_in_iteration(0, ic, fx.policy->initial_placement(), run_on));
    CHECK(run_on.expert_of_slot[0] == std::vector<int>{0, -1, 1, -1, 2, 0, 3, 0});
    const LayerDispatch d = testing::dispatch_checked(*fx.policy, 0, ic, run_on);
    CHECK(slot_tokens(d, 0) == 200);
    CHECK(slot_tokens(d, 5) == 180);
    CHECK(slot_tokens(d, 7) == 120);
    CHECK(d.accepted[5] == 45);  // source 0's share on GPU2's duplicate
    CHECK(gpu_tokens(d, 2) == std::vector<std::int64_t>{200, 260, 200, 140});
  }
  {
    testing::SingleGpuNodes fx(4, 3, 4, 1, 200, "{name: ultraep, dup_slots: 2}");
    Placement run_on;
    REQUIRE(fx.policy->plan_in_iteration(0, ic, fx.policy->initial_placement(), run_on));
    CHECK(run_on.expert_of_slot[0] == std::vector<int>{0, -1, -1, 1, -1, -1, 2, 0, -1, 3, 0, 1});
    const LayerDispatch d = testing::dispatch_checked(*fx.policy, 0, ic, run_on);
    // e1: slot 3 (share 200) and slot 11 (60) of 260: 65 a source -> 50 and 15.
    CHECK(slot_tokens(d, 11) == 60);
    CHECK(gpu_tokens(d, 3) == std::vector<std::int64_t>{200, 200, 200, 200});
  }
}

// The charges of the first hand case's plan (2 duplicates of e0, on GPUs 2 and 3), with the
// planner at 1000 ns + 250 ns an expert: every micro-batch, all-gather of the 4 x 4 counts at 4
// B (64 B gathered), 1000 + 4 x 250 = 2000 ns on every GPU, e0's weights (2000 B) GPU0 -> GPU2
// and GPU0 -> GPU3. Once an iteration: the duplicates' gradients (2000 B) back to GPU0; the
// optimizer (1000 parameters an expert) stays with the owners; no replica all-reduce.
TEST_CASE("ultraep: planning, copies and gradients charged as planned", "[ultraep]") {
  testing::SingleGpuNodes fx(4, 2, 4, 1, 200, "{name: ultraep, plan_fixed_ns: 1000, plan_ns_per_expert: 250}");
  const IterationCounts ic = same_rows({100, 50, 25, 25});
  Placement run_on;
  const Placement base = fx.policy->initial_placement();
  REQUIRE(fx.policy->plan_in_iteration(0, ic, base, run_on));
  const SyncPlan sp = fx.policy->sync_plan(0, run_on, base);
  REQUIRE(sp.micro_batch_collectives.size() == 1);
  REQUIRE(sp.micro_batch_collectives[0].size() == 1);
  const CollectiveOp& ag = sp.micro_batch_collectives[0][0];
  CHECK(ag.kind == Collective::AllGather);
  CHECK(ag.bytes == 64.0);
  CHECK(ag.gpus == std::vector<int>{0, 1, 2, 3});
  REQUIRE(sp.micro_batch_decision_ns.size() == 1);
  CHECK(sp.micro_batch_decision_ns[0] == std::vector<TimeNs>{2000, 2000, 2000, 2000});
  REQUIRE(sp.micro_batch_transfers.size() == 1);
  REQUIRE(sp.micro_batch_transfers[0].size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    const Transfer& t = sp.micro_batch_transfers[0][i];
    CHECK(t.src.index == 0);
    CHECK(t.dst.index == static_cast<int>(i) + 2);
    CHECK(t.bytes == 2000.0);
  }
  CHECK_FALSE(sp.replica_allreduce);
  REQUIRE(sp.gradient_transfers.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(sp.gradient_transfers[i].src.index == static_cast<int>(i) + 2);
    CHECK(sp.gradient_transfers[i].dst.index == 0);
    CHECK(sp.gradient_transfers[i].bytes == 2000.0);
  }
  CHECK(sp.gpu_optimizer_params == std::vector<double>{1000, 1000, 1000, 1000});
  CHECK(sp.weight_transfers.empty());
  CHECK(fx.policy->parameters().at("dup_slots") == 1);
}

TEST_CASE("ultraep: rejects layouts without a duplicate slot", "[ultraep]") {
  CHECK_THROWS_WITH(testing::SingleGpuNodes(4, 1, 4, 1, 200, "{name: ultraep}"), Catch::Contains("slots_per_gpu"));
  CHECK_THROWS_WITH(testing::SingleGpuNodes(4, 2, 6, 1, 200, "{name: ultraep}"), Catch::Contains("divisible"));
}

// The hand scenario (two single-GPU nodes, 10 GB/s NIC, 22.4 us message latency as
// test_iteration.cpp works out) in 2 micro-batches. Per-micro-batch work of 3000 ns a GPU and
// 1e8 B GPU0 -> GPU1 (1e7 ns + 22400 ns) is charged before the layer's dispatch in each of the 2
// micro-batches: 2 x (3000 + 10'022'400) = 20'050'800 ns more, all of it movement on the
// critical GPU, and 2e8 B moved.
TEST_CASE("ultraep: the iteration charges the per-micro-batch work in every micro-batch", "[ultraep][iteration]") {
  const auto trace = std::filesystem::temp_directory_path() /
                     ("moesim_test_" + std::to_string(::getpid()) + "_ultraep.csv");
  std::ofstream(trace) << "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,1\n";
  Scenario s = load_scenario_text(testing::hand_scenario(trace.string(), "parallelism: {micro_batches: 2}\n"),
                                  "hand.yaml", {}, std::nullopt);
  std::filesystem::remove(trace);
  Cluster cluster(s.cluster);
  RooflineCompute compute(s.cluster.gpu);
  AnalyticalNetwork net(cluster);
  IterationModel model(cluster, s.model, s.training, compute, net, s.layout);
  Placement pl{2, 1, {{0, 1}}};
  std::vector<LayerDispatch> d(1);
  d[0].reset(2, 2);
  d[0].buffered = {512, 512, 512, 512};
  d[0].accepted = d[0].buffered;
  Engine e;
  const IterationResult base = model.run(e, 0, pl, d, {}, SyncPlan{});
  SyncPlan sp;
  sp.micro_batch_decision_ns = {{3000, 3000}};
  sp.micro_batch_transfers = {{Transfer{Endpoint{false, 0}, Endpoint{false, 1}, 1e8}}};
  const IterationResult with = model.run(e, e.now(), pl, d, {}, sp);
  CHECK(with.iteration_ns == base.iteration_ns + 20'050'800);
  CHECK(with.phase_ns[static_cast<int>(Phase::Movement)] == base.phase_ns[static_cast<int>(Phase::Movement)] + 20'050'800);
  CHECK(with.moved_bytes == 2e8);
  // A collective before the copies adds its own time in each micro-batch.
  sp.micro_batch_collectives = {{CollectiveOp{Collective::AllGather, 64.0, {0, 1}, "counts"}}};
  const IterationResult gathered = model.run(e, e.now(), pl, d, {}, sp);
  const TimeNs ag_ns = net.collective(Collective::AllGather, 64.0, {0, 1}).time_ns;
  CHECK(ag_ns > 0);
  CHECK(gathered.iteration_ns == with.iteration_ns + 2 * ag_ns);
}

// A small scenario end to end: ultraep balances the expert compute to within its tolerance
// (the iteration model's max / mean a layer, averaged) where the same policy without duplicates
// (a tolerance no load exceeds) does not, and moves weights.
TEST_CASE("ultraep: end to end, duplicates balance the GPUs in every iteration", "[ultraep]") {
  const std::string text = R"(
name: ultraep-smoke
seed: 5
cluster: {preset: swiftmoe-cloud, nodes: 4}
model: {preset: gpt-small-moe, layers: 2, experts: 4}
placement: {slots_per_gpu: 2}
trace: {kind: synthetic, skew: 1.0, drift_sigma: 0.02}
run: {max_iterations: 10, stop_at_convergence: false}
policies:
  - {name: ultraep, label: no-duplicates, tolerance: 1.0e9}
  - {name: ultraep}
)";
  Scenario s = load_scenario_text(text, "smoke.yaml", {}, std::nullopt);
  auto res = run_scenario(s, RunOptions{false, {}});
  REQUIRE(res.size() == 2);
  REQUIRE_FALSE(res[1].oom);
  CHECK(res[1].iterations_run == 10);
  INFO("imbalance " << res[0].mean_expert_imbalance << " -> " << res[1].mean_expert_imbalance);
  CHECK(res[0].mean_expert_imbalance > 1.2);
  CHECK(res[0].mean_moved_bytes < res[1].mean_moved_bytes);  // the counts all-gather only
  CHECK(res[1].mean_expert_imbalance <= 1.06);
  CHECK(res[1].mean_moved_bytes > 0.0);
  CHECK(res[1].mean_survival == 1.0);
}

// FlexMoE's default accounting: replicas shard the optimizer state (ZeRO-1 over the expert's
// replicas), a move carries the weights and one shard, and the cost model prices the hottest
// GPU's assignments saved and the drops avoided at compute + all-to-all seconds per assignment.
// Hand-worked cases, then end-to-end runs on the SwiftMoE setup: a skewed trace moves at
// intervals 10, 50 and 100, a balanced one never.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>

#include "app/runner.hpp"
#include "policies/common.hpp"
#include "policies/flexmoe_cost.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// 3 single-GPU nodes x 2 slots, 4 experts, 60 tokens per GPU (the hand case of
// tests/test_policy_flexmoe.cpp): an expert costs 2 * 2 * 1000 * 1000 * 3 = 1.2e7 FLOPs per
// token at 1 TFLOP/s * 0.5 = 24 us; an assignment's all-to-all is 4 x 1000 x 2 B (bf16) over
// the NIC. Weights 2e5 B, optimizer state 1.2e6 B per expert.
struct CostWorld : testing::PolicyWorld {
  Placement placement;
  CostWorld(const std::string& params, double nic_gbit) : PolicyWorld(3, 1, 2, 4, 1, 60) {
    cluster.intra_node = IntraNode::None;
    cluster.nic_gbit = nic_gbit;
    cluster.nics_per_node = 1;
    cluster.nic_efficiency = 1.0;
    cluster.gpu.peak_tflops = 1.0;
    cluster.gpu.gemm_efficiency = 0.5;
    model.top_k = 1;
    model.hidden = 1000;
    model.expert_ffn_hidden = 1000;
    model.ffn_matrices = 2;
    model.dtype = DType::BF16;
    ctx.expert_params = 1e5;
    ctx.expert_weight_bytes = 2e5;
    ctx.expert_grad_bytes = 2e5;
    ctx.expert_optimizer_bytes = 1.2e6;
    build(params);
    placement = policy->initial_placement();
  }
  [[nodiscard]] IterationCounts counts(const std::vector<std::int64_t>& c) const {
    IterationCounts ic;
    ic.reset(TraceShape{1, 3, 4});
    std::copy(c.begin(), c.end(), ic.counts.begin());
    return ic;
  }
};

// Initial GPU0 [e0, e1], GPU1 [e0, e2], GPU2 [e1, e3]; counts [src][expert] (loads e0 30, e1
// 20, e2 90, e3 10; GPU demand 30, 100, 20). The step gives GPU2's e1 slot to e2: demand 40, 55,
// 55 (max 100 -> 55, 45 saved). Capacity ceil(60 / 2) = 30 per replica: before, e2 (1 replica)
// drops 90 - 30 = 60; after (2 replicas) 90 - 60 = 30; e1 keeps 20 <= 30: 30 drops avoided.
const std::vector<std::int64_t> kHand = {20, 10, 30, 0, 10, 0, 30, 0, 0, 10, 30, 10};
const std::vector<int> kHandAfter = {0, 1, 0, 2, 2, 3};

}  // namespace

TEST_CASE("flexmoe cost: drops avoided count in the gain", "[flexmoe][cost]") {
  // 4 Gb/s NIC = 0.5 GB/s: all-to-all 8000 B / 0.5 GB/s = 16 us, so 24 + 16 = 40 us per
  // assignment. Interval 1: gain (45 + 30) x 40 us = 3.0 ms with the drop term, 45 x 40 us =
  // 1.8 ms without. Cost (sharded): e2's weights + half its state (2e5 + 6e5 B) to GPU2 and e1's
  // leaving half (6e5 B) from GPU2 to GPU0: 1.4e6 B / 0.5 GB/s = 2.8 ms.
  auto moves = [](double drop_weight) {
    CostWorld w(fmt::format("{{name: flexmoe, interval: 1, drop_weight: {}}}", drop_weight), 4.0);
    return w.policy->after_iteration(0, w.counts(kHand), w.placement);
  };
  const PolicyDecision d = moves(1.0);
  REQUIRE(d.new_placement);  // 3.0 ms > 2.8 ms
  CHECK(d.placement.expert_of_slot[0] == kHandAfter);
  CHECK_FALSE(moves(0.0).new_placement);  // 1.8 ms < 2.8 ms
  // Compute only (a2a_passes 0, 24 us): 75 x 24 us = 1.8 ms < 2.8 ms: the all-to-all counts too.
  CostWorld c("{name: flexmoe, interval: 1, a2a_passes: 0}", 4.0);
  CHECK_FALSE(c.policy->after_iteration(0, c.counts(kHand), c.placement).new_placement);
}

TEST_CASE("flexmoe cost: a move carries the weights and re-partitions the optimizer shards", "[flexmoe][cost]") {
  CostWorld w("{name: flexmoe, interval: 10}", 8.0);
  const PolicyDecision d = w.policy->after_iteration(9, w.counts(kHand), w.placement);
  REQUIRE(d.new_placement);
  REQUIRE(d.placement.expert_of_slot[0] == kHandAfter);
  // e2 goes from 1 holder (GPU1, whole state) to 2 (GPU1, GPU2: half each): GPU2 receives the
  // weights (2e5 B) and half the state (6e5 B) from GPU1. e1 goes from GPU0 + GPU2 (half each)
  // to GPU0 alone: GPU2's half (6e5 B) goes to GPU0. 1.4e6 B in all, every move blocking.
  std::map<std::string, std::pair<int, double>> got;
  for (const Movement& m : d.movements) {
    CHECK(m.blocking);
    CHECK_FALSE(m.transfer.src.host);
    got[m.what] = {m.transfer.src.index * 10 + m.transfer.dst.index, m.transfer.bytes};
  }
  REQUIRE(got.size() == 3);
  CHECK(got["layer 0 expert 2 to slot 4"] == std::pair<int, double>{12, 2e5});
  CHECK(got["layer 0 expert 2 optimizer shard to GPU 2"] == std::pair<int, double>{12, 6e5});
  CHECK(got["layer 0 expert 1 optimizer shard to GPU 0"] == std::pair<int, double>{20, 6e5});

  SECTION("full copies move the whole state with each new replica") {
    CostWorld f("{name: flexmoe, interval: 10, shard_optimizer: false}", 8.0);
    const PolicyDecision e = f.policy->after_iteration(9, f.counts(kHand), f.placement);
    REQUIRE(e.movements.size() == 1);
    CHECK(e.movements[0].transfer.bytes == 1.4e6);
  }
}

TEST_CASE("flexmoe cost: replicas shard the optimizer step (ZeRO-1 over the expert's replicas)", "[flexmoe][cost]") {
  // Initial GPU0 [e0, e1], GPU1 [e0, e2], GPU2 [e1, e3]: e0 and e1 have 2 replicas (a 5e4
  // parameter shard each), e2 and e3 one (1e5). GPU0 steps 5e4 + 5e4, GPU1 5e4 + 1e5, GPU2 5e4 +
  // 1e5; e0 and e1 reduce-scatter their gradients and all-gather their weights.
  CostWorld w("{name: flexmoe}", 8.0);
  const SyncPlan s = w.policy->sync_plan(0, w.placement, w.placement);
  CHECK(s.gpu_optimizer_params == std::vector<double>{1e5, 1.5e5, 1.5e5});
  CHECK_FALSE(s.replica_allreduce);
  REQUIRE(s.grad_collectives.size() == 2);
  CHECK(s.grad_collectives[0].gpus == std::vector<int>{0, 1});
  CHECK(s.grad_collectives[1].gpus == std::vector<int>{0, 2});
  CHECK(s.post_collectives.size() == 2);
  // Full copies: every replica steps its whole expert, 2e5 parameters per GPU.
  CostWorld f("{name: flexmoe, shard_optimizer: false}", 8.0);
  const SyncPlan u = f.policy->sync_plan(0, f.placement, f.placement);
  CHECK(u.gpu_optimizer_params == std::vector<double>{2e5, 2e5, 2e5});
  CHECK(u.replica_allreduce);
}

namespace {

// 4 single-GPU nodes x 2 slots, 4 experts, 1 layer, 60 tokens per GPU: the initial placement is
// GPU0 [e0, e2], GPU1 [e0, e2], GPU2 [e1, e3], GPU3 [e1, e3], so the replica groups {0, 1} and
// {2, 3} line up. Each source sends e0 25, e1 15, e2 15, e3 5 (loads 100, 60, 60, 20). NIC
// 1e9 B/s, 1 TFLOP/s: an assignment costs 12 us of compute + 8 us of all-to-all = 20 us.
struct AlignedWorld : testing::PolicyWorld {
  Placement placement;
  AlignedWorld(const std::string& params, double optimizer_bytes, bool offload) : PolicyWorld(4, 1, 2, 4, 1, 60) {
    cluster.intra_node = IntraNode::None;
    cluster.nic_gbit = 8.0;
    cluster.nics_per_node = 1;
    cluster.nic_efficiency = 1.0;
    cluster.gpu.peak_tflops = 1.0;
    cluster.gpu.gemm_efficiency = 1.0;
    cluster.pcie_gbps = 20.0;
    training.optimizer_offload = offload;
    training.host_adam_params_per_s = 1e8;
    model.top_k = 1;
    model.hidden = 1000;
    model.expert_ffn_hidden = 1000;
    model.ffn_matrices = 2;
    model.dtype = DType::BF16;
    ctx.expert_params = 1e5;
    ctx.expert_weight_bytes = 2e5;
    ctx.expert_grad_bytes = 2e5;
    ctx.expert_optimizer_bytes = optimizer_bytes;
    build(params);
    placement = policy->initial_placement();
  }
  [[nodiscard]] PolicyDecision plan() {
    IterationCounts ic;
    ic.reset(TraceShape{1, 4, 4});
    for (int g = 0; g < 4; ++g) std::copy(kRow.begin(), kRow.end(), ic.counts.begin() + 4 * g);
    return policy->after_iteration(1, ic, placement);
  }
  static constexpr std::array<std::int64_t, 4> kRow = {25, 15, 15, 5};
};

// The first step (hot e0, cold e3) gives GPU2's e3 slot (slot 5) to e0. GPU demand 80, 80, 40,
// 40 -> 64, 63, 63, 50 (16 saved); drops (capacity 30 per replica) 40 -> 10 (30 avoided):
// 46 x 20 us = 920 us per iteration. The move: e0's weights (2e5 B) + a third of its state from
// GPU0 to GPU2, and e3's leaving half from GPU2 to GPU3, at 1e9 B/s.
void check_first_step(const PolicyDecision& d, bool moved) {
  REQUIRE(d.new_placement == moved);
  if (moved) CHECK(d.placement.expert_of_slot[0][5] == 0);
}

}  // namespace

TEST_CASE("flexmoe cost: the replica groups' sync chain counts in the gain", "[flexmoe][cost]") {
  // Ring collective of 2e5 B over r GPUs: 8.4 us + (r - 1) (14 us + 2e5 / r / 1e9): 122.4 us
  // for 2, 169.73 us for 3. Before: {0, 1} and {2, 3} run side by side, twice: 244.8 us a pass.
  // After: e0 {0, 1, 2} (169.73), then e1 {2, 3} and e2 {0, 1} (122.4) both wait for it:
  // 292.13 us. Two passes (gradients, weights): +94.67 us per iteration. Optimizer state 1.86e6
  // B: the move is 2e5 + 6.2e5 + 9.3e5 B = 1750 us. Interval 2: 2 x 920 = 1840 us > 1750 without
  // the sync term; 2 x (920 - 94.67) = 1650.7 us < 1750 with it.
  AlignedWorld with("{name: flexmoe, interval: 2, sync_weight: 1}", 1.86e6, false);
  check_first_step(with.plan(), false);
  AlignedWorld without("{name: flexmoe, interval: 2, sync_weight: 0}", 1.86e6, false);
  check_first_step(without.plan(), true);
  // The default is FlexMoE's own cost model (compute and all-to-all against the move): no
  // sync term, so the step is kept.
  AlignedWorld plain("{name: flexmoe, interval: 2}", 1.86e6, false);
  check_first_step(plain.plan(), true);
  // Interval 1: 920 us < 1750 us, refused by the default model too.
  AlignedWorld short_horizon("{name: flexmoe, interval: 1}", 1.86e6, false);
  check_first_step(short_horizon.plan(), false);
}

TEST_CASE("flexmoe cost: the slowest optimizer step counts in the gain", "[flexmoe][cost]") {
  // Offloaded Adam at 1e8 params/s. Before, every GPU steps half of two experts (1e5 params);
  // after the step GPU3 steps half of e1 and all of e3 (1.5e5): +5e4 params = 500 us on its
  // host + 5e4 x (2 + 2) B over 20 GB/s PCIe = 10 us, 510 us per iteration. Optimizer state
  // 1.2e6 B: the move is 2e5 + 4e5 + 6e5 B = 1200 us. Interval 2 (sync term on, -94.67 us):
  // 2 x (920 - 94.67) = 1650.7 us > 1200 without the optimizer term, 2 x (920 - 94.67 - 510)
  // = 630.7 us < 1200 with it.
  AlignedWorld with("{name: flexmoe, interval: 2, sync_weight: 1, optimizer_weight: 1}", 1.2e6, true);
  check_first_step(with.plan(), false);
  AlignedWorld without("{name: flexmoe, interval: 2, sync_weight: 1, optimizer_weight: 0}", 1.2e6, true);
  check_first_step(without.plan(), true);
  // By default neither term counts: 2 x 920 = 1840 us > 1200 us.
  AlignedWorld plain("{name: flexmoe, interval: 2}", 1.2e6, true);
  check_first_step(plain.plan(), true);
  // Without offload the step runs through HBM, which this world gives no bandwidth: no term.
  AlignedWorld gpu("{name: flexmoe, interval: 2, sync_weight: 1, optimizer_weight: 1}", 1.2e6, false);
  check_first_step(gpu.plan(), true);
}

TEST_CASE("flexmoe cost: sync_order greedy issues the replica groups' collectives by first-free members",
          "[flexmoe][cost]") {
  // GPU0 [e0, e3], GPU1 [e0, e1], GPU2 [e1, e2], GPU3 [e2, e3]: the groups {0, 1}, {1, 2}, {2, 3},
  // {0, 3} form a ring of overlaps. A 2-GPU ring of 2e5 B at 1e9 B/s takes 8.4 + 14 + 100 =
  // 122.4 us. In (layer, expert) order each group waits for the one before: e0 ends at 122.4,
  // e1 at 244.8, e2 at 367.2, e3 at 489.6 us. Greedy: e0 (free at 0), then e2 (its GPUs are free
  // at 0), then e1 and e3 side by side (both free at 122.4): done at 244.8 us.
  AlignedWorld w("{name: flexmoe, sync_order: greedy}", 1.2e6, false);
  Placement pl = w.placement;
  pl.expert_of_slot[0] = {0, 3, 0, 1, 1, 2, 2, 3};
  const SyncPlan s = w.policy->sync_plan(0, pl, pl);
  const std::vector<std::vector<int>> want = {{0, 1}, {2, 3}, {1, 2}, {0, 3}};
  for (const auto* ops : {&s.grad_collectives, &s.post_collectives}) {
    REQUIRE(ops->size() == 4);
    std::vector<double> free_s(4, 0.0);
    double end = 0.0;
    for (std::size_t i = 0; i < 4; ++i) {
      CHECK((*ops)[i].gpus == want[i]);
      double t = std::max(free_s[(*ops)[i].gpus[0]], free_s[(*ops)[i].gpus[1]]);
      t += flexmoe_ring_seconds(w.ctx, (*ops)[i].gpus, (*ops)[i].bytes);
      for (int g : (*ops)[i].gpus) free_s[g] = t;
      end = std::max(end, t);
    }
    CHECK(end == Approx(244.8e-6));
  }
  // The layer order's chain, as the cost model estimates it: 489.6 us a pass, two passes.
  std::vector<double> scratch;
  CHECK(flexmoe_sync_seconds(w.ctx, {{{0, 1}, {1, 2}, {2, 3}, {0, 3}}}, true, scratch) == Approx(979.2e-6));
  AlignedWorld layer("{name: flexmoe}", 1.2e6, false);
  const SyncPlan l = layer.policy->sync_plan(0, pl, pl);
  REQUIRE(l.grad_collectives.size() == 4);
  CHECK(l.grad_collectives[1].gpus == std::vector<int>{1, 2});
}

namespace {

// Iterations in which bytes moved, on the SwiftMoE setup cut to 4 layers.
std::vector<int> moving_iterations(double skew, double drift_sigma, int interval, int iterations) {
  const std::string text = fmt::format(R"(
name: flexmoe-cost-e2e
seed: 1
cluster: {{preset: swiftmoe-cloud, nodes: 16}}
model: {{preset: gpt-small-moe, layers: 4}}
placement: {{slots_per_gpu: 4}}
training: {{optimizer_offload: true}}
trace: {{kind: synthetic, skew: {}, drift_sigma: {}}}
run: {{max_iterations: {}, stop_at_convergence: false}}
policies:
  - {{name: flexmoe, interval: {}}}
)",
                                       skew, drift_sigma, iterations, interval);
  Scenario s = load_scenario_text(text, "flexmoe-cost-e2e.yaml", {}, std::nullopt);
  auto results = run_scenario(s);
  std::vector<int> out;
  for (const auto& row : results.at(0).rows)
    if (row.result.moved_bytes > 0.0) out.push_back(static_cast<int>(row.iteration));
  return out;
}

}  // namespace

TEST_CASE("flexmoe cost: a skewed trace rebalances at intervals 10, 50 and 100, a balanced one never",
          "[flexmoe][cost][e2e]") {
  // The SwiftMoE scenario's skew 1.0: the hottest of 16 Zipf(1) experts takes 1 / 3.38 = 30 %
  // of the 32768 assignments, about 9700 against its 4 replicas' capacity of 4 x 512 = 2048,
  // so a fifth replica avoids 512 drops per iteration at 0.64 us each (2 x 2 x 768 x 3072 x 3
  // FLOPs at 312 TFLOP/s x 0.7 = 0.13 us, plus 4 x 768 x 2 B at 12 GB/s = 0.51 us), 0.33 ms,
  // besides the busiest GPU's demand it lowers; over a horizon of 10 iterations that is more
  // than the move (9.4 MB of weights + a 11.3 MB shard in, a 14.2 MB shard out, at 12 GB/s:
  // about 2.9 ms). The coldest expert (1.8 %, about 600 assignments) still fits its 3 replicas.
  // Moves are charged in the iteration after a plan: iterations interval, 2 interval, ...
  for (int interval : {10, 50, 100}) {
    INFO("interval " << interval);
    const std::vector<int> it = moving_iterations(1.0, 0.05, interval, 2 * interval + 1);
    REQUIRE_FALSE(it.empty());
    CHECK(it.front() == interval);
    for (int i : it) CHECK(i % interval == 0);
  }
  // Uniform popularity without drift (skew 0, drift_sigma 0): every expert's load is its 4
  // replicas' capacity (2048) up to sampling noise, so taking a replica from the coldest expert
  // makes it drop about 512 more than the hottest stops dropping: no step pays, whatever the
  // horizon.
  CHECK(moving_iterations(0.0, 0.0, 100, 201).empty());
  CHECK(moving_iterations(0.0, 0.0, 10, 201).empty());
}

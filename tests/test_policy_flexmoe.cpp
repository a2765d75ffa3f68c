// FlexMoE: initial spread, the greedy plan step and its cost check, the triggers, routing, the
// movements it charges, invariants on random inputs and an end-to-end run. These hand cases
// check the plan with the compute-only cost model and full optimizer copies (shard_optimizer:
// false, a2a_passes: 0, drop_weight: 0), so their round numbers stay those worked below; the
// default model (sharded optimizer, all-to-all and drop terms) is checked in
// tests/test_flexmoe_cost.cpp.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "app/runner.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// Round numbers for the cost model: an expert costs 2 * 2 * 1000 * 1000 = 4e6 FLOPs per token
// and pass, 3 passes (forward + backward) = 1.2e7 FLOPs, at 1 TFLOP/s * 0.5 = 24 us per token.
// One 8 Gb/s NIC per node at efficiency 1: 1 GB/s per node, shared by its GPUs. A move carries
// 2e5 weight bytes + 1.2e6 optimizer bytes = 1.4e6 bytes (1.4 ms at 1 GB/s) by default.
struct FlexFixture : testing::PolicyWorld {
  Placement placement;

  FlexFixture(int nodes, int gpus_per_node, int slots, int experts, int layers, std::int64_t tokens,
              const std::string& params, double weight_bytes = 2e5, double optimizer_bytes = 1.2e6,
              double nic_gbit = 8.0)
      : PolicyWorld(nodes, gpus_per_node, slots, experts, layers, tokens) {
    cluster.intra_node = gpus_per_node > 1 ? IntraNode::PCIe : IntraNode::None;
    cluster.nccl_pci_gbps = 12.0;
    cluster.pcie_gbps = 32.0;
    cluster.nic_gbit = nic_gbit;
    cluster.nics_per_node = 1;
    cluster.nic_efficiency = 1.0;
    cluster.gpu.peak_tflops = 1.0;
    cluster.gpu.gemm_efficiency = 0.5;
    model.top_k = 1;
    model.hidden = 1000;
    model.expert_ffn_hidden = 1000;
    model.ffn_matrices = 2;
    ctx.expert_params = weight_bytes / 2.0;
    ctx.expert_weight_bytes = weight_bytes;
    ctx.expert_grad_bytes = weight_bytes;
    ctx.expert_optimizer_bytes = optimizer_bytes;
    build(params);
    placement = policy->initial_placement();
  }

  [[nodiscard]] IterationCounts counts(const std::vector<std::vector<std::int64_t>>& per_layer) const {
    IterationCounts ic;
    ic.reset(TraceShape{ctx.moe_layers, ctx.gpus, ctx.experts});
    for (int l = 0; l < ctx.moe_layers; ++l)
      std::copy(per_layer[l].begin(), per_layer[l].end(), ic.counts.begin() + static_cast<std::ptrdiff_t>(l) * ctx.gpus * ctx.experts);
    return ic;
  }
};

// The hand case: 3 single-GPU nodes x 2 slots, 4 experts. Initial placement
//   GPU0 [e0, e1], GPU1 [e0, e2], GPU2 [e1, e3]
// counts [src][expert]:
//   GPU0: 20 10 30  0
//   GPU1: 10  0 30  0
//   GPU2:  0 10 30 10
// Routing (a source's own node first): e0 20 -> GPU0, 10 -> GPU1; e1 10 -> GPU0, 10 -> GPU2;
// e2 90 -> GPU1 (its only replica); e3 10 -> GPU2. GPU loads 30, 100, 20 (mean 50).
const std::vector<std::int64_t> kHand = {20, 10, 30, 0, 10, 0, 30, 0, 0, 10, 30, 10};
const std::vector<int> kHandInitial = {0, 1, 0, 2, 1, 3};
// After one step: hottest per replica e2 (90), coldest with > 1 replica e1 (20 / 2 = 10 < e0's
// 30 / 2 = 15); e1 sits on GPU0 (load 30) and GPU2 (load 20), neither holding e2: GPU2's e1
// (slot 4) becomes e2. Loads: e1 20 -> GPU0; e2: GPU1 and GPU2 keep their own 30, GPU0's 30
// splits 15 / 15; GPU0 20 + 20 = 40, GPU1 10 + 45 = 55, GPU2 45 + 10 = 55: max 100 -> 55.
// The next step (hot e2 at 45 per replica, cold e0 on GPU0, the only holder without e2) would
// give GPU0 [e2, e1]: loads 50, 60, 40, max 60 > 55: refused, the plan stops.
const std::vector<int> kHandAfter = {0, 1, 0, 2, 2, 3};

std::int64_t total_bytes(const std::vector<Movement>& m) {
  double b = 0;
  for (const auto& x : m) b += x.transfer.bytes;
  return static_cast<std::int64_t>(b);
}

}  // namespace

TEST_CASE("flexmoe: initial placement spreads replicas round-robin over GPUs", "[flexmoe]") {
  // 4 slots, 3 experts: e0 2 replicas, e1 and e2 one. Replica list [0, 0, 1, 2]; replica i on
  // GPU i % 2, slot i / 2: GPU0 [0, 1], GPU1 [0, 2].
  FlexFixture a(2, 1, 2, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0}");
  CHECK(a.placement.expert_of_slot[0] == std::vector<int>{0, 1, 0, 2});
  // 6 slots, 4 experts: [0, 0, 1, 1, 2, 3] -> GPU0 [0, 1], GPU1 [0, 2], GPU2 [1, 3].
  FlexFixture b(3, 1, 2, 4, 2, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0}");
  CHECK(b.placement.expert_of_slot[0] == kHandInitial);
  CHECK(b.placement.expert_of_slot[1] == kHandInitial);
  // 8 slots, 3 experts: 3, 3, 2 replicas; [0,0,0,1,1,1,2,2] over 4 GPUs:
  // GPU0 [0, 1], GPU1 [0, 1], GPU2 [0, 2], GPU3 [1, 2]: no GPU holds an expert twice.
  FlexFixture c(4, 1, 2, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0}");
  CHECK(c.placement.expert_of_slot[0] == std::vector<int>{0, 1, 0, 1, 0, 2, 1, 2});
  // 2 nodes x 2 GPUs x 2 slots, 4 experts: 2 replicas each; GPUs taken node by node (0, 2, 1,
  // 3): [0, 0, 1, 1, 2, 2, 3, 3] -> GPU0 [0, 2], GPU2 [0, 2], GPU1 [1, 3], GPU3 [1, 3]: every
  // expert has a replica in each node.
  FlexFixture d(2, 2, 2, 4, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0}");
  CHECK(d.placement.expert_of_slot[0] == std::vector<int>{0, 2, 1, 3, 0, 2, 1, 3});
}

TEST_CASE("flexmoe: routing prefers replicas in the source's node; capacity per replica", "[flexmoe]") {
  SECTION("dropless") {
    FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, capacity_factor: 0}");
    LayerDispatch d;
    f.policy->dispatch(0, kHand.data(), f.placement, d);
    // Slots: 0 GPU0 e0, 1 GPU0 e1, 2 GPU1 e0, 3 GPU1 e2, 4 GPU2 e1, 5 GPU2 e3.
    CHECK(d.accepted == std::vector<std::int64_t>{20, 10, 0, 30, 0, 0,  //
                                                  0, 0, 10, 30, 0, 0,   //
                                                  0, 0, 0, 30, 10, 10});
    CHECK(d.routed == 150);
    CHECK(d.dropped == 0);
  }
  SECTION("capacity factor 1") {
    // Per replica ceil(1.0 * 1 * 60 / 2) = 30: e2 (one replica) keeps 30 of 90, 10 per source.
    FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, capacity_factor: 1.0}");
    CHECK(f.policy->parameters()["replica_capacity"] == 30);
    LayerDispatch d;
    f.policy->dispatch(0, kHand.data(), f.placement, d);
    CHECK(d.accepted[0 * 6 + 3] == 10);
    CHECK(d.accepted[1 * 6 + 3] == 10);
    CHECK(d.accepted[2 * 6 + 3] == 10);
    CHECK(d.dropped == 60);
  }
  SECTION("two GPUs per node: a source spreads over the replicas of its own node") {
    // 2 nodes x 2 GPUs x 1 slot, 2 experts: [0, 1, 0, 1]; e0 on GPU0 (node 0) and GPU2 (node 1).
    FlexFixture f(2, 2, 1, 2, 1, 8, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, capacity_factor: 0}");
    REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1, 0, 1});
    const std::vector<std::int64_t> c = {8, 0, 6, 0, 0, 0, 0, 0};
    LayerDispatch d;
    f.policy->dispatch(0, c.data(), f.placement, d);
    // GPU0's 8 and GPU1's 6 tokens of e0 go to GPU0 (node 0's replica), none to GPU2.
    CHECK(d.accepted[0 * 4 + 0] == 8);
    CHECK(d.accepted[1 * 4 + 0] == 6);
    CHECK(d.accepted[0 * 4 + 2] == 0);
    CHECK(d.accepted[1 * 4 + 2] == 0);
  }
}

TEST_CASE("flexmoe: one plan step on a hand-worked case", "[flexmoe]") {
  // Interval 10 (horizon 10 iterations): the step gains (100 - 55) tokens * 24 us * 10 = 10.8 ms
  // and its move costs 1.4e6 B / 1 GB/s = 1.4 ms: kept. The second step is refused (60 > 55).
  FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 10, capacity_factor: 0}");
  REQUIRE(f.placement.expert_of_slot[0] == kHandInitial);
  auto counts = f.counts({kHand});
  PolicyDecision d = f.policy->after_iteration(9, counts, f.placement);
  REQUIRE(d.new_placement);
  CHECK(d.placement.expert_of_slot[0] == kHandAfter);
  // One new replica: e2 from GPU1 (its only holder) to slot 4 on GPU2, weights + optimizer
  // state = 2e5 + 1.2e6 bytes, blocking.
  REQUIRE(d.movements.size() == 1);
  const Movement& m = d.movements[0];
  CHECK(m.transfer.src.host == false);
  CHECK(m.transfer.src.index == 1);
  CHECK(m.transfer.dst.host == false);
  CHECK(m.transfer.dst.index == 2);
  CHECK(m.transfer.bytes == 1.4e6);
  CHECK(m.blocking);
  CHECK(m.what == "layer 0 expert 2 to slot 4");

  SECTION("the next dispatch uses the new placement") {
    LayerDispatch ld;
    f.policy->dispatch(0, kHand.data(), d.placement, ld);
    // GPU0's 30 tokens of e2 split over slots 3 (GPU1) and 4 (GPU2); GPU2 keeps its own.
    CHECK(ld.accepted[0 * 6 + 3] == 15);
    CHECK(ld.accepted[0 * 6 + 4] == 15);
    CHECK(ld.accepted[2 * 6 + 4] == 30);
    CHECK(ld.accepted[2 * 6 + 3] == 0);
  }
  SECTION("max_steps 0 plans nothing") {
    FlexFixture g(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 10, max_steps: 0}");
    CHECK_FALSE(g.policy->after_iteration(9, counts, g.placement).new_placement);
  }
}

TEST_CASE("flexmoe: the cost check refuses a move that costs more than it gains", "[flexmoe]") {
  // The hand step gains 45 tokens * 24 us * interval iterations (10.8 ms at interval 10).
  auto run = [](double weight, double optimizer, double nic_gbit, int interval, bool cost_model = true) {
    FlexFixture f(3, 1, 2, 4, 1, 60,
                  fmt::format("{{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: {}, cost_model: {}}}", interval, cost_model), weight,
                  optimizer, nic_gbit);
    return f.policy->after_iteration(interval - 1, f.counts({kHand}), f.placement).new_placement;
  };
  // 1.4e6 B at 1 GB/s = 1.4 ms < 10.8 ms: kept.
  CHECK(run(2e5, 1.2e6, 8.0, 10));
  // 1.4e6 B at 0.1 GB/s (a 0.8 Gb/s NIC) = 14 ms > 10.8 ms: refused.
  CHECK_FALSE(run(2e5, 1.2e6, 0.8, 10));
  // At 1 GB/s: 1e6 + 9.7e6 B = 10.7 ms is kept, 1e6 + 9.9e6 B = 10.9 ms is refused: the
  // optimizer state counts.
  CHECK(run(1e6, 9.7e6, 8.0, 10));
  CHECK_FALSE(run(1e6, 9.9e6, 8.0, 10));
  // A longer horizon (interval 20: 21.6 ms) pays for the 10.9 ms move.
  CHECK(run(1e6, 9.9e6, 8.0, 20));
  // Without the cost model any step that lowers the hottest GPU is kept.
  CHECK(run(2e5, 1.2e6, 0.8, 10, false));
}

TEST_CASE("flexmoe: the interval trigger fires exactly every interval iterations", "[flexmoe]") {
  // Each iteration the expert with the fewest replicas (lowest index) gets 1000 tokens from
  // every GPU and the others 1: every plan has a step that gains ~500 tokens or more (>= 36 ms
  // over 3 iterations against a 1.4 ms move), so a plan moves whenever it runs.
  FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 3}");
  Placement cur = f.placement;
  for (int it = 0; it < 9; ++it) {
    std::vector<int> reps(4, 0);
    for (int e : cur.expert_of_slot[0]) ++reps[e];
    const int hot = static_cast<int>(std::min_element(reps.begin(), reps.end()) - reps.begin());
    std::vector<std::int64_t> c(12, 1);
    for (int g = 0; g < 3; ++g) c[g * 4 + hot] = 1000;
    PolicyDecision d = f.policy->after_iteration(it, f.counts({c}), cur);
    INFO("iteration " << it);
    CHECK(d.new_placement == (it % 3 == 2));
    if (d.new_placement) {
      CHECK(d.placement.expert_of_slot[0] != cur.expert_of_slot[0]);
      cur = d.placement;
    }
  }
  // Hand check of the first plan (hot e2 on GPU1 only): step 1 puts e2 on GPU0 in place of e0
  // (coldest with 2 replicas, ties to the lower index; GPU1 already holds e2), step 2 puts e2 on
  // GPU2 in place of e1; then no expert other than e2 has 2 replicas.
  FlexFixture g(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 3}");
  std::vector<std::int64_t> c(12, 1);
  for (int s = 0; s < 3; ++s) c[s * 4 + 2] = 1000;
  PolicyDecision d = g.policy->after_iteration(2, g.counts({c}), g.placement);
  REQUIRE(d.new_placement);
  CHECK(d.placement.expert_of_slot[0] == std::vector<int>{2, 1, 0, 2, 2, 3});
}

TEST_CASE("flexmoe: the balance trigger fires only above the threshold", "[flexmoe]") {
  // Hand loads 30, 100, 20: max / mean = 100 / 50 = 2.0, max / min = 100 / 20 = 5.0.
  auto fires = [](const std::string& metric, double threshold, int iteration) {
    FlexFixture f(3, 1, 2, 4, 1, 60,
                  fmt::format("{{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, trigger: balance, interval: 10, balance_metric: {}, "
                              "balance_threshold: {}}}",
                              metric, threshold));
    return f.policy->after_iteration(iteration, f.counts({kHand}), f.placement).new_placement;
  };
  CHECK(fires("max_mean", 1.9, 0));
  CHECK_FALSE(fires("max_mean", 2.1, 0));
  CHECK(fires("max_min", 4.9, 0));
  CHECK_FALSE(fires("max_min", 5.1, 0));
  // The interval plays no part in triggering (only as the cost horizon).
  CHECK(fires("max_mean", 1.9, 3));
  CHECK_FALSE(fires("max_mean", 2.1, 9));

  SECTION("after the step the layer is balanced enough and stays") {
    // Loads 40, 55, 55: max / mean = 55 / 50 = 1.1 <= 1.2.
    FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, trigger: balance, interval: 10}");
    auto counts = f.counts({kHand});
    PolicyDecision d = f.policy->after_iteration(0, counts, f.placement);
    REQUIRE(d.new_placement);
    REQUIRE(d.placement.expert_of_slot[0] == kHandAfter);
    CHECK_FALSE(f.policy->after_iteration(1, counts, d.placement).new_placement);
  }
}

TEST_CASE("flexmoe: a third expert migrates when every GPU holding the cold one holds the hot one",
          "[flexmoe]") {
  // GPU0 [e0, e1], GPU1 [e0, e1], GPU2 [e2, e3]; every GPU routes [20, 400, 40, 40].
  // Loads: GPU0 = e0 20 + 10 (half of GPU2's) + e1 400 + 200 = 630, GPU1 630, GPU2 80 + 80 +
  // 40 + 40 = 240. Hot e1 (1200 / 2), cold e0 (60 / 2); both holders of e0 hold e1. GPU0 (tie,
  // lower id) gives its e0 slot to e2 (GPU2's coldest expert not on GPU0, tie with e3 to the
  // lower index), and GPU2's e2 slot takes e1: [e2, e1], [e0, e1], [e1, e3]. Loads 400 + 120 =
  // 520, 60 + 400 = 460, 400 + 120 = 520: gain 110 tokens * 24 us * 10 = 26.4 ms > two moves of
  // 1.4 ms.
  FlexFixture f(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 10}");
  Placement cur = f.placement;
  cur.expert_of_slot[0] = {0, 1, 0, 1, 2, 3};
  std::vector<std::int64_t> c;
  for (int g = 0; g < 3; ++g) c.insert(c.end(), {20, 400, 40, 40});
  PolicyDecision d = f.policy->after_iteration(9, f.counts({c}), cur);
  REQUIRE(d.new_placement);
  CHECK(d.placement.expert_of_slot[0] == std::vector<int>{2, 1, 0, 1, 1, 3});
  // Two movements: e2 GPU2 -> GPU0 (slot 0), e1 GPU0 -> GPU2 (slot 4; lowest holder id),
  // 2 x 1.4e6 bytes.
  REQUIRE(d.movements.size() == 2);
  CHECK(d.movements[0].what == "layer 0 expert 2 to slot 0");
  CHECK(d.movements[0].transfer.src.index == 2);
  CHECK(d.movements[0].transfer.dst.index == 0);
  CHECK(d.movements[1].what == "layer 0 expert 1 to slot 4");
  CHECK(d.movements[1].transfer.src.index == 0);
  CHECK(d.movements[1].transfer.dst.index == 2);
  CHECK(total_bytes(d.movements) == 2800000);
  // With 1 iteration of horizon the gain is 2.64 ms < 2.8 ms: refused.
  FlexFixture h(3, 1, 2, 4, 1, 60, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 1}");
  CHECK_FALSE(h.policy->after_iteration(0, h.counts({c}), cur).new_placement);
}

TEST_CASE("flexmoe: invariants on random inputs", "[flexmoe]") {
  // 2 nodes x 2 GPUs x 3 slots, 5 experts, 2 MoE layers, 300 tokens per GPU.
  const std::vector<std::string> variants = {
      "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 1, max_steps: 3, cost_model: false}",
      "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 5, capacity_factor: 0, max_steps: 4}",
      "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, trigger: balance, balance_threshold: 1.1, balance_metric: max_min, interval: 20, "
      "capacity_factor: 1.5}",
  };
  for (const std::string& params : variants) {
    INFO(params);
    FlexFixture f(2, 2, 3, 5, 2, 300, params);
    const int G = 4, S = 3, E = 5, L = 2, slots = G * S;
    std::mt19937_64 rng(12345);
    Placement cur = f.placement;
    int moves = 0;
    for (int it = 0; it < 50; ++it) {
      // Random popularity per layer (cubed uniforms: skewed), each GPU routes 300 tokens.
      std::vector<std::vector<std::int64_t>> per_layer(L);
      for (int l = 0; l < L; ++l) {
        std::uniform_real_distribution<double> u(0.0, 1.0);
        for (int g = 0; g < G; ++g) {
          std::vector<double> w(E);
          double sum = 0;
          for (auto& x : w) sum += (x = std::pow(u(rng), 3.0) + 1e-3);
          std::int64_t left = 300;
          for (int e = 0; e < E; ++e) {
            const auto n = e + 1 == E ? left : static_cast<std::int64_t>(300.0 * w[e] / sum);
            per_layer[l].push_back(n);
            left -= n;
          }
        }
      }
      auto counts = f.counts(per_layer);
      for (int l = 0; l < L; ++l) {
        LayerDispatch d;
        const std::int64_t* c = counts.layer_ptr(l);
        f.policy->dispatch(l, c, cur, d);
        std::int64_t routed = 0, accepted = 0;
        for (int i = 0; i < G * E; ++i) routed += c[i];
        CHECK(d.routed == routed);
        for (int src = 0; src < G; ++src) {
          std::vector<std::int64_t> got(E, 0);
          for (int s = 0; s < slots; ++s) {
            const auto idx = static_cast<std::size_t>(src) * slots + s;
            CHECK(d.accepted[idx] <= d.buffered[idx]);
            accepted += d.accepted[idx];
            got[cur.expert_of_slot[l][s]] += d.accepted[idx];
          }
          // A slot only receives its own expert's tokens: no expert gets more than was sent.
          for (int e = 0; e < E; ++e) CHECK(got[e] <= c[src * E + e]);
        }
        CHECK(routed == accepted + d.dropped);
      }
      PolicyDecision dec = f.policy->after_iteration(it, counts, cur);
      if (!dec.new_placement) {
        CHECK(dec.movements.empty());
        continue;
      }
      const Placement& next = dec.placement;
      CHECK(next.gpus == G);
      CHECK(next.slots_per_gpu == S);
      for (int l = 0; l < L; ++l) {
        REQUIRE(next.expert_of_slot[l].size() == static_cast<std::size_t>(slots));
        std::vector<int> reps(E, 0);
        for (int s = 0; s < slots; ++s) {
          const int e = next.expert_of_slot[l][s];
          REQUIRE(e >= 0);
          REQUIRE(e < E);
          ++reps[e];
        }
        for (int e = 0; e < E; ++e) CHECK(reps[e] >= 1);
        // S <= E: no GPU ever holds an expert twice.
        for (int g = 0; g < G; ++g) {
          std::vector<int> on(next.expert_of_slot[l].begin() + g * S, next.expert_of_slot[l].begin() + (g + 1) * S);
          std::sort(on.begin(), on.end());
          CHECK(std::adjacent_find(on.begin(), on.end()) == on.end());
        }
      }
      // Movements are exactly what the placement change implies, weights + optimizer, blocking.
      const auto expect = placement_moves(f.ctx, cur, next, true, true);
      REQUIRE(dec.movements.size() == expect.size());
      for (std::size_t i = 0; i < expect.size(); ++i) {
        CHECK(dec.movements[i].what == expect[i].what);
        CHECK(dec.movements[i].transfer.src.index == expect[i].transfer.src.index);
        CHECK(dec.movements[i].transfer.dst.index == expect[i].transfer.dst.index);
        CHECK(dec.movements[i].transfer.bytes == 1.4e6);
        CHECK(dec.movements[i].blocking);
      }
      moves += static_cast<int>(dec.movements.size());
      cur = next;
    }
    CHECK(moves > 0);
  }
}

TEST_CASE("flexmoe: bad parameters are errors", "[flexmoe]") {
  REQUIRE_THROWS_WITH(FlexFixture(2, 1, 1, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0}"),
                      Catch::Matchers::Contains("at least one slot per expert"));
  REQUIRE_THROWS_WITH(FlexFixture(2, 1, 2, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, trigger: sometimes}"),
                      Catch::Matchers::Contains("trigger"));
  REQUIRE_THROWS_WITH(FlexFixture(2, 1, 2, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 0}"),
                      Catch::Matchers::Contains("interval"));
  REQUIRE_THROWS_WITH(FlexFixture(2, 1, 2, 3, 1, 10, "{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, intervall: 5}"),
                      Catch::Matchers::Contains("unknown key 'policies[0].intervall'"));
}

TEST_CASE("flexmoe: end to end, moves after each trigger are charged as movement", "[flexmoe][e2e]") {
  // 4 single-GPU cloud nodes, 2 MoE layers, 8 slots per GPU (2 replicas of each of the 16
  // experts). With the preset's 2048 tokens per GPU and 100 Gb/s NIC no step pays for a 66 MB
  // move (weights + Adam state of a GPT-Small expert, 5.5 ms) over a 10-iteration horizon; 16384
  // tokens per GPU and a 400 Gb/s NIC (48 GB/s, 1.4 ms per move) make some steps pay.
  const std::string text = R"(
name: flexmoe-e2e
seed: 1
cluster: {preset: swiftmoe-cloud, nodes: 4, nic_gbit: 400}
model: {preset: gpt-small-moe, layers: 2, micro_batch_per_gpu: 32}
placement: {slots_per_gpu: 8}
trace: {kind: synthetic, skew: 1.5, drift_sigma: 0.3}
run: {max_iterations: 40, stop_at_convergence: false}
policies:
  - {name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 10}
)";
  Scenario s = load_scenario_text(text, "flexmoe-e2e.yaml", {}, std::nullopt);
  auto results = run_scenario(s);
  REQUIRE(results.size() == 1);
  const PolicyResult& r = results[0];
  REQUIRE(r.rows.size() == 40);
  const double per_move = s.model.expert_params() * (2.0 + s.training.optimizer_bytes_per_param);
  int moved_rows = 0;
  for (const auto& row : r.rows) {
    INFO("iteration " << row.iteration);
    const double moved = row.result.moved_bytes;
    const auto movement_ns = row.result.phase_ns[static_cast<int>(Phase::Movement)];
    // Plans run after iterations 9, 19, 29 (and 39); their moves are charged in the next one.
    if (row.iteration % 10 != 0 || row.iteration == 0) {
      CHECK(moved == 0.0);
      CHECK(movement_ns == 0);
      continue;
    }
    if (moved > 0) {
      ++moved_rows;
      // Whole experts (weights at 2 B/param + optimizer state), on the critical path.
      const double n = moved / per_move;
      CHECK(n == Approx(std::round(n)));
      CHECK(movement_ns > 0);
    }
  }
  CHECK(moved_rows >= 1);
  // The old and new copies coexist while a replica moves: the core reserves the moved bytes.
  CHECK(r.peak_memory.move_temporary_bytes >= per_move);
  CHECK(r.mean_phase_ns[static_cast<int>(Phase::Movement)] > 0.0);
}

namespace {

__extension__ using WideRef = __int128;

// The plan recomputed from scratch: every GPU's load from a full dispatch (FlexMoE's routing, no
// capacity) before and after each candidate step, the hot, cold and lightest choices by plain
// scans over all experts and GPUs. Without the cost model (cost_model: false).
Placement reference_plan(const PolicyContext& ctx, const Placement& current, const IterationCounts& counts,
                         int max_steps, double balance_threshold) {
  const int G = current.gpus, S = current.slots_per_gpu, E = ctx.experts;
  auto gpu_loads = [&](const Placement& p, int l) {
    EvenDispatchOptions opt;
    opt.prefer_local_node = true;
    opt.gpus_per_node = ctx.cluster->gpus_per_node;
    LayerDispatch d;
    dispatch_even(p, l, E, counts.layer_ptr(l), opt, d);
    std::vector<std::int64_t> load(G, 0);
    for (int src = 0; src < G; ++src)
      for (int s = 0; s < G * S; ++s) load[s / S] += d.accepted[static_cast<std::size_t>(src) * G * S + s];
    return load;
  };
  Placement next = current;
  for (int l = 0; l < ctx.moe_layers; ++l) {
    if (balance_threshold > 0.0) {
      const auto gl = gpu_loads(current, l);
      const std::int64_t mx = *std::max_element(gl.begin(), gl.end());
      double total = 0.0;
      for (std::int64_t v : gl) total += static_cast<double>(v);
      if (mx == 0 || static_cast<double>(mx) * G / total <= balance_threshold) continue;
    }
    const auto load = expert_loads(counts.layer_ptr(l), G, E);
    for (int step = 0; step < max_steps; ++step) {
      const auto& lay = next.expert_of_slot[l];
      std::vector<int> reps(E, 0);
      for (int e : lay) ++reps[e];
      auto holds = [&](int g, int e) {  // lowest slot of e on g, or -1
        for (int s = g * S; s < (g + 1) * S; ++s)
          if (lay[s] == e) return s;
        return -1;
      };
      auto colder = [&](int a, int b) {
        return static_cast<WideRef>(load[a]) * reps[b] < static_cast<WideRef>(load[b]) * reps[a];
      };
      int hot = -1, cold = -1;
      for (int e = 0; e < E; ++e)
        if (reps[e] > 0 && (hot < 0 || colder(hot, e))) hot = e;
      for (int e = 0; e < E; ++e)
        if (e != hot && reps[e] > 1 && (cold < 0 || colder(e, cold))) cold = e;
      if (hot < 0 || cold < 0) break;
      const auto gl = gpu_loads(next, l);
      auto lighter = [&](int a, int b) { return gl[a] < gl[b] || (gl[a] == gl[b] && a < b); };
      std::vector<std::pair<int, int>> changes;  // (slot, expert)
      int target = -1;
      for (int g = 0; g < G; ++g)
        if (holds(g, cold) >= 0 && holds(g, hot) < 0 && (target < 0 || lighter(g, target))) target = g;
      if (target >= 0) {
        changes.emplace_back(holds(target, cold), hot);
      } else {
        int g = -1;
        for (int h = 0; h < G; ++h)
          if (holds(h, cold) >= 0 && (g < 0 || lighter(h, g))) g = h;
        std::vector<int> order(G);
        for (int h = 0; h < G; ++h) order[h] = h;
        std::sort(order.begin(), order.end(), lighter);
        for (int h : order) {
          if (holds(h, hot) >= 0) continue;
          int x = -1;
          for (int e = 0; e < E; ++e)
            if (holds(h, e) >= 0 && holds(g, e) < 0 && (x < 0 || colder(e, x))) x = e;
          if (x < 0) continue;
          changes.emplace_back(holds(g, cold), x);
          changes.emplace_back(holds(h, x), hot);
          break;
        }
      }
      if (changes.empty()) break;
      Placement trial = next;
      for (const auto& [slot, e] : changes) trial.expert_of_slot[l][slot] = e;
      const auto nl = gpu_loads(trial, l);
      if (*std::max_element(nl.begin(), nl.end()) >= *std::max_element(gl.begin(), gl.end())) break;
      next = std::move(trial);
    }
  }
  return next;
}

}  // namespace

TEST_CASE("flexmoe: the incremental plan equals the plan recomputed from full dispatches", "[flexmoe]") {
  // (nodes, GPUs per node, slots, experts): multi-GPU nodes (routing prefers the own node), an
  // expert on more GPUs than there are (two replicas on one GPU), many slots per GPU (every
  // holder of the cold expert holds the hot one: the three-expert migration) and more nodes than
  // an expert has replicas (sources of other nodes spread over all of them).
  const std::vector<std::array<int, 4>> shapes = {{2, 2, 3, 5}, {3, 2, 4, 6}, {1, 4, 5, 6}, {1, 2, 5, 3},
                                                  {4, 1, 2, 5}, {4, 2, 1, 5}, {3, 2, 2, 8}, {5, 2, 1, 7}};
  const std::vector<std::pair<std::string, double>> variants = {
      {"{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, interval: 1, max_steps: 6, cost_model: false}", 0.0},
      {"{name: flexmoe, shard_optimizer: false, a2a_passes: 0, drop_weight: 0, trigger: balance, balance_threshold: 1.05, max_steps: 3, cost_model: false}", 1.05},
  };
  int differing_layers = 0;
  for (const auto& [nodes, gpn, slots, experts] : shapes) {
    for (const auto& [params, threshold] : variants) {
      INFO(params << " on " << nodes << " x " << gpn << " GPUs, " << slots << " slots, " << experts << " experts");
      FlexFixture f(nodes, gpn, slots, experts, 3, 100, params);
      const int G = nodes * gpn, E = experts, L = 3;
      std::mt19937_64 rng(777 + static_cast<unsigned>(G * 31 + slots * 7 + E));
      Placement cur = f.placement;
      for (int it = 0; it < 20; ++it) {
        IterationCounts counts;
        counts.reset(TraceShape{L, G, E});
        // Skewed counts (the minimum of two uniform experts), some sources idle for some experts.
        for (int l = 0; l < L; ++l)
          for (int g = 0; g < G; ++g)
            for (int t = 0; t < 60; ++t) counts.at(l, g, static_cast<int>(std::min(rng() % E, rng() % E)))++;
        const Placement want = reference_plan(f.ctx, cur, counts, threshold > 0.0 ? 3 : 6, threshold);
        PolicyDecision dec = f.policy->after_iteration(it, counts, cur);
        const Placement& got = dec.new_placement ? dec.placement : cur;
        for (int l = 0; l < L; ++l) {
          CHECK(got.expert_of_slot[l] == want.expert_of_slot[l]);
          differing_layers += got.expert_of_slot[l] != cur.expert_of_slot[l] ? 1 : 0;
        }
        CHECK(dec.new_placement == (want.expert_of_slot != cur.expert_of_slot));
        cur = got;
      }
    }
  }
  CHECK(differing_layers > 20);  // the plans did move replicas
}

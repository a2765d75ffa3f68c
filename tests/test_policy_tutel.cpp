// Tutel (policies/tutel.cpp): its capacity rule, its plan in each parallel mode, the switch's
// cost comparison, and the charged time of the flat and the 2DH exchange, all worked by hand.
#include <catch2/catch.hpp>

#include <vector>

#include "policies/tutel.hpp"
#include "sim/exchange.hpp"
#include "sim/iteration.hpp"
#include "tests/network_fixture.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// NCCL point-to-point latency, Simple protocol: base 8.4 us + network hop 14 us, or + NVLink 3.4 us.
constexpr TimeNs kNetLatency = 22'400;
constexpr TimeNs kNvlinkLatency = 11'800;
constexpr double kMB = 1e6;

// 2 nodes x 2 GPUs, one slot each, 2 experts of 1000 parameters (2000 B of weights and of
// gradients), one MoE layer, T = 100 tokens per GPU, hidden 100 in bf16 (200 B a token).
struct Hand : testing::PolicyWorld {
  explicit Hand(const std::string& params) : PolicyWorld(2, 2, 1, 2, 1, 100) {
    model.hidden = 100;
    build(params);
  }
};

// Counts [src][expert]: 400 assignments, the largest cell 90.
IterationCounts hand_counts() {
  IterationCounts c;
  c.reset({1, 4, 2});
  const std::int64_t m[4][2] = {{70, 30}, {50, 50}, {40, 60}, {90, 10}};
  for (int g = 0; g < 4; ++g)
    for (int e = 0; e < 2; ++e) c.at(0, g, e) = m[g][e];
  return c;
}

std::int64_t cell(const std::vector<std::int64_t>& v, int src, int slot) { return v[static_cast<std::size_t>(src * 4 + slot)]; }

}  // namespace

TEST_CASE("tutel: capacity by the sign of capacity_factor, by hand", "[tutel]") {
  // s = ceil(100 / 2) = 50 samples per expert, top-1.
  CHECK(tutel::capacity(100, 1, 2, 1.0, 90, 1) == 50);    // x > 0: floor(1.0 x 50)
  CHECK(tutel::capacity(100, 2, 2, 1.25, 90, 1) == 124);  // top-2: 2 x floor(1.25 x 50) = 2 x 62
  CHECK(tutel::capacity(100, 1, 2, 0.0, 90, 1) == 90);    // x = 0: the needed maximum
  CHECK(tutel::capacity(100, 1, 2, -1.5, 90, 1) == 75);   // x < 0: min(90, floor(1.5 x 50) = 75)
  CHECK(tutel::capacity(100, 1, 2, -2.0, 90, 1) == 90);   // min(90, 100)
  CHECK(tutel::capacity(100, 1, 2, -1.5, 90, 2) == 76);   // 75 rounded up to the alignment 2
  CHECK(tutel::capacity(100, 1, 3, 1.0, 0, 4) == 36);     // s = ceil(100 / 3) = 34, aligned to 36
}

TEST_CASE("tutel: the plan in expert, model and data mode, by hand", "[tutel]") {
  const IterationCounts c = hand_counts();
  // 4 slots for 2 experts: sharded = 2 holders each; slot i holds expert i mod 2, so GPUs {0, 1}
  // and {2, 3} each hold both experts. Alignment = sharded x overlap degree = 2.
  SECTION("expert (r = 1), capacity_factor 1: cap 50, each source to its own pair") {
    Hand w("{name: tutel, parallel: expert}");
    const Placement pl = w.policy->initial_placement();
    CHECK(pl.expert_of_slot[0] == std::vector<int>{0, 1, 0, 1});
    const LayerDispatch d = testing::dispatch_checked(*w.policy, 0, c, pl);
    // Source 0: expert 0 min(70, 50) = 50 on slot 0, expert 1 30 on slot 1; both buffers 50.
    CHECK(cell(d.accepted, 0, 0) == 50);
    CHECK(cell(d.accepted, 0, 1) == 30);
    CHECK(cell(d.buffered, 0, 1) == 50);
    CHECK(cell(d.buffered, 0, 2) == 0);
    // Source 2 is in the second pair: slots 2 and 3.
    CHECK(cell(d.accepted, 2, 2) == 40);
    CHECK(cell(d.accepted, 2, 3) == 50);
    // Dropped: 20 (src 0, e 0) + 10 (src 2, e 1) + 40 (src 3, e 0) = 70 of 400.
    CHECK(d.dropped == 70);
    CHECK(d.exchange == ExchangeAlgorithm::flat);
    CHECK(d.compute_share == 1.0);
    CHECK(w.policy->parameters()["capacity_alignment"] == 2);
  }
  SECTION("model (r = 2), capacity_factor 0: cap 90 to both holders, half the width each") {
    Hand w("{name: tutel, parallel: model, capacity_factor: 0, use_2dh: true}");
    const LayerDispatch d = testing::dispatch_checked(*w.policy, 0, c, w.policy->initial_placement());
    for (int slot = 0; slot < 4; ++slot) CHECK(cell(d.buffered, 1, slot) == 90);
    // Source 0, expert 0: 70 split 35 / 35 over slots 0 and 2; expert 1: 30 as 15 / 15.
    CHECK(cell(d.accepted, 0, 0) == 35);
    CHECK(cell(d.accepted, 0, 2) == 35);
    CHECK(cell(d.accepted, 0, 3) == 15);
    // Source 3, expert 1: 10 -> 5 / 5; dropless.
    CHECK(cell(d.accepted, 3, 1) == 5);
    CHECK(d.dropped == 0);
    CHECK(d.compute_share == 0.5);
    CHECK(d.exchange == ExchangeAlgorithm::two_level);
  }
  SECTION("data (r = 0), capacity_factor -1.5: cap 76, no exchange") {
    Hand w("{name: tutel, parallel: data, capacity_factor: -1.5}");
    const Placement pl = w.policy->initial_placement();
    const LayerDispatch d = testing::dispatch_checked(*w.policy, 0, c, pl);
    CHECK(cell(d.buffered, 3, 2) == 76);
    CHECK(cell(d.accepted, 3, 2) == 76);  // min(90, 76)
    CHECK(d.dropped == 14);               // 90 - 76
    CHECK(d.exchange == ExchangeAlgorithm::none);
    // Nothing leaves a source: the byte matrix is its diagonal, 2 x 76 buffer rows each.
    const std::vector<double> b = dispatch_byte_matrix(d, 1, 200.0);
    for (int s = 0; s < 4; ++s)
      for (int t = 0; t < 4; ++t) CHECK(b[static_cast<std::size_t>(s * 4 + t)] == (s == t ? 2 * 76 * 200.0 : 0.0));
    // Its sync: every expert's gradients reduce-scattered and weights all-gathered over the 4 GPUs
    // (E x 2000 = 4000 B each), no replica all-reduce.
    (void)w.policy->after_iteration(0, c, pl);
    const SyncPlan sp = w.policy->sync_plan(0, pl, pl);
    CHECK_FALSE(sp.replica_allreduce);
    REQUIRE(sp.grad_collectives.size() == 1);
    CHECK(sp.grad_collectives[0].kind == Collective::ReduceScatter);
    CHECK(sp.grad_collectives[0].bytes == 4000.0);
    CHECK(sp.grad_collectives[0].gpus == std::vector<int>{0, 1, 2, 3});
    REQUIRE(sp.post_collectives.size() == 1);
    CHECK(sp.post_collectives[0].kind == Collective::AllGather);
  }
}

TEST_CASE("tutel: the switch compares the bytes of each mode, by hand", "[tutel]") {
  // The hand world's inputs: buffer 2 x 50 rows of 200 B, E 2, S 1, sharded 2, G 4, one layer.
  tutel::ModeInputs in;
  in.buffer_tokens = 100;
  in.token_bytes = 200;
  in.experts = 2;
  in.slots_per_gpu = 1;
  in.sharded = 2;
  in.gpus = 4;
  in.layers = 1;
  in.expert_weight_bytes = 2000;
  in.expert_grad_bytes = 2000;
  tutel::ModeCost c = tutel::mode_costs(in);
  // expert: 4 x 20000 x (1 - 1/2) + (1/2) x 1 x (2000 + 2000) = 40000 + 2000
  CHECK(c.expert_bytes == Approx(42000.0));
  // model: 4 x 2 x 20000 x (1 - 1/4) = 120000
  CHECK(c.model_bytes == Approx(120000.0));
  // data: (3/4) x 2 x (2000 + 2000) = 6000: tiny experts are cheaper to gather than tokens to send
  CHECK(c.data_bytes == Approx(6000.0));
  CHECK(tutel::cheapest(c) == tutel::Mode::data);
  // Experts of 1 MB: data 3/4 x 2 x 2e6 = 3e6; expert 40000 + 1e6; model 120000 wins.
  in.expert_weight_bytes = in.expert_grad_bytes = 1e6;
  c = tutel::mode_costs(in);
  CHECK(c.expert_bytes == Approx(1'040'000.0));
  CHECK(tutel::cheapest(c) == tutel::Mode::model);
  // Experts of 50 kB: expert 40000 + (1/2) x 1e5 = 90000 < model 120000 < data 150000.
  in.expert_weight_bytes = in.expert_grad_bytes = 50'000;
  CHECK(tutel::mode_costs(in).data_bytes == Approx(150000.0));
  CHECK(tutel::cheapest(tutel::mode_costs(in)) == tutel::Mode::expert);
  // One holder per expert: model equals expert on tokens and expert has nothing to reduce: a
  // tie, which keeps expert.
  in.sharded = 1;
  in.expert_weight_bytes = in.expert_grad_bytes = 1e9;
  c = tutel::mode_costs(in);
  CHECK(c.model_bytes == c.expert_bytes);
  CHECK(tutel::cheapest(c) == tutel::Mode::expert);

  // The policy itself: the first iteration runs expert (no counts yet), the next one data.
  Hand w("{name: tutel}");
  const IterationCounts counts = hand_counts();
  const Placement pl = w.policy->initial_placement();
  CHECK(testing::dispatch_checked(*w.policy, 0, counts, pl).exchange == ExchangeAlgorithm::flat);
  CHECK(w.policy->after_iteration(0, counts, pl).new_placement == false);
  // Iteration 0 ran expert: each expert's shards on its 2 holders (GPUs 0, 2 hold expert 0)
  // reduce-scatter the gradients and all-gather the weights, 2000 B each.
  const SyncPlan sp = w.policy->sync_plan(0, pl, pl);
  CHECK_FALSE(sp.replica_allreduce);
  REQUIRE(sp.grad_collectives.size() == 2);
  CHECK(sp.grad_collectives[0].gpus == std::vector<int>{0, 2});
  CHECK(sp.grad_collectives[0].bytes == 2000.0);
  CHECK(sp.post_collectives.size() == 2);
  CHECK(testing::dispatch_checked(*w.policy, 0, counts, pl).exchange == ExchangeAlgorithm::none);
}

TEST_CASE("tutel: charged exchange time, flat and 2DH, by hand", "[tutel]") {
  // dgx-a100 x 2: NVLink 240 GB/s per GPU, a 24 GB/s NIC share per GPU. The group is GPUs 0, 1
  // (node 0) and 8, 9 (node 1): local indices 0 and 1 on each node. Times round up to the ns.
  test::World w(test::cluster_spec("dgx-a100", 2));
  const std::vector<int> grp{0, 1, 8, 9};
  const IterationCounts c = hand_counts();
  // Token bytes 200000: a buffer of 50 rows is 10 MB.
  SECTION("expert mode: each GPU sends its 10 MB to its node's other GPU, over NVLink") {
    Hand h("{name: tutel, parallel: expert}");
    const LayerDispatch d = testing::dispatch_checked(*h.policy, 0, c, h.policy->initial_placement());
    const std::vector<double> b = dispatch_byte_matrix(d, 1, 200'000.0);
    CHECK(b[0 * 4 + 1] == 10 * kMB);
    // 1e7 / 240e9 s = 41666.7 -> 41667 ns, + 11.8 us
    CHECK(exchange_ns(w.analytical, d.exchange, b, grp, 8) == 41'667 + kNvlinkLatency);
  }
  SECTION("model mode: 10 MB to every other GPU; 2DH pays an NVLink stage on top of the same NIC bytes") {
    Hand h("{name: tutel, parallel: model}");
    const LayerDispatch d = testing::dispatch_checked(*h.policy, 0, c, h.policy->initial_placement());
    const std::vector<double> b = dispatch_byte_matrix(d, 1, 200'000.0);
    // Flat: each GPU's NIC sends 2 x 10 MB: 2e7 / 24e9 s = 833333.3 -> 833334 ns, + 22.4 us.
    const TimeNs flat = exchange_ns(w.analytical, ExchangeAlgorithm::flat, b, grp, 8);
    CHECK(flat == 833'334 + kNetLatency);
    // 2DH stage 1: GPU 0 sends GPU 1 its 10 MB for GPU 1 and its 10 MB for GPU 9 (GPU 1 is
    // node 0's local index 1); what it has for GPU 8 needs no intra hop. Stage 2: GPU 0 sends
    // GPU 8 its own 10 MB plus GPU 1's 10 MB for GPU 8, one 20 MB message.
    const TwoLevelStages st = two_level_stages(b, grp, 8);
    CHECK(st.intra[0 * 4 + 1] == 20 * kMB);
    CHECK(st.intra[0 * 4 + 2] == 0.0);
    CHECK(st.inter[0 * 4 + 2] == 20 * kMB);
    CHECK(st.inter[0 * 4 + 3] == 0.0);
    CHECK(st.inter[1 * 4 + 3] == 20 * kMB);
    // Stage 1: 2e7 / 240e9 s = 83333.3 -> 83334 ns + 11.8 us; stage 2 as flat's NIC: 833334 + 22.4 us.
    const TimeNs two = exchange_ns(w.analytical, ExchangeAlgorithm::two_level, b, grp, 8);
    CHECK(two == (83'334 + kNvlinkLatency) + (833'334 + kNetLatency));
    CHECK(two > flat);  // no per-message cost in the model: 2DH cannot win here (docs/policies-tutel.md)
  }
  SECTION("data mode: no exchange, no time") {
    Hand h("{name: tutel, parallel: data}");
    const LayerDispatch d = testing::dispatch_checked(*h.policy, 0, c, h.policy->initial_placement());
    CHECK(exchange_ns(w.analytical, d.exchange, dispatch_byte_matrix(d, 1, 200'000.0), grp, 8) == 0);
  }
}

TEST_CASE("tutel: parameter errors", "[tutel]") {
  // 3 experts on 2 x 2 single-slot GPUs: 4 slots are not a multiple of 3, so expert 0 has two
  // holders and the others one: no model mode, the rest runs.
  testing::PolicyWorld w(2, 2, 1, 3, 1, 100);
  CHECK_THROWS_WITH(w.build("{name: tutel, parallel: model}"), Catch::Contains("same number of holders"));
  w.build("{name: tutel}");
  CHECK(w.policy->parameters()["model_mode_possible"] == false);
  // 5 experts on 4 slots: one has no slot.
  testing::PolicyWorld u(2, 2, 1, 5, 1, 100);
  CHECK_THROWS_WITH(u.build("{name: tutel}"), Catch::Contains("at least one slot per expert"));
  testing::PolicyWorld v(2, 2, 1, 2, 1, 100);
  CHECK_THROWS(v.build("{name: tutel, parallel: pipeline}"));
}

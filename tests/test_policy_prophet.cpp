// Pro-Prophet: the greedy copy planner with its stop rule and the T'-minimising prefix on a hand
// case, the charges of copies (weights sent, gradients gathered, optimizer with the owner),
// invariants on random counts, and an end-to-end run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <random>
#include <set>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// 4 single-GPU nodes on 1 GB/s NICs (8 Gb/s, efficiency 1), 1 TFLOP/s GPUs at efficiency 1;
// hidden 500 in bf16: a token is 1000 B, 1 us on a link; an expert of 5e5 parameters is
// 2 x 5e5 = 1e6 FLOPs per token, 1 us of compute.
struct ProFx : testing::SingleGpuNodes {
  ProFx(int gpus, int slots, int experts, int layers, std::int64_t tokens, const std::string& params,
        double weight_bytes = 5000.0, double grad_bytes = 5000.0)
      : SingleGpuNodes(gpus, slots, experts, layers, tokens, params, [=](SingleGpuNodes& w) {
          w.unit_hardware();
          w.model.hidden = 500;
          w.model.dtype = DType::BF16;
          w.ctx.expert_params = 5e5;
          w.ctx.expert_weight_bytes = weight_bytes;
          w.ctx.expert_grad_bytes = grad_bytes;
          w.ctx.expert_optimizer_bytes = 6e6;
        }) {}
};

// The hand case: 4 GPUs, 4 experts (expert g owned by GPU g), counts [src][expert].
IterationCounts hand_counts() {
  const std::int64_t c[4][4] = {{20, 5, 5, 5}, {20, 5, 5, 5}, {10, 5, 5, 5}, {10, 5, 5, 5}};
  IterationCounts ic;
  ic.reset({1, 4, 4});
  for (int g = 0; g < 4; ++g)
    for (int e = 0; e < 4; ++e) ic.at(0, g, e) = c[g][e];
  return ic;
}

std::vector<std::int64_t> gpu_tokens(const LayerDispatch& d, int slots_per_gpu) {
  std::vector<std::int64_t> t(d.gpus, 0);
  for (int src = 0; src < d.gpus; ++src)
    for (int sl = 0; sl < d.num_slots; ++sl) t[sl / slots_per_gpu] += d.accepted[static_cast<std::size_t>(src) * d.num_slots + sl];
  return t;
}

}  // namespace

// The greedy on the hand case (loads = tokens each GPU processes; I = 120, I/E = 30):
//   start     [60, 20, 20, 20]                 max - min 40
//   1: e0 -> GPU1 (GPU1 sends e0 20)  [40, 40, 20, 20]  20
//   2: e0 -> GPU2 (10; ties GPU3)     [30, 40, 30, 20]  20
//   3: e1 -> GPU0 (5, lowest source)  [35, 35, 30, 20]  15
//   4: e0 -> GPU3 (10)                [25, 35, 30, 30]  10
//   5: e1 -> GPU2 (5; GPU0 has it)    [25, 30, 35, 30]  10
//   6: e2 -> GPU0 (5)                 [30, 30, 30, 30]   0
// T' in us (1 us per token on a link and per token of compute; tp = weights + gradients of one
// copy over 1 GB/s): A2A = the busiest GPU's larger direction of tokens crossing links, P = the
// most copies any GPU sends or receives:
//   prefix  A2A  max load  P   T' = 4 A2A + 3 max + P tp
//   0       40   60        0   340
//   1       20   40        1   200 + tp
//   2       20   40        2   200 + 2 tp
//   3       20   35        2   185 + 2 tp
//   4       15   35        3   165 + 3 tp
//   5       15   35        3   165 + 3 tp
//   6       15   30        3   150 + 3 tp
// (A2A at the start: GPU0 receives e0 from GPUs 1-3, 20 + 10 + 10 = 40; after step 1 GPU0
// receives 20 and sends 15, GPUs 2 and 3 send 20 each; after step 4 GPU3 receives 15 and GPU2
// sends 15 or receives 15.)
TEST_CASE("prophet: the greedy with its stop rule on a hand case", "[prophet]") {
  const IterationCounts ic = hand_counts();
  SECTION("alpha 0.1: stop at max - min = 0 < 0.1 x 120 / 4 = 3, after 6 copies; tp = 10 us: T' 180 is least") {
    ProFx f(4, 3, 4, 1, 35, "{name: prophet, alpha: 0.1}");  // 1 owned + 2 copy slots per GPU
    const Placement cur = f.policy->initial_placement();
    REQUIRE(cur.expert_of_slot[0] == std::vector<int>{0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1});
    PolicyDecision d = f.policy->after_iteration(0, ic, cur);
    REQUIRE(d.new_placement);
    // Copies per GPU, in expert order: GPU0 {e1, e2}, GPU1 {e0}, GPU2 {e0, e1}, GPU3 {e0}.
    CHECK(d.placement.expert_of_slot[0] == std::vector<int>{0, 1, 2, 1, 0, -1, 2, 0, 1, 3, 0, -1});
    // Each copy's weights come from its owner, blocking, weights only.
    REQUIRE(d.movements.size() == 6);
    std::multiset<std::pair<int, int>> links;
    for (const auto& m : d.movements) {
      CHECK(m.blocking);
      CHECK(m.transfer.bytes == 5000.0);
      links.insert({m.transfer.src.index, m.transfer.dst.index});
    }
    CHECK(links == std::multiset<std::pair<int, int>>{{1, 0}, {2, 0}, {0, 1}, {0, 2}, {1, 2}, {0, 3}});
    // Run the same counts on the new placement: every GPU processes 30.
    LayerDispatch disp;
    f.policy->dispatch(0, ic.layer_ptr(0), d.placement, disp);
    CHECK(gpu_tokens(disp, 3) == std::vector<std::int64_t>{30, 30, 30, 30});
    CHECK(disp.dropped == 0);
  }
  SECTION("alpha 0.7: stop at 20 < 0.7 x 30 = 21 after the first copy") {
    ProFx f(4, 3, 4, 1, 35, "{name: prophet, alpha: 0.7}");
    PolicyDecision d = f.policy->after_iteration(0, ic, f.policy->initial_placement());
    REQUIRE(d.new_placement);
    CHECK(d.placement.expert_of_slot[0] == std::vector<int>{0, -1, -1, 1, 0, -1, 2, -1, -1, 3, -1, -1});
    REQUIRE(d.movements.size() == 1);
    LayerDispatch disp;
    f.policy->dispatch(0, ic.layer_ptr(0), d.placement, disp);
    CHECK(gpu_tokens(disp, 3) == std::vector<std::int64_t>{40, 40, 20, 20});
  }
}

TEST_CASE("prophet: keeps the prefix of copies that minimises T'", "[prophet]") {
  const IterationCounts ic = hand_counts();
  SECTION("tp = 50 us: T' = 340, 250, 300, 285, 315, 315, 300: one copy") {
    ProFx f(4, 3, 4, 1, 35, "{name: prophet}", 25000.0, 25000.0);
    PolicyDecision d = f.policy->after_iteration(0, ic, f.policy->initial_placement());
    REQUIRE(d.new_placement);
    CHECK(d.placement.expert_of_slot[0] == std::vector<int>{0, -1, -1, 1, 0, -1, 2, -1, -1, 3, -1, -1});
    REQUIRE(d.movements.size() == 1);
    CHECK(d.movements[0].transfer.bytes == 25000.0);
  }
  SECTION("tp = 200 us: T' after one copy 400 > 340: no copy") {
    ProFx f(4, 3, 4, 1, 35, "{name: prophet}", 1e5, 1e5);
    const Placement cur = f.policy->initial_placement();
    PolicyDecision d = f.policy->after_iteration(0, ic, cur);
    CHECK_FALSE(d.new_placement);
    CHECK(d.movements.empty());
  }
}

TEST_CASE("prophet: gradients of copies go back to the owner; the optimizer stays there", "[prophet]") {
  ProFx f(4, 3, 4, 1, 35, "{name: prophet, alpha: 0.1}");
  const Placement cur = f.policy->initial_placement();
  SECTION("no copies: no gradient transfer, no replica all-reduce") {
    const SyncPlan sp = f.policy->sync_plan(0, cur, cur);
    CHECK(sp.gradient_transfers.empty());
    CHECK_FALSE(sp.replica_allreduce);
    CHECK(sp.gpu_optimizer_params == std::vector<double>{5e5, 5e5, 5e5, 5e5});
  }
  SECTION("six copies: six transfers copy GPU -> owner of one expert's gradients") {
    const Placement next = f.policy->after_iteration(0, hand_counts(), cur).placement;
    const SyncPlan sp = f.policy->sync_plan(1, next, next);
    CHECK_FALSE(sp.replica_allreduce);
    std::multiset<std::pair<int, int>> links;
    for (const auto& t : sp.gradient_transfers) {
      CHECK(t.bytes == 5000.0);
      CHECK_FALSE(t.src.host);
      CHECK_FALSE(t.dst.host);
      links.insert({t.src.index, t.dst.index});
    }
    // Copies: e1, e2 on GPU0; e0 on GPU1; e0, e1 on GPU2; e0 on GPU3.
    CHECK(links == std::multiset<std::pair<int, int>>{{0, 1}, {0, 2}, {1, 0}, {2, 0}, {2, 1}, {3, 0}});
    // Only owners run Adam: one expert each, whatever the copies.
    CHECK(sp.gpu_optimizer_params == std::vector<double>{5e5, 5e5, 5e5, 5e5});
  }
}

TEST_CASE("prophet: invariants on random counts", "[prophet]") {
  // 4 GPUs, 8 experts (2 owned per GPU) + 2 copy slots, 2 layers.
  const int G = 4, E = 8, S = 4, L = 2;
  const std::int64_t T = 64;
  for (const std::string params : {"{name: prophet}", "{name: prophet, capacity_factor: 1.5, alpha: 0.3}"}) {
    INFO(params);
    ProFx f(G, S, E, L, T, params, 2000.0, 2000.0);
    const double cf = f.policy->parameters()["capacity_factor"].get<double>();
    const auto cap = cf > 0 ? static_cast<std::int64_t>(std::ceil(static_cast<double>(T) / E * cf)) : T;
    std::mt19937_64 rng(31337);
    Placement pl = f.policy->initial_placement();
    const Placement owners = pl;
    int copies_seen = 0;
    for (int it = 0; it < 50; ++it) {
      const IterationCounts ic = testing::drawn_counts({L, G, E}, T, rng, [&](int l, int e) {
        return 1.0 / static_cast<double>(1 + (3 * e + it + l) % E) + 0.02 * static_cast<double>(rng() % 8);
      });
      for (int l = 0; l < L; ++l) {
        const std::int64_t* c = ic.layer_ptr(l);
        const LayerDispatch d = testing::dispatch_checked(*f.policy, l, ic, pl);
        const int slots = pl.num_slots();
        const std::int64_t routed = d.routed;
        std::int64_t acc = 0;
        for (int src = 0; src < G; ++src)
          for (int sl = 0; sl < slots; ++sl) {
            const std::int64_t a = d.accepted[static_cast<std::size_t>(src) * slots + sl];
            REQUIRE(a == d.buffered[static_cast<std::size_t>(src) * slots + sl]);
            acc += a;
            if (a == 0) continue;
            const int e = pl.expert_of_slot[l][sl];
            REQUIRE(e >= 0);
            const bool owner_slot = sl % S < 2;
            // A copy takes only its own GPU's tokens; the owner takes no tokens of a source
            // that holds a copy.
            if (!owner_slot) REQUIRE(pl.gpu_of_slot(sl) == src);
            if (owner_slot) {
              for (int s2 = 2; s2 < S; ++s2) REQUIRE(pl.expert_of_slot[l][src * S + s2] != e);
            }
            REQUIRE(a == std::min(c[static_cast<std::size_t>(src) * E + e], cap));
          }
        REQUIRE(acc + d.dropped == routed);
      }
      // Every copy this iteration ran with sends its gradients to the owner.
      const PolicyDecision dec = f.policy->after_iteration(it, ic, pl);
      const Placement& nx = dec.new_placement ? dec.placement : pl;
      const SyncPlan sp = f.policy->sync_plan(it, pl, nx);
      REQUIRE_FALSE(sp.replica_allreduce);
      std::size_t copies_now = 0, copies_next = 0;
      for (int l = 0; l < L; ++l)
        for (int sl = 0; sl < G * S; ++sl) {
          if (sl % S < 2) {
            REQUIRE(nx.expert_of_slot[l][sl] == owners.expert_of_slot[l][sl]);  // owners never move
            continue;
          }
          if (pl.expert_of_slot[l][sl] >= 0) ++copies_now;
          const int e = nx.expert_of_slot[l][sl];
          if (e < 0) continue;
          ++copies_next;
          REQUIRE(e / 2 != sl / S);  // never on the owner
          for (int s2 = 2; s2 < S; ++s2)
            if (s2 != sl % S) REQUIRE(nx.expert_of_slot[l][(sl / S) * S + s2] != e);  // one copy per GPU
        }
      REQUIRE(sp.gradient_transfers.size() == copies_now);
      for (const auto& t : sp.gradient_transfers) REQUIRE(t.bytes == 2000.0);
      // Weights of every copy of the next iteration, sent from the owner, weights only.
      REQUIRE(dec.movements.size() == copies_next);
      for (const auto& m : dec.movements) {
        REQUIRE(m.transfer.bytes == 2000.0);
        REQUIRE(m.blocking);
      }
      copies_seen += static_cast<int>(copies_next);
      pl = nx;
    }
    CHECK(copies_seen > 0);
  }
}

TEST_CASE("prophet: rejects slot counts that do not match extra_slots", "[prophet]") {
  REQUIRE_THROWS_WITH(ProFx(4, 4, 4, 1, 10, "{name: prophet}"), Catch::Matchers::Contains("1 + 2 = 3, found 4"));
  REQUIRE_THROWS_WITH(ProFx(4, 3, 6, 1, 10, "{name: prophet}"), Catch::Matchers::Contains("divisible by the 4 GPUs"));
  REQUIRE_NOTHROW(ProFx(4, 4, 4, 1, 10, "{name: prophet, extra_slots: 3}"));
}

TEST_CASE("prophet: end to end, copies balance the GPUs and cost weights and gradients", "[prophet]") {
  // 32768 tokens per GPU so that a copy pays for its weights (9.4 MB) over the 12 GB/s NIC.
  const std::string text = R"(
name: prophet-smoke
seed: 5
cluster: {preset: swiftmoe-cloud, nodes: 4}
model: {preset: gpt-small-moe, layers: 2, micro_batch_per_gpu: 64}
placement: {slots_per_gpu: 6}
trace: {kind: synthetic, skew: 1.0, drift_sigma: 0.02}
run: {max_iterations: 30, stop_at_convergence: false}
policies:
  - {name: prophet, label: prophet}
  - {name: prophet, alpha: 1.0e9, label: no-copies}
)";
  Scenario s = load_scenario_text(text, "smoke.yaml", {}, std::nullopt);
  const auto res = run_scenario(s, RunOptions{false, {}});
  REQUIRE(res.size() == 2);
  const PolicyResult& pp = res[0];
  const PolicyResult& none = res[1];
  REQUIRE_FALSE(pp.oom);
  CHECK(pp.iterations_run == 30);
  CHECK(pp.drop_rate == 0.0);
  CHECK(pp.mean_moved_bytes > 0.0);
  CHECK(none.mean_moved_bytes == 0.0);
  CHECK(pp.mean_grad_sync_bytes > none.mean_grad_sync_bytes);  // gradients gathered from copies
  CHECK(pp.mean_expert_imbalance < none.mean_expert_imbalance);
  CHECK(pp.mean_iteration_ns < none.mean_iteration_ns);  // T' says the copies pay off
}

// FasterMoE dynamic shadowing and the oracle lower bound: shadow decisions worked out by hand,
// dispatch and sync plans, invariants on random inputs, and end-to-end runs on a skewed trace.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "tests/policy_fixture.hpp"
#include "core/error.hpp"
#include "sim/iteration.hpp"

using namespace moesim;

namespace {

// A cluster of `gpus` single-GPU nodes with round numbers for FasterMoE's model: one 8 Gb/s NIC
// at efficiency 1 (1e9 B/s per GPU) and a GPU of 1 TFLOP/s at GEMM efficiency 1 (F = 1e12).
// Experts: hidden d = 1000, expert_ffn_hidden 2000 (a = 2), two matrices: P = 4e6 parameters.
struct PolicyFixture : testing::SingleGpuNodes {
  Placement placement;

  PolicyFixture(int gpus, int slots, int experts, int layers, std::int64_t tokens, const std::string& params)
      : SingleGpuNodes(gpus, slots, experts, layers, tokens, params, [](SingleGpuNodes& w) {
          w.unit_hardware();
          w.model.top_k = 1;
          w.model.hidden = 1000;
          w.model.expert_ffn_hidden = 2000;
          w.model.ffn_matrices = 2;
          w.ctx.expert_params = w.model.expert_params();
          w.ctx.expert_weight_bytes = w.ctx.expert_params * 2.0;
          w.ctx.expert_grad_bytes = w.ctx.expert_params * w.training.grad_bytes_per_param;
          w.ctx.expert_optimizer_bytes = w.ctx.expert_params * w.training.optimizer_bytes_per_param;
        }) {
    placement = policy->initial_placement();
  }
};

// Counts of one iteration where every source sends load[l][e] / gpus to expert e of layer l.
IterationCounts even_counts(int gpus, const std::vector<std::vector<std::int64_t>>& load) {
  IterationCounts c;
  const int layers = static_cast<int>(load.size()), experts = static_cast<int>(load[0].size());
  c.reset(TraceShape{layers, gpus, experts});
  for (int l = 0; l < layers; ++l)
    for (int g = 0; g < gpus; ++g)
      for (int e = 0; e < experts; ++e)
        c.at(l, g, e) = load[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)] / gpus;
  return c;
}

// Slots of `layer` per GPU, as the policy must keep them, and the invariants of one dispatch.
void check_dispatch(const Placement& pl, int layer, int experts, const std::int64_t* counts,
                    const LayerDispatch& d, bool slot_holds_expert) {
  const int G = pl.gpus, slots = pl.num_slots();
  std::int64_t routed = 0, accepted = 0;
  for (int i = 0; i < G * experts; ++i) routed += counts[i];
  REQUIRE(d.routed == routed);
  for (int src = 0; src < G; ++src)
    for (int s = 0; s < slots; ++s) {
      const std::size_t idx = static_cast<std::size_t>(src) * slots + s;
      REQUIRE(d.accepted[idx] >= 0);
      REQUIRE(d.accepted[idx] <= d.buffered[idx]);
      accepted += d.accepted[idx];
      if (slot_holds_expert && d.buffered[idx] > 0) {
        const int e = pl.expert_of_slot[static_cast<std::size_t>(layer)][static_cast<std::size_t>(s)];
        REQUIRE(e >= 0);
        // The slot only receives tokens its expert was routed from this source.
        REQUIRE(counts[static_cast<std::size_t>(src) * experts + e] > 0);
      }
    }
  REQUIRE(routed == accepted + d.dropped);
}

const std::string kSkewedScenario =
    "name: skewed\n"
    "seed: 3\n"
    "cluster:\n"
    "  preset: dgx-a100\n"
    "  nodes: 2\n"
    "model:\n"
    "  preset: gpt-small-moe\n"
    "  layers: 2\n"
    "trace:\n"
    "  kind: synthetic\n"
    "  skew: 1.2\n"
    "run:\n"
    "  max_iterations: 20\n"
    "  stop_at_convergence: false\n";

const PolicyResult& by_label(const std::vector<PolicyResult>& rs, const std::string& label) {
  for (const auto& r : rs)
    if (r.label == label) return r;
  FAIL("no result " << label);
  return rs.front();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// fastermoe

TEST_CASE("fastermoe: shadow decisions follow the cost model, by hand", "[fastermoe]") {
  // FasterMoE's model with the fixture's numbers:
  //   compute per token  = 4 a d^2 / F = 4 * 2 * 1000^2 / 1e12 = 8e-6 s
  //   feature send       = 4 d / BW    = 4 * 1000 / 1e9       = 4e-6 s
  //   parameter send     = 8 a d^2 / BW = 8 * 2e6 / 1e9       = 0.016 s
  //   latency(i) = 0.016 i + (3 * 8e-6 + 4 * 4e-6) B_i = 0.016 i + 40e-6 B_i
  // 4 GPUs, 4 experts (expert g owned by GPU g), 2 shadow slots: 3 slots per GPU.
  PolicyFixture f(4, 3, 4, 3, 1000, "{name: fastermoe}");
  const auto params = f.policy->parameters();
  CHECK(params["model_compute_s_per_token"].get<double>() == Approx(8e-6));
  CHECK(params["model_send_s_per_token"].get<double>() == Approx(4e-6));
  CHECK(params["model_param_send_s"].get<double>() == Approx(0.016));
  // Base placement: expert g in GPU g's first slot, shadow slots empty.
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1});

  // Layer 0: loads e0..e3 = 1500, 700, 2000, 1000; by load: e2 2000, e0 1500, e3 1000, e1 700.
  //   latency(0) = 40e-6 * 2000          = 0.080
  //   latency(1) = 0.016 + 40e-6 * 1500  = 0.076  < 0.080: shadow e2
  //   latency(2) = 0.032 + 40e-6 * 1000  = 0.072  < 0.076: shadow e0; the 2 shadow slots are full.
  // Layer 1: loads 2000, 1700, 1000, 700:
  //   latency(0) = 0.080; latency(1) = 0.016 + 0.068 = 0.084 >= 0.080: stop, no shadows, although
  //   latency(2) = 0.032 + 0.040 = 0.072 would be lower (FasterMoE stops at the first non-improvement).
  // Layer 2: loads 1200, 300, 2000, 1500; by load e2, e3, e0, e1:
  //   latency(0) = 0.080; latency(1) = 0.016 + 0.060 = 0.076; latency(2) = 0.032 + 0.048 = 0.080
  //   >= 0.076: shadow e2 only.
  const IterationCounts counts =
      even_counts(4, {{1500, 700, 2000, 1000}, {2000, 1700, 1000, 700}, {1200, 300, 2000, 1500}});
  const PolicyDecision dec = f.policy->after_iteration(0, counts, f.placement);
  REQUIRE(dec.new_placement);
  CHECK(dec.movements.empty());
  // Shadow slot j of every GPU holds the j-th hottest shadow, empty on its owner.
  CHECK(dec.placement.expert_of_slot[0] == std::vector<int>{0, 2, -1, 1, 2, 0, 2, -1, 0, 3, 2, 0});
  CHECK(dec.placement.expert_of_slot[1] == std::vector<int>{0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1});
  CHECK(dec.placement.expert_of_slot[2] == std::vector<int>{0, 2, -1, 1, 2, -1, 2, -1, -1, 3, 2, -1});

  SECTION("the sync plan broadcasts each shadow and reduces its gradients to the owner") {
    const SyncPlan plan = f.policy->sync_plan(1, dec.placement, dec.placement);
    CHECK_FALSE(plan.replica_allreduce);
    // 2 + 0 + 1 shadowed experts, each over all 4 GPUs.
    REQUIRE(plan.pre_collectives.size() == 3);
    REQUIRE(plan.grad_collectives.size() == 3);
    for (const auto& op : plan.pre_collectives) {
      CHECK(op.kind == Collective::Broadcast);
      CHECK(op.bytes == 8e6);  // 4e6 parameters in bf16
      CHECK(op.gpus == std::vector<int>{0, 1, 2, 3});
    }
    for (const auto& op : plan.grad_collectives) {
      CHECK(op.kind == Collective::Broadcast);  // priced like NCCL's Reduce
      CHECK(op.bytes == 8e6);                   // 2 bytes of gradient per parameter
    }
    // Only the owners run Adam: one expert per GPU per layer, 3 layers.
    CHECK(plan.gpu_optimizer_params == std::vector<double>{1.2e7, 1.2e7, 1.2e7, 1.2e7});
    // Without shadows, nothing is added.
    const SyncPlan none = f.policy->sync_plan(0, f.placement, dec.placement);
    CHECK(none.pre_collectives.empty());
    CHECK(none.grad_collectives.empty());
  }

  SECTION("dispatch: shadowed experts stay on the source GPU, the others go to their owner") {
    // Layer 0 with the shadows {e2, e0}; uneven sources.
    const std::int64_t c[] = {
        10, 20, 30, 40,  // GPU0
        11, 21, 31, 41,  // GPU1
        12, 22, 32, 42,  // GPU2
        13, 23, 33, 43,  // GPU3
    };
    LayerDispatch d;
    f.policy->dispatch(0, c, dec.placement, d);
    check_dispatch(dec.placement, 0, 4, c, d, true);
    CHECK(d.dropped == 0);
    auto at = [&](int src, int slot) { return d.buffered[static_cast<std::size_t>(src) * 12 + slot]; };
    CHECK(at(0, 0) == 10);  // GPU0's e0 on its owner slot
    CHECK(at(0, 1) == 30);  // GPU0's e2 on its own shadow slot
    CHECK(at(1, 5) == 11);  // GPU1's e0 on its own shadow slot 1
    CHECK(at(1, 4) == 31);  // GPU1's e2 on its own shadow slot 0
    CHECK(at(2, 6) == 32);  // GPU2 owns e2
    CHECK(at(0, 3) == 20);  // e1 is not shadowed: to its owner GPU1
    CHECK(at(2, 9) == 42);  // e3 to GPU3
    // Only e1 and e3 cross GPUs: GPU0 sends 20 tokens to GPU1 and 40 to GPU3.
    const auto m = dispatch_byte_matrix(d, 3, 1.0);
    CHECK(m[0 * 4 + 1] == 20);
    CHECK(m[0 * 4 + 2] == 0);
    CHECK(m[0 * 4 + 3] == 40);
    CHECK(m[2 * 4 + 1] == 22);
    CHECK(m[1 * 4 + 0] == 0);
  }
}

TEST_CASE("fastermoe: the shadow cap and ties", "[fastermoe]") {
  // Loads e0..e3 = 300, 1000, 2000, 1500; by load e2, e3, e1, e0 (latency as above):
  //   latency(0) = 0.080, (1) = 0.016 + 0.060 = 0.076, (2) = 0.032 + 0.040 = 0.072,
  //   (3) = 0.048 + 40e-6 * 300 = 0.060: with 3 shadow slots e2, e3 and e1 are shadowed.
  const IterationCounts counts = even_counts(4, {{300, 1000, 2000, 1500}});
  PolicyFixture three(4, 4, 4, 1, 1000, "{name: fastermoe, shadow_slots: 3}");
  auto dec = three.policy->after_iteration(0, counts, three.placement);
  CHECK(dec.placement.expert_of_slot[0] ==
        std::vector<int>{0, 2, 3, 1, /**/ 1, 2, 3, -1, /**/ 2, -1, 3, 1, /**/ 3, 2, -1, 1});
  // With 2 shadow slots the third is cut off.
  PolicyFixture two(4, 3, 4, 1, 1000, "{name: fastermoe}");
  dec = two.policy->after_iteration(0, counts, two.placement);
  CHECK(dec.placement.expert_of_slot[0] == std::vector<int>{0, 2, 3, 1, 2, 3, 2, -1, 3, 3, 2, -1});
  // Equal loads: latency(1) = 0.016 + latency(0), never better; no shadows, no placement change.
  dec = two.policy->after_iteration(0, even_counts(4, {{1000, 1000, 1000, 1000}}), two.placement);
  CHECK_FALSE(dec.new_placement);
  // Two experts tied at the top (2000 each, then 400, 400): latency(0) = 0.080 and
  // latency(1) = 0.016 + 40e-6 * 2000 = 0.096 >= 0.080: stop, although latency(2) = 0.032 + 0.016
  // = 0.048 would be lower. A tie at the top is never shadowed.
  dec = two.policy->after_iteration(0, even_counts(4, {{400, 2000, 2000, 400}}), two.placement);
  CHECK_FALSE(dec.new_placement);
  // shadow_slots 0: FastMoE without shadowing.
  PolicyFixture zero(4, 1, 4, 1, 1000, "{name: fastermoe, shadow_slots: 0}");
  dec = zero.policy->after_iteration(0, counts, zero.placement);
  CHECK_FALSE(dec.new_placement);
}

TEST_CASE("fastermoe: capacity_factor > 0 drops per (source, expert) without padding", "[fastermoe]") {
  // capacity = ceil(1000 / 4 * 1.0) = 250 per (source, expert).
  PolicyFixture f(4, 1, 4, 1, 1000, "{name: fastermoe, shadow_slots: 0, capacity_factor: 1.0}");
  std::int64_t c[16] = {};
  c[0] = 400;  // GPU0 -> e0: 150 dropped
  c[1] = 100;
  c[5] = 600;  // GPU1 -> e1: 350 dropped
  LayerDispatch d;
  f.policy->dispatch(0, c, f.placement, d);
  check_dispatch(f.placement, 0, 4, c, d, true);
  CHECK(d.dropped == 150 + 350);
  CHECK(d.accepted[0 * 4 + 0] == 250);
  CHECK(d.buffered[0 * 4 + 1] == 100);  // not padded to 250
  CHECK(d.accepted[1 * 4 + 1] == 250);
}

TEST_CASE("fastermoe: slot budget and parameter errors", "[fastermoe]") {
  // 16 experts on 4 GPUs: 4 owner slots; by default every slot beyond them holds shadows, so any
  // budget of at least 4 slots a GPU is taken (the same budget as every other policy).
  PolicyFixture none(4, 4, 16, 1, 100, "{name: fastermoe}");
  CHECK(none.policy->parameters()["shadow_slots"] == 0);
  PolicyFixture two(4, 6, 16, 1, 100, "{name: fastermoe}");
  CHECK(two.policy->parameters()["shadow_slots"] == 2);
  // Fewer shadows than spare slots leaves the rest empty; more than spare is refused.
  PolicyFixture one(4, 6, 16, 1, 100, "{name: fastermoe, shadow_slots: 1}");
  CHECK(one.policy->parameters()["shadow_slots"] == 1);
  REQUIRE_THROWS_WITH(
      PolicyFixture(4, 6, 16, 1, 100, "{name: fastermoe, shadow_slots: 3}"),
      Catch::Matchers::Contains("slots_per_gpu >= experts / gpus + shadow_slots = 16 / 4 + 3 = 7") &&
          Catch::Matchers::Contains("or shadow_slots: 2"));
  REQUIRE_THROWS_WITH(PolicyFixture(3, 3, 4, 1, 100, "{name: fastermoe}"),
                      Catch::Matchers::Contains("must be a multiple of the 3 GPUs"));
  REQUIRE_THROWS_WITH(PolicyFixture(4, 3, 4, 1, 100, "{name: fastermoe, gradient_reduce_as: reduce}"),
                      Catch::Matchers::Contains("gradient_reduce_as"));
  PolicyFixture ok(4, 4, 16, 1, 100, "{name: fastermoe, shadow_slots: 0, gradient_reduce_as: allreduce}");
  CHECK(ok.policy->parameters()["experts_per_gpu"] == 4);
}

TEST_CASE("fastermoe: invariants over 50 random skewed iterations", "[fastermoe]") {
  // 4 GPUs x 2 experts each, 3 shadow slots, 2 layers; the allreduce stand-in for the reduce.
  const int G = 4, E = 8, L = 2, S = 5;
  PolicyFixture f(G, S, E, L, 4000, "{name: fastermoe, shadow_slots: 3, gradient_reduce_as: allreduce}");
  std::mt19937_64 rng(7);
  Placement pl = f.placement;
  const Placement base = f.placement;
  int shadowed_layers = 0;
  for (int it = 0; it < 50; ++it) {
    IterationCounts counts;
    counts.reset(TraceShape{L, G, E});
    for (int l = 0; l < L; ++l) {
      // A random hot expert per layer takes a random share of the tokens.
      const int hot = static_cast<int>(rng() % E);
      for (int g = 0; g < G; ++g)
        for (int e = 0; e < E; ++e)
          counts.at(l, g, e) = static_cast<std::int64_t>(rng() % 500) +
                               (e == hot ? static_cast<std::int64_t>(rng() % 20000) : 0);
    }
    for (int l = 0; l < L; ++l) {
      LayerDispatch d;
      f.policy->dispatch(l, counts.layer_ptr(l), pl, d);
      check_dispatch(pl, l, E, counts.layer_ptr(l), d, true);
      CHECK(d.dropped == 0);
      // A source's tokens for an expert it holds never leave the GPU.
      const auto reps = expert_slots(pl, l, E);
      for (int g = 0; g < G; ++g)
        for (int e = 0; e < E; ++e) {
          int local = -1;
          for (int s : reps[static_cast<std::size_t>(e)])
            if (s / S == g) local = s;
          if (local >= 0)
            REQUIRE(d.buffered[static_cast<std::size_t>(g) * G * S + local] == counts.at(l, g, e));
        }
    }
    const PolicyDecision dec = f.policy->after_iteration(it, counts, pl);
    const Placement next = dec.new_placement ? dec.placement : pl;
    CHECK(dec.movements.empty());
    const SyncPlan sync = f.policy->sync_plan(it, pl, next);
    int shadows_now = 0;
    for (int l = 0; l < L; ++l) {
      const auto& layout = next.expert_of_slot[static_cast<std::size_t>(l)];
      REQUIRE(static_cast<int>(layout.size()) == G * S);
      std::map<int, std::set<int>> gpus_of;
      for (int s = 0; s < G * S; ++s) {
        // Owner slots never change.
        if (s % S < E / G)
          REQUIRE(layout[static_cast<std::size_t>(s)] == base.expert_of_slot[0][static_cast<std::size_t>(s)]);
        if (layout[static_cast<std::size_t>(s)] >= 0)
          gpus_of[layout[static_cast<std::size_t>(s)]].insert(s / S);
      }
      int shadows = 0;
      for (int e = 0; e < E; ++e) {
        REQUIRE(!gpus_of[e].empty());
        // A shadow is on every GPU exactly once (its owner slot or one shadow slot).
        if (gpus_of[e].size() > 1) {
          ++shadows;
          REQUIRE(static_cast<int>(gpus_of[e].size()) == G);
          REQUIRE(std::count(layout.begin(), layout.end(), e) == G);
        }
      }
      REQUIRE(shadows <= 3);
      shadowed_layers += shadows > 0 ? 1 : 0;
      // The shadows of layer l are the hottest experts of this iteration's layer l.
      const auto load = expert_loads(counts.layer_ptr(l), G, E);
      for (int e = 0; e < E; ++e)
        for (int o = 0; o < E; ++o)
          if (gpus_of[e].size() == 1 && gpus_of[o].size() > 1)
            REQUIRE(load[static_cast<std::size_t>(o)] >= load[static_cast<std::size_t>(e)]);
    }
    // The sync plan of this iteration charges the shadows it ran with (`pl`), one broadcast and
    // one reduction each.
    for (int l = 0; l < L; ++l)
      for (int e = 0; e < E; ++e) shadows_now += pl.replicas(l, e).size() > 1 ? 1 : 0;
    REQUIRE(static_cast<int>(sync.pre_collectives.size()) == shadows_now);
    REQUIRE(static_cast<int>(sync.grad_collectives.size()) == shadows_now);
    for (const auto& op : sync.grad_collectives) REQUIRE(op.kind == Collective::AllReduce);
    pl = next;
  }
  CHECK(shadowed_layers > 50);  // the hot experts were worth shadowing most of the time
}

TEST_CASE("fastermoe: shadowing lowers imbalance, waits and iteration time on a skewed trace",
          "[fastermoe]") {
  // 16 A100s on 2 DGX nodes, GPT-Small-MoE (16 experts) cut to 2 MoE layers, Zipf 1.2. One
  // expert per GPU for static and FastMoE without shadows; 1 + 2 slots for FasterMoE.
  Scenario base = load_scenario_text(kSkewedScenario +
                                         "placement:\n  slots_per_gpu: 1\n"
                                         "policies:\n"
                                         "  - {name: static, label: static-dropless, drop_tokens: false}\n"
                                         "  - {name: fastermoe, label: no-shadow, shadow_slots: 0}\n",
                                     "t.yaml", {}, std::nullopt);
  Scenario shadow =
      load_scenario_text(kSkewedScenario + "placement:\n  slots_per_gpu: 3\npolicies:\n  - fastermoe\n",
                         "t.yaml", {}, std::nullopt);
  const auto rb = run_scenario(base);
  const auto rs = run_scenario(shadow);
  const PolicyResult& st = by_label(rb, "static-dropless");
  const PolicyResult& ns = by_label(rb, "no-shadow");
  const PolicyResult& fm = by_label(rs, "fastermoe");
  REQUIRE(fm.rows.size() == 20);
  REQUIRE(ns.rows.size() == 20);
  // Iteration 0 has no shadows yet: identical to FastMoE without shadowing.
  CHECK(fm.rows[0].result.iteration_ns == ns.rows[0].result.iteration_ns);
  CHECK(fm.rows[0].result.expert_compute_imbalance == ns.rows[0].result.expert_compute_imbalance);
  // Afterwards every iteration with shadows pays whole broadcasts + reductions of experts.
  const double per_shadow = 2.0 * 768 * 3072 * 2 * 2.0;  // weights + gradients, bf16
  int with_shadows = 0;
  for (std::size_t i = 1; i < fm.rows.size(); ++i) {
    const double extra = fm.rows[i].result.grad_sync_bytes - ns.rows[i].result.grad_sync_bytes;
    const double k = extra / per_shadow;
    CHECK(k == Approx(std::round(k)));
    with_shadows += k >= 1.0 ? 1 : 0;
    CHECK(fm.rows[i].result.expert_compute_imbalance < ns.rows[i].result.expert_compute_imbalance);
  }
  CHECK(with_shadows == 19);
  CHECK(fm.drop_rate == 0.0);
  CHECK(fm.mean_expert_imbalance < ns.mean_expert_imbalance);
  const auto wait = static_cast<int>(Phase::Wait);
  CHECK(fm.mean_phase_ns[wait] < ns.mean_phase_ns[wait]);
  CHECK(fm.mean_iteration_ns < ns.mean_iteration_ns);
  // Static dropless pads every buffer to the largest count: far slower.
  CHECK(fm.mean_iteration_ns < st.mean_iteration_ns);
}

// ---------------------------------------------------------------------------------------------
// oracle

TEST_CASE("oracle: every GPU gets its share of the layer, by hand", "[oracle]") {
  // 2 GPUs x 1 slot, 2 experts. counts [src][expert]: GPU0 7 + 4 = 11, GPU1 2 + 8 = 10; total 21.
  // Assignments dealt round-robin in source order: GPU0's occupy positions 0..10 (6 even -> GPU0,
  // 5 odd -> GPU1), GPU1's positions 11..20 (5 even -> GPU0, 5 odd -> GPU1).
  PolicyFixture f(2, 1, 2, 1, 11, "{name: oracle}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1});
  const std::int64_t c[] = {7, 4, 2, 8};
  LayerDispatch d;
  f.policy->dispatch(0, c, f.placement, d);
  CHECK(d.accepted == std::vector<std::int64_t>{6, 5, 5, 5});
  CHECK(d.buffered == d.accepted);
  CHECK(d.routed == 21);
  CHECK(d.dropped == 0);
  // GPU0 processes 11 = 21 / 2 + the remainder, GPU1 10.
  CHECK(d.accepted[0] + d.accepted[2] == 11);
  CHECK(d.accepted[1] + d.accepted[3] == 10);
  const PolicyDecision dec = f.policy->after_iteration(0, IterationCounts{}, f.placement);
  CHECK_FALSE(dec.new_placement);
  CHECK(dec.movements.empty());
}

TEST_CASE("oracle: balance within one token on random inputs", "[oracle]") {
  // 4 GPUs x 3 slots for 8 experts (12 slots: not a multiple of 8, round-robin layout).
  const int G = 4, S = 3, E = 8, slots = G * S;
  PolicyFixture f(G, S, E, 1, 1000, "{name: oracle}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
  std::mt19937_64 rng(11);
  for (int it = 0; it < 50; ++it) {
    std::vector<std::int64_t> c(static_cast<std::size_t>(G) * E);
    const int hot = static_cast<int>(rng() % E);
    for (int i = 0; i < G * E; ++i)
      c[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(rng() % 300) +
                                       (i % E == hot ? static_cast<std::int64_t>(rng() % 5000) : 0);
    LayerDispatch d;
    f.policy->dispatch(0, c.data(), f.placement, d);
    check_dispatch(f.placement, 0, E, c.data(), d, false);
    REQUIRE(d.dropped == 0);
    REQUIRE(d.accepted == d.buffered);
    std::vector<std::int64_t> gpu(G, 0), slot(slots, 0);
    for (int src = 0; src < G; ++src) {
      std::int64_t n = 0;
      for (int e = 0; e < E; ++e) n += c[static_cast<std::size_t>(src) * E + e];
      std::vector<std::int64_t> to(G, 0);
      for (int s = 0; s < slots; ++s) {
        const std::int64_t v = d.buffered[static_cast<std::size_t>(src) * slots + s];
        to[s / S] += v;
        gpu[s / S] += v;
        slot[s] += v;
      }
      // Uniform all-to-all: each GPU gets n / G of this source's assignments, within one.
      const auto [lo, hi] = std::minmax_element(to.begin(), to.end());
      REQUIRE(*hi - *lo <= 1);
      REQUIRE(*lo == n / G);
    }
    const auto [glo, ghi] = std::minmax_element(gpu.begin(), gpu.end());
    REQUIRE(*ghi - *glo <= 1);
    REQUIRE(gpu[0] == *ghi);  // the remainder goes to the lowest GPUs
    const auto [slo, shi] = std::minmax_element(slot.begin(), slot.end());
    REQUIRE(*shi - *slo <= 1);
  }
}

TEST_CASE("oracle: replica sync is free by default; charge_gradient_sync: true charges static's",
          "[oracle]") {
  // 4 GPUs x 1 slot, 2 experts: 2 replicas of each, sharded like static.
  PolicyFixture f(4, 1, 2, 1, 100, "{name: oracle, charge_gradient_sync: true}");
  const SyncPlan plan = f.policy->sync_plan(0, f.placement, f.placement);
  CHECK_FALSE(plan.replica_allreduce);
  CHECK(plan.grad_collectives.size() == 2);  // one reduce-scatter per expert
  CHECK(plan.post_collectives.size() == 2);
  PolicyFixture loose(4, 1, 2, 1, 100, "{name: oracle}");
  const SyncPlan lp = loose.policy->sync_plan(0, loose.placement, loose.placement);
  CHECK_FALSE(lp.replica_allreduce);
  CHECK(lp.grad_collectives.empty());
  CHECK(lp.post_collectives.empty());
  // The optimizer step stays: half an expert (one shard of 2) per GPU.
  CHECK(lp.gpu_optimizer_params == std::vector<double>{2e6, 2e6, 2e6, 2e6});
}

TEST_CASE("oracle: no other policy's iteration is faster on a skewed trace", "[oracle]") {
  Scenario one = load_scenario_text(kSkewedScenario +
                                        "placement:\n  slots_per_gpu: 1\n"
                                        "policies:\n"
                                        "  - {name: static, label: cf1, capacity_factor: 1.0}\n"
                                        "  - {name: static, label: cf2, capacity_factor: 2.0}\n"
                                        "  - {name: static, label: dropless, drop_tokens: false}\n"
                                        "  - {name: fastermoe, label: no-shadow, shadow_slots: 0}\n"
                                        "  - oracle\n",
                                    "t.yaml", {}, std::nullopt);
  Scenario three =
      load_scenario_text(kSkewedScenario + "placement:\n  slots_per_gpu: 3\npolicies:\n  - fastermoe\n",
                         "t.yaml", {}, std::nullopt);
  auto results = run_scenario(one);
  const auto fm = run_scenario(three);
  results.push_back(fm.front());
  const PolicyResult& oracle = by_label(results, "oracle");
  CHECK(oracle.drop_rate == 0.0);
  CHECK(oracle.mean_expert_imbalance < 1.001);  // 2048 tokens per GPU and layer: exact
  CHECK(oracle.mean_moved_bytes == 0.0);
  for (const auto& r : results) {
    INFO(r.label << ": " << r.mean_iteration_ns << " ns vs oracle " << oracle.mean_iteration_ns);
    CHECK(oracle.mean_iteration_ns <= r.mean_iteration_ns);
  }
  // Static at capacity factor 1 pads every (source, expert) buffer to 2048 / 16 = 128: the same
  // uniform all-to-all and balanced compute as the oracle, so the same time (but drops).
  CHECK(by_label(results, "cf1").mean_iteration_ns == Approx(oracle.mean_iteration_ns).epsilon(1e-9));
  CHECK(by_label(results, "cf1").drop_rate > 0.0);
}

// SwiftMoE / SYMI: Algorithm 1 and the slot fill worked by hand, capacity, the sync plan's
// bytes on small placements, the paper's section 3.3 example, invariants on random counts and an
// end-to-end run against static expert parallelism.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "policies/symi.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

struct SymiFixture : testing::PolicyWorld {
  Placement placement;

  SymiFixture(int nodes, int gpus_per_node, int slots, int experts, int layers, std::int64_t tokens,
              const std::string& params)
      : PolicyWorld(nodes, gpus_per_node, slots, experts, layers, tokens) {
    model.top_k = 1;
    model.hidden = 1000;
    build(params);
    placement = policy->initial_placement();
  }

  // Counts for `layers` layers from one [src][expert] matrix repeated.
  [[nodiscard]] IterationCounts counts(const std::vector<std::int64_t>& matrix) const {
    IterationCounts c;
    c.reset(TraceShape{ctx.moe_layers, ctx.gpus, ctx.experts});
    for (int l = 0; l < ctx.moe_layers; ++l)
      for (int g = 0; g < ctx.gpus; ++g)
        for (int e = 0; e < ctx.experts; ++e)
          c.at(l, g, e) = matrix[static_cast<std::size_t>(g) * ctx.experts + e];
    return c;
  }
};

double sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

double transfer_bytes(const std::vector<Transfer>& ts) {
  double s = 0.0;
  for (const Transfer& t : ts) s += t.bytes;
  return s;
}

}  // namespace

TEST_CASE("symi Algorithm 1: the at-least-one floor and over-allocation", "[symi]") {
  // [0, 0, 55, 45], 8 slots: goals 0, 0, 4.4, 3.6; counts floor(max(goal, 1)) = 1, 1, 4, 3 (sum 9);
  // diffs 1, 1, -0.4, -0.6. One too many: the largest diff among experts with > 1 replica is
  // expert 2 (-0.4; experts 0 and 1 have diff 1 but a single replica) -> [1, 1, 3, 3].
  CHECK(symi_replica_counts({0, 0, 55, 45}, 8) == std::vector<int>{1, 1, 3, 3});
  // [1, 1, 1, 97], 8 slots: goals 0.08 x3, 7.76; counts 1, 1, 1, 7 (sum 10); only expert 3 has
  // more than one replica, so it loses two: 7 -> 6 (diff -1.76) -> 5.
  CHECK(symi_replica_counts({1, 1, 1, 97}, 8) == std::vector<int>{1, 1, 1, 5});
  // [0, 2, 2], 4 slots: goals 0, 2, 2; counts 1, 2, 2 (sum 5); diffs 1, 0, 0: experts 1 and 2
  // tie, the lower index loses one -> [1, 1, 2].
  CHECK(symi_replica_counts({0, 2, 2}, 4) == std::vector<int>{1, 1, 2});
}

TEST_CASE("symi Algorithm 1: under-allocation and exact goals", "[symi]") {
  // [5, 5, 5], 8 slots: goals 2.667 each; counts 2, 2, 2 (sum 6); diffs -0.667 each. Two short:
  // expert 0 (tie, lowest index) -> diff 0.333; then expert 1 (-0.667) -> [3, 3, 2].
  CHECK(symi_replica_counts({5, 5, 5}, 8) == std::vector<int>{3, 3, 2});
  // [2, 3, 5], 6 slots: goals 1.2, 1.8, 3.0; counts 1, 1, 3 (sum 5); diffs -0.2, -0.8, 0: the
  // smallest diff is expert 1's -> [1, 2, 3].
  CHECK(symi_replica_counts({2, 3, 5}, 6) == std::vector<int>{1, 2, 3});
  // Exact goals need no loop: [3, 3, 2] over 8 slots.
  CHECK(symi_replica_counts({3, 3, 2}, 8) == std::vector<int>{3, 3, 2});
  // No tokens at all counts as uniform: goals 5/3; counts 1, 1, 1; add to experts 0 then 1.
  CHECK(symi_replica_counts({0, 0, 0}, 5) == std::vector<int>{2, 2, 1});
  // As many slots as experts: one each, whatever the popularity.
  CHECK(symi_replica_counts({0, 100, 3, 0}, 4) == std::vector<int>{1, 1, 1, 1});
  REQUIRE_THROWS(symi_replica_counts({1, 1, 1}, 2));
}

TEST_CASE("symi Algorithm 1 on random popularity: every slot used, every expert kept", "[symi]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int E = 1 + static_cast<int>(rng() % 20);
    const int slots = E + static_cast<int>(rng() % 40);
    std::vector<double> p(E);
    for (double& x : p) x = (rng() % 4 == 0) ? 0.0 : static_cast<double>(rng() % 10000);
    const auto c = symi_replica_counts(p, slots);
    int total = 0;
    for (int x : c) {
      CHECK(x >= 1);
      total += x;
    }
    CHECK(total == slots);
    // A more popular expert never gets fewer replicas than a less popular one... except through
    // the at-least-one floor; checked where both goals are at least 1.
    double s = 0.0;
    for (double x : p) s += x;
    for (int a = 0; a < E; ++a)
      for (int b = 0; b < E; ++b)
        if (s > 0 && p[a] > p[b] && p[b] * slots / s >= 1.0) CHECK(c[a] >= c[b]);
  }
}

TEST_CASE("symi fills slots in expert order; initial placement is Algorithm 1 on equal popularity",
          "[symi]") {
  CHECK(symi_fill_slots({1, 1, 3, 3}) == std::vector<int>{0, 1, 2, 2, 2, 3, 3, 3});
  // 4 GPUs x 2 slots, 4 experts: uniform, two replicas each on consecutive slots.
  SymiFixture f(4, 1, 2, 4, 2, 10, "{name: symi}");
  REQUIRE(f.placement.expert_of_slot.size() == 2);
  CHECK(f.placement.expert_of_slot[0] == std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3});
  CHECK(f.placement.expert_of_slot[1] == f.placement.expert_of_slot[0]);
  // 3 experts over 8 slots: [3, 3, 2] (worked above) -> GPU 1 holds experts 0 and 1.
  SymiFixture g(4, 1, 2, 3, 1, 10, "{name: symi}");
  CHECK(g.placement.expert_of_slot[0] == std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2});
  CHECK(g.placement.gpu_of_slot(3) == 1);
}

TEST_CASE("symi dispatch: an expert with r replicas accepts r * slot_capacity", "[symi]") {
  // 2 GPUs x 2 slots, 2 experts, 10 tokens per GPU, top-1: slot_capacity = ceil(1.0 * 1 * 10 * 2 /
  // (2 * 2)) = 5.
  SymiFixture f(2, 1, 2, 2, 1, 10, "{name: symi, min_capacity: 0}");
  CHECK(f.policy->parameters()["slot_capacity"] == 5);
  // Counts [8, 2] from each GPU: popularity [16, 4], goals 3.2, 0.8 -> counts 3, 1 (sum 4).
  PolicyDecision d = f.policy->after_iteration(0, f.counts({8, 2, 8, 2}), f.placement);
  REQUIRE(d.new_placement);
  CHECK(d.movements.empty());
  REQUIRE(d.placement.expert_of_slot[0] == std::vector<int>{0, 0, 0, 1});
  // Next iteration GPU0 sends [9, 1], GPU1 [8, 2]. Expert 0: 17 routed, 3 x 5 = 15 accepted:
  // shares 9*15/17 = 7.94 and 8*15/17 = 7.06 -> 7 and 7, the last one to the larger remainder
  // (GPU0) -> 8 and 7. GPU0's 8 over slots 0,1,2: 3,3,2; GPU1's 7, starting one slot later:
  // slot 1 gets 3, slots 2 and 0 get 2. Expert 1: 3 <= 5, all accepted on slot 3.
  const std::int64_t counts[] = {9, 1, 8, 2};
  LayerDispatch ld;
  f.policy->dispatch(0, counts, d.placement, ld);
  CHECK(ld.routed == 20);
  CHECK(ld.dropped == 2);
  CHECK(ld.accepted == std::vector<std::int64_t>{3, 3, 2, 1, 2, 3, 2, 2});
  CHECK(ld.buffered == ld.accepted);  // not padded

  SECTION("dropless") {
    SymiFixture g(2, 1, 2, 2, 1, 10, "{name: symi, drop_tokens: false}");
    LayerDispatch dl;
    g.policy->dispatch(0, counts, d.placement, dl);
    CHECK(dl.dropped == 0);
  }
  SECTION("min_capacity floors the slot capacity") {
    // 2 tokens per GPU over 4 slots per GPU: ceil(2 / 4) = 1 < min_capacity 2 (the default).
    SymiFixture g(2, 1, 4, 2, 1, 2, "{name: symi}");
    CHECK(g.policy->parameters()["slot_capacity"] == 2);
    CHECK(g.policy->parameters()["min_capacity"] == 2);
  }
  SECTION("invalid settings") {
    REQUIRE_THROWS(SymiFixture(2, 1, 1, 3, 1, 10, "{name: symi}"));  // 2 slots < 3 experts
    REQUIRE_THROWS(SymiFixture(2, 1, 2, 2, 1, 10, "{name: symi, capacity_factor: 0}"));
    REQUIRE_THROWS(SymiFixture(2, 1, 2, 2, 1, 10, "{name: symi, capacty_factor: 1}"));
  }
}

TEST_CASE("symi placement follows the last iteration's counts (one-iteration lag)", "[symi]") {
  // 4 GPUs x 1 slot, 2 experts.
  SymiFixture f(4, 1, 1, 2, 1, 10, "{name: symi}");
  CHECK(f.placement.expert_of_slot[0] == std::vector<int>{0, 0, 1, 1});
  // Iteration 0: everything to expert 1: goals 0, 4 -> counts 1, 4 -> over by one -> [1, 3].
  const auto a = f.counts({0, 10, 0, 10, 0, 10, 0, 10});
  PolicyDecision d0 = f.policy->after_iteration(0, a, f.placement);
  CHECK(d0.placement.expert_of_slot[0] == std::vector<int>{0, 1, 1, 1});
  // Iteration 1 ran on that placement with everything to expert 0: the next placement is [3, 1],
  // from iteration 1's counts only.
  const auto b = f.counts({10, 0, 10, 0, 10, 0, 10, 0});
  PolicyDecision d1 = f.policy->after_iteration(1, b, d0.placement);
  CHECK(d1.placement.expert_of_slot[0] == std::vector<int>{0, 0, 0, 1});
  CHECK(d1.movements.empty());
  // The same counts give the same placement whatever the current one.
  PolicyDecision d1b = f.policy->after_iteration(1, b, f.placement);
  CHECK(d1b.placement.expert_of_slot == d1.placement.expert_of_slot);
}

TEST_CASE("symi sync plan on 4 single-GPU nodes, by hand", "[symi]") {
  // 1 layer, 2 experts, 1 slot per GPU; expert weights and gradients 2000 B, 1000 parameters.
  // Each node owns 1/4 of every expert: 500 B shards, 250 parameters.
  SymiFixture f(4, 1, 1, 2, 1, 10, "{name: symi}");
  Placement cur = f.placement, next = f.placement;
  cur.expert_of_slot[0] = {0, 0, 1, 1};
  next.expert_of_slot[0] = {0, 1, 1, 1};
  SyncPlan p = f.policy->sync_plan(0, cur, next);
  // (1) popularity: 2 experts x 1 layer x 8 B over all GPUs.
  REQUIRE(p.pre_collectives.size() == 1);
  CHECK(p.pre_collectives[0].bytes == 16.0);
  CHECK(p.pre_collectives[0].gpus == std::vector<int>{0, 1, 2, 3});
  CHECK(p.replica_allreduce);
  // (3) Expert 0 on GPUs {0,1}: owners 0 and 1 copy their own shard down; owners 2 and 3 get it
  // round-robin from GPU 0 then GPU 1. Expert 1 on {2,3}: owners 0, 1 from GPUs 2, 3.
  // Every GPU copies down 2 shards (1000 B).
  CHECK(p.d2h_bytes == std::vector<double>{1000, 1000, 1000, 1000});
  REQUIRE(p.gradient_transfers.size() == 4);
  const std::vector<std::pair<int, int>> grad_pairs{{0, 2}, {1, 3}, {2, 0}, {3, 1}};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(p.gradient_transfers[i].src.index == grad_pairs[i].first);
    CHECK(p.gradient_transfers[i].dst.index == grad_pairs[i].second);
    CHECK_FALSE(p.gradient_transfers[i].src.host);
    CHECK_FALSE(p.gradient_transfers[i].dst.host);
    CHECK(p.gradient_transfers[i].bytes == 500.0);
  }
  // (4) Adam on the host: 2 experts x 250 parameters per node; in all E x layers x params.
  CHECK(p.host_optimizer_params == std::vector<double>{500, 500, 500, 500});
  CHECK(sum(p.gpu_optimizer_params) == 0.0);
  // (5) Next: expert 0 on GPU 0, expert 1 on GPUs 1,2,3. Each node copies each of its 2 shards up
  // once (1000 B per GPU) and sends it to every holder on another node: expert 0's shards from
  // nodes 1,2,3 to GPU 0; expert 1's from each node to the holders other than itself. Every
  // ordered pair of GPUs carries exactly one 500 B shard: 12 transfers, 6000 B. That is the 4
  // slots' full weights (8000 B) less the 4 shards each finds on its own host (2000 B).
  CHECK(p.h2d_bytes == std::vector<double>{1000, 1000, 1000, 1000});
  REQUIRE(p.weight_transfers.size() == 12);
  std::set<std::pair<int, int>> pairs;
  for (const Transfer& t : p.weight_transfers) {
    CHECK(t.bytes == 500.0);
    pairs.insert({t.src.index, t.dst.index});
  }
  CHECK(pairs.size() == 12);
  CHECK(pairs.count({0, 0}) == 0);
  // (6) scheduler, last run for the initial (uniform) placement: goals 2, 2 need no correction;
  // 2 experts + 0 x 2 + 4 slots + 2 experts x 4 owner nodes = 14 steps x 50 ns on every GPU.
  CHECK(p.decision_ns == std::vector<TimeNs>{700, 700, 700, 700});
}

TEST_CASE("symi scheduler cost counts Algorithm 1's corrections, the fill and the gradient map", "[symi]") {
  // The paper's per-iteration scheduling (shared/reference/policies.md): E goals, one scan of
  // the E diffs per correction, one step per slot, one per (expert, owner node).
  CHECK(symi_scheduler_steps(3, 8, 4, 2) == 3 + 2 * 3 + 8 + 3 * 4);
  CHECK(symi_scheduler_steps(64, 4096, 2048, 0) == 64 + 4096 + 64 * 2048);
  // 4 single-GPU nodes x 2 slots, 3 experts, 2 layers. Uniform counts: goals 8/3 = 2.67, floors
  // 2, 2, 2 (6 < 8): 2 corrections. One hot expert: goals 0, 0, 8, at least one each: 1, 1, 8
  // (10 > 8): 2 corrections. Either way 3 + 2 x 3 + 8 + 3 x 4 = 29 steps a layer, 58 in all, at
  // 50 ns: 2900 ns on every GPU.
  SymiFixture f(4, 1, 2, 3, 2, 10, "{name: symi}");
  int adjustments = -1;
  CHECK(symi_replica_counts({4, 4, 4}, 8, &adjustments) == std::vector<int>{3, 3, 2});
  CHECK(adjustments == 2);
  CHECK(symi_replica_counts({0, 0, 4}, 8, &adjustments) == std::vector<int>{1, 1, 6});
  CHECK(adjustments == 2);
  const std::vector<std::vector<std::int64_t>> matrices = {std::vector<std::int64_t>(12, 1),
                                                            {0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1}};
  for (const auto& m : matrices) {
    const PolicyDecision d = f.policy->after_iteration(0, f.counts(m), f.placement);
    const SyncPlan p = f.policy->sync_plan(0, f.placement, d.placement);
    CHECK(p.decision_ns == std::vector<TimeNs>{2900, 2900, 2900, 2900});
  }
  // A balanced layer whose goals are whole numbers needs no correction: 4 experts on 8 slots.
  int none = -1;
  CHECK(symi_replica_counts({1, 1, 1, 1}, 8, &none) == std::vector<int>{2, 2, 2, 2});
  CHECK(none == 0);
}

TEST_CASE("symi sync plan with the optimizer on the GPUs of 2-GPU nodes", "[symi]") {
  // 2 nodes x 2 GPUs, 1 slot, 4 experts, 1 layer. Node n's shard of expert e (2000 B / 2 nodes
  // = 1000 B of gradients or weights, 500 parameters) lives on GPU n*2 + e%2.
  SymiFixture f(2, 2, 1, 4, 1, 10, "{name: symi, optimizer_on_host: false}");
  Placement cur = f.placement;
  REQUIRE(cur.expert_of_slot[0] == std::vector<int>{0, 1, 2, 3});
  SyncPlan p = f.policy->sync_plan(0, cur, cur);
  // Each GPU keeps 2 shards of 500 parameters (experts e with e%2 == its local index).
  CHECK(p.gpu_optimizer_params == std::vector<double>{1000, 1000, 1000, 1000});
  CHECK(sum(p.host_optimizer_params) == 0.0);
  CHECK(sum(p.d2h_bytes) == 0.0);
  CHECK(sum(p.h2d_bytes) == 0.0);
  // Gradients: expert e on GPU e; its home on the other node is GPU (1-node(e))*2 + e%2, i.e.
  // GPU e+2 or e-2; its home on its own node is GPU e itself. 4 transfers of 1000 B.
  std::map<std::pair<int, int>, double> flows;
  for (const Transfer& t : p.gradient_transfers) flows[{t.src.index, t.dst.index}] += t.bytes;
  CHECK(flows == std::map<std::pair<int, int>, double>{
                     {{0, 2}, 1000.0}, {{1, 3}, 1000.0}, {{2, 0}, 1000.0}, {{3, 1}, 1000.0}});
  // Weights go back the same way.
  flows.clear();
  for (const Transfer& t : p.weight_transfers) flows[{t.src.index, t.dst.index}] += t.bytes;
  CHECK(flows == std::map<std::pair<int, int>, double>{
                     {{2, 0}, 1000.0}, {{3, 1}, 1000.0}, {{0, 2}, 1000.0}, {{1, 3}, 1000.0}});
}

TEST_CASE("symi section 3.3 worked example: 1.52 % extra communication over static", "[symi]") {
  // E = 64, N = 2048 ranks, S = 2, X = 3.375 GB, PCIe 64 GB/s, network 400 Gb/s = 50 GB/s.
  const double E = 64, N = 2048, S = 2, X = 3.375e9, pcie = 64e9, net = 50e9;
  const double t_static = symi_static_comm_seconds(E, N, S, X, pcie, net, true);
  const double t_symi = symi_comm_seconds(E, N, S, X, pcie, net, true);
  // static: (64/2048) 3.375e9 / 64e9 + (4032/2048) 3.375e9 / 50e9 = 0.00164795 + 0.13289063 s.
  CHECK(t_static == Approx(0.00164795 + 0.13289063).epsilon(1e-6));
  // extra = 62/2048 X/BW_net over t_static = 62 / 4082 = 1.519 %.
  CHECK((t_symi - t_static) / t_static == Approx(0.0152).margin(0.0001));
  // Without optimizer offload the PCIe term goes: extra = (E - S) / (S N - E) = 62 / 4032 = 1.538 %.
  const double s0 = symi_static_comm_seconds(E, N, S, X, pcie, net, false);
  const double y0 = symi_comm_seconds(E, N, S, X, pcie, net, false);
  CHECK((y0 - s0) / s0 == Approx(0.0154).margin(0.0001));
  // Moving one such expert's weights over 400 Gb/s: 3.375e9 / 50e9 = 0.0675 s.
  CHECK(X / net == Approx(0.0675));
}

TEST_CASE("symi invariants on random counts", "[symi]") {
  // 3 nodes x 2 GPUs, 2 slots per GPU, 5 experts, 2 layers, 40 tokens per GPU.
  SymiFixture f(3, 2, 2, 5, 2, 40, "{name: symi, min_capacity: 0}");
  const int G = f.ctx.gpus, S = f.ctx.slots_per_gpu, E = f.ctx.experts, L = f.ctx.moe_layers;
  const std::int64_t cap = f.policy->parameters()["slot_capacity"].get<std::int64_t>();
  CHECK(cap == 20);  // ceil(40 * 6 / 12)
  std::mt19937_64 rng(12345);
  Placement pl = f.placement;
  for (int it = 0; it < 50; ++it) {
    IterationCounts c;
    c.reset(TraceShape{L, G, E});
    for (int l = 0; l < L; ++l)
      for (int g = 0; g < G; ++g)
        for (int t = 0; t < 40; ++t) {
          // Skewed: expert min(e1, e2) of two uniform draws.
          const auto e = static_cast<int>(std::min(rng() % 5, rng() % 5));
          c.at(l, g, e)++;
        }
    for (int l = 0; l < L; ++l) {
      LayerDispatch d;
      f.policy->dispatch(l, c.layer_ptr(l), pl, d);
      std::int64_t acc = 0;
      std::vector<std::int64_t> acc_expert(E, 0);
      for (int src = 0; src < G; ++src) {
        std::vector<std::int64_t> per_expert(E, 0);
        for (int s = 0; s < G * S; ++s) {
          const std::size_t i = static_cast<std::size_t>(src) * G * S + s;
          CHECK(d.accepted[i] <= d.buffered[i]);
          acc += d.accepted[i];
          per_expert[pl.expert_of_slot[l][s]] += d.accepted[i];
          acc_expert[pl.expert_of_slot[l][s]] += d.accepted[i];
        }
        // A slot only gets its own expert's tokens: per expert never more than the source sent.
        for (int e = 0; e < E; ++e) CHECK(per_expert[e] <= c.at(l, src, e));
      }
      CHECK(d.routed == acc + d.dropped);
      CHECK(d.routed == G * 40);
      const auto loads = expert_loads(c.layer_ptr(l), G, E);
      std::int64_t want_drop = 0;
      for (int e = 0; e < E; ++e) {
        const auto r = static_cast<std::int64_t>(pl.replicas(l, e).size());
        CHECK(acc_expert[e] == std::min(loads[e], r * cap));
        want_drop += loads[e] - std::min(loads[e], r * cap);
      }
      CHECK(d.dropped == want_drop);
    }
    PolicyDecision dec = f.policy->after_iteration(it, c, pl);
    REQUIRE(dec.new_placement);
    CHECK(dec.movements.empty());
    const Placement& next = dec.placement;
    CHECK(next.gpus == G);
    CHECK(next.slots_per_gpu == S);
    double weight_shards = 0.0, missing = 0.0;
    for (int l = 0; l < L; ++l) {
      REQUIRE(next.expert_of_slot[l].size() == static_cast<std::size_t>(G * S));
      const auto loads = expert_loads(c.layer_ptr(l), G, E);
      std::vector<double> pop(loads.begin(), loads.end());
      const auto want = symi_replica_counts(pop, G * S);
      for (int e = 0; e < E; ++e) {
        CHECK(static_cast<int>(next.replicas(l, e).size()) == want[e]);
        CHECK(want[e] >= 1);
      }
      CHECK(std::is_sorted(next.expert_of_slot[l].begin(), next.expert_of_slot[l].end()));
      // Per expert: owner nodes without a replica in current; shards sent to holders in next.
      for (int e = 0; e < E; ++e) {
        std::set<int> gpus_next, nodes_next, nodes_cur;
        for (int s : next.replicas(l, e)) {
          gpus_next.insert(next.gpu_of_slot(s));
          nodes_next.insert(f.cluster.node_of(next.gpu_of_slot(s)));
        }
        for (int s : pl.replicas(l, e)) nodes_cur.insert(f.cluster.node_of(pl.gpu_of_slot(s)));
        weight_shards += static_cast<double>(3 * gpus_next.size() - nodes_next.size());
        missing += static_cast<double>(3 - nodes_cur.size());
      }
    }
    SyncPlan sp = f.policy->sync_plan(it, pl, next);
    // Every expert's optimizer lives once, spread over the hosts: E x layers x 1000 parameters.
    CHECK(sum(sp.host_optimizer_params) == Approx(E * L * 1000.0));
    CHECK(sp.host_optimizer_params[0] == Approx(E * L * 1000.0 / 3));
    // Every (layer, expert, node) shard goes down once and up once.
    CHECK(sum(sp.d2h_bytes) == Approx(E * L * 2000.0));
    CHECK(sum(sp.h2d_bytes) == Approx(E * L * 2000.0));
    // Gradients cross to another GPU only for the owner nodes that hold no replica (one shard of
    // 2000 / 3 B each).
    CHECK(transfer_bytes(sp.gradient_transfers) == Approx(missing * 2000.0 / 3));
    // Every GPU that holds an expert in `next` receives its full weights: each node's shard goes
    // up the PCIe once (on a GPU of that node holding the expert, else on the node's relay GPU)
    // and travels to every other holder. Per (layer, expert): (3 nodes x holders - nodes holding
    // it) shards of 2000 / 3 B.
    double arriving = 0.0;
    for (const Transfer& t : sp.weight_transfers) {
      CHECK_FALSE(t.src.host);
      CHECK_FALSE(t.dst.host);
      CHECK(t.src.index != t.dst.index);
      arriving += t.bytes;
    }
    CHECK(arriving == Approx(weight_shards * 2000.0 / 3));
    pl = next;
  }
}

TEST_CASE("symi end to end: fewer drops than static on a skewed trace, nothing moved", "[symi]") {
  const std::string text =
      "name: symi-e2e\n"
      "cluster: {preset: swiftmoe-cloud, nodes: 4}\n"
      "model: {preset: gpt-small-moe, layers: 2}\n"
      "placement: {slots_per_gpu: 4}\n"
      "trace: {kind: synthetic, skew: 1.5}\n"
      "run: {max_iterations: 20, stop_at_convergence: false}\n"
      "policies:\n"
      "  - {name: static, capacity_factor: 1.0, min_capacity: 2}\n"
      "  - {name: symi, capacity_factor: 1.0}\n";
  Scenario s = load_scenario_text(text, "t.yaml", {}, std::nullopt);
  const auto res = run_scenario(s, RunOptions{false, {}});
  REQUIRE(res.size() == 2);
  const PolicyResult& st = res[0];
  const PolicyResult& sy = res[1];
  REQUIRE_FALSE(sy.oom);
  CHECK(sy.name == "symi");
  CHECK(sy.iterations_run == 20);
  CHECK(st.drop_rate > 0.0);
  CHECK(sy.drop_rate < st.drop_rate);
  CHECK(sy.mean_moved_bytes == 0.0);
  // Host optimizer state: 16 experts x 2 layers over 4 nodes, 12 B per parameter (no dense
  // parameters on the host without training.optimizer_offload).
  CHECK(sy.peak_host_memory_bytes == Approx(16.0 * 2.0 * s.model.expert_params() / 4.0 * 12.0));
  CHECK(sy.parameters["slot_capacity"] == 512);  // 1.0 x 2048 tokens x 4 GPUs / 16 slots
}

TEST_CASE("symi sync plan equals its flows added one by one", "[symi]") {
  // The rules applied per (layer, expert, owner node) with each shard added as it comes, merged
  // per (source, destination) in a map, on random placements (experts missing from either one,
  // several replicas on one node) and both optimizer locations. Equal to the last bit: the same
  // shard sizes are summed.
  struct Shape {
    int nodes, gpn, slots, experts;
  };
  const std::vector<Shape> shapes = {{3, 2, 2, 5}, {4, 3, 2, 7}, {5, 1, 3, 4}, {2, 4, 2, 9}};
  for (const Shape& sh : shapes) {
    for (const bool on_host : {true, false}) {
      INFO(sh.nodes << " x " << sh.gpn << " GPUs, " << sh.slots << " slots, " << sh.experts
                    << " experts, optimizer_on_host " << on_host);
      SymiFixture f(sh.nodes, sh.gpn, sh.slots, sh.experts, 3, 40,
                    on_host ? "{name: symi}" : "{name: symi, optimizer_on_host: false}");
      const int N = sh.nodes, gpn = sh.gpn, G = N * gpn, E = sh.experts, L = 3, slots = G * sh.slots;
      const double grad = 2000.0 / N, weight = 2000.0 / N, param = 1000.0 / N;
      std::mt19937_64 rng(99 + static_cast<unsigned>(G * 13 + E));
      for (int trial = 0; trial < 10; ++trial) {
        Placement cur = f.placement, next = f.placement;
        for (int l = 0; l < L; ++l)
          for (int s = 0; s < slots; ++s) {
            cur.expert_of_slot[l][s] = static_cast<int>(rng() % E);
            next.expert_of_slot[l][s] = static_cast<int>(rng() % E);
          }
        SyncPlan want;
        want.resize(G, N);
        std::map<std::pair<int, int>, double> grads, weights;
        for (int l = 0; l < L; ++l)
          for (int e = 0; e < E; ++e) {
            std::vector<int> hc, hn;  // distinct holders, ascending
            for (int s : cur.replicas(l, e))
              if (hc.empty() || hc.back() != cur.gpu_of_slot(s)) hc.push_back(cur.gpu_of_slot(s));
            for (int s : next.replicas(l, e))
              if (hn.empty() || hn.back() != next.gpu_of_slot(s)) hn.push_back(next.gpu_of_slot(s));
            std::size_t rr = 0;
            for (int n = 0; n < N; ++n) {
              const int home = n * gpn + e % gpn;
              int src = -1;
              if (!on_host && std::find(hc.begin(), hc.end(), home) != hc.end()) src = home;
              for (std::size_t i = 0; src < 0 && i < hc.size(); ++i)
                if (hc[i] / gpn == n) src = hc[i];
              if (src < 0 && !hc.empty()) src = hc[rr++ % hc.size()];
              if (src >= 0 && on_host) {
                const int down = src / gpn == n ? src : home;
                if (down != src) grads[{src, down}] += grad;
                want.d2h_bytes[down] += grad;
              } else if (src >= 0 && src != home) {
                grads[{src, home}] += grad;
              }
              int up = home;
              if (on_host) {
                want.host_optimizer_params[n] += param;
                for (int g : hn)
                  if (g / gpn == n) {
                    up = g;
                    break;
                  }
                want.h2d_bytes[up] += weight;
              } else {
                want.gpu_optimizer_params[home] += param;
              }
              for (int g : hn)
                if (g != up) weights[{up, g}] += weight;
            }
          }
        const SyncPlan got = f.policy->sync_plan(trial, cur, next);
        CHECK(got.d2h_bytes == want.d2h_bytes);
        CHECK(got.h2d_bytes == want.h2d_bytes);
        CHECK(got.host_optimizer_params == want.host_optimizer_params);
        CHECK(got.gpu_optimizer_params == want.gpu_optimizer_params);
        auto same = [](const std::vector<Transfer>& ts, const std::map<std::pair<int, int>, double>& flows) {
          if (ts.size() != flows.size()) return false;
          auto it = flows.begin();
          for (const Transfer& t : ts) {
            if (t.src.host || t.dst.host || t.src.index != it->first.first || t.dst.index != it->first.second ||
                t.bytes != it->second)
              return false;
            ++it;
          }
          return true;
        };
        CHECK(same(got.gradient_transfers, grads));
        CHECK(same(got.weight_transfers, weights));
        CHECK_FALSE(grads.empty());
      }
    }
  }
}

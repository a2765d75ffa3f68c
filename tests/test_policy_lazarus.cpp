// Lazarus: the replica-count formula and the local-first dispatch on hand cases, the re-plan
// interval, invariants on random counts, and an end-to-end run.
#include <catch2/catch.hpp>

#include "tests/policy_fixture.hpp"

#include <algorithm>
#include <optional>
#include <random>
#include <set>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"

using namespace moesim;

namespace {

using LazFx = testing::SingleGpuNodes;

IterationCounts one_source(int gpus, const std::vector<std::int64_t>& loads) {
  IterationCounts ic;
  ic.reset({1, gpus, static_cast<int>(loads.size())});
  for (int e = 0; e < static_cast<int>(loads.size()); ++e) ic.at(0, 0, e) = loads[e];
  return ic;
}

std::vector<int> replica_count(const Placement& p, int layer, int experts) {
  std::vector<int> r(experts, 0);
  for (int e : p.expert_of_slot[layer])
    if (e >= 0) r[e]++;
  return r;
}

// Every expert's replicas sit on distinct GPUs.
bool distinct_gpus(const Placement& p, int layer, int experts) {
  for (int e = 0; e < experts; ++e) {
    std::set<int> gpus;
    const auto reps = p.replicas(layer, e);
    for (int s : reps) gpus.insert(p.gpu_of_slot(s));
    if (gpus.size() != reps.size()) return false;
  }
  return true;
}

double total_bytes(const std::vector<Movement>& ms) {
  double b = 0;
  for (const auto& m : ms) b += m.transfer.bytes;
  return b;
}

}  // namespace

TEST_CASE("lazarus: replica counts r_e = max(floor(t_e / sum_{e'>=e} t_e' * (slots - sum_{e'<e} r_e')), f)",
          "[lazarus]") {
  // 6 GPUs x 2 slots = 12 slots, 4 experts, loads e0..e3 = 10, 40, 20, 30 (total 100).
  const IterationCounts ic = one_source(6, {10, 40, 20, 30});
  SECTION("f = 1") {
    LazFx f(6, 2, 4, 1, 100, "{name: lazarus, min_replicas: 1, interval: 1}");
    // Uniform loads at the start: 12/4 = 3, 9/3 = 3, 6/2 = 3, 3 each; dealt round-robin over
    // GPU-major positions: e0 -> GPUs 0,1,2; e1 -> 3,4,5; e2 -> 0,1,2; e3 -> 3,4,5.
    const Placement cur = f.policy->initial_placement();
    REQUIRE(cur.expert_of_slot[0] == std::vector<int>{0, 2, 0, 2, 0, 2, 1, 3, 1, 3, 1, 3});
    // Ascending load order e0 (10), e2 (20), e3 (30), e1 (40):
    //   e0: floor(10/100 * 12) = floor(1.2)  = 1 -> max(1, 1) = 1; 11 slots, 90 load left
    //   e2: floor(20/90 * 11)  = floor(2.44) = 2;                  9 slots, 70 left
    //   e3: floor(30/70 * 9)   = floor(3.86) = 3;                  6 slots, 40 left
    //   e1: floor(40/40 * 6)   = 6.
    PolicyDecision d = f.policy->after_iteration(0, ic, cur);
    REQUIRE(d.new_placement);
    CHECK(replica_count(d.placement, 0, 4) == std::vector<int>{1, 6, 2, 3});
    // Kept in place: e0 on GPU0, e2 on GPUs 0 and 1, e1 and e3 on GPUs 3..5; slots 2, 4, 5 free.
    // e1's three new replicas: GPU1 (slot 2), GPU2 (slot 4); the last free slot is on GPU2,
    // which now holds e1, so e0 moves from GPU0 (slot 0) into GPU2's slot 5 and e1 takes slot 0.
    CHECK(d.placement.expert_of_slot[0] == std::vector<int>{1, 2, 1, 2, 1, 0, 1, 3, 1, 3, 1, 3});
    CHECK(distinct_gpus(d.placement, 0, 4));
    // Moves: e1 into slots 0, 2, 4 from GPU3 (its first holder); e0 into slot 5 comes from
    // GPU2's own old slot 4 (no link). Each carries weights + optimizer state.
    REQUIRE(d.movements.size() == 3);
    for (const auto& m : d.movements) {
      CHECK(m.transfer.src.index == 3);
      CHECK(m.transfer.bytes == 2000.0 + 12000.0);
      CHECK(m.blocking);
    }
    CHECK(total_bytes(d.movements) == total_bytes(placement_moves(f.ctx, cur, d.placement, true, true)));
  }
  SECTION("f = 2 (the default when slots leave room: 12 > 2 x 4)") {
    LazFx f(6, 2, 4, 1, 100, "{name: lazarus, interval: 1}");
    CHECK(f.policy->parameters()["min_replicas"] == 2);
    //   e0: floor(1.2) = 1 -> max(1, 2) = 2; 10 slots, 90 left
    //   e2: floor(20/90 * 10) = floor(2.22) = 2; 8 slots, 70 left
    //   e3: floor(30/70 * 8)  = floor(3.43) = 3; 5 slots, 40 left
    //   e1: floor(40/40 * 5)  = 5.
    PolicyDecision d = f.policy->after_iteration(0, ic, f.policy->initial_placement());
    REQUIRE(d.new_placement);
    CHECK(replica_count(d.placement, 0, 4) == std::vector<int>{2, 5, 2, 3});
    CHECK(distinct_gpus(d.placement, 0, 4));
  }
  SECTION("f = 1 by default when 2 replicas each would fill every slot (or do not fit)") {
    LazFx exact(4, 2, 4, 1, 100, "{name: lazarus}");  // 8 slots = 2 x 4
    CHECK(exact.policy->parameters()["min_replicas"] == 1);
    LazFx few(6, 1, 4, 1, 100, "{name: lazarus}");
    CHECK(few.policy->parameters()["min_replicas"] == 1);
  }
}

TEST_CASE("lazarus: local tokens first, the rest by remaining capacity", "[lazarus]") {
  // 3 GPUs x 1 slot: e0 on GPUs 0 and 1, e1 on GPU 2. 10 tokens per GPU, cf 1: each replica
  // takes ceil(1 x 1 x 10 x 3 / 3) = 10.
  LazFx f(3, 1, 2, 1, 10, "{name: lazarus}");
  Placement pl;
  pl.gpus = 3;
  pl.slots_per_gpu = 1;
  pl.expert_of_slot = {{0, 0, 1}};
  // counts [src][expert]: GPU0 8, 2; GPU1 4, 6; GPU2 6, 4.
  const std::int64_t counts[] = {8, 2, 4, 6, 6, 4};
  LayerDispatch d;
  f.policy->dispatch(0, counts, pl, d);
  // e0: GPU0 keeps its 8 (replica 0 has 2 left), GPU1 its 4 (replica 1 has 6 left). GPU2's 6
  //     split by remaining capacity 2 : 6 -> 1.5 and 4.5 -> 1 and 4, the remainder unit to
  //     the lower slot (equal fractions): 2 and 4.
  // e1: GPU2 keeps its 4 (6 left). GPU0 has 2 and GPU1 6 left over: 8 > 6, so 6 fit, shared
  //     as 6 x 2/8 = 1.5 and 6 x 6/8 = 4.5 -> 2 (lower source) and 4; GPU1 loses 2.
  CHECK(d.accepted == std::vector<std::int64_t>{8, 0, 2,  //
                                                0, 4, 4,  //
                                                2, 4, 4});
  CHECK(d.buffered == d.accepted);
  CHECK(d.routed == 30);
  CHECK(d.dropped == 2);
}

TEST_CASE("lazarus: re-plans every interval from the loads of the window", "[lazarus]") {
  const IterationCounts hot = one_source(6, {10, 40, 20, 30});
  const IterationCounts zero = one_source(6, {0, 0, 0, 0});
  SECTION("window = interval (default): iterations 0 and 1 summed") {
    LazFx f(6, 2, 4, 1, 100, "{name: lazarus, min_replicas: 1, interval: 2}");
    const Placement cur = f.policy->initial_placement();
    CHECK_FALSE(f.policy->after_iteration(0, hot, cur).new_placement);
    PolicyDecision d = f.policy->after_iteration(1, zero, cur);
    REQUIRE(d.new_placement);
    CHECK(replica_count(d.placement, 0, 4) == std::vector<int>{1, 6, 2, 3});
  }
  SECTION("window 1: only the zeros of iteration 1, an even split (3 each) that changes nothing") {
    LazFx f(6, 2, 4, 1, 100, "{name: lazarus, min_replicas: 1, interval: 2, load_window: 1}");
    const Placement cur = f.policy->initial_placement();
    CHECK_FALSE(f.policy->after_iteration(0, hot, cur).new_placement);
    CHECK_FALSE(f.policy->after_iteration(1, zero, cur).new_placement);
  }
}

TEST_CASE("lazarus: invariants on random counts", "[lazarus]") {
  // 4 GPUs x 3 slots, 4 experts, f = 2 (default), 2 layers, re-plan every 3 iterations.
  const int G = 4, S = 3, E = 4, L = 2;
  const std::int64_t T = 64;
  for (const std::string params : {"{name: lazarus, interval: 3}", "{name: lazarus, interval: 3, capacity_factor: 0.6, "
                                                                   "min_replicas: 1, load_window: 1}"}) {
    INFO(params);
    LazFx f(G, S, E, L, T, params);
    const double cf = f.policy->parameters()["capacity_factor"].get<double>();
    const int fmin = f.policy->parameters()["min_replicas"].get<int>();
    const auto cap = static_cast<std::int64_t>(std::ceil(cf * static_cast<double>(T) * G / (G * S)));
    std::mt19937_64 rng(77);
    Placement pl = f.policy->initial_placement();
    int replans = 0;
    for (int it = 0; it < 50; ++it) {
      const IterationCounts ic = testing::drawn_counts({L, G, E}, T, rng, [&](int l, int e) {
        return 1.0 / static_cast<double>(1 + (e + it / 7 + l) % E) + 0.05 * static_cast<double>(rng() % 4);
      });
      for (int l = 0; l < L; ++l) {
        const std::int64_t* c = ic.layer_ptr(l);
        const LayerDispatch d = testing::dispatch_checked(*f.policy, l, ic, pl);
        const int slots = pl.num_slots();
        const std::int64_t routed = d.routed;
        std::int64_t acc = 0;
        std::vector<std::int64_t> slot_total(slots, 0), per(static_cast<std::size_t>(G) * E, 0),
            local(static_cast<std::size_t>(G) * E, 0);
        for (int src = 0; src < G; ++src)
          for (int sl = 0; sl < slots; ++sl) {
            const std::int64_t a = d.accepted[static_cast<std::size_t>(src) * slots + sl];
            REQUIRE(a >= 0);
            REQUIRE(a == d.buffered[static_cast<std::size_t>(src) * slots + sl]);
            acc += a;
            slot_total[sl] += a;
            if (a == 0) continue;
            const int e = pl.expert_of_slot[l][sl];
            REQUIRE(e >= 0);
            per[static_cast<std::size_t>(src) * E + e] += a;
            if (pl.gpu_of_slot(sl) == src) local[static_cast<std::size_t>(src) * E + e] += a;
          }
        REQUIRE(acc + d.dropped == routed);
        for (int sl = 0; sl < slots; ++sl) REQUIRE(slot_total[sl] <= cap);
        for (int src = 0; src < G; ++src)
          for (int e = 0; e < E; ++e) {
            const std::size_t i = static_cast<std::size_t>(src) * E + e;
            REQUIRE(per[i] <= c[i]);
            // Local first: the source's own replicas take min(count, their capacity).
            std::int64_t n_local = 0;
            for (int s : pl.replicas(l, e))
              if (pl.gpu_of_slot(s) == src) ++n_local;
            REQUIRE(local[i] == std::min(c[i], n_local * cap));
          }
      }
      PolicyDecision dec = f.policy->after_iteration(it, ic, pl);
      if ((it + 1) % 3 != 0) REQUIRE_FALSE(dec.new_placement);
      if (!testing::replaced(dec, G, S)) continue;
      ++replans;
      const Placement& nx = dec.placement;
      for (int l = 0; l < L; ++l) {
        REQUIRE(static_cast<int>(nx.expert_of_slot[l].size()) == G * S);
        const auto r = replica_count(nx, l, E);
        int sum = 0;
        for (int e = 0; e < E; ++e) {
          REQUIRE(r[e] >= fmin);
          sum += r[e];
        }
        REQUIRE(sum == G * S);  // every slot filled
        if (*std::max_element(r.begin(), r.end()) <= G) REQUIRE(distinct_gpus(nx, l, E));
      }
      const auto expect = placement_moves(f.ctx, pl, nx, true, true);
      REQUIRE(dec.movements.size() == expect.size());
      REQUIRE(total_bytes(dec.movements) == total_bytes(expect));
      pl = nx;
    }
    CHECK(replans > 0);
  }
}

TEST_CASE("lazarus: rejects a minimum the slots cannot hold", "[lazarus]") {
  REQUIRE_THROWS_WITH(LazFx(4, 3, 4, 1, 10, "{name: lazarus, min_replicas: 4}"),
                      Catch::Matchers::Contains("need 16 slots but there are 12"));
  REQUIRE_THROWS_WITH(LazFx(4, 3, 4, 1, 10, "{name: lazarus, capacity_factor: 0}"),
                      Catch::Matchers::Contains("must be > 0"));
  REQUIRE_THROWS_WITH(LazFx(2, 1, 4, 1, 10, "{name: lazarus}"), Catch::Matchers::Contains("at least one slot per expert"));
}

TEST_CASE("lazarus: end to end, re-planning replicas cuts drops", "[lazarus]") {
  const auto res = testing::replanned_and_frozen("lazarus", 12);
  const PolicyResult& lz = res[0];
  const PolicyResult& frozen = res[1];
  CHECK(lz.mean_moved_bytes > 0.0);
  CHECK(frozen.mean_moved_bytes == 0.0);
  // Frozen: 3 replicas of every expert whatever its load; re-planned: hot experts get more
  // replicas, hence more capacity. (The compute imbalance is no test: capacity caps every
  // replica of the frozen placement, which levels its GPUs by dropping.)
  CHECK(frozen.drop_rate > 0.25);
  CHECK(lz.drop_rate < 0.75 * frozen.drop_rate);
}

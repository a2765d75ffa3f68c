// DeepSeek EPLB: the planner on cases worked out by hand (including the EPLB README example),
// the policy's invariants on random loads, and an end-to-end run against static placement.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>
#include <string>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/common.hpp"
#include "policies/eplb.hpp"
#include "policies/registry.hpp"
#include "core/error.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

struct EplbFixture : testing::PolicyWorld {
  // `nodes` x `gpn` GPUs, `slots` per GPU, `experts` experts, `layers` MoE layers.
  EplbFixture(int nodes, int gpn, int slots, int experts, int layers, std::int64_t tokens,
              const std::string& params)
      : PolicyWorld(nodes, gpn, slots, experts, layers, tokens) {
    model.top_k = 1;
    model.hidden = 1000;
    build(params);
  }
};

std::vector<int> replica_counts(const std::vector<int>& phy2log, int experts) {
  std::vector<int> c(experts, 0);
  for (int e : phy2log) c[e]++;
  return c;
}

// The straightforward planner and movement list the fast ones replaced (a full sort, a heap of
// every pack, a scan of every holder), kept to check that the fast ones agree exactly.
namespace ref {

eplb::Packing balanced_packing(const std::vector<double>& weight, int packs) {
  const int n = static_cast<int>(weight.size());
  const int per_pack = n / packs;
  eplb::Packing out;
  out.pack.assign(n, 0);
  out.rank.assign(n, 0);
  if (per_pack == 1) {
    std::iota(out.pack.begin(), out.pack.end(), 0);
    return out;
  }
  std::vector<std::pair<double, int>> order(n);
  for (int i = 0; i < n; ++i) order[i] = {-weight[i], i};
  std::sort(order.begin(), order.end());
  std::vector<double> load(packs, 0.0);
  std::vector<int> items(packs, 0);
  for (const auto& [neg_w, i] : order) {
    int p = -1;
    for (int q = 0; q < packs; ++q)
      if (items[q] < per_pack && (p < 0 || load[q] < load[p])) p = q;
    out.pack[i] = p;
    out.rank[i] = items[p]++;
    load[p] -= neg_w;
  }
  return out;
}

eplb::Replication replicate_experts(const std::vector<double>& weight, int physical) {
  const int n = static_cast<int>(weight.size());
  eplb::Replication out;
  out.phy2log.resize(physical);
  out.rank.assign(physical, 0);
  out.count.assign(n, 1);
  std::iota(out.phy2log.begin(), out.phy2log.begin() + n, 0);
  for (int i = n; i < physical; ++i) {
    int e = 0;
    for (int x = 1; x < n; ++x)
      if (weight[x] / out.count[x] > weight[e] / out.count[e]) e = x;
    out.phy2log[i] = e;
    out.rank[i] = out.count[e]++;
  }
  return out;
}

eplb::LayerPlan rebalance(const std::vector<double>& weight, int physical, int groups, int nodes, int gpus) {
  if (groups % nodes != 0) groups = nodes = 1;
  const int E = static_cast<int>(weight.size());
  const int group_size = E / groups, groups_per_node = groups / nodes;
  const int per_gpu = physical / gpus, gpus_per_node = gpus / nodes;
  const int phys_per_node = physical / nodes, log_per_node = E / nodes;
  std::vector<double> group_load(groups, 0.0);
  for (int e = 0; e < E; ++e) group_load[e / group_size] += weight[e];
  const auto gp = balanced_packing(group_load, nodes);
  std::vector<int> mlog2log(E);
  for (int e = 0; e < E; ++e) {
    const int g = e / group_size;
    mlog2log[(gp.pack[g] * groups_per_node + gp.rank[g]) * group_size + e % group_size] = e;
  }
  eplb::LayerPlan out;
  out.phy2log.assign(physical, -1);
  out.replica_rank.assign(physical, 0);
  out.count.assign(E, 0);
  for (int node = 0; node < nodes; ++node) {
    const int* local2log = mlog2log.data() + static_cast<std::size_t>(node) * log_per_node;
    std::vector<double> w(log_per_node), per_phy(phys_per_node);
    for (int i = 0; i < log_per_node; ++i) w[i] = weight[local2log[i]];
    const auto rep = replicate_experts(w, phys_per_node);
    for (int p = 0; p < phys_per_node; ++p) per_phy[p] = w[rep.phy2log[p]] / rep.count[rep.phy2log[p]];
    const auto pk = balanced_packing(per_phy, gpus_per_node);
    for (int p = 0; p < phys_per_node; ++p) {
      const int slot = node * phys_per_node + pk.pack[p] * per_gpu + pk.rank[p];
      out.phy2log[slot] = local2log[rep.phy2log[p]];
      out.replica_rank[slot] = rep.rank[p];
    }
    for (int i = 0; i < log_per_node; ++i) out.count[local2log[i]] = rep.count[i];
  }
  return out;
}

std::vector<Movement> placement_moves(const PolicyContext& ctx, const Placement& from, const Placement& to,
                                      bool with_optimizer, bool blocking) {
  std::vector<Movement> out;
  const int S = to.slots_per_gpu;
  const int gpn = ctx.cluster->gpus_per_node;
  const double bytes = ctx.expert_weight_bytes + (with_optimizer ? ctx.expert_optimizer_bytes : 0.0);
  for (int l = 0; l < static_cast<int>(to.expert_of_slot.size()); ++l) {
    for (int s = 0; s < to.num_slots(); ++s) {
      const int e = to.expert_of_slot[l][s];
      if (e < 0 || from.expert_of_slot[l][s] == e) continue;
      const int dst = s / S;
      int src = -1;
      for (int hs = 0; hs < from.num_slots(); ++hs) {
        if (from.expert_of_slot[l][hs] != e) continue;
        const int g = hs / S;
        if (g == dst) {
          src = g;
          break;
        }
        if (src < 0 || (g / gpn == dst / gpn && src / gpn != dst / gpn)) src = g;
      }
      if (src == dst) continue;
      Movement m;
      m.transfer.dst = Endpoint{false, dst};
      m.transfer.src = src >= 0 ? Endpoint{false, src} : Endpoint{true, dst / gpn};
      m.transfer.bytes = bytes;
      m.blocking = blocking;
      m.what =
          "layer " + std::to_string(l) + " expert " + std::to_string(e) + " to slot " + std::to_string(s);
      out.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace ref

// Random weights with many ties and zeros (small integers) or none (continuous).
std::vector<double> random_weights(std::mt19937_64& rng, int n, bool ties) {
  std::vector<double> w(n);
  for (auto& x : w)
    x = ties ? static_cast<double>(rng() % 4) : std::uniform_real_distribution<double>(0.0, 1000.0)(rng);
  return w;
}

}  // namespace

TEST_CASE("eplb: balanced packing by hand", "[eplb]") {
  // Heaviest first: items 0(5) 2(4) 4(3) 5(3) 3(2) 1(1); packs of 3.
  // 0 -> p0 (5); 2 -> p1 (4); 4 -> p1 (4 < 5: 7); 5 -> p0 (5 < 7: 8); 3 -> p1 (7 < 8: 9, full);
  // 1 -> p0 (9). Pack 0 = {0, 5, 1}, pack 1 = {2, 4, 3}, ranks in arrival order.
  const auto p = eplb::balanced_packing({5, 1, 4, 2, 3, 3}, 2);
  CHECK(p.pack == std::vector<int>{0, 0, 1, 1, 1, 0});
  CHECK(p.rank == std::vector<int>{0, 2, 0, 2, 1, 1});
  // Ties: equal weights go to the lower pack index first, items in index order.
  const auto t = eplb::balanced_packing({1, 1, 1, 1}, 2);
  CHECK(t.pack == std::vector<int>{0, 1, 0, 1});
  CHECK(t.rank == std::vector<int>{0, 0, 1, 1});
  // One item per pack: item i in pack i whatever the weights (the reference's shortcut).
  const auto one = eplb::balanced_packing({3, 1, 2}, 3);
  CHECK(one.pack == std::vector<int>{0, 1, 2});
  CHECK(one.rank == std::vector<int>{0, 0, 0});
  CHECK_THROWS(eplb::balanced_packing({1, 2, 3}, 2));
}

TEST_CASE("eplb: replication gives each extra slot to the largest load per replica", "[eplb]") {
  // Loads [100, 60, 50], 6 physical: 3 extra.
  // 1st: max(100, 60, 50) -> e0 (now 50 per replica); 2nd: max(50, 60, 50) -> e1 (now 30);
  // 3rd: max(50, 30, 50): e0 and e2 tie at 50 -> the lower index, e0 (third replica).
  const auto r = eplb::replicate_experts({100, 60, 50}, 6);
  CHECK(r.phy2log == std::vector<int>{0, 1, 2, 0, 1, 0});
  CHECK(r.rank == std::vector<int>{0, 0, 0, 1, 1, 2});
  CHECK(r.count == std::vector<int>{3, 2, 1});
  CHECK_THROWS(eplb::replicate_experts({1, 2, 3}, 2));
}

TEST_CASE("eplb: the fast planner agrees with the straightforward one", "[eplb]") {
  std::mt19937_64 rng(2024);
  eplb::Planner planner;  // one for every case: reused buffers must not leak between shapes
  for (int trial = 0; trial < 400; ++trial) {
    const bool ties = trial % 2 == 0;
    // Packing alone: 1 to 4 items per pack (2 takes a shortcut of its own).
    const int packs = 1 + static_cast<int>(rng() % 9), per_pack = 1 + static_cast<int>(rng() % 4);
    const auto items = random_weights(rng, packs * per_pack, ties);
    const auto pk = eplb::balanced_packing(items, packs);
    const auto pk_ref = ref::balanced_packing(items, packs);
    REQUIRE(pk.pack == pk_ref.pack);
    REQUIRE(pk.rank == pk_ref.rank);
    // Replication alone.
    const auto w = random_weights(rng, 1 + static_cast<int>(rng() % 12), ties);
    const int physical = static_cast<int>(w.size()) + static_cast<int>(rng() % 20);
    const auto rep = eplb::replicate_experts(w, physical);
    const auto rep_ref = ref::replicate_experts(w, physical);
    REQUIRE(rep.phy2log == rep_ref.phy2log);
    REQUIRE(rep.rank == rep_ref.rank);
    REQUIRE(rep.count == rep_ref.count);
    // The whole plan, hierarchical or global: nodes | groups | experts, nodes | gpus | physical.
    const int nodes = 1 + static_cast<int>(rng() % 3), gpn = 1 + static_cast<int>(rng() % 3);
    const int groups = nodes * (1 + static_cast<int>(rng() % 2)) + (rng() % 4 == 0 ? 1 : 0);
    const int E = groups * (1 + static_cast<int>(rng() % 4));
    const int gpus = nodes * gpn;
    int slots = gpus * (1 + static_cast<int>(rng() % 4));
    while (slots < E) slots += gpus;
    const auto lw = random_weights(rng, E, ties);
    const auto want = ref::rebalance(lw, slots, groups, nodes, gpus);
    const auto& got = planner.rebalance(lw, slots, groups, nodes, gpus);
    REQUIRE(got.phy2log == want.phy2log);
    REQUIRE(got.replica_rank == want.replica_rank);
    REQUIRE(got.count == want.count);
    REQUIRE(eplb::rebalance(lw, slots, groups, nodes, gpus).phy2log == want.phy2log);
  }
  // Skewed loads at a larger scale (64 experts, 64 GPUs x 2 or 3 slots), global and 4 nodes,
  // as token counts averaged over a window are: integers divided by the window.
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<double> lw(64);
    for (int e = 0; e < 64; ++e)
      lw[e] = std::floor(5000.0 / (1 + (e * 7 + trial) % 64) + static_cast<double>(rng() % 50)) / 3.0;
    const int slots = 64 * (2 + trial % 2), groups = trial < 3 ? 1 : 8;
    const auto want = ref::rebalance(lw, slots, groups, 4, 64);
    const auto& got = planner.rebalance(lw, slots, groups, 4, 64);
    REQUIRE(got.phy2log == want.phy2log);
    REQUIRE(got.replica_rank == want.replica_rank);
  }
}

TEST_CASE("eplb: placement_moves agrees with the straightforward scan of every holder", "[eplb]") {
  // 3 nodes x 2 GPUs x 3 slots, 5 experts: random placements with empty slots, experts held
  // nowhere (from the host), on the destination GPU (free), on its node or only elsewhere.
  const int G = 6, S = 3, E = 5, L = 4;
  EplbFixture f(3, 2, S, E, L, 10, "{name: eplb}");
  std::mt19937_64 rng(7);
  auto random_placement = [&]() {
    Placement p;
    p.gpus = G;
    p.slots_per_gpu = S;
    p.expert_of_slot.assign(L, std::vector<int>(G * S));
    for (auto& layer : p.expert_of_slot)
      for (int& x : layer) x = static_cast<int>(rng() % (E + 1)) - 1;
    return p;
  };
  for (int trial = 0; trial < 200; ++trial) {
    const Placement from = random_placement();
    Placement to = random_placement();
    to.expert_of_slot[1] = from.expert_of_slot[1];  // an unchanged layer
    for (const bool opt : {false, true}) {
      const auto got = placement_moves(f.ctx, from, to, opt, trial % 2 == 0);
      const auto want = ref::placement_moves(f.ctx, from, to, opt, trial % 2 == 0);
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        REQUIRE(got[i].transfer.src.host == want[i].transfer.src.host);
        REQUIRE(got[i].transfer.src.index == want[i].transfer.src.index);
        REQUIRE(got[i].transfer.dst.host == want[i].transfer.dst.host);
        REQUIRE(got[i].transfer.dst.index == want[i].transfer.dst.index);
        REQUIRE(got[i].transfer.bytes == want[i].transfer.bytes);
        REQUIRE(got[i].blocking == want[i].blocking);
        REQUIRE(got[i].what == want[i].what);
      }
    }
  }
}

TEST_CASE("eplb: the EPLB README example reproduces exactly", "[eplb]") {
  // github.com/deepseek-ai/EPLB README: 12 experts, 16 physical, 4 groups, 2 nodes, 8 GPUs.
  const std::vector<double> w{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86};
  const auto p = eplb::rebalance(w, 16, 4, 2, 8);
  CHECK(p.hierarchical);
  CHECK(p.phy2log == std::vector<int>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1});
  CHECK(p.count == std::vector<int>{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1});
  CHECK(p.count == replica_counts(p.phy2log, 12));
  // Replica ranks: the second copy of an expert has rank 1.
  CHECK(p.replica_rank[0] == 0);  // first 5
  CHECK(p.replica_rank[2] == 1);  // second 5
}

TEST_CASE("eplb: global policy on 4 experts, 6 slots, 2 GPUs by hand", "[eplb]") {
  // Loads [10, 40, 20, 30]. Replication: e1 (40) -> 20 per replica, then e3 (30) -> 15.
  // Physical [e0 e1 e2 e3 e1 e3] with loads [10 20 20 15 20 15].
  // Packing (2 GPUs x 3): order p1 p2 p4 (20) p3 p5 (15) p0 (10):
  // p1 -> g0 (20), p2 -> g1 (20), p4 -> g0 (tie: 40), p3 -> g1 (35), p5 -> g1 (50, full), p0 -> g0 (50).
  // GPU0 = [p1 p4 p0] = [e1 e1 e0]; GPU1 = [p2 p3 p5] = [e2 e3 e3]: 50 tokens each. Two replicas
  // of one expert on one GPU is what EPLB produces here.
  const std::vector<double> w{10, 40, 20, 30};
  const auto p = eplb::rebalance(w, 6, 1, 1, 2);
  CHECK(p.phy2log == std::vector<int>{1, 1, 0, 2, 3, 3});
  CHECK(p.count == std::vector<int>{1, 2, 1, 2});
  // With 2 nodes and 1 group (1 % 2 != 0) the global policy applies: same result.
  const auto g = eplb::rebalance(w, 6, 1, 2, 2);
  CHECK_FALSE(g.hierarchical);
  CHECK(g.phy2log == p.phy2log);
  // The hierarchical policy with 2 nodes and 2 groups keeps each group on its node:
  // groups {e0,e1}=50 -> node 0, {e2,e3}=50 -> node 1; each node has 3 slots on 1 GPU.
  // Node 0: extra replica to e1, physical [e0 e1 e1] with loads [10 20 20], packed onto its one
  // GPU heaviest first -> [e1 e1 e0]; node 1: extra to e3, [e2 e3 e3] with [20 15 15] -> same order.
  const auto h = eplb::rebalance(w, 6, 2, 2, 2);
  CHECK(h.hierarchical);
  CHECK(h.phy2log == std::vector<int>{1, 1, 0, 2, 3, 3});
}

TEST_CASE("eplb: initial placement is EPLB on uniform load", "[eplb]") {
  // 2 nodes x 2 GPUs x 3 slots, 8 experts; groups = nodes = 2 -> hierarchical.
  // Groups {0..3} and {4..7} tie: node 0 gets group 0, node 1 group 1. In node 0 the two extra
  // slots go to e0 and e1 (ties to the lower index): physical [0 1 2 3 0 1], loads
  // [.5 .5 1 1 .5 .5]; packing: 2 -> g0, 3 -> g1, 0 -> g0 (tie), 1 -> g1, 4 -> g0 (tie), 5 -> g1:
  // GPU0 [2 0 0], GPU1 [3 1 1]. Node 1 is the same shifted by 4.
  EplbFixture f(2, 2, 3, 8, 2, 10, "{name: eplb, groups: 2}");
  const Placement pl = f.policy->initial_placement();
  REQUIRE(pl.expert_of_slot.size() == 2);
  const std::vector<int> want{2, 0, 0, 3, 1, 1, 6, 4, 4, 7, 5, 5};
  CHECK(pl.expert_of_slot[0] == want);
  CHECK(pl.expert_of_slot[1] == want);
  const auto params = f.policy->parameters();
  CHECK(params["groups"] == 2);
  CHECK(params["hierarchical_used"] == true);
  CHECK(params["interval"] == 10);
  CHECK(params["load_window"] == 10);
  CHECK(params["replica_capacity"] == -1);
}

TEST_CASE("eplb: the plan uses the moving average of the last load_window iterations", "[eplb]") {
  // 1 node x 2 GPUs x 2 slots, 3 experts, re-plan every 2 iterations over the last 2.
  EplbFixture f(1, 2, 2, 3, 1, 100, "{name: eplb, interval: 2, load_window: 2}");
  Placement pl = f.policy->initial_placement();
  IterationCounts c;
  c.reset({1, 2, 3});
  auto feed = [&](std::int64_t a, std::int64_t b, std::int64_t d) {
    c.at(0, 0, 0) = a;
    c.at(0, 0, 1) = b;
    c.at(0, 0, 2) = d;
  };
  feed(90, 5, 5);
  auto d0 = f.policy->after_iteration(0, c, pl);
  CHECK_FALSE(d0.new_placement);  // not a re-plan iteration
  feed(90, 5, 5);
  auto d1 = f.policy->after_iteration(1, c, pl);
  REQUIRE(d1.new_placement);
  // Average [90 5 5]: the extra slot to e0.
  CHECK(replica_counts(d1.placement.expert_of_slot[0], 3) == std::vector<int>{2, 1, 1});
  pl = d1.placement;
  feed(0, 60, 40);
  (void)f.policy->after_iteration(2, c, pl);
  feed(0, 80, 40);
  auto d3 = f.policy->after_iteration(3, c, pl);
  REQUIRE(d3.new_placement);
  // The window holds iterations 2 and 3 only: average [0 70 40] (the first two are gone).
  const auto want = eplb::rebalance({0, 70, 40}, 4, 1, 1, 2);
  CHECK(d3.placement.expert_of_slot[0] == want.phy2log);
  CHECK(replica_counts(d3.placement.expert_of_slot[0], 3) == std::vector<int>{1, 2, 1});
}

TEST_CASE("eplb: invariants on random loads", "[eplb]") {
  // 2 nodes x 2 GPUs x 3 slots, 8 experts, 2 layers; re-plan every 3 iterations.
  const int G = 4, S = 3, E = 8, L = 2;
  EplbFixture f(2, 2, S, E, L, 200, "{name: eplb, groups: 2, interval: 3, load_window: 4}");
  Placement pl = f.policy->initial_placement();
  std::mt19937_64 rng(12345);
  IterationCounts c;
  c.reset({L, G, E});
  int replans = 0;
  for (int it = 0; it < 50; ++it) {
    // Skewed random counts: a random hot expert per layer.
    for (int l = 0; l < L; ++l) {
      const int hot = static_cast<int>(rng() % E);
      for (int g = 0; g < G; ++g)
        for (int e = 0; e < E; ++e) c.at(l, g, e) = static_cast<std::int64_t>(rng() % 50) + (e == hot ? 300 : 0);
    }
    for (int l = 0; l < L; ++l) {
      LayerDispatch d;
      f.policy->dispatch(l, c.layer_ptr(l), pl, d);
      std::int64_t acc = 0;
      for (int g = 0; g < G; ++g) {
        std::vector<std::int64_t> per_expert(E, 0);
        for (int s = 0; s < G * S; ++s) {
          const std::size_t i = static_cast<std::size_t>(g) * G * S + s;
          REQUIRE(d.accepted[i] <= d.buffered[i]);
          acc += d.accepted[i];
          per_expert[pl.expert_of_slot[l][s]] += d.accepted[i];
        }
        // Dropless: every source's tokens of an expert reach that expert's slots exactly.
        for (int e = 0; e < E; ++e) REQUIRE(per_expert[e] == c.at(l, g, e));
      }
      REQUIRE(d.dropped == 0);
      REQUIRE(d.routed == acc + d.dropped);
    }
    auto dec = f.policy->after_iteration(it, c, pl);
    if ((it + 1) % 3 != 0) {
      REQUIRE_FALSE(dec.new_placement);
      REQUIRE(dec.movements.empty());
      continue;
    }
    if (!testing::replaced(dec, G, S)) continue;
    ++replans;
    const Placement& nx = dec.placement;
    REQUIRE(nx.expert_of_slot.size() == static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      REQUIRE(nx.expert_of_slot[l].size() == static_cast<std::size_t>(G * S));
      const auto cnt = replica_counts(nx.expert_of_slot[l], E);
      for (int e = 0; e < E; ++e) REQUIRE(cnt[e] >= 1);
      // Hierarchical (2 groups of 4 on 2 nodes): an expert's replicas stay on one node.
      for (int e = 0; e < E; ++e) {
        int node = -1;
        for (int s : nx.replicas(l, e)) {
          const int n = nx.gpu_of_slot(s) / 2;
          if (node < 0) node = n;
          REQUIRE(n == node);
        }
      }
    }
    // Movements are exactly what the placement change implies (weights + optimizer state).
    const auto want = placement_moves(f.ctx, pl, nx, true, true);
    REQUIRE(dec.movements.size() == want.size());
    double bytes = 0.0, want_bytes = 0.0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      REQUIRE(dec.movements[i].transfer.src.index == want[i].transfer.src.index);
      REQUIRE(dec.movements[i].transfer.dst.index == want[i].transfer.dst.index);
      REQUIRE(dec.movements[i].blocking);
      bytes += dec.movements[i].transfer.bytes;
      want_bytes += want[i].transfer.bytes;
    }
    REQUIRE(bytes == want_bytes);
    for (const auto& m : dec.movements) REQUIRE(m.transfer.bytes == 14000.0);  // 2000 + 12000
    pl = nx;
  }
  CHECK(replans >= 10);  // 16 re-plan iterations, the random hot expert moves almost every time
}

TEST_CASE("eplb: constant load gives one re-plan and then no movement", "[eplb]") {
  EplbFixture f(1, 2, 3, 4, 1, 100, "{name: eplb, interval: 2, load_window: 3, move_optimizer: false}");
  Placement pl = f.policy->initial_placement();
  IterationCounts c;
  c.reset({1, 2, 4});
  // Loads per iteration [10 40 20 30] (both sources together): the hand case above,
  // [e1 e1 e0 | e2 e3 e3], differs from the uniform initial placement.
  const std::int64_t row[2][4] = {{5, 20, 10, 15}, {5, 20, 10, 15}};
  for (int g = 0; g < 2; ++g)
    for (int e = 0; e < 4; ++e) c.at(0, g, e) = row[g][e];
  int moves = 0;
  for (int it = 0; it < 10; ++it) {
    auto d = f.policy->after_iteration(it, c, pl);
    if (it == 1) {
      REQUIRE(d.new_placement);
      CHECK(d.placement.expert_of_slot[0] == std::vector<int>{1, 1, 0, 2, 3, 3});
      for (const auto& m : d.movements) CHECK(m.transfer.bytes == 2000.0);  // weights only
      moves += static_cast<int>(d.movements.size());
      pl = d.placement;
    } else {
      CHECK_FALSE(d.new_placement);
      CHECK(d.movements.empty());
    }
  }
  CHECK(moves > 0);
}

TEST_CASE("eplb: capacity factor and parameter errors", "[eplb]") {
  // cf 1.0, top-1, 10 tokens per GPU, 4 GPUs, 12 slots: ceil(40 / 12) = 4 per replica.
  EplbFixture f(2, 2, 3, 8, 1, 10, "{name: eplb, capacity_factor: 1.0}");
  CHECK(f.policy->parameters()["replica_capacity"] == 4);
  Placement pl = f.policy->initial_placement();
  // Expert 7 has one replica (uniform placement gives extras to e0, e1, e4, e5): 12 tokens
  // from GPU 0 against capacity 4 -> 8 dropped.
  REQUIRE(pl.replicas(0, 7).size() == 1);
  std::vector<std::int64_t> counts(4 * 8, 0);
  counts[7] = 12;
  LayerDispatch d;
  f.policy->dispatch(0, counts.data(), pl, d);
  CHECK(d.routed == 12);
  CHECK(d.dropped == 8);

  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(EplbFixture(2, 2, 3, 8, 1, 10, "{name: eplb, nodes: 3}"), Contains("do not split evenly into 3 nodes"));
  CHECK_THROWS_WITH(EplbFixture(2, 2, 3, 8, 1, 10, "{name: eplb, groups: 3}"),
                    Contains("do not split evenly into 3 groups"));
  CHECK_THROWS_WITH(EplbFixture(2, 2, 3, 8, 1, 10, "{name: eplb, groups: 1, hierarchical: true}"),
                    Contains("multiple of the 2 nodes"));
  CHECK_THROWS_WITH(EplbFixture(2, 2, 1, 8, 1, 10, "{name: eplb}"), Contains("at least one slot per expert"));
  CHECK_THROWS_WITH(EplbFixture(2, 2, 3, 8, 1, 10, "{name: eplb, hierarchical: maybe}"), Contains("hierarchical"));
  // groups: 1 with auto falls back to the global policy.
  EplbFixture g(2, 2, 3, 8, 1, 10, "{name: eplb, groups: 1}");
  CHECK(g.policy->parameters()["hierarchical_used"] == false);
}

TEST_CASE("eplb: end to end, re-planning lowers the expert load imbalance", "[eplb]") {
  // 2 DGX-A100 nodes (16 GPUs), GPT-Small-MoE (16 experts, top-1) with 2 layers, 2 slots per GPU,
  // Zipf 1.5 trace. `eplb-frozen` never re-plans (the initial EPLB-on-uniform placement, dropless,
  // like static replication without padding). static pads every buffer to capacity, so its
  // imbalance (measured on buffered tokens) is 1.0 by construction and it drops tokens instead.
  const std::string text =
      "name: eplb-e2e\n"
      "cluster:\n"
      "  preset: dgx-a100\n"
      "  nodes: 2\n"
      "model:\n"
      "  preset: gpt-small-moe\n"
      "  layers: 2\n"
      "placement:\n"
      "  slots_per_gpu: 2\n"
      "trace:\n"
      "  skew: 1.5\n"
      "run:\n"
      "  max_iterations: 30\n"
      "policies:\n"
      "  - static\n"
      "  - eplb\n"
      "  - {name: eplb, label: eplb-frozen, interval: 1000000}\n";
  Scenario s = load_scenario_text(text, "eplb-e2e.yaml", {}, std::nullopt);
  const auto res = run_scenario(s, RunOptions{true, {}});
  REQUIRE(res.size() == 3);
  const auto& st = res[0];
  const auto& ep = res[1];
  const auto& frozen = res[2];
  REQUIRE(ep.name == "eplb");
  REQUIRE_FALSE(ep.oom);
  CHECK(ep.iterations_run == 30);
  CHECK(ep.drop_rate == 0.0);  // dropless
  CHECK(st.drop_rate > 0.0);   // static drops what EPLB rebalances
  CHECK(ep.mean_moved_bytes > 0.0);
  CHECK(frozen.mean_moved_bytes == 0.0);
  // Before the first re-plan (iterations 0-9) both run the same placement on the same trace.
  for (int it = 0; it < 10; ++it)
    REQUIRE(ep.rows[it].result.expert_compute_imbalance == frozen.rows[it].result.expert_compute_imbalance);
  // After it (iterations 10-29), the re-planned placement is far better balanced.
  double ep_after = 0.0, frozen_after = 0.0;
  for (int it = 10; it < 30; ++it) {
    ep_after += ep.rows[it].result.expert_compute_imbalance / 20.0;
    frozen_after += frozen.rows[it].result.expert_compute_imbalance / 20.0;
  }
  CHECK(ep_after < 0.6 * frozen_after);
  CHECK(ep.mean_expert_imbalance < frozen.mean_expert_imbalance);
  // Balanced dropless expert compute also shortens the iteration against the frozen placement.
  CHECK(ep.mean_iteration_ns < frozen.mean_iteration_ns);
}

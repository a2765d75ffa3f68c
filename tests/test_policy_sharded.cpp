// Fully sharded experts: Hecate / FSSDP and LAER-MoE / FSEP. The spread placement and Hecate's
// replica counts on a skewed 4-expert, 4-GPU, 2-node case, the sparse all-gather and
// reduce-scatter bytes and their charged time, LAER's candidates and its cost worked by hand,
// re-sharding on its interval, parameter errors, invariants on random counts and an end-to-end run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "policies/registry.hpp"
#include "policies/sharded.hpp"
#include "sim/cluster.hpp"
#include "sim/network.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;
using Catch::Matchers::Contains;

namespace {

struct ShardedFixture : testing::PolicyWorld {
  ShardedFixture(int nodes, int gpn, int slots, int experts, int layers, const std::string& params)
      : PolicyWorld(nodes, gpn, slots, experts, layers, 20) {
    model.top_k = 1;
    model.hidden = 1000;
    build(params);
  }
  // One [src][expert] matrix repeated for every layer.
  [[nodiscard]] IterationCounts counts(const std::vector<std::int64_t>& matrix) const {
    IterationCounts c;
    c.reset(TraceShape{ctx.moe_layers, ctx.gpus, ctx.experts});
    for (int l = 0; l < ctx.moe_layers; ++l)
      for (int g = 0; g < ctx.gpus; ++g)
        for (int e = 0; e < ctx.experts; ++e) c.at(l, g, e) = matrix[static_cast<std::size_t>(g) * ctx.experts + e];
    return c;
  }
};

// Bytes per (src, dst) pair of a transfer list.
std::map<std::pair<int, int>, double> pairs(const std::vector<Transfer>& ts) {
  std::map<std::pair<int, int>, double> out;
  for (const Transfer& t : ts) {
    REQUIRE_FALSE(t.src.host);
    REQUIRE_FALSE(t.dst.host);
    out[{t.src.index, t.dst.index}] += t.bytes;
  }
  return out;
}

double total(const std::vector<Transfer>& ts) {
  double s = 0.0;
  for (const Transfer& t : ts) s += t.bytes;
  return s;
}

// The skewed case: expert loads 50, 30, 10, 10 over 4 sources.
const std::vector<std::int64_t> kSkewed{20, 0, 5, 0,  //
                                        10, 10, 5, 0,  //
                                        10, 10, 0, 5,  //
                                        10, 10, 0, 5};

}  // namespace

TEST_CASE("hecate: replica counts and spread placement on a skewed 4-expert, 4-GPU, 2-node case", "[sharded]") {
  // 2 nodes x 2 GPUs x 2 slots (8 slots), 4 experts, 1 layer.
  ShardedFixture f(2, 2, 2, 4, 1, "{name: hecate}");
  // Initial: equal loads give 2 replicas each (weight 1); ties go to the lower expert and GPU.
  // e0 -> GPU0, then the other node's least-loaded GPU2; e1 -> GPU1 (load 0), GPU3; e2 -> GPU0
  // (every GPU at load 1, lowest index), GPU2; e3 -> GPU1, GPU3.
  const Placement init = f.policy->initial_placement();
  CHECK(init.expert_of_slot[0] == std::vector<int>{0, 2, 1, 3, 0, 2, 1, 3});
  // Loads 50, 30, 10, 10 (window of one iteration). Proportional counts: goals 8 x load / 100 =
  // 4, 2.4, 0.8, 0.8 -> floor(max(goal, 1)) = 4, 2, 1, 1, already 8 slots.
  // Weight per replica 12.5, 15, 10, 10: placed e1, e0, e2, e3.
  //   e1: GPU0; then GPU2 (node 1 holds none). Loads 15, 0, 15, 0.
  //   e0: GPU1 (least loaded, lower than GPU3); GPU3 (node 1 holds none of e0 yet); then GPU0
  //       and GPU2 tie on node count and load 15: GPU0; last GPU2 (the only free GPU without
  //       e0). Loads 27.5, 12.5, 27.5, 12.5.
  //   e2: GPU1 (12.5, lower than GPU3); e3: GPU3, the last free slot.
  const PolicyDecision d = f.policy->after_iteration(0, f.counts(kSkewed), init);
  REQUIRE(d.new_placement);
  CHECK(d.placement.expert_of_slot[0] == std::vector<int>{1, 0, 0, 2, 1, 0, 0, 3});
  CHECK(d.movements.empty());  // no re-shard before iteration 99
  // The same through the helper: both replicas of e1 on different nodes, e0 on every GPU.
  CHECK(sharded::spread_placement({50, 30, 10, 10}, {4, 2, 1, 1}, 4, 2, 2) ==
        std::vector<int>{1, 0, 0, 2, 1, 0, 0, 3});
}

TEST_CASE("hecate: sparse reduce-scatter and all-gather bytes with heterogeneous shards, by hand", "[sharded]") {
  // Expert weights and gradients 2000 B, 1000 parameters. Owners from the initial placement:
  // e0 and e2 split 1/2-1/2 over GPUs 0 and 2, e1 and e3 over GPUs 1 and 3.
  ShardedFixture f(2, 2, 2, 4, 1, "{name: hecate}");
  const Placement cur = f.policy->initial_placement();
  const PolicyDecision d = f.policy->after_iteration(0, f.counts(kSkewed), cur);
  const SyncPlan p = f.policy->sync_plan(0, cur, d.placement);
  CHECK_FALSE(p.replica_allreduce);
  CHECK_FALSE(p.copy_allreduce);
  // Reduce-scatter: every holder of the current placement sends the other owner its 1000 B half;
  // each GPU holds two experts whose other owner is the same GPU: 2000 B per pair.
  const std::map<std::pair<int, int>, double> grads{{{0, 2}, 2000}, {{1, 3}, 2000}, {{2, 0}, 2000}, {{3, 1}, 2000}};
  CHECK(pairs(p.gradient_transfers) == grads);
  // All-gather, rematerialisation first: the current replicas again, the same 2000 B per pair.
  // Then the next placement (e0 on every GPU, e1 on 0 and 2, e2 on 1, e3 on 3), 1000 B a half:
  //   e0: owner 0 -> 1, 2, 3 and owner 2 -> 0, 1, 3; e1: owners 1 and 3 -> 0 and 2;
  //   e2: owners 0 and 2 -> 1; e3: owner 1 -> 3 (GPU 3 owns the other half).
  // Sums: 0->1 = 1000 (e0) + 1000 (e2); 0->2 = 2000 + 1000; 1->3 = 2000 + 1000 (e3); ...
  const std::map<std::pair<int, int>, double> weights{
      {{0, 1}, 2000}, {{0, 2}, 3000}, {{0, 3}, 1000}, {{1, 0}, 1000}, {{1, 2}, 1000}, {{1, 3}, 3000},
      {{2, 0}, 3000}, {{2, 1}, 2000}, {{2, 3}, 1000}, {{3, 0}, 1000}, {{3, 1}, 2000}, {{3, 2}, 1000}};
  CHECK(pairs(p.weight_transfers) == weights);
  // 8000 B gathered again + 13000 B for the next replicas: e0 6000 (GPUs 1 and 3 need both
  // halves, 0 and 2 one), e1 4000, e2 2000, e3 1000.
  CHECK(total(p.weight_transfers) == 21000.0);
  // Every GPU owns two halves: 1000 parameters of Adam state, and all-reduces their 2000 B of
  // gradients over its copies (none here: one-GPU collectives).
  CHECK(p.gpu_optimizer_params == std::vector<double>{1000, 1000, 1000, 1000});
  REQUIRE(p.grad_collectives.size() == 4);
  for (int g = 0; g < 4; ++g) {
    CHECK(p.grad_collectives[g].gpus == std::vector<int>{g});
    CHECK(p.grad_collectives[g].bytes == 2000.0);
  }
  // Without rematerialisation only the next placement's 13000 B are gathered.
  ShardedFixture once(2, 2, 2, 4, 1, "{name: hecate, rematerialize: false}");
  const Placement c2 = once.policy->initial_placement();
  const PolicyDecision d2 = once.policy->after_iteration(0, once.counts(kSkewed), c2);
  CHECK(total(once.policy->sync_plan(0, c2, d2.placement).weight_transfers) == 13000.0);
}

TEST_CASE("laer: uniform shards on 4 single-GPU nodes, bytes and charged time by hand", "[sharded]") {
  // 4 experts, 1 slot per GPU, expert g on GPU g before and after. Every GPU owns 1/4 of every
  // expert: 500 B of weights or gradients a quarter.
  ShardedFixture f(4, 1, 1, 4, 1, "{name: laer}");
  // One 8 Gb/s NIC per node at efficiency 1: 1e9 B/s per GPU.
  f.cluster.nics_per_node = 1;
  f.cluster.nic_gbit = 8.0;
  f.cluster.nic_efficiency = 1.0;
  Placement pl = f.policy->initial_placement();
  pl.expert_of_slot[0] = {0, 1, 2, 3};
  const SyncPlan p = f.policy->sync_plan(0, pl, pl);
  // Reduce-scatter: holder h sends each of the 3 other owners its quarter: 12 pairs x 500 B.
  // All-gather: each owner sends its quarter of every expert to its holder: the same 12 pairs.
  REQUIRE(p.gradient_transfers.size() == 12);
  REQUIRE(p.weight_transfers.size() == 12);
  for (const auto& ts : {p.gradient_transfers, p.weight_transfers})
    for (const Transfer& t : ts) {
      CHECK(t.src.index != t.dst.index);
      CHECK(t.bytes == 500.0);
    }
  // 4 experts x 1000 parameters / 4 GPUs.
  CHECK(p.gpu_optimizer_params == std::vector<double>{1000, 1000, 1000, 1000});
  // Charged time (the core waits for the busiest GPU of each list): every GPU sends and receives
  // 3 x 500 = 1500 B over its NIC at 1e9 B/s = 1500 ns, plus one network message latency
  // (8.4 us + 14 us).
  const Cluster cluster(f.cluster);
  const AnalyticalNetwork net(cluster);
  for (const auto& ts : {p.gradient_transfers, p.weight_transfers}) {
    const std::vector<TimeNs> busy = net.transfers(ts);
    CHECK(*std::max_element(busy.begin(), busy.end()) == 1500 + 22400);
  }
}

TEST_CASE("laer: candidates and the 4 comm + 3 compute choice, by hand", "[sharded]") {
  // 2 nodes x 2 GPUs x 2 slots; every source sends e0 12, e1 5, e2 2, e3 1 (loads 48, 20, 8, 4).
  std::vector<double> counts;
  for (int g = 0; g < 4; ++g) counts.insert(counts.end(), {12, 5, 2, 1});
  // Candidates: uniform 8 / 4 = 2 each. Heap: extras to e0 (48), e0 (24 vs 20), e1 (20 vs 16),
  // e0 (16 vs 10): [4, 2, 1, 1], load per replica 12, 10, 8, 4. Perturbations: donors with more
  // than one replica, lightest first: e1 (10), e0 (12); heaviest: e0, e1. The first moves one of
  // e1's to e0: [5, 1, 1, 1]; the second one of e0's to e1: [3, 3, 1, 1].
  const auto cand = sharded::laer_candidates({48, 20, 8, 4}, 8, 2);
  REQUIRE(cand.size() == 4);
  CHECK(cand[0] == std::vector<int>{2, 2, 2, 2});
  CHECK(cand[1] == std::vector<int>{4, 2, 1, 1});
  CHECK(cand[2] == std::vector<int>{5, 1, 1, 1});
  CHECK(cand[3] == std::vector<int>{3, 3, 1, 1});
  // Cost with 1 B tokens, NIC 1 B/s, intra-node 2 B/s, 1 FLOP per token at 1 FLOP/s.
  sharded::LaerCostModel m;
  m.token_bytes = 1.0;
  m.nic_bps = 1.0;
  m.intra_bps = 2.0;
  m.flop_per_token = 1.0;
  m.flop_rate = 1.0;
  m.gpus_per_node = 2;
  // comm: every source sends the same, so each replica slot gets c_e / r_e from one local source
  // (free), one node-mate (1/2 s a token) and two remote ones (1 s): 2.5 x sum_e c_e = 2.5 x 20 =
  // 50 s whatever the layout. compute: the busiest GPU.
  //   uniform: layout [0,3 | 1,2 | 0,3 | 1,2]: GPU0 gets e0 4 x 6 + e3 4 x 0.5 = 26 -> 4 x 50 + 3 x 26 = 278
  //   heap: [0,1 | 0,2 | 0,1 | 0,3]: GPU0 gets e0 4 x 3 + e1 4 x 2.5 = 22 -> 200 + 66 = 266
  //   [5,1,1,1]: [1,0 | 0,0 | 0,2 | 0,3]: GPU0 gets e1 20 + e0 4 x 2.4 = 29.6 -> 200 + 88.8 = 288.8
  //   [3,3,1,1]: [0,1 | 0,1 | 0,3 | 2,1]: GPU0 gets e0 4 x 4 + e1 4 x 5/3 = 22.67 -> 200 + 68 = 268
  const std::vector<std::vector<int>> layouts{
      {0, 3, 1, 2, 0, 3, 1, 2}, {0, 1, 0, 2, 0, 1, 0, 3}, {1, 0, 0, 0, 0, 2, 0, 3}, {0, 1, 0, 1, 0, 3, 2, 1}};
  const std::vector<double> totals{278.0, 266.0, 288.8, 268.0};
  for (std::size_t i = 0; i < cand.size(); ++i) {
    const std::vector<int> layout = sharded::spread_placement({48, 20, 8, 4}, cand[i], 4, 2, 2);
    CHECK(layout == layouts[i]);
    const sharded::LaerCost c = sharded::laer_cost(counts, 4, layout, 4, 2, m);
    CHECK(c.comm_s == Approx(50.0));
    CHECK(c.total_s == Approx(totals[i]));
  }
  // The cheapest: the heap (266).
  const sharded::LaerPlan plan = sharded::laer_plan(counts, 4, 4, 2, 2, m);
  CHECK(plan.candidate == 1);
  CHECK(plan.count == std::vector<int>{4, 2, 1, 1});
  CHECK(plan.layout == layouts[1]);
  CHECK(plan.cost.total_s == Approx(266.0));
  // Compute alone does not count: every candidate costs 200 and the first (uniform) stays.
  m.compute_weight = 0.0;
  CHECK(sharded::laer_plan(counts, 4, 4, 2, 2, m).candidate == 0);
}

TEST_CASE("hecate: re-sharding every reshard_interval iterations moves optimizer state, by hand", "[sharded]") {
  // Optimizer state 12000 B an expert.
  ShardedFixture f(2, 2, 2, 4, 1, "{name: hecate, reshard_interval: 3}");
  Placement cur = f.policy->initial_placement();
  const IterationCounts c = f.counts(kSkewed);
  const std::vector<double> before{1000, 1000, 1000, 1000};  // two halves a GPU (initial owners)
  for (int it = 0; it < 2; ++it) {
    const PolicyDecision d = f.policy->after_iteration(it, c, cur);
    CHECK(d.movements.empty());
    CHECK(f.policy->sync_plan(it, cur, d.placement).gpu_optimizer_params == before);
    cur = d.placement;
  }
  // After iteration 2 (the third): owners follow the placement {1,0 | 0,2 | 1,0 | 0,3}:
  // e0 1/4 on each GPU, e1 1/2 on 0 and 2, e2 whole on 1, e3 whole on 3. Moves (GPU order):
  //   e0: 1 takes 1/4 from 0, 3 takes 1/4 from 2 (3000 B each); e1: 0 takes 1/2 from 1, 2 from 3;
  //   e2: 1 takes 1/2 from 0 and 1/2 from 2; e3: 3 takes 1/2 from 1 (6000 B a half).
  const PolicyDecision d = f.policy->after_iteration(2, c, cur);
  REQUIRE(d.new_placement);
  std::map<std::pair<int, int>, double> moved;
  for (const Movement& m : d.movements) {
    CHECK(m.blocking);
    moved[{m.transfer.src.index, m.transfer.dst.index}] += m.transfer.bytes;
  }
  const std::map<std::pair<int, int>, double> want{{{0, 1}, 9000}, {{1, 0}, 6000}, {{1, 3}, 6000},
                                                   {{2, 1}, 6000}, {{2, 3}, 3000}, {{3, 2}, 6000}};
  CHECK(moved == want);
  // Iteration 2's own sync still uses the owners it ran with; the next one the new owners:
  // GPU0 250 + 500, GPU1 250 + 1000, GPU2 250 + 500, GPU3 250 + 1000 parameters.
  CHECK(f.policy->sync_plan(2, cur, d.placement).gpu_optimizer_params == before);
  const PolicyDecision d3 = f.policy->after_iteration(3, c, d.placement);
  CHECK(d3.movements.empty());
  CHECK(f.policy->sync_plan(3, d.placement, d3.placement).gpu_optimizer_params ==
        std::vector<double>{750, 1250, 750, 1250});
  // Uniform sharding never re-shards.
  ShardedFixture u(2, 2, 2, 4, 1, "{name: hecate, sharding: uniform, reshard_interval: 1}");
  Placement up = u.policy->initial_placement();
  for (int it = 0; it < 3; ++it) {
    const PolicyDecision du = u.policy->after_iteration(it, u.counts(kSkewed), up);
    CHECK(du.movements.empty());
    up = du.placement;
  }
}

TEST_CASE("hecate and laer: bad parameters name the key, the value and what is allowed", "[sharded]") {
  CHECK_THROWS_WITH(ShardedFixture(2, 2, 2, 4, 1, "{name: hecate, sharding: even}"),
                    Contains("sharding") && Contains("even") && Contains("heterogeneous"));
  CHECK_THROWS_WITH(ShardedFixture(2, 2, 2, 4, 1, "{name: hecate, reshard_interval: 0}"),
                    Contains("reshard_interval"));
  CHECK_THROWS_WITH(ShardedFixture(2, 2, 2, 4, 1, "{name: laer, perturbations: -1}"), Contains("perturbations"));
  CHECK_THROWS_WITH(ShardedFixture(2, 2, 2, 4, 1, "{name: laer, comm_weight: -4}"), Contains("comm_weight"));
  CHECK_THROWS_WITH(ShardedFixture(2, 2, 2, 4, 1, "{name: laer, window: 5}"), Contains("window"));
  CHECK_THROWS_WITH(ShardedFixture(1, 2, 1, 4, 1, "{name: laer}"), Contains("at least one slot per expert"));
}

TEST_CASE("hecate and laer: invariants on random skewed counts", "[sharded]") {
  for (const char* params : {"{name: hecate, reshard_interval: 4}", "{name: laer}"}) {
    const std::string name = YAML::Load(params)["name"].as<std::string>();
    // 3 nodes x 2 GPUs x 3 slots, 8 experts, 2 layers.
    ShardedFixture f(3, 2, 3, 8, 2, params);
    ShardedFixture twin(3, 2, 3, 8, 2, params);
    std::mt19937_64 rng(7);
    Placement cur = f.policy->initial_placement();
    Placement cur2 = twin.policy->initial_placement();
    REQUIRE(cur.expert_of_slot == cur2.expert_of_slot);
    const TraceShape shape{2, 6, 8};
    for (int it = 0; it < 12; ++it) {
      const IterationCounts c =
          testing::drawn_counts(shape, 50, rng, [](int l, int e) { return 1.0 / (1.0 + e * (l + 1)); });
      for (int l = 0; l < 2; ++l) {
        const LayerDispatch d = testing::dispatch_checked(*f.policy, l, c, cur);
        CHECK(d.dropped == 0);  // dropless by default
      }
      const PolicyDecision dec = f.policy->after_iteration(it, c, cur);
      const PolicyDecision dec2 = twin.policy->after_iteration(it, c, cur2);
      REQUIRE(testing::replaced(dec, 6, 3));
      CHECK(dec.placement.expert_of_slot == dec2.placement.expert_of_slot);  // deterministic
      if (name == "laer") CHECK(dec.movements.empty());
      for (const auto& layer : dec.placement.expert_of_slot) {
        std::vector<int> reps(8, 0);
        for (int e : layer) {
          REQUIRE(e >= 0);  // every slot filled
          ++reps[e];
        }
        for (int r : reps) CHECK(r >= 1);
      }
      // Every expert's state is owned exactly once: the owned parameters sum to all experts'.
      const SyncPlan p = f.policy->sync_plan(it, cur, dec.placement);
      double owned = 0.0;
      for (double x : p.gpu_optimizer_params) owned += x;
      CHECK(owned == Approx(2 * 8 * 1000.0));
      cur = dec.placement;
      cur2 = dec2.placement;
    }
  }
}

TEST_CASE("hecate and laer end to end: dropless, fully sharded state, laer moves nothing", "[sharded]") {
  const std::string text =
      "name: sharded-e2e\n"
      "cluster: {preset: swiftmoe-cloud, nodes: 4}\n"
      "model: {preset: gpt-small-moe, layers: 2}\n"
      "placement: {slots_per_gpu: 4}\n"
      "trace: {kind: synthetic, skew: 1.5}\n"
      "run: {max_iterations: 12, stop_at_convergence: false}\n"
      "policies:\n"
      "  - {name: hecate, reshard_interval: 5}\n"
      "  - {name: hecate, label: hecate-uniform, sharding: uniform}\n"
      "  - {name: laer}\n";
  Scenario s = load_scenario_text(text, "t.yaml", {}, std::nullopt);
  const auto res = run_scenario(s, RunOptions{false, {}});
  REQUIRE(res.size() == 3);
  for (const PolicyResult& r : res) {
    REQUIRE_FALSE(r.oom);
    CHECK(r.iterations_run == 12);
    CHECK(r.drop_rate == 0.0);
  }
  CHECK(res[0].mean_moved_bytes > 0.0);  // re-shards after iterations 4 and 9
  CHECK(res[1].mean_moved_bytes == 0.0);
  CHECK(res[2].mean_moved_bytes == 0.0);
  CHECK(res[2].parameters["comm_weight"] == 4.0);
  CHECK(res[2].parameters["compute_weight"] == 3.0);
  CHECK(res[0].parameters["load_window"] == 5);
}

// SmartMoE (Zhai et al., "SmartMoE: Efficiently Training Sparsely-Activated Models through
// Combining Offline and Online Parallelization", USENIX ATC 2023): the expert placement is
// re-planned periodically WITHOUT replication: experts swap positions between GPUs, carrying
// their parameters and optimizer state with them.
//
// SmartMoE released no placement code; this is a reconstruction (see
// /work/shared/reference/policies.md and docs/policies-more.md, section smartmoe). Its greedy
// variant: every `interval` iterations, the experts sorted by (windowed) load, heaviest first,
// each to the GPU with the least accumulated load that still has a free slot. With G*S = r*E
// slots every expert keeps r replicas (r = 1 is SmartMoE's setting); a replica counts for 1/r
// of its expert's load. SmartMoE builds on FastMoE, which is dropless: by default nothing is
// dropped and buffers are not padded.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <tuple>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class SmartMoePolicy final : public Policy {
 public:
  SmartMoePolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: shared/reference/policies.md, SmartMoE: "Best period reported elsewhere: every 25
    // iterations" (a later paper's reproduction; SmartMoE itself gives no fixed period).
    interval_ = p.get_int("interval", 25, 1, 1LL << 40);
    // reconstruction: the load estimate is the counts of the last iteration (1) or their sum
    // over the last `load_window` iterations.
    load_window_ = static_cast<int>(p.get_int("load_window", 1, 1, 1 << 20));
    // source: FastMoE (SmartMoE's base) is dropless: 0 = no capacity. A positive value caps each
    // replica at ceil(cf * k * tokens_per_gpu * G / (G*S)) assignments (reconstruction, for
    // comparison with capacity-bound systems); the rest is dropped.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
    // reconstruction (only matters with r > 1): a source sends an expert's tokens to the
    // replicas on its own node when there are any (FlexMoE's routing rule).
    prefer_local_node_ = p.get_bool("prefer_local_node", true);
    // reconstruction: the greedy's GPU bins are interchangeable; map them to the GPUs that
    // already hold most of their experts, so that balance is the same but fewer experts move.
    minimise_moves_ = p.get_bool("minimise_moves", true);
    // reconstruction: apply a new placement only when it lowers the estimated busiest-GPU load
    // by more than this fraction (0: any strict improvement).
    min_gain_ = p.get_double("min_gain", 0.0, 0.0, 1.0);
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts || slots % ctx.experts != 0) {
      p.fail("", fmt::format("smartmoe needs the {} slots ({} GPUs x {} slots) to be a multiple of the {} experts "
                             "(it swaps experts, never changes their replica count)",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    replicas_ = slots / ctx.experts;
    history_.assign(ctx.moe_layers, {});
  }

  [[nodiscard]] std::string name() const override { return "smartmoe"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    std::vector<int> layout(pl.num_slots());
    for (int slot = 0; slot < pl.num_slots(); ++slot) layout[slot] = slot % ctx_.experts;  // as static
    pl.expert_of_slot.assign(ctx_.moe_layers, layout);
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.prefer_local_node = prefer_local_node_;
    opt.gpus_per_node = ctx_.cluster->gpus_per_node;
    if (capacity_factor_ > 0.0) {
      const double cap = capacity_factor_ * ctx_.top_k * static_cast<double>(ctx_.tokens_per_gpu) * ctx_.gpus /
                         static_cast<double>(pl.num_slots());
      opt.replica_capacity = static_cast<std::int64_t>(std::ceil(cap));
    }
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override {
    return replan_from_load_window<double>(
        ctx_, iteration, counts, current, interval_, load_window_, history_,
        [&](const std::vector<double>& load, const std::vector<int>& cur) { return plan_layer(load, cur); });
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"interval", interval_},
            {"load_window", load_window_},
            {"capacity_factor", capacity_factor_},
            {"prefer_local_node", prefer_local_node_},
            {"minimise_moves", minimise_moves_},
            {"min_gain", min_gain_},
            {"replicas_per_expert", replicas_}};
  }

 private:
  // The layout of one layer for `load` (per expert), or `cur` when the greedy does not lower the
  // busiest GPU's estimated load enough.
  [[nodiscard]] std::vector<int> plan_layer(const std::vector<double>& load, const std::vector<int>& cur) const {
    const int G = ctx_.gpus, S = ctx_.slots_per_gpu, E = ctx_.experts;
    const double r = static_cast<double>(replicas_);
    // Estimated load of each GPU now: each replica carries 1/r of its expert's load.
    double cur_max = 0.0;
    for (int g = 0; g < G; ++g) {
      double sum = 0.0;
      for (int s = 0; s < S; ++s) {
        const int e = cur[static_cast<std::size_t>(g) * S + s];
        if (e >= 0) sum += load[e] / r;
      }
      cur_max = std::max(cur_max, sum);
    }
    // Greedy: experts heaviest first (ties: lower index), each replica to the least-loaded bin
    // with a free slot that does not hold the expert yet (ties: lower bin); a bin already
    // holding it only when no other has room.
    std::vector<int> order(E);
    for (int e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return load[a] > load[b]; });
    std::vector<std::vector<int>> bins(G);
    std::vector<double> bin_load(G, 0.0);
    for (int e : order) {
      for (int k = 0; k < replicas_; ++k) {
        int best = -1;
        bool best_distinct = false;
        for (int b = 0; b < G; ++b) {
          if (static_cast<int>(bins[b].size()) >= S) continue;
          const bool distinct = std::find(bins[b].begin(), bins[b].end(), e) == bins[b].end();
          if (best < 0 || (distinct && !best_distinct) ||
              (distinct == best_distinct && bin_load[b] < bin_load[best])) {
            best = b;
            best_distinct = distinct;
          }
        }
        bins[best].push_back(e);
        bin_load[best] += load[e] / r;
      }
    }
    const double new_max = *std::max_element(bin_load.begin(), bin_load.end());
    if (!(new_max < cur_max * (1.0 - min_gain_))) return cur;

    // Which GPU each bin goes to.
    std::vector<int> gpu_of_bin(G);
    for (int b = 0; b < G; ++b) gpu_of_bin[b] = b;
    if (minimise_moves_) {
      // Greedy matching on overlap (experts a bin shares with a GPU's current slots): largest
      // overlap first, ties to the lower bin, then the lower GPU.
      std::vector<std::tuple<int, int, int>> pairs;  // (-overlap, bin, gpu)
      for (int b = 0; b < G; ++b)
        for (int g = 0; g < G; ++g) {
          std::vector<int> have(cur.begin() + static_cast<std::ptrdiff_t>(g) * S,
                                cur.begin() + static_cast<std::ptrdiff_t>(g + 1) * S);
          int overlap = 0;
          for (int e : bins[b]) {
            auto it = std::find(have.begin(), have.end(), e);
            if (it != have.end()) {
              ++overlap;
              *it = -2;  // a multiset intersection: each current slot counts once
            }
          }
          pairs.emplace_back(-overlap, b, g);
        }
      std::sort(pairs.begin(), pairs.end());
      std::vector<bool> bin_done(G, false), gpu_done(G, false);
      for (const auto& [neg, b, g] : pairs) {
        if (bin_done[b] || gpu_done[g]) continue;
        bin_done[b] = gpu_done[g] = true;
        gpu_of_bin[b] = g;
      }
    }
    // Within a GPU, experts it already holds keep their slots; the others fill the freed slots
    // in the greedy's order.
    std::vector<int> layout(cur.size(), -1);
    for (int b = 0; b < G; ++b) {
      const int g = gpu_of_bin[b];
      std::vector<int> todo = bins[b];
      for (int s = 0; s < S; ++s) {
        const std::size_t slot = static_cast<std::size_t>(g) * S + s;
        auto it = std::find(todo.begin(), todo.end(), cur[slot]);
        if (cur[slot] >= 0 && it != todo.end()) {
          layout[slot] = cur[slot];
          todo.erase(it);
        }
      }
      std::size_t next = 0;
      for (int s = 0; s < S && next < todo.size(); ++s) {
        const std::size_t slot = static_cast<std::size_t>(g) * S + s;
        if (layout[slot] < 0) layout[slot] = todo[next++];
      }
    }
    return layout;
  }

  std::int64_t interval_ = 25;
  int load_window_ = 1;
  double capacity_factor_ = 0.0;
  bool prefer_local_node_ = true;
  bool minimise_moves_ = true;
  double min_gain_ = 0.0;
  int replicas_ = 1;
  LoadHistory history_;  // [layer] last load_window loads
};

}  // namespace

PolicyInfo moesim_policy_smartmoe() {
  return {"smartmoe",
          "SmartMoE periodic greedy expert re-placement without replication, moving weights and optimizer state "
          "(Zhai et al., USENIX ATC 2023; reconstruction)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<SmartMoePolicy>(ctx, p);
          }};
}

}  // namespace moesim

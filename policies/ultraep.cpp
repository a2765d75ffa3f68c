// UltraEP (per-micro-batch exact rebalancing, 2026), as the project's issue 15 describes it: no
// primary source is in the project's reference material, so the mechanism below is a
// reconstruction with every assumed constant a parameter (docs/policies-ultraep.md). Every
// expert has one owner GPU that keeps its optimizer state (a static expert-parallel placement);
// in every micro-batch and MoE layer a planner takes that micro-batch's own counts (no lag) and
// places duplicates of hot experts on under-loaded GPUs so that every GPU computes nearly the
// mean number of tokens. The tokens of a duplicated expert are split over its owner and its
// duplicates in proportion to their planned shares.
//
// Planner (per MoE layer): loads are the tokens each GPU computes, mean = I / G (I: the layer's
// assignments), level = ceil(mean). While the busiest GPU b has more than tolerance x mean: take
// b's owned expert with the most tokens left on b, and the least-loaded GPU t that holds a
// duplicate of it already or has a free duplicate slot; move min(tokens left on b, load(b) -
// level, level - load(t)) of them to t. It stops when nothing can move (duplicate budget used).
//
// Charged per micro-batch, after the gate and before the dispatch (SyncPlan::micro_batch_*):
// an all-gather of the counts over the group (every GPU plans the same plan from them), the
// planner's time on every GPU, and each duplicate's weights sent from the owner. Once an
// iteration: each duplicate's gradients, accumulated over the micro-batches, sent to the owner
// (which runs the optimizer). The duplicate slots hold weights and gradients (memory).
//
// The simulator's micro-batches carry equal shares of the iteration's counts (sim/iteration.hpp),
// so the plan of every micro-batch is the plan of the iteration's counts: it is made once, in
// plan_in_iteration, and charged in every micro-batch.
//
// Slots: the first E/G slots of each GPU hold its owned experts; the next `dup_slots` hold the
// iteration's duplicates (-1 when unused). slots_per_gpu must be at least E/G + dup_slots.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

// Token products (count x share) can exceed 64 bits for long traces of big batches.
__extension__ using Wide = __int128;

class UltraEpPolicy final : public Policy {
 public:
  UltraEpPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    if (ctx.gpus <= 0 || ctx.experts % ctx.gpus != 0) {
      p.fail("", fmt::format("ultraep needs the {} experts to be divisible by the {} GPUs (each GPU owns E/G experts)",
                             ctx.experts, ctx.gpus));
    }
    base_ = ctx.experts / ctx.gpus;
    const int spare = ctx.slots_per_gpu - base_;
    if (spare < 1) {
      p.fail("", fmt::format("ultraep needs placement.slots_per_gpu > experts / GPUs = {} (slots for duplicates), "
                             "found {}",
                             base_, ctx.slots_per_gpu));
    }
    // reconstruction: the duplicate budget per GPU and layer; default every spare slot.
    dups_ = static_cast<int>(p.get_int("dup_slots", spare, 1, spare));
    // reconstruction: "every rank computes nearly the same number of tokens"; 1.05 = the
    // busiest GPU within 5% of the mean.
    tolerance_ = p.get_double("tolerance", 1.05, 1.0, 1e9);
    // reconstruction: the planner's time per (layer, micro-batch) on every GPU = fixed + per
    // expert. 10 us for reading the gathered counts back and launching the dispatch with the
    // plan (the order of a device-host round trip); 100 ns an expert for the greedy's scans.
    plan_fixed_ns_ = p.get_double("plan_fixed_ns", 10000.0, 0.0, 1e12);
    plan_ns_per_expert_ = p.get_double("plan_ns_per_expert", 100.0, 0.0, 1e9);
    // reconstruction: bytes of one count in the all-gather of the [GPU][expert] counts (int32);
    // 0 = not charged.
    count_bytes_ = p.get_double("count_bytes", 4.0, 0.0, 1e6);
    share_.assign(static_cast<std::size_t>(ctx.moe_layers),
                  std::vector<std::int64_t>(static_cast<std::size_t>(ctx.gpus) * ctx.slots_per_gpu, 0));
  }

  [[nodiscard]] std::string name() const override { return "ultraep"; }

  [[nodiscard]] Placement initial_placement() override { return owned_placement(ctx_, base_); }

  [[nodiscard]] bool plan_in_iteration(int, const IterationCounts& counts, const Placement& current,
                                       Placement& run_on) override {
    run_on = current;
    for (int l = 0; l < ctx_.moe_layers; ++l) plan_layer(counts.layer_ptr(l), run_on.expert_of_slot[l], share_[l]);
    planned_ = run_on.expert_of_slot;
    return true;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int G = pl.gpus, slots = pl.num_slots(), E = ctx_.experts;
    out.reset(G, slots);
    const auto l = static_cast<std::size_t>(layer);
    // The planned shares when `pl` is the placement planned for these counts; otherwise (a
    // caller that did not plan) an even split over the holders.
    const bool planned = l < planned_.size() && pl.expert_of_slot[l] == planned_[l];
    const std::vector<std::vector<int>> holders = expert_slots(pl, layer, E);
    std::vector<std::int64_t> w;
    for (int e = 0; e < E; ++e) {
      const std::vector<int>& hs = holders[static_cast<std::size_t>(e)];
      w.assign(hs.size(), 1);
      if (planned)
        for (std::size_t i = 0; i < hs.size(); ++i) w[i] = share_[l][static_cast<std::size_t>(hs[i])];
      std::int64_t total = 0;
      for (std::int64_t x : w) total += x;
      if (total <= 0) {
        std::fill(w.begin(), w.end(), 1);
        total = static_cast<std::int64_t>(w.size());
      }
      for (int src = 0; src < G; ++src) {
        const std::int64_t n = counts[static_cast<std::size_t>(src) * E + e];
        out.routed += n;
        if (hs.empty()) {
          out.dropped += n;
          continue;
        }
        // Holder i takes floor(n C(i+1) / W) - floor(n C(i) / W), C the cumulative shares: the
        // parts add up to n exactly.
        std::int64_t cum = 0, given = 0;
        for (std::size_t i = 0; i < hs.size(); ++i) {
          cum += w[i];
          const auto upto = static_cast<std::int64_t>(static_cast<Wide>(n) * cum / total);
          const std::size_t idx = static_cast<std::size_t>(src) * slots + hs[i];
          out.accepted[idx] += upto - given;
          out.buffered[idx] += upto - given;
          given = upto;
        }
      }
    }
  }

  // The owners' placement never changes: the duplicates live inside each iteration.
  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts&, const Placement&) override { return {}; }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    const int G = ctx_.gpus, S = current.slots_per_gpu, L = ctx_.moe_layers;
    SyncPlan plan = owner_sync_plan(ctx_, current, base_);
    plan.micro_batch_collectives.resize(static_cast<std::size_t>(L));
    plan.micro_batch_decision_ns.resize(static_cast<std::size_t>(L));
    plan.micro_batch_transfers.resize(static_cast<std::size_t>(L));
    std::vector<int> group(static_cast<std::size_t>(G));
    for (int g = 0; g < G; ++g) group[static_cast<std::size_t>(g)] = g;
    const double gathered = static_cast<double>(G) * ctx_.experts * count_bytes_;  // the whole gathered buffer
    const auto plan_ns = static_cast<TimeNs>(std::llround(plan_fixed_ns_ + plan_ns_per_expert_ * ctx_.experts));
    for (int l = 0; l < L; ++l) {
      const auto li = static_cast<std::size_t>(l);
      if (gathered > 0.0 && G > 1)
        plan.micro_batch_collectives[li].push_back(
            CollectiveOp{Collective::AllGather, gathered, group, fmt::format("layer {} counts all-gather", l)});
      plan.micro_batch_decision_ns[li].assign(static_cast<std::size_t>(G), plan_ns);
      const std::vector<int>& layout = current.expert_of_slot[li];
      for (int sl = 0; sl < current.num_slots(); ++sl) {
        const int e = layout[static_cast<std::size_t>(sl)];
        if (sl % S < base_ || e < 0) continue;
        plan.micro_batch_transfers[li].push_back(
            Transfer{Endpoint{false, e / base_}, Endpoint{false, sl / S}, ctx_.expert_weight_bytes});
      }
    }
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"dup_slots", dups_},
            {"tolerance", tolerance_},
            {"plan_fixed_ns", plan_fixed_ns_},
            {"plan_ns_per_expert", plan_ns_per_expert_},
            {"count_bytes", count_bytes_}};
  }

 private:
  // One layer's duplicates from its counts [src][expert]: fills the duplicate slots of `layout`
  // (cleared first) and every slot's planned tokens in `share`.
  void plan_layer(const std::int64_t* c, std::vector<int>& layout, std::vector<std::int64_t>& share) const {
    const int G = ctx_.gpus, E = ctx_.experts, S = ctx_.slots_per_gpu;
    std::vector<std::int64_t> rem = expert_loads(c, G, E);  // tokens left on the owner
    std::vector<std::int64_t> load(static_cast<std::size_t>(G), 0);
    std::int64_t total = 0;
    for (int e = 0; e < E; ++e) {
      load[static_cast<std::size_t>(e / base_)] += rem[static_cast<std::size_t>(e)];
      total += rem[static_cast<std::size_t>(e)];
    }
    std::fill(share.begin(), share.end(), 0);
    for (int sl = 0; sl < G * S; ++sl)
      if (sl % S >= base_) layout[static_cast<std::size_t>(sl)] = -1;
    std::vector<int> used(static_cast<std::size_t>(G), 0), dup_slot(static_cast<std::size_t>(G) * E, -1);
    const double mean = static_cast<double>(total) / G;
    const std::int64_t level = (total + G - 1) / G;
    // Each step empties an expert's share on its owner or brings b or t to the level, which
    // no later step undoes: at most E + 2G steps.
    while (total > 0) {
      const auto b = static_cast<int>(std::max_element(load.begin(), load.end()) - load.begin());
      if (static_cast<double>(load[static_cast<std::size_t>(b)]) <= tolerance_ * mean) break;
      int e = -1;
      for (int x = b * base_; x < (b + 1) * base_; ++x)
        if (rem[static_cast<std::size_t>(x)] > 0 && (e < 0 || rem[static_cast<std::size_t>(x)] > rem[static_cast<std::size_t>(e)])) e = x;
      if (e < 0) break;
      int t = -1;
      for (int g = 0; g < G; ++g) {
        if (g == b) continue;
        if (dup_slot[static_cast<std::size_t>(g) * E + e] < 0 && used[static_cast<std::size_t>(g)] >= dups_) continue;
        if (t < 0 || load[static_cast<std::size_t>(g)] < load[static_cast<std::size_t>(t)]) t = g;
      }
      if (t < 0) break;
      const std::int64_t n = std::min({rem[static_cast<std::size_t>(e)], load[static_cast<std::size_t>(b)] - level,
                                       level - load[static_cast<std::size_t>(t)]});
      if (n <= 0) break;
      int& slot = dup_slot[static_cast<std::size_t>(t) * E + e];
      if (slot < 0) {
        slot = t * S + base_ + used[static_cast<std::size_t>(t)]++;
        layout[static_cast<std::size_t>(slot)] = e;
      }
      share[static_cast<std::size_t>(slot)] += n;
      rem[static_cast<std::size_t>(e)] -= n;
      load[static_cast<std::size_t>(b)] -= n;
      load[static_cast<std::size_t>(t)] += n;
    }
    for (int e = 0; e < E; ++e)
      share[static_cast<std::size_t>((e / base_) * S + e % base_)] = rem[static_cast<std::size_t>(e)];
  }

  int base_ = 1;
  int dups_ = 1;
  double tolerance_ = 1.05;
  double plan_fixed_ns_ = 10000.0;
  double plan_ns_per_expert_ = 100.0;
  double count_bytes_ = 4.0;
  std::vector<std::vector<std::int64_t>> share_;  // [layer][slot]: tokens planned for the slot
  std::vector<std::vector<int>> planned_;          // [layer]: the layouts the shares are for
};

}  // namespace

PolicyInfo moesim_policy_ultraep() {
  return {"ultraep",
          "UltraEP (reconstruction, no primary source): hot-expert duplicates planned per micro-batch and layer "
          "from its exact counts so every GPU computes nearly the mean, planning and copies charged",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<UltraEpPolicy>(ctx, p);
          }};
}

}  // namespace moesim

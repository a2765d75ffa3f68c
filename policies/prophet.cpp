// Pro-Prophet ("Pro-Prophet: A Systematic Load Balancing Method for Efficient Parallel Training of
// Large-scale MoE Models", arXiv 2411.10003): every expert has one owner GPU that keeps its
// optimizer state (a static expert-parallel placement); for the next iteration a planner makes
// temporary copies of heavy experts on the GPUs that send them the most tokens. A copy's weights
// are sent from the owner before the iteration and its gradients gathered back to the owner after
// it; the copy processes only its own GPU's tokens.
//
// Planner (per MoE layer, from the counts of the iteration that just ran): repeatedly take the
// busiest GPU, its most loaded owned expert, and copy it to the source GPU that sends it the most
// tokens (one copy per step), until max - min GPU load < alpha * I / E (I: the layer's
// assignments); keep the prefix of those steps that minimised the estimated
//   T' = 4 T_a2a + 3 T_fwd_expert_compute(busiest GPU) + T_send_params + T_gather_grads.
// The T' terms are estimated from bytes over the links and FLOPs over peak x efficiency;
// alpha's default, one copy per step and the link estimates are reconstructions (docs/policies-more.md,
// section prophet).
//
// Slots: the first E/G slots of each GPU hold its owned experts (static); the next
// `extra_slots` hold copies (-1 when unused). slots_per_gpu must be E/G + extra_slots.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "policies/capacity.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class ProphetPolicy final : public Policy {
 public:
  ProphetPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // reconstruction: copy slots per GPU; 2 lets a GPU host two hot experts at once.
    extra_slots_ = static_cast<int>(p.get_int("extra_slots", 2, 0, 4096));
    // reconstruction: the paper's balance threshold alpha (stop when max - min GPU load <
    // alpha * I / E); its value is not given in our sources, 0.1 = within 10% of an expert's
    // mean load.
    alpha_ = p.get_double("alpha", 0.1, 0.0, 1e9);
    // reconstruction: our sources give no capacity rule; 0 = dropless (the planner balances the
    // load instead of dropping it); > 0 caps each (source, expert) at ceil(k * tokens_per_gpu / E
    // * cf) assignments, as DeepSpeed without min_capacity, not padded.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
    if (ctx.experts % ctx.gpus != 0) {
      p.fail("", fmt::format("prophet needs the {} experts to be divisible by the {} GPUs (each GPU owns E/G "
                             "experts)",
                             ctx.experts, ctx.gpus));
    }
    base_ = ctx.experts / ctx.gpus;
    if (ctx.slots_per_gpu != base_ + extra_slots_) {
      p.fail("extra_slots", fmt::format("prophet needs placement.slots_per_gpu = experts / GPUs + extra_slots = {} + "
                                        "{} = {}, found {}",
                                        base_, extra_slots_, base_ + extra_slots_, ctx.slots_per_gpu));
    }
    const ClusterSpec& c = *ctx.cluster;
    nic_bps_ = c.nic_gbps() * 1e9;
    intra_bps_ = c.intra_gbps() * 1e9;
    if (intra_bps_ <= 0.0) intra_bps_ = nic_bps_;
    if (nic_bps_ <= 0.0) nic_bps_ = intra_bps_;
    if (nic_bps_ <= 0.0) nic_bps_ = intra_bps_ = 1e9;  // no links at all: only relative costs matter
    flop_rate_ = c.gpu.peak_tflops * 1e12 * c.gpu.gemm_efficiency;
    if (flop_rate_ <= 0.0) flop_rate_ = 1e12;
    token_bytes_ = ctx.model != nullptr ? static_cast<double>(ctx.model->hidden) * dtype_bytes(ctx.model->dtype) : 0.0;
  }

  [[nodiscard]] std::string name() const override { return "prophet"; }

  [[nodiscard]] Placement initial_placement() override { return owned_placement(ctx_, base_); }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int G = pl.gpus, S = pl.slots_per_gpu, slots = pl.num_slots(), E = ctx_.experts;
    out.reset(G, slots);
    std::vector<int> owner_slot(E, -1), copy_slot(static_cast<std::size_t>(G) * E, -1);
    for (int sl = 0; sl < slots; ++sl) {
      const int e = pl.expert_of_slot[layer][sl];
      if (e < 0 || e >= E) continue;
      int& target = sl % S < base_ ? owner_slot[e] : copy_slot[static_cast<std::size_t>(sl / S) * E + e];
      if (target < 0) target = sl;
    }
    const std::int64_t cap =
        capacity_factor_ > 0.0 ? deepspeed_capacity(ctx_.tokens_per_gpu, ctx_.top_k, E, capacity_factor_, 0) : -1;
    for (int g = 0; g < G; ++g)
      for (int e = 0; e < E; ++e) {
        const std::int64_t n = counts[static_cast<std::size_t>(g) * E + e];
        out.routed += n;
        const int cs = copy_slot[static_cast<std::size_t>(g) * E + e];
        const int slot = cs >= 0 ? cs : owner_slot[e];
        if (slot < 0) {
          out.dropped += n;
          continue;
        }
        const std::int64_t acc = cap < 0 ? n : std::min(n, cap);
        const std::size_t idx = static_cast<std::size_t>(g) * slots + slot;
        out.accepted[idx] += acc;
        out.buffered[idx] += acc;
        out.dropped += n - acc;
      }
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts& counts, const Placement& current) override {
    const int S = ctx_.slots_per_gpu;
    PolicyDecision d;
    Placement next = current;
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      auto& layout = next.expert_of_slot[l];
      for (int sl = 0; sl < next.num_slots(); ++sl)
        if (sl % S >= base_) layout[sl] = -1;
      std::vector<std::pair<int, int>> copies = plan_layer(counts.layer_ptr(l));  // (gpu, expert)
      std::sort(copies.begin(), copies.end());
      std::vector<int> used(ctx_.gpus, 0);
      for (const auto& [g, e] : copies) {
        layout[static_cast<std::size_t>(g) * S + base_ + used[g]++] = e;
        Movement m;
        m.transfer.src = Endpoint{false, owner(e)};
        m.transfer.dst = Endpoint{false, g};
        m.transfer.bytes = ctx_.expert_weight_bytes;  // weights only: the optimizer stays with the owner
        m.blocking = true;
        m.what = fmt::format("layer {} expert {} copy weights to GPU {}", l, e, g);
        d.movements.push_back(std::move(m));
      }
    }
    d.new_placement = next.expert_of_slot != current.expert_of_slot;
    if (d.new_placement) d.placement = std::move(next);
    return d;
  }

  // Owners keep every expert's optimizer state; copies send their gradients to the owner. No
  // replica all-reduce: the copies are not replicas with their own optimizer.
  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    return owner_sync_plan(ctx_, current, base_);
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"extra_slots", extra_slots_}, {"alpha", alpha_}, {"capacity_factor", capacity_factor_}};
  }

 private:
  [[nodiscard]] int owner(int e) const { return e / base_; }

  // The copies (gpu, expert) for one layer's counts [src][expert].
  [[nodiscard]] std::vector<std::pair<int, int>> plan_layer(const std::int64_t* c) const {
    const int G = ctx_.gpus, E = ctx_.experts, gpn = ctx_.cluster->gpus_per_node;
    const auto at = [&](int g, int e) { return c[static_cast<std::size_t>(g) * E + e]; };
    const auto same_node = [&](int a, int b) { return a / gpn == b / gpn; };
    // Per GPU: tokens processed; tokens sent and received over the NIC and inside the node;
    // expert copies sent (as owner) and received, per link class.
    std::vector<std::int64_t> load(G, 0), owner_load(E, 0);
    std::vector<std::int64_t> nic_send(G, 0), nic_recv(G, 0), in_send(G, 0), in_recv(G, 0);
    std::vector<int> pn_send(G, 0), pn_recv(G, 0), pi_send(G, 0), pi_recv(G, 0), ncopies(G, 0);
    std::vector<bool> has_copy(static_cast<std::size_t>(G) * E, false);
    std::int64_t total = 0;
    for (int g = 0; g < G; ++g)
      for (int e = 0; e < E; ++e) {
        const std::int64_t n = at(g, e);
        const int o = owner(e);
        total += n;
        load[o] += n;
        owner_load[e] += n;
        if (g == o) continue;
        (same_node(g, o) ? in_send : nic_send)[g] += n;
        (same_node(g, o) ? in_recv : nic_recv)[o] += n;
      }
    const double tb = token_bytes_;
    auto cost = [&]() {
      double a2a = 0.0, send = 0.0, gather = 0.0;
      std::int64_t busiest = 0;
      for (int g = 0; g < G; ++g) {
        // A GPU's NIC and intra-node links work in parallel; each is as busy as its larger
        // direction.
        a2a = std::max({a2a, static_cast<double>(std::max(nic_send[g], nic_recv[g])) * tb / nic_bps_,
                        static_cast<double>(std::max(in_send[g], in_recv[g])) * tb / intra_bps_});
        const double pn = std::max(pn_send[g], pn_recv[g]), pi = std::max(pi_send[g], pi_recv[g]);
        send = std::max({send, pn * ctx_.expert_weight_bytes / nic_bps_, pi * ctx_.expert_weight_bytes / intra_bps_});
        gather = std::max({gather, pn * ctx_.expert_grad_bytes / nic_bps_, pi * ctx_.expert_grad_bytes / intra_bps_});
        busiest = std::max(busiest, load[g]);
      }
      const double compute = static_cast<double>(busiest) * 2.0 * ctx_.expert_params / flop_rate_;
      return 4.0 * a2a + 3.0 * compute + send + gather;
    };
    std::vector<std::pair<int, int>> moves;
    std::vector<double> costs{cost()};
    const double threshold = alpha_ * static_cast<double>(total) / E;
    std::vector<int> mine(base_);
    for (;;) {
      const auto hi = std::max_element(load.begin(), load.end());  // first maximum: lowest GPU
      const auto lo = std::min_element(load.begin(), load.end());
      if (static_cast<double>(*hi - *lo) < threshold) break;
      const int b = static_cast<int>(hi - load.begin());
      std::iota(mine.begin(), mine.end(), b * base_);
      std::stable_sort(mine.begin(), mine.end(), [&](int x, int y) { return owner_load[x] > owner_load[y]; });
      bool moved = false;
      for (int e : mine) {
        if (owner_load[e] <= 0) break;
        int t = -1;
        for (int g = 0; g < G; ++g) {
          if (g == b || has_copy[static_cast<std::size_t>(g) * E + e] || ncopies[g] >= extra_slots_ || at(g, e) <= 0)
            continue;
          if (t < 0 || at(g, e) > at(t, e)) t = g;
        }
        if (t < 0) continue;
        const std::int64_t n = at(t, e);
        load[b] -= n;
        load[t] += n;
        owner_load[e] -= n;
        const bool local = same_node(t, b);
        (local ? in_send : nic_send)[t] -= n;
        (local ? in_recv : nic_recv)[b] -= n;
        (local ? pi_send : pn_send)[b]++;
        (local ? pi_recv : pn_recv)[t]++;
        has_copy[static_cast<std::size_t>(t) * E + e] = true;
        ncopies[t]++;
        moves.emplace_back(t, e);
        costs.push_back(cost());
        moved = true;
        break;
      }
      if (!moved) break;
    }
    // The prefix with the least T' (the shortest among equals).
    const auto best = static_cast<std::size_t>(std::min_element(costs.begin(), costs.end()) - costs.begin());
    moves.resize(best);
    return moves;
  }

  int extra_slots_ = 2;
  double alpha_ = 0.1;
  double capacity_factor_ = 0.0;
  int base_ = 1;
  double nic_bps_ = 0.0;
  double intra_bps_ = 0.0;
  double flop_rate_ = 0.0;
  double token_bytes_ = 0.0;
};

}  // namespace

PolicyInfo moesim_policy_prophet() {
  return {"prophet",
          "Pro-Prophet: per-iteration temporary copies of heavy experts planned by a greedy on an estimated "
          "iteration time, optimizer state stays with the owner (arXiv 2411.10003)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<ProphetPolicy>(ctx, p);
          }};
}

}  // namespace moesim

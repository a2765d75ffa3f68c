// FlexMoE (Nie et al., "FlexMoE: Scaling Large-scale Sparse Pre-trained Model Training via Dynamic
// Device Placement", SIGMOD 2023, arXiv 2304.03946): experts are replicated into "vExperts" that
// the scheduler expands (adds a replica), shrinks (removes one) and migrates (moves one) while
// every GPU keeps the same number of slots. When a trigger fires, a greedy plan replaces replicas
// of the coldest expert by replicas of the hottest as long as a cost model says the compute time
// and tokens saved outweigh the time to move the expert. The optimizer state moves with the
// expert, on the critical path; by default an expert's replicas shard it (ZeRO-1 over the
// expert-data-parallel copies), so a move carries the weights and one shard. A source GPU sends an
// expert's tokens to that expert's replicas in its own node if it has any there.
//
// The full paper was not available (see shared/reference/policies.md): the trigger, the plan
// step, the cost model and the capacity are reconstructions from secondary descriptions, the
// SwiftMoE paper's reproduction (arXiv 2504.19925) and a public re-implementation, and every
// uncertain part is a parameter.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "policies/common.hpp"
#include "policies/flexmoe_cost.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

__extension__ using Wide = __int128;

class FlexMoePolicy final : public Policy {
 public:
  FlexMoePolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: the SwiftMoE paper's reproduction of FlexMoE rebalanced on a fixed interval
    // (arXiv 2504.19925); FlexMoE itself triggers on a balance ratio (reference summary).
    trigger_ = p.get_enum("trigger", "interval", {"interval", "balance"});
    // source: SwiftMoE paper's reproduction used intervals of 10, 50 and 100; FlexMoE's trigger
    // fired about every 50 to 100 iterations in practice (reference summary). Also the horizon
    // of the cost model.
    interval_ = p.get_int("interval", 50, 1, 1LL << 40);
    // reconstruction: the paper's threshold is not known; 1.2 = the hottest GPU 20 % above the
    // mean.
    balance_threshold_ = p.get_double("balance_threshold", 1.2, 1.0, 1e9);
    // source: secondary descriptions give max/mean; one public re-implementation uses max/min.
    balance_metric_ = p.get_enum("balance_metric", "max_mean", {"max_mean", "max_min"});
    // source: "at most about 10 steps" per plan (reference summary).
    max_steps_ = static_cast<int>(p.get_int("max_steps", 10, 0, 1LL << 20));
    // reconstruction: whether the reproduction dropped tokens is not stated; 1.0 gives FlexMoE
    // the same per-slot capacity as the SwiftMoE comparison (cf * k * T * G / (G * S) per slot).
    // 0 = dropless.
    capacity_factor_ = p.get_double("capacity_factor", 1.0, 0.0, 1e6);
    // reconstruction: FlexMoE weighs the compute time a step saves against the time its transfer
    // takes; false keeps every step that lowers the hottest GPU's tokens (the SwiftMoE
    // reproduction's fixed-interval rebalancing).
    cost_model_ = p.get_bool("cost_model", true);
    // reconstruction: expert compute per token is forward + backward (twice forward), as the
    // core charges it (sim/iteration.cpp).
    compute_passes_ = p.get_double("compute_passes", 3.0, 0.0, 1e6);
    // reconstruction: FlexMoE's cost model weighs a device's computation and its all-to-all
    // communication; an assignment crosses the NIC as a hidden-size activation 4 times
    // (dispatch and combine, forward and backward), as the core charges the all-to-all. 0 =
    // compute only.
    a2a_passes_ = p.get_double("a2a_passes", 4.0, 0.0, 1e6);
    // reconstruction: under a capacity an imbalance shows up as dropped assignments rather than
    // time; each drop the step avoids is priced at what serving it costs (its compute plus its
    // all-to-all, the per-assignment seconds of the gain), times this weight: a lower bound on
    // the learning it loses. 0 = the time gain alone.
    drop_weight_ = p.get_double("drop_weight", 1.0, 0.0, 1e9);
    // source: the SwiftMoE paper's setup (arXiv 2504.19925) trains with DeepSpeed and host
    // offloaded Adam, whose expert-data-parallel groups partition the expert optimizer state
    // (ZeRO stage 1 or 2; DeepSpeed-MoE, Rajbhandari et al., ICML 2022). false: every replica
    // holds and steps a full copy (plain data-parallel replicas).
    shard_optimizer_ = p.get_bool("shard_optimizer", true);
    // reconstruction, off by default: FlexMoE's cost model weighs the devices' computation and
    // all-to-all against the migration (reference summary), not the optimizer step. With a
    // weight > 0 the change of the slowest GPU's optimizer step (all its replicas' shares; the
    // host's, with offload) counts in the gain: a step that leaves a cold expert with fewer
    // holders makes each of them step a larger share.
    optimizer_weight_ = p.get_double("optimizer_weight", 0.0, 0.0, 1e9);
    // reconstruction, off by default (as optimizer_weight): with a weight > 0 the change of the
    // replica groups' collective chain (one collective per (layer, expert), issued in that order
    // on every GPU, as the core runs them) counts in the gain.
    sync_weight_ = p.get_double("sync_weight", 0.0, 0.0, 1e9);
    // reconstruction: the order in which the replica groups' collectives are issued (the same on
    // every GPU) is not in the available sources. layer: (layer, expert) order, as the core and
    // static issue them; greedy: each next collective is the one whose members are all free
    // first under the ring estimate (list scheduling), so scattered groups wait less.
    sync_order_ = p.get_enum("sync_order", "layer", {"layer", "greedy"});
    if (ctx.gpus * ctx.slots_per_gpu < ctx.experts) {
      p.fail("", fmt::format("flexmoe needs at least one slot per expert: {} GPUs x {} slots < {} experts", ctx.gpus,
                             ctx.slots_per_gpu, ctx.experts));
    }
    if (capacity_factor_ > 0.0) {
      const double raw = capacity_factor_ * static_cast<double>(ctx.top_k) * static_cast<double>(ctx.tokens_per_gpu) /
                         static_cast<double>(ctx.slots_per_gpu);
      replica_capacity_ = static_cast<std::int64_t>(std::ceil(raw));
    }
    // Expert FLOPs per token and pass: 2 * ffn_matrices * hidden * expert_ffn_hidden.
    const double flops = 2.0 * ctx.model->ffn_matrices * static_cast<double>(ctx.model->hidden) *
                         static_cast<double>(ctx.model->expert_ffn_hidden) * compute_passes_;
    const double rate = ctx.cluster->gpu.peak_tflops * 1e12 * ctx.cluster->gpu.gemm_efficiency;
    seconds_per_token_ = rate > 0.0 ? flops / rate : 0.0;
    // All-to-all seconds per assignment: a hidden-size activation per pass over the NIC.
    const double nic = ctx.cluster->nic_gbps();
    const double act_bytes = static_cast<double>(ctx.model->hidden) * dtype_bytes(ctx.model->dtype);
    if (a2a_passes_ > 0.0) {
      seconds_per_token_ += nic > 0.0 ? a2a_passes_ * act_bytes / (nic * 1e9) : std::numeric_limits<double>::infinity();
    }
  }

  [[nodiscard]] std::string name() const override { return "flexmoe"; }

  // Static-like even spread: expert e gets floor(G*S/E) replicas, the first (G*S mod E) one
  // more. The replicas, in expert order, go round-robin over the GPUs taken node by node (GPU 0
  // of every node, then GPU 1 of every node, ...): replica i goes to the (i mod G)-th GPU of
  // that order, in its (i / G)-th slot. An expert's replicas therefore sit on distinct GPUs
  // whenever it has <= G of them, and on distinct nodes whenever it has <= nodes.
  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    const int G = pl.gpus, slots = pl.num_slots(), E = ctx_.experts;
    const int gpn = std::max(1, ctx_.cluster->gpus_per_node), nodes = std::max(1, G / gpn);
    std::vector<int> order(G);
    for (int j = 0; j < G; ++j) order[j] = G % gpn == 0 ? (j % nodes) * gpn + j / nodes : j;
    std::vector<int> layout(slots, -1);
    int i = 0;
    for (int e = 0; e < E; ++e) {
      const int r = slots / E + (e < slots % E ? 1 : 0);
      for (int k = 0; k < r; ++k, ++i) layout[order[i % G] * pl.slots_per_gpu + i / G] = e;
    }
    pl.expert_of_slot.assign(ctx_.moe_layers, layout);
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.replica_capacity = replica_capacity_;
    opt.prefer_local_node = true;
    opt.gpus_per_node = ctx_.cluster->gpus_per_node;
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override {
    PolicyDecision d;
    const bool interval_due = trigger_ == "interval" && (static_cast<std::int64_t>(iteration) + 1) % interval_ == 0;
    if (trigger_ == "interval" && !interval_due) return d;
    Placement next = current;
    bool changed = false;
    if (cost_model_ && optimizer_weight_ > 0.0) init_optimizer(current);
    if (cost_model_ && sync_weight_ > 0.0) init_sync(current);
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      const std::int64_t* c = counts.layer_ptr(l);
      // Layer l of `next` is still layer l of `current` here: its loads are what the balance
      // trigger looks at.
      init_layer(current, l, c);
      if (trigger_ == "balance" && balance_ratio(gl_) <= balance_threshold_) continue;
      changed = plan_layer(l, c, current, next) || changed;
    }
    if (!changed) return d;
    d.movements = shard_optimizer_ ? flexmoe_sharded_moves(ctx_, current, next)
                                   : placement_moves(ctx_, current, next, /*with_optimizer=*/true, /*blocking=*/true);
    d.new_placement = true;
    d.placement = std::move(next);
    return d;
  }

  // The replicas of an expert are its expert-data-parallel group: they reduce-scatter its
  // gradients and each steps its 1 / r shard (sharded), or all-reduce and each steps the whole
  // expert. The iteration ran on `current`.
  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    SyncPlan plan = default_sync_plan(ctx_, current, shard_optimizer_);
    if (sync_order_ == "greedy") {
      flexmoe_greedy_order(ctx_, plan.grad_collectives);
      flexmoe_greedy_order(ctx_, plan.post_collectives);
    }
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"trigger", trigger_},
            {"interval", interval_},
            {"balance_threshold", balance_threshold_},
            {"balance_metric", balance_metric_},
            {"max_steps", max_steps_},
            {"capacity_factor", capacity_factor_},
            {"cost_model", cost_model_},
            {"compute_passes", compute_passes_},
            {"a2a_passes", a2a_passes_},
            {"drop_weight", drop_weight_},
            {"shard_optimizer", shard_optimizer_},
            {"optimizer_weight", optimizer_weight_},
            {"sync_weight", sync_weight_},
            {"sync_order", sync_order_},
            {"replica_capacity", replica_capacity_}};
  }

 private:
  // The plan's view of one layer, kept up to date step by step: the layout, each expert's slots
  // (ascending), replica counts, and the assignments each slot and GPU computes with FlexMoE's
  // routing and no capacity (the demand the plan balances; what dispatch_even gives without a
  // capacity, summed per slot). A step changes two or three experts' replica sets, so only their
  // slots are recomputed.
  void init_layer(const Placement& pl, int layer, const std::int64_t* counts) {
    const int E = ctx_.experts, G = pl.gpus, S = pl.slots_per_gpu, slots = G * S;
    const int gpn = std::max(1, ctx_.cluster->gpus_per_node);
    gpus_ = G;
    slots_per_gpu_ = S;
    lay_ = pl.expert_of_slot[layer];
    slots_of_.resize(static_cast<std::size_t>(E));
    for (auto& v : slots_of_) v.clear();
    reps_.assign(E, 0);
    for (int s = 0; s < slots; ++s) {
      const int e = lay_[s];
      if (e < 0) continue;
      ++reps_[e];
      if (e < E) slots_of_[e].push_back(s);
    }
    node_first_.assign((G + gpn - 1) / gpn, 0);
    node_count_.assign(node_first_.size(), 0);
    slot_load_.assign(slots, 0);
    gl_.assign(G, 0);
    // The counts by expert, then source: each expert's pass reads them contiguously.
    by_expert_.resize(static_cast<std::size_t>(E) * G);
    // Eight experts (one cache line of a source's counts) at a time, into eight output streams.
    constexpr int kBlock = 8;
    for (int e0 = 0; e0 < E; e0 += kBlock) {
      const int e1 = std::min(E, e0 + kBlock);
      for (int g = 0; g < G; ++g) {
        const std::int64_t* row = counts + static_cast<std::size_t>(g) * E;
        for (int e = e0; e < e1; ++e) by_expert_[static_cast<std::size_t>(e) * G + g] = row[e];
      }
    }
    for (int e = 0; e < E; ++e) refresh_expert(e);
  }

  // Recomputes the assignments of every slot of expert `e` (and the GPUs' totals): each source
  // splits its tokens evenly over the expert's replicas in its own node (over all replicas when
  // it has none there), the remainder one by one from the replica at index (source mod count),
  // exactly as dispatch_even does. Summed with a difference array over the expert's replicas.
  void refresh_expert(int e) {
    const std::vector<int>& R = slots_of_[e];
    const int k = static_cast<int>(R.size());
    if (k == 0) return;
    const int G = gpus_, S = slots_per_gpu_;
    const std::int64_t* counts = by_expert_.data() + static_cast<std::size_t>(e) * G;
    const int gpn = std::max(1, ctx_.cluster->gpus_per_node);
    // Slots ascend, so each node's replicas are a contiguous run of R.
    for (int i = 0; i < k;) {
      const int node = R[i] / S / gpn;
      int j = i;
      while (j < k && R[j] / S / gpn == node) ++j;
      node_first_[node] = i;
      node_count_[node] = j - i;
      i = j;
    }
    diff_.assign(static_cast<std::size_t>(k) + 1, 0);
    // Source g sends n / m to each of its m targets (a contiguous run of R from index a) and
    // one more to the targets (g + i) mod m, i < n mod m.
    auto add_source = [&](int g, std::int64_t n, int a, int m) {
      const std::int64_t base = n / m;
      const auto extra = static_cast<int>(n % m);
      diff_[a] += base;
      diff_[a + m] -= base;
      if (extra > 0) {
        const int start = g % m;
        if (start + extra <= m) {
          ++diff_[a + start];
          --diff_[a + start + extra];
        } else {
          ++diff_[a + start];
          --diff_[a + m];
          ++diff_[a];
          --diff_[a + start + extra - m];
        }
      }
    };
    // Sources without a replica in their node spread over all k replicas: their equal shares
    // are summed in `spread`, their cyclic runs of one extra, [start, start + rem) mod k with
    // start = g mod k, go to diff_ without branches (a run that wraps adds one everywhere,
    // counted in `spread`, and takes one off between its end and its start).
    std::int64_t spread = 0;
    // Below 2^40 (and k < 2^12) the rounded double quotient truncates to n / k: n / k is at
    // least 1 / k below the next integer, far more than the rounding error.
    const double dk = static_cast<double>(k);
    const std::int64_t kExact = k < (1 << 12) ? std::int64_t{1} << 40 : 0;
    int start = 0;  // g mod k
    for (int g0 = 0, node = 0; g0 < G; g0 += gpn, ++node) {
      const int g1 = std::min(G, g0 + gpn);
      if (node_count_[node] > 0) {
        for (int g = g0; g < g1; ++g) {
          const std::int64_t n = counts[g];
          if (n != 0) add_source(g, n, node_first_[node], node_count_[node]);
        }
        start = static_cast<int>((start + (g1 - g0)) % k);
        continue;
      }
      for (int g = g0; g < g1; ++g) {
        const std::int64_t n = counts[g];
        if (n < 0 || n >= kExact) {
          add_source(g, n, 0, k);
        } else {
          const auto q = static_cast<std::int64_t>(static_cast<double>(n) / dk);
          const int end = start + static_cast<int>(n - q * k);
          const int wrap = end > k ? 1 : 0;
          spread += q + wrap;
          ++diff_[start];
          --diff_[end - wrap * k];
        }
        start = start + 1 == k ? 0 : start + 1;
      }
    }
    std::int64_t run = spread;
    for (int i = 0; i < k; ++i) {
      run += diff_[i];
      const int s = R[i];
      gl_[s / S] += run - slot_load_[s];
      slot_load_[s] = run;
    }
    for (int i = 0; i < k; ++i) node_count_[R[i] / S / gpn] = 0;
  }

  // Parameters GPU g steps, over all layers of `pl`: each GPU holding an expert steps 1 / (its
  // holding GPUs) of it when sharded, the whole expert otherwise (as default_sync_plan).
  void init_optimizer(const Placement& pl) {
    const int E = ctx_.experts, S = pl.slots_per_gpu;
    opt_params_.assign(static_cast<std::size_t>(pl.gpus), 0.0);
    std::vector<std::vector<int>> holders(static_cast<std::size_t>(E));
    for (const auto& layer : pl.expert_of_slot) {
      for (auto& h : holders) h.clear();
      for (int s = 0; s < static_cast<int>(layer.size()); ++s) {
        const int e = layer[s];
        if (e < 0 || e >= E) continue;
        auto& h = holders[e];
        if (h.empty() || h.back() != s / S) h.push_back(s / S);  // slots ascend: GPUs too
      }
      for (const auto& h : holders) add_shares(h, 1.0);
    }
  }
  void add_shares(const std::vector<int>& gpus, double sign) {
    if (gpus.empty()) return;
    const double share =
        shard_optimizer_ ? ctx_.expert_params / static_cast<double>(gpus.size()) : ctx_.expert_params;
    for (int g : gpus) opt_params_[g] += sign * share;
  }
  // Adds (sign 1) or removes (-1) expert e's optimizer shares under the working layout.
  void add_expert_shares(int e, double sign) {
    holders_.clear();
    for (int s : slots_of_[e])
      if (holders_.empty() || holders_.back() != s / slots_per_gpu_) holders_.push_back(s / slots_per_gpu_);
    add_shares(holders_, sign);
  }
  [[nodiscard]] double optimizer_seconds() const { return flexmoe_optimizer_seconds(ctx_, opt_params_); }

  void init_sync(const Placement& pl) {
    const int E = ctx_.experts, S = pl.slots_per_gpu;
    group_of_.assign(pl.expert_of_slot.size(), std::vector<std::vector<int>>(static_cast<std::size_t>(E)));
    for (std::size_t l = 0; l < pl.expert_of_slot.size(); ++l) {
      const auto& layer = pl.expert_of_slot[l];
      for (int s = 0; s < static_cast<int>(layer.size()); ++s) {
        const int e = layer[s];
        if (e < 0 || e >= E) continue;
        auto& h = group_of_[l][e];
        if (h.empty() || h.back() != s / S) h.push_back(s / S);
      }
    }
  }
  // Layer l's groups of the working layout into group_of_.
  void store_groups(int l) {
    for (int e = 0; e < ctx_.experts; ++e) {
      auto& h = group_of_[l][e];
      h.clear();
      for (int s : slots_of_[e])
        if (h.empty() || h.back() != s / slots_per_gpu_) h.push_back(s / slots_per_gpu_);
    }
  }
  [[nodiscard]] double sync_seconds() { return flexmoe_sync_seconds(ctx_, group_of_, shard_optimizer_, free_s_); }

  // Lowest slot of GPU g holding expert e in the working layout, or -1.
  [[nodiscard]] int slot_on(int g, int e) const {
    const int S = slots_per_gpu_;
    for (int s = g * S; s < (g + 1) * S; ++s)
      if (lay_[s] == e) return s;
    return -1;
  }

  // Puts expert `e` into `slot` of the working layout (loads not refreshed).
  void assign_slot(int slot, int e) {
    const int old = lay_[slot];
    if (old >= 0) {
      --reps_[old];
      auto& v = slots_of_[old];
      v.erase(std::lower_bound(v.begin(), v.end(), slot));
    }
    lay_[slot] = e;
    ++reps_[e];
    auto& v = slots_of_[e];
    v.insert(std::lower_bound(v.begin(), v.end(), slot), slot);
  }

  [[nodiscard]] double balance_ratio(const std::vector<std::int64_t>& load) const {
    const std::int64_t mx = *std::max_element(load.begin(), load.end());
    if (mx == 0) return 1.0;
    if (balance_metric_ == "max_min") {
      const std::int64_t mn = *std::min_element(load.begin(), load.end());
      return mn == 0 ? std::numeric_limits<double>::infinity() : static_cast<double>(mx) / static_cast<double>(mn);
    }
    double total = 0.0;
    for (std::int64_t v : load) total += static_cast<double>(v);
    return static_cast<double>(mx) * static_cast<double>(load.size()) / total;
  }

  // Bandwidth (GB/s) between two GPUs: intra-node or the NIC.
  [[nodiscard]] double link_gbps(int a, int b) const {
    const int gpn = ctx_.cluster->gpus_per_node;
    return a / gpn == b / gpn ? ctx_.cluster->intra_gbps() : ctx_.cluster->nic_gbps();
  }

  // The GPU holding `expert` in layer `layer` of `from` that a copy to `dst` comes from, as
  // placement_moves picks it: dst itself, else the same node first, else the lowest id; -1 when
  // none holds it.
  [[nodiscard]] int source_gpu(const Placement& from, int layer, int expert, int dst) const {
    const int S = from.slots_per_gpu, gpn = ctx_.cluster->gpus_per_node;
    int src = -1;
    for (int s = 0; s < from.num_slots(); ++s) {
      if (from.expert_of_slot[layer][s] != expert) continue;
      const int g = s / S;
      if (g == dst) return g;
      if (src < 0 || (g / gpn == dst / gpn && src / gpn != dst / gpn)) src = g;
    }
    return src;
  }

  // Seconds to send `bytes` from src to dst (0 on the same GPU, infinite without a link).
  [[nodiscard]] double send_seconds(int src, int dst, double bytes) const {
    if (src == dst || bytes <= 0.0) return 0.0;
    const double gbps = src >= 0 ? link_gbps(src, dst) : ctx_.cluster->nic_gbps();
    if (gbps <= 0.0) return std::numeric_limits<double>::infinity();
    return bytes / (gbps * 1e9);
  }

  // Seconds to bring `expert` to GPU `dst` from its source in `from`: its weights and its
  // optimizer state (a 1 / `reps_after` shard when sharded, the whole state otherwise).
  [[nodiscard]] double move_seconds(const Placement& from, int layer, int expert, int dst, int reps_after) const {
    const int src = source_gpu(from, layer, expert, dst);
    if (src == dst) return 0.0;
    const double opt = shard_optimizer_ ? ctx_.expert_optimizer_bytes / std::max(1, reps_after)
                                        : ctx_.expert_optimizer_bytes;
    return send_seconds(src, dst, ctx_.expert_weight_bytes + opt);
  }

  // Assignments an expert layer drops under the replica capacity: what exceeds r * capacity.
  [[nodiscard]] std::int64_t drops(const std::vector<std::int64_t>& load) const {
    if (replica_capacity_ < 0) return 0;
    std::int64_t d = 0;
    for (std::size_t e = 0; e < load.size(); ++e) d += std::max<std::int64_t>(0, load[e] - reps_[e] * replica_capacity_);
    return d;
  }

  // One slot change of a plan step.
  struct Change {
    int slot;
    int expert;
  };

  // Greedy plan of one layer, applied to `next` (which starts as `current`; init_layer has
  // loaded that layout). Returns whether anything changed.
  bool plan_layer(int l, const std::int64_t* counts, const Placement& current, Placement& next) {
    const int E = ctx_.experts, G = next.gpus, S = next.slots_per_gpu;
    const std::vector<std::int64_t> load = expert_loads(counts, G, E);
    const std::vector<int>& reps = reps_;
    const std::vector<std::int64_t>& gl = gl_;
    bool changed = false;
    for (int step = 0; step < max_steps_; ++step) {
      // load[a] / reps[a] < load[b] / reps[b], exactly.
      auto colder = [&](int a, int b) {
        return static_cast<Wide>(load[a]) * reps[b] < static_cast<Wide>(load[b]) * reps[a];
      };
      int hot = -1;
      for (int e = 0; e < E; ++e)
        if (reps[e] > 0 && (hot < 0 || colder(hot, e))) hot = e;
      int cold = -1;
      for (int e = 0; e < E; ++e)
        if (e != hot && reps[e] > 1 && (cold < 0 || colder(e, cold))) cold = e;
      if (hot < 0 || cold < 0) break;

      // Lighter GPU: fewer assignments, ties to the lower id.
      auto lighter = [&](int a, int b) { return gl[a] < gl[b] || (gl[a] == gl[b] && a < b); };
      std::vector<Change> changes;
      // Expand the hot expert into the cold one's slot on the least-loaded GPU that holds the
      // cold expert but not the hot one.
      int target = -1, target_slot = -1;
      for (int s : slots_of_[cold]) {  // ascending: a GPU's lowest slot of `cold` comes first
        const int g = s / S;
        if (g == target || slot_on(g, hot) >= 0) continue;
        if (target < 0 || lighter(g, target)) {
          target = g;
          target_slot = s;
        }
      }
      if (target >= 0) {
        changes.push_back({target_slot, hot});
      } else {
        // Every GPU holding the cold expert already holds the hot one: the least-loaded of them
        // gives its cold slot to a third expert x migrated from the least-loaded GPU without the
        // hot expert, whose slot of x takes the hot replica. x is that GPU's coldest expert
        // (per replica; ties to the lowest id) not already on the first GPU.
        int g = -1, g_slot = -1;
        for (int s : slots_of_[cold]) {
          const int h = s / S;
          if (h != g && (g < 0 || lighter(h, g))) {
            g = h;
            g_slot = s;
          }
        }
        // GPUs from the lightest up, popped from a heap (the whole order is rarely needed).
        order_.resize(static_cast<std::size_t>(G));
        for (int h = 0; h < G; ++h) order_[h] = h;
        auto heavier = [&](int a, int b) { return lighter(b, a); };
        std::make_heap(order_.begin(), order_.end(), heavier);
        for (auto end = order_.end(); end != order_.begin();) {
          std::pop_heap(order_.begin(), end, heavier);
          --end;
          const int h = *end;
          if (slot_on(h, hot) >= 0) continue;
          int x = -1, x_slot = -1;
          for (int s = h * S; s < (h + 1) * S; ++s) {  // ascending: x_slot is h's lowest slot of x
            const int e = lay_[s];
            if (e < 0 || e == x || slot_on(g, e) >= 0) continue;
            if (x < 0 || colder(e, x) || (!colder(x, e) && e < x)) {
              x = e;
              x_slot = s;
            }
          }
          if (x < 0) continue;
          changes.push_back({g_slot, x});
          changes.push_back({x_slot, hot});
          break;
        }
      }
      if (changes.empty()) break;  // the hot expert is on every GPU: nothing to expand into

      // The cost of the step's moves, before they change the working state: each changed slot
      // receives its new expert (weights + its shard after the step, or the whole state); with a
      // sharded optimizer the cold expert's leaving shard (1 / its replicas before) goes to one
      // of its remaining holders. The third expert keeps its count: its shard just moves with it.
      double cost = 0.0;
      if (cost_model_) {
        for (const Change& c : changes) {
          const int after_reps = reps[c.expert] + (c.expert == hot ? 1 : 0);
          cost += move_seconds(current, l, c.expert, c.slot / S, after_reps);
        }
        if (shard_optimizer_) {
          const int from_gpu = changes.front().slot / S;  // the cold slot is the first change
          int to = -1;
          for (int s : slots_of_[cold])
            if (s / S != from_gpu && (to < 0 || (link_gbps(from_gpu, s / S) > link_gbps(from_gpu, to)))) to = s / S;
          if (to >= 0) cost += send_seconds(from_gpu, to, ctx_.expert_optimizer_bytes / reps[cold]);
        }
      }
      // Apply the step to the working state and refresh the loads of the experts it touches.
      const std::int64_t before = *std::max_element(gl.begin(), gl.end());
      const std::int64_t drops_before = drops(load);
      touched_.clear();
      for (const Change& c : changes) {
        if (lay_[c.slot] >= 0) touched_.push_back(lay_[c.slot]);
        touched_.push_back(c.expert);
      }
      std::sort(touched_.begin(), touched_.end());
      touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
      const bool weigh_opt = cost_model_ && optimizer_weight_ > 0.0;
      const bool weigh_sync = cost_model_ && sync_weight_ > 0.0;
      const double sync_before = weigh_sync ? sync_seconds() : 0.0;
      if (weigh_sync) groups_saved_ = group_of_[l];
      double opt_before = 0.0;
      if (weigh_opt) {
        opt_before = optimizer_seconds();
        opt_saved_ = opt_params_;
        for (int e : touched_) add_expert_shares(e, -1.0);
      }
      for (const Change& c : changes) assign_slot(c.slot, c.expert);
      for (int e : touched_) refresh_expert(e);
      if (weigh_opt)
        for (int e : touched_) add_expert_shares(e, 1.0);
      const std::int64_t after = *std::max_element(gl.begin(), gl.end());
      // A rejected step ends the layer's plan, so the layer's working state need not be rolled
      // back; the optimizer shares span all layers and are.
      if (after >= before) {
        if (weigh_opt) opt_params_ = opt_saved_;
        break;
      }
      if (weigh_sync) store_groups(l);
      if (cost_model_) {
        // Per iteration: the hottest GPU's assignments saved and the drops avoided, each at the
        // per-assignment seconds (compute + all-to-all), plus the slowest optimizer step's
        // change, over `interval` iterations.
        const double saved = static_cast<double>(before - after) +
                             drop_weight_ * static_cast<double>(drops_before - drops(load));
        const double opt_gain = weigh_opt ? optimizer_weight_ * (opt_before - optimizer_seconds()) : 0.0;
        const double sync_gain = weigh_sync ? sync_weight_ * (sync_before - sync_seconds()) : 0.0;
        const double gain = (saved * seconds_per_token_ + opt_gain + sync_gain) * static_cast<double>(interval_);
        if (!(gain > cost)) {
          if (weigh_opt) opt_params_ = opt_saved_;
          if (weigh_sync) {
            // Back to the groups before the step (the working layout is not rolled back).
            group_of_[l] = groups_saved_;
          }
          break;
        }
      }
      for (const Change& c : changes) next.expert_of_slot[l][c.slot] = c.expert;
      changed = true;
    }
    return changed;
  }

  std::string trigger_ = "interval";
  std::int64_t interval_ = 50;
  double balance_threshold_ = 1.2;
  std::string balance_metric_ = "max_mean";
  int max_steps_ = 10;
  double capacity_factor_ = 1.0;
  bool cost_model_ = true;
  double compute_passes_ = 3.0;
  double a2a_passes_ = 4.0;
  double drop_weight_ = 1.0;
  bool shard_optimizer_ = true;
  double optimizer_weight_ = 0.0;
  double sync_weight_ = 0.0;
  std::string sync_order_ = "layer";
  // Holding GPUs (ascending) of every (layer, expert) in the placement being planned.
  std::vector<std::vector<std::vector<int>>> group_of_;
  std::vector<double> free_s_;
  std::vector<std::vector<int>> groups_saved_;
  std::int64_t replica_capacity_ = -1;
  // Expert parameters each GPU steps over all layers in the placement being planned (layers
  // before the current one as planned, the rest as they are).
  std::vector<double> opt_params_, opt_saved_;
  std::vector<int> holders_;
  double seconds_per_token_ = 0.0;
  // Working state of the layer being planned (see init_layer).
  int gpus_ = 0, slots_per_gpu_ = 0;
  std::vector<int> lay_;
  std::vector<std::vector<int>> slots_of_;
  std::vector<int> reps_;
  std::vector<std::int64_t> slot_load_;
  std::vector<std::int64_t> gl_;
  std::vector<int> node_first_, node_count_;
  std::vector<std::int64_t> diff_, by_expert_;
  std::vector<int> order_, touched_;
};

}  // namespace

PolicyInfo moesim_policy_flexmoe() {
  return {"flexmoe",
          "FlexMoE dynamic vExpert replication with a migration cost model, optimizer state moved "
          "with the expert (Nie et al., SIGMOD 2023)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<FlexMoePolicy>(ctx, p);
          }};
}

}  // namespace moesim

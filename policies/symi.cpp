// SwiftMoE / SYMI (Skiadopoulos et al., "Accelerating Mixture-of-Experts Training with Adaptive
// Expert Replication", arXiv 2504.19925, NSDI 2026). The optimizer state of every expert is
// sharded statically and evenly over all N nodes (on their hosts in the paper) and never moves;
// GPU slots hold only expert weights, and their placement is recomputed every iteration from the
// token counts of the iteration that just ran (Algorithm 1). After the backward pass the
// replicas of each expert all-reduce their gradients, every node collects the gradient shards of
// the optimizer partitions it owns and runs Adam on them, and the updated weight shards go to
// the slots of the NEW placement. Rebalancing therefore moves nothing beyond the weights every
// slot receives each iteration anyway: the policy's movement list is always empty.
#include "policies/symi.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {

std::vector<int> symi_replica_counts(const std::vector<double>& popularity, int total_slots) {
  const auto E = static_cast<int>(popularity.size());
  if (E == 0) return {};
  if (total_slots < E)
    throw std::invalid_argument(
        fmt::format("symi: {} slots cannot hold {} experts once each", total_slots, E));
  double sum = 0.0;
  for (double p : popularity) {
    if (!(p >= 0.0)) throw std::invalid_argument("symi: popularity must be >= 0");
    sum += p;
  }
  const auto slots = static_cast<double>(total_slots);
  std::vector<int> count(E);
  std::vector<double> diff(E);
  std::int64_t n = 0;
  for (int i = 0; i < E; ++i) {
    // p_i * slots / sum rather than p_i / sum * slots: exact for the integer inputs of the tests.
    const double goal = sum > 0.0 ? popularity[i] * slots / sum : slots / static_cast<double>(E);
    count[i] = static_cast<int>(std::floor(std::max(goal, 1.0)));
    diff[i] = static_cast<double>(count[i]) - goal;
    n += count[i];
  }
  // Over-allocated (only the at-least-one floor can cause it): take from the largest diff among
  // experts with more than one replica. Such an expert exists while n > slots >= E.
  while (n > total_slots) {
    int best = -1;
    for (int i = 0; i < E; ++i)
      if (count[i] > 1 && (best < 0 || diff[i] > diff[best])) best = i;
    --count[best];
    diff[best] -= 1.0;
    --n;
  }
  // Under-allocated (flooring): give to the smallest diff.
  while (n < total_slots) {
    int best = 0;
    for (int i = 1; i < E; ++i)
      if (diff[i] < diff[best]) best = i;
    ++count[best];
    diff[best] += 1.0;
    ++n;
  }
  return count;
}

std::vector<int> symi_fill_slots(const std::vector<int>& replica_counts) {
  std::vector<int> slots;
  for (int e = 0; e < static_cast<int>(replica_counts.size()); ++e)
    for (int r = 0; r < replica_counts[e]; ++r) slots.push_back(e);
  return slots;
}

double symi_static_comm_seconds(double experts, double ranks, double slots, double bytes,
                                double pcie_bytes_per_s, double net_bytes_per_s, bool offload) {
  const double pcie = offload ? (experts / ranks) * bytes / pcie_bytes_per_s : 0.0;
  return pcie + ((slots * ranks - experts) / ranks) * bytes / net_bytes_per_s;
}

double symi_comm_seconds(double experts, double ranks, double slots, double bytes, double pcie_bytes_per_s,
                         double net_bytes_per_s, bool offload) {
  const double pcie = offload ? (experts / ranks) * bytes / pcie_bytes_per_s : 0.0;
  return pcie + ((slots * ranks - slots) / ranks) * bytes / net_bytes_per_s;
}

namespace {

// Distinct GPUs holding each expert of `layer`, ascending.
std::vector<std::vector<int>> holder_gpus(const Placement& p, int layer, int experts) {
  std::vector<std::vector<int>> out = expert_slots(p, layer, experts);
  for (auto& h : out) {
    for (int& s : h) s = p.gpu_of_slot(s);
    h.erase(std::unique(h.begin(), h.end()), h.end());  // slots ascend, so GPUs do too
  }
  return out;
}

class SymiPolicy final : public Policy {
 public:
  SymiPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: SwiftMoE paper's evaluation (arXiv 2504.19925): capacity factor 1.0, min capacity 2.
    capacity_factor_ = p.get_double("capacity_factor", 1.0, 0.0, 1e6);
    min_capacity_ = p.get_int("min_capacity", 2, 0, 1LL << 40);
    drop_tokens_ = p.get_bool("drop_tokens", true);
    // source: SwiftMoE paper section 3: optimizer state sharded over all nodes and offloaded to
    // host memory (false keeps each node's shards on its GPUs instead).
    optimizer_on_host_ = p.get_bool("optimizer_on_host", true);
    // Assumption (not in the paper): the scheduler's own cost (popularity to Algorithm 1 to slot
    // map), per expert and MoE layer, on every GPU.
    scheduler_ns_per_expert_ = p.get_double("scheduler_ns_per_expert", 50.0, 0.0, 1e9);
    if (drop_tokens_ && capacity_factor_ <= 0.0) {
      p.fail("capacity_factor", "must be > 0 when drop_tokens is true (use drop_tokens: false for dropless)");
    }
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts) {
      p.fail("", fmt::format(
                     "symi needs at least one slot per expert: {} slots ({} GPUs x {} slots) for {} experts",
                     slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    // slot_capacity = cf * tokens_per_batch / (S * G), tokens_per_batch = k * tokens_per_gpu * G
    // assignments; rounded up (as DeepSpeed rounds its capacity) and floored at min_capacity.
    const double raw = capacity_factor_ * static_cast<double>(ctx.top_k) *
                       static_cast<double>(ctx.tokens_per_gpu) / static_cast<double>(ctx.slots_per_gpu);
    slot_capacity_ = std::max(static_cast<std::int64_t>(std::ceil(raw)), min_capacity_);
  }

  [[nodiscard]] std::string name() const override { return "symi"; }

  [[nodiscard]] Placement initial_placement() override {
    // Algorithm 1 on equal popularity.
    return placement_from([](int, int) { return 1.0; });
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.replica_capacity = drop_tokens_ ? slot_capacity_ : -1;
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts& counts,
                                               const Placement&) override {
    // The next iteration's placement from this iteration's counts (one iteration lag). Every
    // slot receives fresh weights in the sync plan anyway, so no movement is listed.
    PolicyDecision d;
    d.new_placement = true;
    std::vector<std::vector<std::int64_t>> loads(ctx_.moe_layers);
    for (int l = 0; l < ctx_.moe_layers; ++l)
      loads[l] = expert_loads(counts.layer_ptr(l), ctx_.gpus, ctx_.experts);
    d.placement = placement_from([&loads](int l, int e) { return static_cast<double>(loads[l][e]); });
    return d;
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement& next) override {
    const ClusterSpec& cs = *ctx_.cluster;
    const int N = cs.nodes, gpn = cs.gpus_per_node, G = ctx_.gpus, E = ctx_.experts;
    SyncPlan plan;
    plan.resize(G, N);
    // (1) All-reduce of the per-layer length-E vectors of token counts (int64).
    std::vector<int> all(G);
    std::iota(all.begin(), all.end(), 0);
    plan.pre_collectives.push_back({Collective::AllReduce,
                                    static_cast<double>(E) * static_cast<double>(ctx_.moe_layers) * 8.0, all,
                                    "symi expert popularity"});
    // (2) Replicas all-reduce their gradients (the core sums same-GPU replicas first).
    plan.replica_allreduce = true;
    const double grad_shard = ctx_.expert_grad_bytes / N;
    const double weight_shard = ctx_.expert_weight_bytes / N;
    const double param_shard = ctx_.expert_params / N;
    std::map<std::pair<int, int>, double> grad_flows, weight_flows;
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      const auto cur = holder_gpus(current, l, E);
      const auto nxt = holder_gpus(next, l, E);
      for (int e = 0; e < E; ++e) {
        const auto& hc = cur[e];
        const auto& hn = nxt[e];
        std::size_t round_robin = 0;
        for (int n = 0; n < N; ++n) {
          // The node's landing GPU for this expert's shard: it relays the shard to and from the
          // host, or holds it in GPU memory when the optimizer is not on the host.
          const int home = n * gpn + e % gpn;
          // (3) Gradient collection: one source replica per (expert, owner node): the owner's
          // own replica if it holds one, otherwise round-robin over the expert's GPUs.
          int src = -1;
          if (!optimizer_on_host_ && std::find(hc.begin(), hc.end(), home) != hc.end()) src = home;
          for (std::size_t i = 0; src < 0 && i < hc.size(); ++i)
            if (cs.node_of(hc[i]) == n) src = hc[i];
          if (src < 0 && !hc.empty()) src = hc[round_robin++ % hc.size()];
          if (src >= 0) {
            if (optimizer_on_host_) {
              const int down = cs.node_of(src) == n ? src : home;
              if (down != src) grad_flows[{src, down}] += grad_shard;
              plan.d2h_bytes[down] += grad_shard;
            } else if (src != home) {
              grad_flows[{src, home}] += grad_shard;
            }
          }
          // (4) Adam on the owner's shard.
          if (optimizer_on_host_) {
            plan.host_optimizer_params[n] += param_shard;
          } else {
            plan.gpu_optimizer_params[home] += param_shard;
          }
          // (5) The updated shard to every GPU that holds the expert in the next placement.
          int up = home;
          if (optimizer_on_host_) {
            for (int g : hn)
              if (cs.node_of(g) == n) {
                up = g;
                break;
              }
            plan.h2d_bytes[up] += weight_shard;
          }
          for (int g : hn)
            if (g != up) weight_flows[{up, g}] += weight_shard;
        }
      }
    }
    for (const auto& [k, bytes] : grad_flows)
      plan.gradient_transfers.push_back(Transfer{Endpoint{false, k.first}, Endpoint{false, k.second}, bytes});
    for (const auto& [k, bytes] : weight_flows)
      plan.weight_transfers.push_back(Transfer{Endpoint{false, k.first}, Endpoint{false, k.second}, bytes});
    // (6) The scheduler's own time.
    const double decision =
        scheduler_ns_per_expert_ * static_cast<double>(E) * static_cast<double>(ctx_.moe_layers);
    plan.decision_ns.assign(G, static_cast<TimeNs>(std::llround(decision)));
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"capacity_factor", capacity_factor_},
            {"min_capacity", min_capacity_},
            {"drop_tokens", drop_tokens_},
            {"optimizer_on_host", optimizer_on_host_},
            {"scheduler_ns_per_expert", scheduler_ns_per_expert_},
            {"slot_capacity", slot_capacity_}};
  }

 private:
  template <typename Popularity>
  [[nodiscard]] Placement placement_from(Popularity popularity) const {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    pl.expert_of_slot.resize(ctx_.moe_layers);
    std::vector<double> p(ctx_.experts);
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      for (int e = 0; e < ctx_.experts; ++e) p[e] = popularity(l, e);
      pl.expert_of_slot[l] = symi_fill_slots(symi_replica_counts(p, pl.num_slots()));
    }
    return pl;
  }

  double capacity_factor_ = 1.0;
  std::int64_t min_capacity_ = 2;
  bool drop_tokens_ = true;
  bool optimizer_on_host_ = true;
  double scheduler_ns_per_expert_ = 50.0;
  std::int64_t slot_capacity_ = 0;
};

}  // namespace

PolicyInfo moesim_policy_symi() {
  return {
      "symi",
      "SwiftMoE/SYMI: per-iteration replica rebalancing, optimizer state statically sharded over the nodes' "
      "hosts (Skiadopoulos et al., NSDI 2026)",
      [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
        return std::make_unique<SymiPolicy>(ctx, p);
      }};
}

}  // namespace moesim

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
#include <numeric>
#include <stdexcept>
#include <utility>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {

std::int64_t symi_scheduler_steps(int experts, int slots, int owners, int adjustments) {
  const std::int64_t E = experts;
  return E + static_cast<std::int64_t>(adjustments) * E + slots + E * owners;
}

std::vector<int> symi_replica_counts(const std::vector<double>& popularity, int total_slots, int* adjustments) {
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
  if (adjustments != nullptr) *adjustments = static_cast<int>(n > total_slots ? n - total_slots : total_slots - n);
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

// Distinct GPUs holding each expert of `layer`, ascending, into `out` (reused).
void holder_gpus(const Placement& p, int layer, int experts, std::vector<std::vector<int>>& out) {
  out.resize(static_cast<std::size_t>(experts));
  for (auto& h : out) h.clear();
  const auto& slots = p.expert_of_slot[layer];
  for (int s = 0; s < static_cast<int>(slots.size()); ++s) {
    const int e = slots[s];
    if (e < 0 || e >= experts) continue;
    const int g = p.gpu_of_slot(s);
    if (out[e].empty() || out[e].back() != g) out[e].push_back(g);  // slots ascend, so GPUs do too
  }
}

// x + x + ... + x (c terms, from 0.0), added one by one as a loop of `+= x` does.
class RepeatedSum {
 public:
  explicit RepeatedSum(double x) : x_(x), sums_{0.0} {}
  double operator()(std::int64_t c) {
    while (static_cast<std::int64_t>(sums_.size()) <= c) sums_.push_back(sums_.back() + x_);
    return sums_[static_cast<std::size_t>(c)];
  }

 private:
  double x_;
  std::vector<double> sums_;
};

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
    // Assumption (the paper gives no timing): seconds per elementary step of the scheduler
    // (Algorithm 1, the slot fill, the gradient-source map; symi_scheduler_steps), run on every
    // GPU after the popularity all-reduce. What it does is from the paper; how fast is not.
    scheduler_ns_per_step_ = p.get_double("scheduler_ns_per_step", 50.0, 0.0, 1e9);
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

  // The flows of every (layer, expert, owner node) are counted in flat per-GPU arrays and merged
  // per (source, destination) row by row. Every flow of one kind adds the same shard size, so a
  // merged flow of c shards is the c-fold repeated sum of that size (kept in a table), exactly
  // what adding them one by one gives.
  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement& next) override {
    const ClusterSpec& cs = *ctx_.cluster;
    const int N = cs.nodes, gpn = cs.gpus_per_node, G = ctx_.gpus, E = ctx_.experts, L = ctx_.moe_layers;
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
    RepeatedSum grad_shard(ctx_.expert_grad_bytes / N);
    RepeatedSum weight_shard(ctx_.expert_weight_bytes / N);
    RepeatedSum param_shard(ctx_.expert_params / N);

    // Every (layer, expert, owner node n) contributes, with home = n * gpn + e % gpn the node's
    // landing GPU for the expert's shard (it relays the shard to and from the host, or holds it
    // in GPU memory when the optimizer is not on the host):
    //  (3) gradient collection from one source replica: the owner's own replica if it holds one,
    //      otherwise round-robin over the expert's GPUs (the j-th node without a replica gets
    //      hc[j mod |hc|]); the first replica on the owner node is collected there (no flow when
    //      the optimizer is on the host), one elsewhere sends to home;
    //  (4) Adam on the owner's shard (host of n, or home);
    //  (5) the updated shard from the owner node's first replica in the next placement (home
    //      when it has none, or when the optimizer is not on the host) to every other holder.
    // Nodes without a replica are the many: what they contribute to a GPU counter is counted
    // per residue r = e % gpn and the nodes with a replica are taken off again, and their flows
    // are counted row by row below from each (layer, expert)'s holders. Flows of one kind all
    // add the same shard, so a flow merged from c shards carries the c-fold repeated sum.
    const std::size_t LE = static_cast<std::size_t>(L) * E;
    const int homes = N * gpn;  // GPUs that are some node's home
    std::vector<std::int64_t> direct_d2h(G, 0), minus_d2h(G, 0), direct_h2d(G, 0), minus_h2d(G, 0);
    std::vector<std::int64_t> per_residue(gpn, 0), per_residue_held(gpn, 0);
    // Gradient flows: (layer-expert id, index i in hc) for each source GPU hc[i] that serves
    // nodes without a replica, and explicit destinations of the rest.
    grad_rr_.resize(static_cast<std::size_t>(G));
    for (auto& v : grad_rr_) v.clear();
    grad_dst_.resize(static_cast<std::size_t>(G));
    for (auto& v : grad_dst_) v.clear();
    // Weight flows: every node without a replica sends from its home to every next holder,
    // counted once per residue in spread_[r][g]; the nodes holding the expert are taken off
    // again in their own row (held_[r * N + n] lists those ids) and send from their first
    // holder instead (from_[gpu] lists the ids it sends).
    spread_.assign(static_cast<std::size_t>(gpn) * G, 0);
    held_.resize(static_cast<std::size_t>(gpn) * N);
    for (auto& v : held_) v.clear();
    from_.resize(static_cast<std::size_t>(G));
    for (auto& v : from_) v.clear();
    next_off_.assign(1, 0);
    next_gpus_.clear();
    cur_off_.assign(1, 0);
    cur_nodes_.clear();
    cur_count_.assign(LE, 0);

    for (int l = 0; l < L; ++l) {
      holder_gpus(current, l, E, cur_);
      holder_gpus(next, l, E, nxt_);
      for (int e = 0; e < E; ++e) {
        const auto& hc = cur_[e];
        const auto& hn = nxt_[e];
        const int r = e % gpn;
        const auto id = static_cast<int>(next_off_.size()) - 1;  // l * E + e
        next_gpus_.insert(next_gpus_.end(), hn.begin(), hn.end());
        next_off_.push_back(static_cast<int>(next_gpus_.size()));
        cur_count_[id] = static_cast<int>(hc.size());
        ++per_residue[r];
        if (!hc.empty()) ++per_residue_held[r];
        // (3) The owner nodes holding a replica now (GPUs ascend: each node's first is its lowest).
        for (std::size_t i = 0; i < hc.size(); ++i) {
          const int n = cs.node_of(hc[i]);
          if (n >= N || (i > 0 && cs.node_of(hc[i - 1]) == n)) continue;
          cur_nodes_.push_back(n);
          const int home = n * gpn + r;
          if (optimizer_on_host_) {
            ++direct_d2h[hc[i]];
            ++minus_d2h[home];
          } else if (!std::binary_search(hc.begin(), hc.end(), home)) {
            grad_dst_[hc[i]].push_back(home);
          }
        }
        const int without = N - (static_cast<int>(cur_nodes_.size()) - cur_off_.back());
        cur_off_.push_back(static_cast<int>(cur_nodes_.size()));
        for (int i = 0; i < static_cast<int>(hc.size()) && i < without; ++i) grad_rr_[hc[i]].push_back({id, i});
        // (5) The owner nodes holding a replica next, and the weight flows' counts.
        for (int g : hn) ++spread_[static_cast<std::size_t>(r) * G + g];
        if (optimizer_on_host_) {
          for (std::size_t i = 0; i < hn.size(); ++i) {
            const int n = cs.node_of(hn[i]);
            if (n >= N || (i > 0 && cs.node_of(hn[i - 1]) == n)) continue;
            ++direct_h2d[hn[i]];
            ++minus_h2d[n * gpn + r];
            held_[static_cast<std::size_t>(r) * N + n].push_back(id);
            from_[hn[i]].push_back(id);
          }
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      const bool home = g < homes;
      const std::int64_t residue = home ? per_residue[g % gpn] : 0;
      if (optimizer_on_host_) {
        plan.d2h_bytes[g] = grad_shard(direct_d2h[g] + (home ? per_residue_held[g % gpn] - minus_d2h[g] : 0));
        plan.h2d_bytes[g] = weight_shard(direct_h2d[g] + residue - minus_h2d[g]);
      } else {
        plan.gpu_optimizer_params[g] = param_shard(residue);
      }
    }
    if (optimizer_on_host_)
      for (int n = 0; n < N; ++n) plan.host_optimizer_params[n] = param_shard(static_cast<std::int64_t>(LE));

    // Gradient flows, row by row: source s serves the nodes without a replica at positions
    // i, i + |hc|, ... among them, for each (id, i) it is listed with.
    emit_rows(
        G, grad_shard,
        [&](int s) {
          for (const auto& [id, i] : grad_rr_[s]) {
            const int k = cur_count_[id], r = (id % E) % gpn;
            const int* held = cur_nodes_.data() + cur_off_[id];
            const int m = cur_off_[id + 1] - cur_off_[id];
            int p = 0;  // nodes with a replica before the current one
            for (int j = i; j < N - m; j += k) {
              while (p < m && held[p] <= j + p) ++p;
              ++row_[(j + p) * gpn + r];  // the j-th node without a replica
            }
          }
          for (int d : grad_dst_[s]) ++row_[d];
        },
        plan.gradient_transfers);
    // Weight flows: row s = n * gpn + r is node n's home GPU for the experts of residue r.
    emit_rows(
        G, weight_shard,
        [&](int s) {
          const int n = s / gpn, r = s % gpn;
          if (n < N) {
            const std::int32_t* a = spread_.data() + static_cast<std::size_t>(r) * G;
            std::copy(a, a + G, row_.begin());
            if (!optimizer_on_host_) {
              row_[s] = 0;  // the home's own replica receives nothing
              return;
            }
            for (int id : held_[static_cast<std::size_t>(r) * N + n])
              for (int i = next_off_[id]; i < next_off_[id + 1]; ++i) --row_[next_gpus_[i]];
          }
          for (int id : from_[s])
            for (int i = next_off_[id]; i < next_off_[id + 1]; ++i)
              if (next_gpus_[i] != s) ++row_[next_gpus_[i]];
        },
        plan.weight_transfers);
    // (6) The scheduler's own time.
    const double decision = scheduler_ns_per_step_ * static_cast<double>(scheduler_steps_);
    plan.decision_ns.assign(G, static_cast<TimeNs>(std::llround(decision)));
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"capacity_factor", capacity_factor_},
            {"min_capacity", min_capacity_},
            {"drop_tokens", drop_tokens_},
            {"optimizer_on_host", optimizer_on_host_},
            {"scheduler_ns_per_step", scheduler_ns_per_step_},
            {"slot_capacity", slot_capacity_}};
  }

 private:
  template <typename Popularity>
  [[nodiscard]] Placement placement_from(Popularity popularity) {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    pl.expert_of_slot.resize(ctx_.moe_layers);
    std::vector<double> p(ctx_.experts);
    std::int64_t steps = 0;
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      for (int e = 0; e < ctx_.experts; ++e) p[e] = popularity(l, e);
      int adjustments = 0;
      pl.expert_of_slot[l] = symi_fill_slots(symi_replica_counts(p, pl.num_slots(), &adjustments));
      steps += symi_scheduler_steps(ctx_.experts, pl.num_slots(), ctx_.cluster->nodes, adjustments);
    }
    scheduler_steps_ = steps;
    return pl;
  }

  // Emits the nonzero entries of the count matrix whose row s `fill(s)` adds into row_ (zero
  // on entry), as transfers of `shard` per count, in (source, destination) order.
  template <typename Fill>
  void emit_rows(int G, RepeatedSum& shard, Fill fill, std::vector<Transfer>& out) {
    row_.assign(static_cast<std::size_t>(G), 0);
    merged_.clear();
    row_end_.assign(static_cast<std::size_t>(G), 0);
    for (int s = 0; s < G; ++s) {
      fill(s);
      for (int g = 0; g < G; ++g) {
        const std::int32_t c = row_[g];
        if (c == 0) continue;
        row_[g] = 0;
        merged_.push_back({g, c});
      }
      row_end_[s] = merged_.size();
    }
    out.reserve(merged_.size());
    std::size_t i = 0;
    for (int s = 0; s < G; ++s)
      for (; i < row_end_[s]; ++i)
        out.push_back(Transfer{Endpoint{false, s}, Endpoint{false, merged_[i].first}, shard(merged_[i].second)});
  }

  double capacity_factor_ = 1.0;
  std::int64_t min_capacity_ = 2;
  bool drop_tokens_ = true;
  bool optimizer_on_host_ = true;
  double scheduler_ns_per_step_ = 50.0;
  // Steps of the last scheduling (all layers): charged in the sync plan of the iteration whose
  // counts it used (after_iteration runs first).
  std::int64_t scheduler_steps_ = 0;
  std::int64_t slot_capacity_ = 0;
  // sync_plan's scratch (reused between calls).
  std::vector<std::vector<int>> cur_, nxt_, grad_dst_, held_, from_;
  std::vector<std::vector<std::pair<int, int>>> grad_rr_;
  std::vector<std::int32_t> spread_, row_;
  std::vector<int> next_off_, next_gpus_, cur_off_, cur_nodes_, cur_count_;
  std::vector<std::pair<int, std::int32_t>> merged_;  // (destination, count) of each row's flows
  std::vector<std::size_t> row_end_;
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

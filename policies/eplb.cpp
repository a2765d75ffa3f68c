// DeepSeek EPLB (Expert Parallelism Load Balancer, github.com/deepseek-ai/EPLB, eplb.py; the
// DeepSeek-V3 technical report, arXiv 2412.19437, section 3.4): from a moving-average estimate
// of each expert's load, every `interval` iterations each MoE layer is re-planned on its own:
// hot experts get extra replicas (the expert with the largest load per replica first) and the
// replicas are packed onto GPUs so that every GPU carries about the same load; with expert groups
// (group-limited routing) whole groups are first packed onto nodes so that replicas of a group
// stay on one node. Tokens are split evenly over an expert's replicas, dropless. EPLB itself has
// no notion of migration cost: every slot whose expert changes receives the expert's weights
// (and, in training, its optimizer state) from a current holder.
#include "policies/eplb.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <stdexcept>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace eplb {

Packing balanced_packing(const std::vector<double>& weight, int packs) {
  const int n = static_cast<int>(weight.size());
  if (packs <= 0 || n % packs != 0) {
    throw std::invalid_argument(fmt::format("balanced_packing: {} items do not split evenly into {} packs", n, packs));
  }
  const int per_pack = n / packs;
  Packing out;
  out.pack.assign(n, 0);
  out.rank.assign(n, 0);
  if (per_pack == 1) {
    // The reference's shortcut: one item per pack, item i in pack i.
    std::iota(out.pack.begin(), out.pack.end(), 0);
    return out;
  }
  // Heaviest first; ties to the lower item index.
  std::vector<std::pair<double, int>> order(n);
  for (int i = 0; i < n; ++i) order[i] = {-weight[i], i};
  std::sort(order.begin(), order.end());
  // Binary min-heap of the packs that are not full, by (load, index). The top pack only gets
  // heavier, so it sifts down in place; a full pack is replaced by the last one.
  std::vector<double> load(packs, 0.0);
  std::vector<int> items(packs, 0);
  std::vector<int> heap(packs);
  std::iota(heap.begin(), heap.end(), 0);  // all loads 0: index order is a valid heap
  auto before = [&](int a, int b) { return load[a] < load[b] || (load[a] == load[b] && a < b); };
  auto sift_down = [&](std::size_t pos) {
    const std::size_t size = heap.size();
    const int x = heap[pos];
    for (;;) {
      std::size_t child = 2 * pos + 1;
      if (child >= size) break;
      if (child + 1 < size && before(heap[child + 1], heap[child])) ++child;
      if (!before(heap[child], x)) break;
      heap[pos] = heap[child];
      pos = child;
    }
    heap[pos] = x;
  };
  for (const auto& [neg_w, i] : order) {
    const int p = heap.front();
    out.pack[i] = p;
    out.rank[i] = items[p]++;
    load[p] -= neg_w;
    if (items[p] == per_pack) {
      heap.front() = heap.back();
      heap.pop_back();
    }
    if (!heap.empty()) sift_down(0);
  }
  return out;
}

Replication replicate_experts(const std::vector<double>& weight, int physical) {
  const int n = static_cast<int>(weight.size());
  if (physical < n) {
    throw std::invalid_argument(fmt::format("replicate_experts: {} physical experts for {} logical", physical, n));
  }
  Replication out;
  out.phy2log.resize(physical);
  out.rank.assign(physical, 0);
  out.count.assign(n, 1);
  std::iota(out.phy2log.begin(), out.phy2log.begin() + n, 0);
  // Max-heap by load per replica; ties to the lower expert index.
  using Entry = std::pair<double, int>;
  auto lower = [](const Entry& a, const Entry& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower)> heap(lower);
  for (int e = 0; e < n; ++e) heap.emplace(weight[e], e);
  for (int i = n; i < physical; ++i) {
    const int e = heap.top().second;
    heap.pop();
    out.phy2log[i] = e;
    out.rank[i] = out.count[e]++;
    heap.emplace(weight[e] / out.count[e], e);
  }
  return out;
}

LayerPlan rebalance_hierarchical(const std::vector<double>& weight, int physical, int groups, int nodes, int gpus) {
  const int E = static_cast<int>(weight.size());
  if (groups <= 0 || nodes <= 0 || gpus <= 0 || E % groups != 0 || groups % nodes != 0 || gpus % nodes != 0 ||
      physical % gpus != 0 || physical < E) {
    throw std::invalid_argument(fmt::format("eplb: invalid shape: {} experts, {} physical, {} groups, {} nodes, {} GPUs",
                                            E, physical, groups, nodes, gpus));
  }
  const int group_size = E / groups, groups_per_node = groups / nodes;
  const int per_gpu = physical / gpus, gpus_per_node = gpus / nodes;
  const int phys_per_node = physical / nodes, log_per_node = E / nodes;

  // Step 1: whole groups onto nodes by group load. Node-local ("mlog") numbering: node n holds
  // mlog [n * log_per_node, (n + 1) * log_per_node), its groups in the order it received them,
  // each group's experts in index order.
  std::vector<double> group_load(groups, 0.0);
  for (int e = 0; e < E; ++e) group_load[e / group_size] += weight[e];
  const Packing gp = balanced_packing(group_load, nodes);
  std::vector<int> mlog2log(E);
  for (int e = 0; e < E; ++e) {
    const int g = e / group_size;
    mlog2log[(gp.pack[g] * groups_per_node + gp.rank[g]) * group_size + e % group_size] = e;
  }

  LayerPlan out;
  out.phy2log.assign(physical, -1);
  out.replica_rank.assign(physical, 0);
  out.count.assign(E, 0);
  out.hierarchical = nodes > 1 || groups > 1;
  std::vector<double> w(log_per_node), per_phy(phys_per_node);
  for (int node = 0; node < nodes; ++node) {
    const int* local2log = mlog2log.data() + static_cast<std::size_t>(node) * log_per_node;
    for (int i = 0; i < log_per_node; ++i) w[i] = weight[local2log[i]];
    // Step 2: replicate within the node.
    const Replication rep = replicate_experts(w, phys_per_node);
    // Step 3: the node's physical experts (load per replica) onto its GPUs.
    for (int p = 0; p < phys_per_node; ++p) per_phy[p] = w[rep.phy2log[p]] / rep.count[rep.phy2log[p]];
    const Packing pk = balanced_packing(per_phy, gpus_per_node);
    for (int p = 0; p < phys_per_node; ++p) {
      const int slot = node * phys_per_node + pk.pack[p] * per_gpu + pk.rank[p];
      out.phy2log[slot] = local2log[rep.phy2log[p]];
      out.replica_rank[slot] = rep.rank[p];
    }
    for (int i = 0; i < log_per_node; ++i) out.count[local2log[i]] = rep.count[i];
  }
  return out;
}

LayerPlan rebalance(const std::vector<double>& weight, int physical, int groups, int nodes, int gpus) {
  if (groups > 0 && nodes > 0 && groups % nodes == 0) return rebalance_hierarchical(weight, physical, groups, nodes, gpus);
  LayerPlan p = rebalance_hierarchical(weight, physical, 1, 1, gpus);
  p.hierarchical = false;
  return p;
}

}  // namespace eplb

namespace {

class EplbPolicy final : public Policy {
 public:
  EplbPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: DeepSeek refreshed the EPLB plan about every 10 minutes in serving (DeepSeek-V3
    // report, section 3.4; EPLB README). No figure is published for training: the interval in
    // iterations is a parameter (reconstruction), default 10.
    interval_ = static_cast<int>(p.get_int("interval", 10, 1, 1LL << 30));
    // Reconstruction: EPLB takes "an estimate of the expert load" without saying how it is
    // obtained; here a simple moving average of the per-expert loads of the last N iterations.
    load_window_ = static_cast<int>(p.get_int("load_window", 10, 1, 1 << 20));
    const int cluster_nodes = ctx.cluster->nodes;
    // The EPLB "node": consecutive GPUs sharing fast links; default the cluster's nodes.
    nodes_ = static_cast<int>(p.get_int("nodes", cluster_nodes, 1, 1 << 20));
    // source: eplb.py's num_groups is the model's expert groups (DeepSeek-V3: 8 groups for
    // group-limited routing). A model without group-limited routing has one group, and EPLB then
    // uses its global policy (with groups = nodes every node would be pinned to its own experts,
    // whatever their load). Set `groups` for a model that routes by groups.
    const int def_groups = 1;
    groups_ = static_cast<int>(p.get_int("groups", def_groups, 1, 1 << 20));
    hierarchical_mode_ = p.get_enum("hierarchical", "auto", {"auto", "true", "false"});
    // Reconstruction for training: a replica moved to a new GPU needs its optimizer state too.
    move_optimizer_ = p.get_bool("move_optimizer", true);
    blocking_ = p.get_bool("blocking", true);
    // source: EPLB serves dropless MoE (DeepSeek-V3 drops no tokens): 0 = dropless.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);

    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (ctx.gpus % nodes_ != 0) {
      p.fail("nodes", fmt::format("the {} GPUs do not split evenly into {} nodes", ctx.gpus, nodes_));
    }
    if (ctx.experts % groups_ != 0) {
      p.fail("groups", fmt::format("the {} experts do not split evenly into {} groups", ctx.experts, groups_));
    }
    if (slots < ctx.experts) {
      p.fail("", fmt::format("eplb needs at least one slot per expert: {} slots ({} GPUs x {}) for {} experts", slots,
                             ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    const bool divisible = groups_ % nodes_ == 0;
    if (hierarchical_mode_ == "true" && !divisible) {
      p.fail("hierarchical", fmt::format("the hierarchical policy needs the {} groups to be a multiple of the {} nodes",
                                         groups_, nodes_));
    }
    hierarchical_ = hierarchical_mode_ == "true" || (hierarchical_mode_ == "auto" && divisible);
    if (capacity_factor_ > 0.0) {
      replica_capacity_ = static_cast<std::int64_t>(std::ceil(capacity_factor_ * ctx.top_k *
                                                              static_cast<double>(ctx.tokens_per_gpu) * ctx.gpus /
                                                              static_cast<double>(slots)));
    }
    window_.assign(static_cast<std::size_t>(load_window_),
                   std::vector<double>(static_cast<std::size_t>(ctx.moe_layers) * ctx.experts, 0.0));
    sum_.assign(static_cast<std::size_t>(ctx.moe_layers) * ctx.experts, 0.0);
  }

  [[nodiscard]] std::string name() const override { return "eplb"; }

  // EPLB on a uniform load: replicas spread as evenly as the slots allow.
  [[nodiscard]] Placement initial_placement() override {
    const std::vector<double> uniform(ctx_.experts, 1.0);
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    pl.expert_of_slot.assign(ctx_.moe_layers, plan(uniform));
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.replica_capacity = replica_capacity_;
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override {
    const int E = ctx_.experts, L = ctx_.moe_layers;
    // Slide the window: drop the oldest iteration's loads, add this one's.
    auto& slot = window_[static_cast<std::size_t>(seen_ % load_window_)];
    for (int l = 0; l < L; ++l) {
      const auto loads = expert_loads(counts.layer_ptr(l), counts.shape.gpus, E);
      for (int e = 0; e < E; ++e) {
        const std::size_t i = static_cast<std::size_t>(l) * E + e;
        sum_[i] += static_cast<double>(loads[e]) - slot[i];
        slot[i] = static_cast<double>(loads[e]);
      }
    }
    ++seen_;
    PolicyDecision d;
    if ((iteration + 1) % interval_ != 0) return d;
    const double n = static_cast<double>(std::min<std::int64_t>(seen_, load_window_));
    Placement next = current;
    std::vector<double> w(E);
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) w[e] = sum_[static_cast<std::size_t>(l) * E + e] / n;
      next.expert_of_slot[l] = plan(w);
    }
    if (next.expert_of_slot == current.expert_of_slot) return d;
    d.movements = placement_moves(ctx_, current, next, move_optimizer_, blocking_);
    d.new_placement = true;
    d.placement = std::move(next);
    return d;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"interval", interval_},
            {"load_window", load_window_},
            {"groups", groups_},
            {"nodes", nodes_},
            {"hierarchical", hierarchical_mode_},
            {"hierarchical_used", hierarchical_},
            {"move_optimizer", move_optimizer_},
            {"blocking", blocking_},
            {"capacity_factor", capacity_factor_},
            {"replica_capacity", replica_capacity_}};
  }

 private:
  [[nodiscard]] std::vector<int> plan(const std::vector<double>& w) const {
    const int slots = ctx_.gpus * ctx_.slots_per_gpu;
    if (hierarchical_) return eplb::rebalance_hierarchical(w, slots, groups_, nodes_, ctx_.gpus).phy2log;
    return eplb::rebalance_hierarchical(w, slots, 1, 1, ctx_.gpus).phy2log;
  }

  int interval_ = 10;
  int load_window_ = 10;
  int nodes_ = 1;
  int groups_ = 1;
  std::string hierarchical_mode_ = "auto";
  bool hierarchical_ = false;
  bool move_optimizer_ = true;
  bool blocking_ = true;
  double capacity_factor_ = 0.0;
  std::int64_t replica_capacity_ = -1;
  std::vector<std::vector<double>> window_;  // [iteration % load_window][layer * experts + e]
  std::vector<double> sum_;                  // sum over the window
  std::int64_t seen_ = 0;
};

}  // namespace

PolicyInfo moesim_policy_eplb() {
  return {"eplb",
          "DeepSeek EPLB: periodic redundant-expert replication and balanced packing onto GPUs, hierarchical "
          "over nodes (DeepSeek-V3 report, arXiv 2412.19437; github.com/deepseek-ai/EPLB)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<EplbPolicy>(ctx, p);
          }};
}

}  // namespace moesim

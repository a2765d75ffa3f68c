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
namespace {

// The planner's one ordering: heavier first, ties to the lower index.
bool heavier(double a, int i, double b, int j) { return a > b || (a == b && i < j); }

// Items taken in `order` (heaviest first, ties to the lower item index), each to the lightest
// pack that is not yet full (ties: lower pack index). Requires n == packs * per_pack with
// per_pack >= 2 and out.pack / out.rank sized n.
void pack_in_order(const int* order, const double* weight, int n, int packs, Packing& out,
                   Planner::PackScratch& s) {
  if (n == 0) return;
  const int per_pack = n / packs;
  s.load.assign(packs, 0.0);
  s.items.assign(packs, 0);
  // While some pack is empty and the item weighs more than nothing, the lightest open pack is the
  // lowest-index empty one (the packs before it are heavier): item k goes to pack k.
  int next = 0;
  for (; next < packs && weight[order[next]] > 0.0; ++next) {
    const int i = order[next];
    out.pack[i] = next;
    out.rank[i] = 0;
    s.load[next] = weight[i];
    s.items[next] = 1;
  }
  if (per_pack == 2 && next == packs) {
    // Every pack holds one item, loads non-increasing with the pack index, and each further item
    // fills its pack for good: packs are taken once each in (load, index) order, i.e. runs of
    // equal load from the last pack backwards, each run in index order.
    for (int hi = packs - 1; hi >= 0;) {
      int lo = hi;
      while (lo > 0 && s.load[lo - 1] == s.load[hi]) --lo;
      for (int p = lo; p <= hi; ++p) {
        const int i = order[next++];
        out.pack[i] = p;
        out.rank[i] = 1;
      }
      hi = lo - 1;
    }
    return;
  }
  // General case: a binary min-heap of the packs that are not full (all of them: none is full
  // yet), by (load, index). The top pack only gets heavier, so it sifts down in place; a full
  // pack is replaced by the last one.
  const auto& load = s.load;
  auto before = [&](int a, int b) { return load[a] < load[b] || (load[a] == load[b] && a < b); };
  auto& heap = s.heap;
  heap.resize(static_cast<std::size_t>(packs));
  std::iota(heap.begin(), heap.end(), 0);
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
  for (std::size_t pos = heap.size() / 2; pos-- > 0;) sift_down(pos);
  for (; next < n; ++next) {
    const int i = order[next];
    const int p = heap.front();
    out.pack[i] = p;
    out.rank[i] = s.items[p]++;
    s.load[p] += weight[i];
    if (s.items[p] == per_pack) {
      heap.front() = heap.back();
      heap.pop_back();
    }
    if (!heap.empty()) sift_down(0);
  }
}

// Replication's max-heap of (load per replica, expert), heavier first: sifts entry `pos` down.
void sift_down_replicas(std::vector<std::pair<double, int>>& heap, std::size_t pos) {
  const std::size_t size = heap.size();
  const auto x = heap[pos];
  auto above = [](const std::pair<double, int>& a, const std::pair<double, int>& b) {
    return heavier(a.first, a.second, b.first, b.second);
  };
  for (;;) {
    std::size_t child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && above(heap[child + 1], heap[child])) ++child;
    if (!above(heap[child], x)) break;
    heap[pos] = heap[child];
    pos = child;
  }
  heap[pos] = x;
}

void check_packing(int n, int packs) {
  if (packs <= 0 || n % packs != 0) {
    throw std::invalid_argument(
        fmt::format("balanced_packing: {} items do not split evenly into {} packs", n, packs));
  }
}

// balanced_packing into reused buffers.
void pack_into(const double* weight, int n, int packs, Packing& out, std::vector<int>& order,
               Planner::PackScratch& s) {
  check_packing(n, packs);
  out.pack.assign(n, 0);
  out.rank.assign(n, 0);
  if (n == packs) {
    // The reference's shortcut: one item per pack, item i in pack i.
    std::iota(out.pack.begin(), out.pack.end(), 0);
    return;
  }
  order.resize(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return heavier(weight[a], a, weight[b], b); });
  pack_in_order(order.data(), weight, n, packs, out, s);
}

// replicate_experts into reused buffers.
void replicate_into(const double* weight, int n, int physical, Replication& out,
                    std::vector<std::pair<double, int>>& heap) {
  if (physical < n) {
    throw std::invalid_argument(fmt::format("replicate_experts: {} physical experts for {} logical", physical, n));
  }
  out.phy2log.resize(physical);
  out.rank.assign(physical, 0);
  out.count.assign(n, 1);
  std::iota(out.phy2log.begin(), out.phy2log.begin() + n, 0);
  // Max-heap of (load per replica, expert), ties to the lower expert. The top's load per replica
  // only falls when it gets a replica, so it is updated in place and sifted down.
  heap.resize(static_cast<std::size_t>(n));
  for (int e = 0; e < n; ++e) heap[e] = {weight[e], e};
  for (std::size_t pos = heap.size() / 2; pos-- > 0;) sift_down_replicas(heap, pos);
  for (int i = n; i < physical; ++i) {
    const int e = heap.front().second;
    out.phy2log[i] = e;
    out.rank[i] = out.count[e]++;
    heap.front().first = weight[e] / out.count[e];
    sift_down_replicas(heap, 0);
  }
}

// The replica counts replicate_experts gives (not which physical index each replica gets), for
// non-negative weights, without a heap operation per replica. Replica c >= 1 of expert e (the
// c-th extra) is created when the load per replica w[e] / c is the largest; w[e] / c never
// rises with c (rounded division is monotonic), so for any T > 0 the extras with w[e] / c > T
// are all handed out before any other. With T = total / extras there are fewer of them than
// extras (ceil(x) - 1 < x), they are counted per expert directly, and only the rest (at most
// about one per expert) go through the heap, which continues exactly as replication would.
void replica_counts(const double* weight, int n, int physical, std::vector<int>& count,
                    std::vector<std::pair<double, int>>& heap) {
  count.assign(n, 1);
  const int extras = physical - n;
  if (extras <= 0) return;
  double total = 0.0;
  for (int e = 0; e < n; ++e) total += weight[e];
  const double t = total / extras;
  int given = 0;
  if (t > 0.0 && std::isfinite(t)) {
    for (int e = 0; e < n; ++e) {
      // k = the number of c >= 1 with weight[e] / c > t: estimate, then settle exactly.
      const double x = weight[e] / t;
      int k = x < extras ? std::max(static_cast<int>(std::ceil(x)) - 1, 0) : extras;
      while (k > 0 && !(weight[e] / k > t)) --k;
      while (k < extras && weight[e] / (k + 1) > t) ++k;
      count[e] += k;
      given += k;
    }
    if (given > extras) {  // not expected (rounding): the heap alone then
      count.assign(n, 1);
      given = 0;
    }
  }
  // The heap of replicate_into, from these counts (w / 1 == w).
  heap.resize(static_cast<std::size_t>(n));
  for (int e = 0; e < n; ++e) heap[e] = {weight[e] / count[e], e};
  for (std::size_t pos = heap.size() / 2; pos-- > 0;) sift_down_replicas(heap, pos);
  for (; given < extras; ++given) {
    const int e = heap.front().second;
    ++count[e];
    heap.front().first = weight[e] / count[e];
    sift_down_replicas(heap, 0);
  }
}

}  // namespace

Packing balanced_packing(const std::vector<double>& weight, int packs) {
  Packing out;
  std::vector<int> order;
  Planner::PackScratch s;
  pack_into(weight.data(), static_cast<int>(weight.size()), packs, out, order, s);
  return out;
}

Replication replicate_experts(const std::vector<double>& weight, int physical) {
  Replication out;
  std::vector<std::pair<double, int>> heap;
  replicate_into(weight.data(), static_cast<int>(weight.size()), physical, out, heap);
  return out;
}

const LayerPlan& Planner::rebalance_hierarchical(const std::vector<double>& weight, int physical, int groups,
                                                 int nodes, int gpus) {
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
  group_load_.assign(groups, 0.0);
  for (int e = 0; e < E; ++e) group_load_[e / group_size] += weight[e];
  pack_into(group_load_.data(), groups, nodes, group_packing_, order_, pack_scratch_);
  const Packing& gp = group_packing_;
  mlog2log_.resize(E);
  for (int e = 0; e < E; ++e) {
    const int g = e / group_size;
    mlog2log_[(gp.pack[g] * groups_per_node + gp.rank[g]) * group_size + e % group_size] = e;
  }

  LayerPlan& out = plan_;
  out.phy2log.assign(physical, -1);
  out.replica_rank.assign(physical, 0);
  out.count.assign(E, 0);
  out.hierarchical = nodes > 1 || groups > 1;
  w_.resize(log_per_node);
  for (int node = 0; node < nodes; ++node) {
    const int* local2log = mlog2log_.data() + static_cast<std::size_t>(node) * log_per_node;
    bool non_negative = true;
    for (int i = 0; i < log_per_node; ++i) {
      w_[i] = weight[local2log[i]];
      non_negative = non_negative && w_[i] >= 0.0;
    }
    if (per_gpu > 1 && non_negative) {
      // Steps 2 and 3 from replica counts alone (plan_node); the same plan, faster.
      plan_node(log_per_node, phys_per_node, gpus_per_node);
    } else {
      // Step 2: replicate within the node.
      replicate_into(w_.data(), log_per_node, phys_per_node, rep_, rep_heap_);
      // Step 3: the node's physical experts (load per replica) onto its GPUs.
      per_phy_.resize(phys_per_node);
      for (int p = 0; p < phys_per_node; ++p) per_phy_[p] = w_[rep_.phy2log[p]] / rep_.count[rep_.phy2log[p]];
      pack_into(per_phy_.data(), phys_per_node, gpus_per_node, gpu_packing_, order_, pack_scratch_);
      item_expert_.assign(rep_.phy2log.begin(), rep_.phy2log.end());
      item_rank_.assign(rep_.rank.begin(), rep_.rank.end());
      count_.assign(rep_.count.begin(), rep_.count.end());
    }
    const Packing& pk = gpu_packing_;
    for (int p = 0; p < phys_per_node; ++p) {
      const int slot = node * phys_per_node + pk.pack[p] * per_gpu + pk.rank[p];
      out.phy2log[slot] = local2log[item_expert_[p]];
      out.replica_rank[slot] = item_rank_[p];
    }
    for (int i = 0; i < log_per_node; ++i) out.count[local2log[i]] = count_[i];
  }
  return out;
}

// Steps 2 and 3 for one node without listing the physical experts in replication order (a heap
// operation per replica) and sorting them by weight: only how many replicas each expert gets and
// the packing's order are needed. Items are numbered expert by expert (item first_[i] + c is
// replica c of expert i). Requires non-negative weights (w_) and at least 2 slots per GPU (one
// slot per GPU packs by physical index, which this does not compute).
void Planner::plan_node(int n, int physical, int gpus) {
  replica_counts(w_.data(), n, physical, count_, rep_heap_);
  per_replica_.resize(n);
  first_.resize(n + 1);
  first_[0] = 0;
  item_expert_.resize(physical);
  item_rank_.resize(physical);
  item_weight_.resize(physical);
  for (int i = 0; i < n; ++i) {
    per_replica_[i] = w_[i] / count_[i];
    first_[i + 1] = first_[i] + count_[i];
    for (int c = 0, id = first_[i]; c < count_[i]; ++c, ++id) {
      item_expert_[id] = i;
      item_rank_[id] = c;
      item_weight_[id] = per_replica_[i];
    }
  }
  // The packing takes physical experts heaviest first, ties to the lower physical index. The
  // replicas of one expert weigh the same and are numbered in replica order, so: sort the
  // experts, expand each into its replicas, and put only runs of equally heavy experts in
  // physical-index order. That order is the order replication created them: the n first
  // replicas by expert, then the others by the load per replica when they were created,
  // w / c for replica c (descending; replication hands them out in that order, as it takes
  // the largest), ties to the lower expert, then the lower c.
  by_load_.resize(n);
  std::iota(by_load_.begin(), by_load_.end(), 0);
  std::sort(by_load_.begin(), by_load_.end(),
            [&](int a, int b) { return heavier(per_replica_[a], a, per_replica_[b], b); });
  auto created_before = [&](int a, int b) {
    const int ea = item_expert_[a], eb = item_expert_[b], ca = item_rank_[a], cb = item_rank_[b];
    if (ea == eb) return ca < cb;
    if (ca == 0 || cb == 0) return ca == 0 && (cb != 0 || ea < eb);
    return heavier(w_[ea] / ca, ea, w_[eb] / cb, eb);
  };
  order_.resize(physical);
  auto out = order_.begin();
  for (int a = 0; a < n;) {
    int b = a + 1;
    while (b < n && per_replica_[by_load_[b]] == per_replica_[by_load_[a]]) ++b;
    const auto run = out;
    for (int k = a; k < b; ++k) {
      const int i = by_load_[k];
      for (int id = first_[i]; id < first_[i + 1]; ++id) *out++ = id;
    }
    if (b - a > 1) std::sort(run, out, created_before);
    a = b;
  }
  gpu_packing_.pack.resize(physical);
  gpu_packing_.rank.resize(physical);
  pack_in_order(order_.data(), item_weight_.data(), physical, gpus, gpu_packing_, pack_scratch_);
}

const LayerPlan& Planner::rebalance(const std::vector<double>& weight, int physical, int groups, int nodes,
                                    int gpus) {
  if (groups > 0 && nodes > 0 && groups % nodes == 0) return rebalance_hierarchical(weight, physical, groups, nodes, gpus);
  rebalance_hierarchical(weight, physical, 1, 1, gpus);
  plan_.hierarchical = false;
  return plan_;
}

LayerPlan rebalance_hierarchical(const std::vector<double>& weight, int physical, int groups, int nodes,
                                 int gpus) {
  Planner planner;
  return planner.rebalance_hierarchical(weight, physical, groups, nodes, gpus);
}

LayerPlan rebalance(const std::vector<double>& weight, int physical, int groups, int nodes, int gpus) {
  Planner planner;
  return planner.rebalance(weight, physical, groups, nodes, gpus);
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
    loads_.resize(E);
    for (int l = 0; l < L; ++l) {
      expert_loads(counts.layer_ptr(l), counts.shape.gpus, E, loads_.data());
      for (int e = 0; e < E; ++e) {
        const std::size_t i = static_cast<std::size_t>(l) * E + e;
        sum_[i] += static_cast<double>(loads_[e]) - slot[i];
        slot[i] = static_cast<double>(loads_[e]);
      }
    }
    ++seen_;
    PolicyDecision d;
    if ((iteration + 1) % interval_ != 0) return d;
    const double n = static_cast<double>(std::min<std::int64_t>(seen_, load_window_));
    Placement next = current;
    w_.resize(E);
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) w_[e] = sum_[static_cast<std::size_t>(l) * E + e] / n;
      next.expert_of_slot[l] = plan(w_);
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
  // The new physical-to-logical map of one layer (valid until the next call).
  [[nodiscard]] const std::vector<int>& plan(const std::vector<double>& w) {
    const int slots = ctx_.gpus * ctx_.slots_per_gpu;
    if (hierarchical_) return planner_.rebalance_hierarchical(w, slots, groups_, nodes_, ctx_.gpus).phy2log;
    return planner_.rebalance_hierarchical(w, slots, 1, 1, ctx_.gpus).phy2log;
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
  // Reused between calls: a decision allocates nothing but its result.
  eplb::Planner planner_;
  std::vector<std::int64_t> loads_;
  std::vector<double> w_;
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

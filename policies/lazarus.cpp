// Lazarus ("Lazarus: Resilient and Elastic Training of Mixture-of-Experts Models with
// Adaptive Expert Placement", arXiv 2407.04656): every expert gets a number of replicas that
// follows its load, with a minimum of f replicas for fault tolerance; a source GPU keeps its
// tokens on a local replica first and spreads the rest in proportion to the replicas' remaining
// capacity.
//
// Replica counts (the paper's allocation, experts sorted by load ascending, N c slots):
//   r_e = max(floor(t_e / sum_{e' >= e} t_e' * (N c - sum_{e' < e} r_e')), f).
// Simplifications (docs/policies-more.md, section lazarus): the slots are the simulator's G GPUs x S
// slots (not nodes x slots), and the placement spreads each expert's replicas over distinct GPUs
// round-robin instead of maximising the overlap of node sets (which matters only for recovery
// after node failures, not simulated here). Re-plans every `interval` iterations move weights and
// optimizer state of every new replica on the critical path.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>

#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

__extension__ using Wide = __int128;

// Largest-remainder apportionment of `total` over `w[0, n)` into `out[0, n)`: floor shares, then
// one each to the largest remainders, ties to the lower index. With total <= sum(w) no share
// exceeds its weight. All zero when the weights sum to 0. `rem` is scratch.
void apportion(std::int64_t total, const std::int64_t* w, std::size_t n, std::int64_t* out,
               std::vector<std::pair<std::int64_t, std::size_t>>& rem) {
  std::fill(out, out + n, std::int64_t{0});
  Wide sum = 0;
  std::int64_t lo = 0, hi = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sum += w[i];
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  if (sum <= 0 || total <= 0) return;
  if (n == 1) {  // w * total / w, remainder 0
    out[0] = total;
    return;
  }
  // Non-negative weights, a sum below 2^32 and products at most 2^62: ExactDivider's range, the
  // same quotients as the 128-bit path without a division per weight.
  constexpr std::int64_t kProducts = std::int64_t{1} << 62;
  const bool narrow = lo >= 0 && sum < (Wide{1} << 32) && hi <= kProducts / total;
  const ExactDivider by_sum(static_cast<std::int64_t>(sum));
  std::int64_t given = 0;
  rem.clear();
  for (std::size_t i = 0; i < n; ++i) {
    if (narrow) {
      std::int64_t r = 0;
      by_sum.divmod(w[i] * total, out[i], r);
      rem.emplace_back(-r, i);
    } else {
      const Wide prod = static_cast<Wide>(w[i]) * total;
      out[i] = static_cast<std::int64_t>(prod / sum);
      rem.emplace_back(-static_cast<std::int64_t>(prod % sum), i);
    }
    given += out[i];
  }
  // The first total - given of the sorted (-remainder, index) pairs, all distinct: the same set
  // nth_element selects, without sorting the rest.
  const auto d = static_cast<std::size_t>(std::min<std::int64_t>(total - given, static_cast<std::int64_t>(n)));
  if (d > 0 && d < n) std::nth_element(rem.begin(), rem.begin() + static_cast<std::ptrdiff_t>(d - 1), rem.end());
  for (std::size_t i = 0; i < d; ++i) out[rem[i].second]++;
}

class LazarusPolicy final : public Policy {
 public:
  LazarusPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts) {
      p.fail("", fmt::format("lazarus needs at least one slot per expert: {} slots ({} GPUs x {}) for {} experts",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    // source: the paper's fault-tolerance parameter f (minimum replicas per expert). Default
    // (reconstruction): 2 when the slots leave room beyond it (G*S > 2E; with exactly 2E every
    // expert would be pinned at 2 replicas and nothing could adapt), else 1; 0 selects that.
    min_replicas_ = static_cast<int>(p.get_int("min_replicas", 0, 0, slots));
    if (min_replicas_ == 0) min_replicas_ = slots > 2 * ctx.experts ? 2 : 1;
    if (static_cast<std::int64_t>(min_replicas_) * ctx.experts > slots) {
      p.fail("min_replicas", fmt::format("{} replicas of each of the {} experts need {} slots but there are {} "
                                         "({} GPUs x {})",
                                         min_replicas_, ctx.experts, static_cast<std::int64_t>(min_replicas_) * ctx.experts,
                                         slots, ctx.gpus, ctx.slots_per_gpu));
    }
    // reconstruction: per-replica capacity ceil(cf * k * tokens_per_gpu * G / (G*S)), i.e. every
    // slot gets an equal share of cf times the layer's assignments; 1.0 as DeepSpeed's default.
    capacity_factor_ = p.get_double("capacity_factor", 1.0, 0.0, 1e6);
    if (capacity_factor_ <= 0.0) p.fail("capacity_factor", "must be > 0 (lazarus spreads by remaining capacity)");
    // reconstruction: our sources give no re-plan period for Lazarus; every 50 iterations, the
    // middle of the 10/50/100 periods the SwiftMoE paper used for periodic rebalancing (FlexMoE).
    interval_ = p.get_int("interval", 50, 1, 1LL << 40);
    // reconstruction: the loads summed over the last `load_window` iterations; 0 = the interval.
    load_window_ = p.get_int("load_window", 0, 0, 1 << 20);
    if (load_window_ == 0) load_window_ = std::min<std::int64_t>(interval_, 1 << 20);
    history_.assign(ctx.moe_layers, {});
  }

  [[nodiscard]] std::string name() const override { return "lazarus"; }

  // The paper's replica counts for `loads` over `slots` slots with at least `f` each.
  static std::vector<int> replica_counts(const std::vector<std::int64_t>& loads, int slots, int f) {
    const int E = static_cast<int>(loads.size());
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return loads[a] < loads[b]; });
    Wide rest = 0;
    for (auto t : loads) rest += t;
    std::int64_t left = slots;
    std::vector<int> r(E, 0);
    for (int i = 0; i < E; ++i) {
      const int e = order[i];
      // floor(t_e / sum_{e' >= e} t_e' * left); all remaining loads zero: an even share.
      const std::int64_t share = rest > 0 ? static_cast<std::int64_t>(static_cast<Wide>(loads[e]) * left / rest)
                                          : left / (E - i);
      r[e] = static_cast<int>(std::max<std::int64_t>(share, f));
      left -= r[e];
      rest -= loads[e];
    }
    return r;
  }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    const std::vector<std::int64_t> uniform(ctx_.experts, 1);
    const std::vector<int> r = replica_counts(uniform, pl.num_slots(), min_replicas_);
    std::vector<int> empty(pl.num_slots(), -1);
    const std::vector<int> layout = place(r, empty);
    pl.expert_of_slot.assign(ctx_.moe_layers, layout);
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int G = pl.gpus, S = pl.slots_per_gpu, slots = pl.num_slots(), E = ctx_.experts;
    // Expert-major counts in, slot-major results out, transposed back at the end (as
    // dispatch_even: a column of a row-major matrix is L1-hostile at 256 experts).
    by_expert_.resize(static_cast<std::size_t>(G) * E);
    transpose(counts, G, E, by_expert_.data());
    by_slot_.assign(static_cast<std::size_t>(slots) * G, 0);
    std::int64_t routed = 0, dropped = 0;
    const auto cap = static_cast<std::int64_t>(std::ceil(capacity_factor_ * ctx_.top_k *
                                                         static_cast<double>(ctx_.tokens_per_gpu) * G /
                                                         static_cast<double>(slots)));
    // Expert e's slots in slot order: holder_[first_[e], first_[e + 1]) (expert_slots, flat).
    const auto& layout = pl.expert_of_slot[layer];
    first_.assign(static_cast<std::size_t>(E) + 1, 0);
    for (int x : layout)
      if (x >= 0 && x < E) ++first_[static_cast<std::size_t>(x) + 1];
    for (int e = 0; e < E; ++e) first_[e + 1] += first_[e];
    holder_.resize(static_cast<std::size_t>(first_[E]));
    cursor_.assign(first_.begin(), first_.end() - 1);
    for (int s = 0; s < static_cast<int>(layout.size()); ++s)
      if (layout[s] >= 0 && layout[s] < E) holder_[static_cast<std::size_t>(cursor_[layout[s]]++)] = s;
    std::vector<std::int64_t>& left = left_;
    left.resize(G);
    send_.resize(G);
    for (int e = 0; e < E; ++e) {
      const std::int64_t* col = by_expert_.data() + static_cast<std::size_t>(e) * G;
      std::int64_t total = 0;
      for (int g = 0; g < G; ++g) {
        left[g] = col[g];
        total += left[g];
      }
      routed += total;
      const int* rs = holder_.data() + first_[e];
      const auto nrs = static_cast<std::size_t>(first_[e + 1] - first_[e]);
      if (nrs == 0) {
        dropped += total;
        continue;
      }
      rem_.assign(nrs, cap);
      split_.resize(nrs);
      auto give = [&](int g, std::size_t i, std::int64_t n) {
        by_slot_[static_cast<std::size_t>(rs[i]) * G + g] += n;
        rem_[i] -= n;
        left[g] -= n;
      };
      // Local first: a source's replicas of the expert, in slot order, up to their capacity.
      for (std::size_t i = 0; i < nrs; ++i) {
        const int g = rs[i] / S;
        give(g, i, std::min(left[g], rem_[i]));
      }
      // The rest: what fits is shared among the sources in proportion to what they have left
      // (so drops hit every source alike), then each source's share is spread over the replicas
      // in proportion to their remaining capacity, sources in order.
      std::int64_t rest = 0, room = 0;
      for (int g = 0; g < G; ++g) rest += left[g];
      for (auto c : rem_) room += c;
      const std::int64_t fit = std::min(rest, room);
      dropped += rest - fit;
      if (fit == 0) continue;
      if (fit == rest) std::copy(left.begin(), left.end(), send_.begin());
      else apportion(fit, left.data(), left.size(), send_.data(), order_);
      for (int g = 0; g < G && nrs == 1; ++g)  // one replica: it takes the whole share
        if (send_[g] > 0) give(g, 0, send_[g]);
      for (int g = 0; g < G && nrs > 1; ++g) {
        if (send_[g] == 0) continue;
        // Within the remaining capacity: floor(n * rem_i / sum rem) <= rem_i, and a remainder
        // unit goes only where the exact share was fractional, hence below rem_i.
        apportion(send_[g], rem_.data(), nrs, split_.data(), order_);
        for (std::size_t i = 0; i < nrs; ++i)
          if (split_[i] > 0) give(g, i, split_[i]);
      }
      for (int g = 0; g < G; ++g) left[g] = 0;
    }
    // Every cell written, so no zero fill first (what reset() would do).
    out.gpus = G;
    out.num_slots = slots;
    out.accepted.resize(static_cast<std::size_t>(G) * slots);
    transpose(by_slot_.data(), slots, G, out.accepted.data());
    out.buffered = out.accepted;
    out.routed = routed;
    out.dropped = dropped;
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override {
    return replan_from_load_window<std::int64_t>(
        ctx_, iteration, counts, current, interval_, load_window_, history_,
        [&](const std::vector<std::int64_t>& load, const std::vector<int>& cur) {
          return place(replica_counts(load, current.num_slots(), min_replicas_), cur);
        });
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"min_replicas", min_replicas_},
            {"capacity_factor", capacity_factor_},
            {"interval", interval_},
            {"load_window", load_window_}};
  }

 private:
  // A layout with r[e] replicas of each expert. Replicas of `cur` stay in their slots while the
  // expert still needs them (at most one per GPU, in slot order); the missing ones are dealt
  // round-robin over the GPUs (a cursor that moves on after each replica), each to the next GPU
  // with a free slot that does not hold the expert yet. Experts with more missing replicas go
  // first (ties: lower index). When every free slot is on a GPU g that already holds the expert,
  // one placed replica of another expert x (on the next GPU h, in cursor order, that lacks the
  // expert, with x absent from g) moves to g and the expert takes its slot on h; only when no such
  // swap exists do two replicas share a GPU.
  [[nodiscard]] std::vector<int> place(const std::vector<int>& r, const std::vector<int>& cur) const {
    const int G = ctx_.gpus, S = ctx_.slots_per_gpu, E = ctx_.experts;
    std::vector<int> layout(cur.size(), -1);
    std::vector<int> kept(E, 0);
    std::vector<std::vector<int>> holds(G, std::vector<int>(E, 0));  // replicas of e on g
    for (int g = 0; g < G; ++g)
      for (int s = 0; s < S; ++s) {
        const std::size_t slot = static_cast<std::size_t>(g) * S + s;
        const int e = cur[slot];
        if (e < 0 || e >= E || kept[e] >= r[e] || holds[g][e] > 0) continue;
        layout[slot] = e;
        kept[e]++;
        holds[g][e]++;
      }
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r[a] - kept[a] > r[b] - kept[b]; });
    auto free_slot = [&](int g) {
      for (int s = 0; s < S; ++s)
        if (layout[static_cast<std::size_t>(g) * S + s] < 0) return static_cast<std::size_t>(g) * S + s;
      return layout.size();
    };
    int cursor = 0;
    for (int e : order) {
      for (int k = kept[e]; k < r[e]; ++k) {
        int pick = -1, full = -1;
        for (int i = 0; i < G && pick < 0; ++i) {
          const int g = (cursor + i) % G;
          if (free_slot(g) == layout.size()) continue;
          if (holds[g][e] == 0) pick = g;
          else if (full < 0) full = g;
        }
        if (pick < 0) {
          // Swap: x moves from h to g's free slot; e takes x's slot on h.
          const int g = full;
          for (int i = 1; i < G && pick < 0; ++i) {
            const int h = (g + i) % G;
            if (holds[h][e] > 0) continue;
            for (int s = 0; s < S; ++s) {
              const std::size_t slot = static_cast<std::size_t>(h) * S + s;
              const int x = layout[slot];
              if (x < 0 || holds[g][x] > 0) continue;
              layout[free_slot(g)] = x;
              holds[g][x]++;
              holds[h][x]--;
              layout[slot] = -1;
              pick = h;
              break;
            }
          }
          if (pick < 0) pick = g;  // no swap possible: share the GPU
        }
        layout[free_slot(pick)] = e;
        holds[pick][e]++;
        cursor = (pick + 1) % G;
      }
    }
    return layout;
  }

  int min_replicas_ = 1;
  double capacity_factor_ = 1.0;
  std::int64_t interval_ = 50;
  std::int64_t load_window_ = 50;
  LoadHistory history_;  // [layer] last load_window loads
  // dispatch's buffers, reused between layers.
  std::vector<int> first_, holder_, cursor_;
  std::vector<std::int64_t> left_, send_, rem_, split_, by_expert_, by_slot_;
  std::vector<std::pair<std::int64_t, std::size_t>> order_;
};

}  // namespace

PolicyInfo moesim_policy_lazarus() {
  return {"lazarus",
          "Lazarus load-proportional replica counts with a fault-tolerance minimum, local-first dispatch by "
          "remaining capacity (arXiv 2407.04656)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<LazarusPolicy>(ctx, p);
          }};
}

}  // namespace moesim

#include "policies/common.hpp"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace moesim {
namespace {
// Token products can exceed 64 bits for long traces of big batches.
__extension__ using Wide = __int128;
}  // namespace

std::vector<std::vector<int>> expert_slots(const Placement& p, int layer, int experts) {
  std::vector<std::vector<int>> out(experts);
  const auto& slots = p.expert_of_slot[layer];
  for (int s = 0; s < static_cast<int>(slots.size()); ++s)
    if (slots[s] >= 0 && slots[s] < experts) out[slots[s]].push_back(s);
  return out;
}

void expert_loads(const std::int64_t* __restrict counts, int gpus, int experts,
                  std::int64_t* __restrict out) {
  // Eight source rows at a time: contiguous reads in a loop the compiler vectorises, with one
  // update of `out` per eight rows instead of one per row (about twice as fast at 2,048 GPUs x
  // 256 experts). Integer sums: the grouping does not change the result.
  std::fill(out, out + experts, std::int64_t{0});
  const auto E = static_cast<std::size_t>(experts);
  int g = 0;
  for (; g + 8 <= gpus; g += 8) {
    const std::int64_t* __restrict r = counts + static_cast<std::size_t>(g) * E;
    for (std::size_t e = 0; e < E; ++e) {
      out[e] += ((r[e] + r[E + e]) + (r[2 * E + e] + r[3 * E + e])) +
                ((r[4 * E + e] + r[5 * E + e]) + (r[6 * E + e] + r[7 * E + e]));
    }
  }
  for (; g < gpus; ++g) {
    const std::int64_t* __restrict row = counts + static_cast<std::size_t>(g) * E;
    for (std::size_t e = 0; e < E; ++e) out[e] += row[e];
  }
}

std::vector<std::int64_t> expert_loads(const std::int64_t* counts, int gpus, int experts) {
  std::vector<std::int64_t> loads(experts);
  expert_loads(counts, gpus, experts, loads.data());
  return loads;
}

namespace {
// dispatch_even's buffers, kept between calls so that a layer costs no allocation. One per thread:
// compare --jobs runs policies on several threads.
struct EvenScratch {
  std::vector<int> first, holder;  // expert e's slots are holder[first[e], first[e + 1]), ascending
  std::vector<std::int64_t> accepted_src;
  std::vector<std::pair<std::int64_t, int>> rem;  // (-remainder, source)
  std::vector<int> targets;
};

// n * limit / total and its remainder, with counts 0 <= n <= total and limit <= total: in 64
// bits when total^2 fits (exact, the same as the 128-bit path), else in 128 bits.
constexpr std::int64_t kSquareFits = 3037000499;  // floor(sqrt(2^63 - 1))
}  // namespace

void dispatch_even(const Placement& p, int layer, int experts, const std::int64_t* counts,
                   const EvenDispatchOptions& opt, LayerDispatch& out) {
  const int G = p.gpus, slots = p.num_slots();
  out.reset(G, slots);
  static thread_local EvenScratch sc;
  // The slots of each expert in slot order, as expert_slots lists them, without a vector each.
  const auto& layout = p.expert_of_slot[layer];
  sc.first.assign(static_cast<std::size_t>(experts) + 1, 0);
  for (int x : layout)
    if (x >= 0 && x < experts) ++sc.first[static_cast<std::size_t>(x) + 1];
  for (int e = 0; e < experts; ++e) sc.first[e + 1] += sc.first[e];
  sc.holder.resize(static_cast<std::size_t>(sc.first[experts]));
  sc.targets.assign(sc.first.begin(), sc.first.end() - 1);  // a cursor per expert, for the fill
  for (int s = 0; s < static_cast<int>(layout.size()); ++s)
    if (layout[s] >= 0 && layout[s] < experts) sc.holder[sc.targets[layout[s]]++] = s;
  sc.accepted_src.resize(G);
  auto& accepted_src = sc.accepted_src;
  auto& rem = sc.rem;
  auto& targets = sc.targets;
  for (int e = 0; e < experts; ++e) {
    std::int64_t total = 0;
    for (int g = 0; g < G; ++g) total += counts[static_cast<std::size_t>(g) * experts + e];
    out.routed += total;
    const int* reps = sc.holder.data() + sc.first[e];
    const int nreps = sc.first[e + 1] - sc.first[e];
    const auto r = static_cast<std::int64_t>(nreps);
    std::int64_t limit = r == 0 ? 0 : opt.replica_capacity < 0 ? total : std::min(total, r * opt.replica_capacity);
    out.dropped += total - limit;
    if (limit == 0) continue;
    // Proportional shares by largest remainder, ties to the lower source.
    std::int64_t given = 0;
    if (limit == total) {
      for (int g = 0; g < G; ++g) accepted_src[g] = counts[static_cast<std::size_t>(g) * experts + e];
      given = total;
    } else {
      rem.clear();
      const bool narrow = total <= kSquareFits;
      for (int g = 0; g < G; ++g) {
        const std::int64_t n = counts[static_cast<std::size_t>(g) * experts + e];
        std::int64_t q = 0, rm = 0;
        if (narrow) {
          q = n * limit / total;
          rm = n * limit % total;
        } else {
          q = static_cast<std::int64_t>((static_cast<Wide>(n) * limit) / total);
          rm = static_cast<std::int64_t>((static_cast<Wide>(n) * limit) % total);
        }
        accepted_src[g] = q;
        given += q;
        rem.emplace_back(-rm, g);
      }
      // The limit - given largest remainders get one more. (-remainder, source) pairs are
      // distinct, so the first d of the sorted order are a set that nth_element finds as well.
      const auto d = static_cast<std::size_t>(std::min<std::int64_t>(limit - given, static_cast<std::int64_t>(rem.size())));
      if (d > 0 && d < rem.size()) std::nth_element(rem.begin(), rem.begin() + static_cast<std::ptrdiff_t>(d - 1), rem.end());
      for (std::size_t i = 0; i < d; ++i) accepted_src[rem[i].second]++;
      given += static_cast<std::int64_t>(d);
    }
    for (int g = 0; g < G; ++g) {
      const std::int64_t n = accepted_src[g];
      if (n == 0) continue;
      const int* tg = reps;
      std::int64_t k = nreps;
      if (opt.prefer_local_node) {
        targets.clear();
        const int node = g / opt.gpus_per_node;
        for (int i = 0; i < nreps; ++i)
          if (p.gpu_of_slot(reps[i]) / opt.gpus_per_node == node) targets.push_back(reps[i]);
        if (!targets.empty()) {
          tg = targets.data();
          k = static_cast<std::int64_t>(targets.size());
        }
      }
      const std::size_t row = static_cast<std::size_t>(g) * slots;
      if (k == 1) {
        out.accepted[row + tg[0]] += n;
        out.buffered[row + tg[0]] += n;
        continue;
      }
      const std::int64_t base = n / k, extra = n % k;
      for (std::int64_t i = 0; i < k; ++i) {
        // The remainder starts at an offset that depends on the source: no replica is favoured.
        const std::int64_t j = (i + g) % k;
        const std::int64_t v = base + (i < extra ? 1 : 0);
        const std::size_t idx = row + tg[j];
        out.accepted[idx] += v;
        out.buffered[idx] += v;
      }
    }
  }
}

std::vector<Movement> placement_moves(const PolicyContext& ctx, const Placement& from, const Placement& to,
                                      bool with_optimizer, bool blocking) {
  std::vector<Movement> out;
  const int S = to.slots_per_gpu;
  const int gpn = ctx.cluster->gpus_per_node;
  const int E = ctx.experts, slots = to.num_slots();
  const double bytes = ctx.expert_weight_bytes + (with_optimizer ? ctx.expert_optimizer_bytes : 0.0);
  // The slots holding each expert in `from`, ascending: expert e's are holder[first[e], first[e + 1]).
  std::vector<int> first(static_cast<std::size_t>(E) + 1), cursor(E), holder;
  // At most one movement per slot whose expert changes: one allocation for the list.
  std::size_t changed = 0;
  for (std::size_t l = 0; l < to.expert_of_slot.size(); ++l) {
    const auto& was = from.expert_of_slot[l];
    const auto& now = to.expert_of_slot[l];
    for (std::size_t s = 0; s < now.size(); ++s) changed += now[s] >= 0 && now[s] != was[s] ? 1 : 0;
  }
  out.reserve(changed);
  for (int l = 0; l < static_cast<int>(to.expert_of_slot.size()); ++l) {
    const auto& was = from.expert_of_slot[l];
    const auto& now = to.expert_of_slot[l];
    if (was == now) continue;  // nothing moves in this layer
    std::fill(first.begin(), first.end(), 0);
    for (int x : was)
      if (x >= 0 && x < E) ++first[x + 1];
    for (int e = 0; e < E; ++e) first[e + 1] += first[e];
    std::copy(first.begin(), first.end() - 1, cursor.begin());
    holder.resize(first[E]);
    for (int s = 0; s < static_cast<int>(was.size()); ++s)
      if (was[s] >= 0 && was[s] < E) holder[cursor[was[s]]++] = s;
    for (int s = 0; s < slots; ++s) {
      const int e = now[s];
      if (e < 0 || was[s] == e) continue;
      const int dst = s / S;
      // Source: dst itself when it holds e (a local copy, no link crossed), else the lowest GPU
      // holding e on dst's node, else the lowest GPU holding e, else the host. Holders are in slot
      // order, so GPUs and nodes are contiguous ranges of them: binary searches, not a scan.
      const auto begin = holder.begin() + first[e], end = holder.begin() + first[e + 1];
      const int node_slot = dst / gpn * gpn * S;
      const auto on_node = std::lower_bound(begin, end, node_slot);
      int src = -1;
      if (on_node != end && *on_node < node_slot + gpn * S) {
        const auto on_dst = std::lower_bound(on_node, end, dst * S);
        if (on_dst != end && *on_dst < (dst + 1) * S) continue;
        src = *on_node / S;
      } else if (begin != end) {
        src = *begin / S;
      }
      Movement& m = out.emplace_back();
      m.transfer.dst = Endpoint{false, dst};
      m.transfer.src = src >= 0 ? Endpoint{false, src} : Endpoint{true, dst / gpn};
      m.transfer.bytes = bytes;
      m.blocking = blocking;
      // A compiled format: no format-string parsing per movement.
      m.what = fmt::format(FMT_COMPILE("layer {} expert {} to slot {}"), l, e, s);
    }
  }
  return out;
}

void record_loads(const PolicyContext& ctx, const IterationCounts& counts, std::int64_t window,
                  LoadHistory& history) {
  for (int l = 0; l < ctx.moe_layers; ++l) {
    auto& h = history[l];
    h.push_back(expert_loads(counts.layer_ptr(l), ctx.gpus, ctx.experts));
    while (static_cast<std::int64_t>(h.size()) > window) h.pop_front();
  }
}

}  // namespace moesim

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
  std::vector<int> targets, node_of_slot, node_of_gpu;
  std::vector<std::int64_t> by_expert;  // counts transposed: [expert][source]
  std::vector<std::int64_t> by_slot;    // accepted, transposed: [slot][source]
  std::vector<std::int64_t> base, extra, offset;  // spread_even's, [source]
  std::vector<std::uint64_t> keys;                // the ranked remainders, [source]
};

// Up to this many sources the largest remainders are found by rank (G^2 comparisons without a
// branch), above by nth_element: at 64 sources the ranks cost more than the sort saved.
constexpr int kRankedSources = 16;

// Up to this total, n * limit (n, limit <= total) is at most 2^62, within ExactDivider's range
// (as is the total, below 2^32).
constexpr std::int64_t kSquareFits = std::int64_t{1} << 31;
}  // namespace

void transpose(const std::int64_t* __restrict in, int rows, int cols, std::int64_t* __restrict out) {
  // 8 x 8 blocks: each block reads 8 lines and writes 8 lines, all of them cached.
  constexpr int B = 8;
  const auto R = static_cast<std::size_t>(rows), C = static_cast<std::size_t>(cols);
  for (std::size_t r0 = 0; r0 < R; r0 += B)
    for (std::size_t c0 = 0; c0 < C; c0 += B) {
      const std::size_t r1 = std::min(r0 + B, R), c1 = std::min(c0 + B, C);
      for (std::size_t c = c0; c < c1; ++c)
        for (std::size_t r = r0; r < r1; ++r) out[c * R + r] = in[r * C + c];
    }
}

namespace {
// Every source's n = accepted[g] assignments over the k replicas `reps` (k > 1), as the loop in
// dispatch_even spreads them: replica (i + g) % k gets n / k, plus one for i < n % k. Replica by
// replica over all sources instead: the same integer sums, in a loop of fixed length whose
// sources are adjacent cells of the replica's row of `by_slot` ([slot][source]), without the
// unpredictable branches of k and n varying from source to source.
void spread_even(const std::int64_t* accepted, int G, const int* reps, int k, std::int64_t* by_slot,
                 EvenScratch& sc) {
  sc.base.resize(static_cast<std::size_t>(G));
  sc.extra.resize(static_cast<std::size_t>(G));
  sc.offset.resize(static_cast<std::size_t>(G));
  std::int64_t* base = sc.base.data();
  std::int64_t* extra = sc.extra.data();
  std::int64_t* offset = sc.offset.data();
  // One reciprocal for all sources instead of a divide each (ExactDivider corrects the quotient).
  const ExactDivider by_k(k);
  for (int g = 0, off = 0; g < G; ++g) {
    const std::int64_t n = accepted[g];
    if (n >= 0 && n <= std::int64_t{0xffffffff}) {
      by_k.divmod(n, base[g], extra[g]);
    } else {
      base[g] = n / k;
      extra[g] = n % k;  // < 0 for n < 0: no replica gets one more
    }
    offset[g] = off;  // g % k, stepped with a wrap
    if (++off == k) off = 0;
  }
  for (int p = 0; p < k; ++p) {
    std::int64_t* row = by_slot + static_cast<std::size_t>(reps[p]) * G;
    // Replica p is the i-th of source g for i = (p - g) mod k.
    for (int g = 0; g < G; ++g) {
      std::int64_t i = p - offset[g];
      i += i < 0 ? k : 0;
      row[g] += base[g] + (i < extra[g] ? 1 : 0);
    }
  }
}
}  // namespace

void dispatch_even(const Placement& p, int layer, int experts, const std::int64_t* counts,
                   const EvenDispatchOptions& opt, LayerDispatch& out) {
  const int G = p.gpus, slots = p.num_slots();
  static thread_local EvenScratch tls;
  EvenScratch& sc = tls;  // one TLS lookup, not one per access in the loops
  // Expert-major counts in, slot-major results out (transposed back at the end): a source's
  // cells are 8 bytes apart instead of a row apart, which at 256 experts maps every row of a
  // column to the same few L1 sets.
  sc.by_expert.resize(static_cast<std::size_t>(G) * experts);
  transpose(counts, G, experts, sc.by_expert.data());
  sc.by_slot.assign(static_cast<std::size_t>(slots) * G, 0);
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
  sc.keys.resize(static_cast<std::size_t>(G));
  if (opt.prefer_local_node) {
    sc.node_of_slot.resize(static_cast<std::size_t>(slots));
    for (int s = 0; s < slots; ++s) sc.node_of_slot[s] = p.gpu_of_slot(s) / opt.gpus_per_node;
    // Nodes looked up, not divided, in the loops below.
    sc.node_of_gpu.resize(static_cast<std::size_t>(G));
    for (int g = 0; g < G; ++g) sc.node_of_gpu[g] = g / opt.gpus_per_node;
  }
  auto& accepted_src = sc.accepted_src;
  auto& rem = sc.rem;
  auto& targets = sc.targets;
  std::int64_t* const by_slot = sc.by_slot.data();
  std::int64_t routed = 0, dropped = 0;
  for (int e = 0; e < experts; ++e) {
    const std::int64_t* col = sc.by_expert.data() + static_cast<std::size_t>(e) * G;
    std::int64_t total = 0;
    for (int g = 0; g < G; ++g) total += col[g];
    routed += total;
    const int* reps = sc.holder.data() + sc.first[e];
    const int nreps = sc.first[e + 1] - sc.first[e];
    const auto r = static_cast<std::int64_t>(nreps);
    std::int64_t limit = r == 0 ? 0 : opt.replica_capacity < 0 ? total : std::min(total, r * opt.replica_capacity);
    dropped += total - limit;
    if (limit == 0) continue;
    // Proportional shares by largest remainder, ties to the lower source.
    std::int64_t given = 0;
    if (limit == total) {
      std::copy(col, col + G, accepted_src.begin());
      given = total;
    } else {
      rem.clear();
      // Counts are >= 0 (n <= total), so with total^2 in range every n * limit fits in 64 bits
      // and is at most 2^62, and a total below 2^32 lets ExactDivider replace the idiv; else 128 bits.
      std::int64_t lowest = 0;
      for (int g = 0; g < G; ++g) lowest = std::min(lowest, col[g]);
      const bool narrow = lowest >= 0 && total <= kSquareFits;
      const ExactDivider by_total(total);
      for (int g = 0; g < G; ++g) {
        const std::int64_t n = col[g];
        std::int64_t q = 0, rm = 0;
        if (narrow) {
          by_total.divmod(n * limit, q, rm);
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
      if (narrow && G <= kRankedSources && d > 0 && d < rem.size()) {
        // The same set by rank: a pair is among the first d when fewer than d pairs precede it.
        // Remainders lie in [0, total) with total <= 2^31, so (total - 1 - remainder, source)
        // packs into one integer of the same order; G^2 comparisons without a branch.
        std::uint64_t* keys = sc.keys.data();
        for (int g = 0; g < G; ++g)
          keys[g] = (static_cast<std::uint64_t>(total - 1 + rem[static_cast<std::size_t>(g)].first) << 32) |
                    static_cast<std::uint32_t>(g);
        for (int g = 0; g < G; ++g) {
          std::uint64_t before = 0;
          for (int h = 0; h < G; ++h) before += keys[h] < keys[g] ? 1 : 0;
          accepted_src[g] += before < d ? 1 : 0;
        }
      } else {
        if (d > 0 && d < rem.size())
          std::nth_element(rem.begin(), rem.begin() + static_cast<std::ptrdiff_t>(d - 1), rem.end());
        for (std::size_t i = 0; i < d; ++i) accepted_src[rem[i].second]++;
      }
      given += static_cast<std::int64_t>(d);
    }
    if (!opt.prefer_local_node && nreps > 1) {
      spread_even(accepted_src.data(), G, reps, nreps, by_slot, sc);
      continue;
    }
    int targets_node = -1;
    for (int g = 0; g < G; ++g) {
      const std::int64_t n = accepted_src[g];
      if (n == 0) continue;
      const int* tg = reps;
      std::int64_t k = nreps;
      if (opt.prefer_local_node) {
        // The local replicas depend only on the source's node: listed once per node and expert.
        const int node = sc.node_of_gpu[g];
        if (node != targets_node) {
          targets_node = node;
          targets.clear();
          for (int i = 0; i < nreps; ++i)
            if (sc.node_of_slot[reps[i]] == node) targets.push_back(reps[i]);
        }
        if (!targets.empty()) {
          tg = targets.data();
          k = static_cast<std::int64_t>(targets.size());
        }
      }
      std::int64_t* acc = by_slot + g;
      if (k == 1) {
        acc[static_cast<std::size_t>(tg[0]) * G] += n;
        continue;
      }
      // 32-bit divisions where the operands fit (k <= replicas, g < GPUs: ints): the same
      // quotients, at a fraction of a 64-bit divide's latency.
      std::int64_t base = 0, extra = 0;
      if (n > 0 && n <= std::int64_t{0xffffffff}) {
        const auto un = static_cast<std::uint32_t>(n), uk = static_cast<std::uint32_t>(k);
        base = un / uk;
        extra = un % uk;
      } else {
        base = n / k;
        extra = n % k;
      }
      // The remainder starts at an offset that depends on the source: no replica is favoured.
      // Replica i is j = (i + g) % k, stepped with a wrap instead of a division per replica.
      std::int64_t j = static_cast<std::uint32_t>(g) % static_cast<std::uint32_t>(k);
      for (std::int64_t i = 0; i < k; ++i) {
        acc[static_cast<std::size_t>(tg[j]) * G] += base + (i < extra ? 1 : 0);
        if (++j == k) j = 0;
      }
    }
  }
  // Every cell written, so no zero fill first (what reset() would do).
  out.gpus = G;
  out.num_slots = slots;
  out.accepted.resize(static_cast<std::size_t>(G) * slots);
  transpose(sc.by_slot.data(), slots, G, out.accepted.data());
  out.buffered = out.accepted;
  out.routed = routed;
  out.dropped = dropped;
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

Placement owned_placement(const PolicyContext& ctx, int owned) {
  Placement pl;
  pl.gpus = ctx.gpus;
  pl.slots_per_gpu = ctx.slots_per_gpu;
  std::vector<int> layout(static_cast<std::size_t>(pl.num_slots()), -1);
  for (int g = 0; g < ctx.gpus; ++g)
    for (int j = 0; j < owned; ++j) layout[static_cast<std::size_t>(g) * pl.slots_per_gpu + j] = g * owned + j;
  pl.expert_of_slot.assign(static_cast<std::size_t>(ctx.moe_layers), layout);
  return pl;
}

SyncPlan owner_sync_plan(const PolicyContext& ctx, const Placement& current, int owned) {
  const int S = current.slots_per_gpu;
  Placement owners = current;
  for (auto& layout : owners.expert_of_slot)
    for (int sl = 0; sl < owners.num_slots(); ++sl)
      if (sl % S >= owned) layout[static_cast<std::size_t>(sl)] = -1;
  SyncPlan plan = default_sync_plan(ctx, owners, false);
  plan.replica_allreduce = false;
  for (const auto& layout : current.expert_of_slot)
    for (int sl = 0; sl < current.num_slots(); ++sl) {
      const int e = layout[static_cast<std::size_t>(sl)];
      if (sl % S < owned || e < 0) continue;
      plan.gradient_transfers.push_back(
          Transfer{Endpoint{false, sl / S}, Endpoint{false, e / owned}, ctx.expert_grad_bytes});
    }
  return plan;
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

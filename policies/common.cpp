#include "policies/common.hpp"

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

std::vector<std::int64_t> expert_loads(const std::int64_t* counts, int gpus, int experts) {
  std::vector<std::int64_t> loads(experts, 0);
  for (int g = 0; g < gpus; ++g)
    for (int e = 0; e < experts; ++e) loads[e] += counts[static_cast<std::size_t>(g) * experts + e];
  return loads;
}

void dispatch_even(const Placement& p, int layer, int experts, const std::int64_t* counts,
                   const EvenDispatchOptions& opt, LayerDispatch& out) {
  const int G = p.gpus, slots = p.num_slots();
  out.reset(G, slots);
  const auto replicas = expert_slots(p, layer, experts);
  std::vector<std::int64_t> accepted_src(G);
  std::vector<int> targets;
  for (int e = 0; e < experts; ++e) {
    std::int64_t total = 0;
    for (int g = 0; g < G; ++g) total += counts[static_cast<std::size_t>(g) * experts + e];
    out.routed += total;
    const auto& reps = replicas[e];
    const auto r = static_cast<std::int64_t>(reps.size());
    std::int64_t limit = r == 0 ? 0 : opt.replica_capacity < 0 ? total : std::min(total, r * opt.replica_capacity);
    out.dropped += total - limit;
    if (limit == 0) continue;
    // Proportional shares by largest remainder, ties to the lower source.
    std::int64_t given = 0;
    std::vector<std::pair<std::int64_t, int>> rem;
    for (int g = 0; g < G; ++g) {
      const std::int64_t n = counts[static_cast<std::size_t>(g) * experts + e];
      const std::int64_t q = limit == total ? n : static_cast<std::int64_t>((static_cast<Wide>(n) * limit) / total);
      accepted_src[g] = q;
      given += q;
      if (limit != total) rem.emplace_back(-static_cast<std::int64_t>((static_cast<Wide>(n) * limit) % total), g);
    }
    std::sort(rem.begin(), rem.end());
    for (std::size_t i = 0; given < limit && i < rem.size(); ++i, ++given) accepted_src[rem[i].second]++;
    for (int g = 0; g < G; ++g) {
      const std::int64_t n = accepted_src[g];
      if (n == 0) continue;
      targets.clear();
      if (opt.prefer_local_node) {
        const int node = g / opt.gpus_per_node;
        for (int s : reps)
          if (p.gpu_of_slot(s) / opt.gpus_per_node == node) targets.push_back(s);
      }
      if (targets.empty()) targets = reps;
      const auto k = static_cast<std::int64_t>(targets.size());
      const std::int64_t base = n / k, extra = n % k;
      for (std::int64_t i = 0; i < k; ++i) {
        // The remainder starts at an offset that depends on the source: no replica is favoured.
        const std::int64_t j = (i + g) % k;
        const std::int64_t v = base + (i < extra ? 1 : 0);
        const std::size_t idx = static_cast<std::size_t>(g) * slots + targets[j];
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
  const double bytes = ctx.expert_weight_bytes + (with_optimizer ? ctx.expert_optimizer_bytes : 0.0);
  for (int l = 0; l < static_cast<int>(to.expert_of_slot.size()); ++l) {
    const auto holders = expert_slots(from, l, ctx.experts);
    for (int s = 0; s < to.num_slots(); ++s) {
      const int e = to.expert_of_slot[l][s];
      if (e < 0 || from.expert_of_slot[l][s] == e) continue;
      const int dst = s / S;
      int src = -1;
      for (int hs : holders[e]) {
        const int g = hs / S;
        if (g == dst) {
          src = g;  // already on this GPU: a local copy, no link crossed
          break;
        }
        if (src < 0 || (g / gpn == dst / gpn && src / gpn != dst / gpn)) src = g;
      }
      if (src == dst) continue;
      Movement m;
      m.transfer.dst = Endpoint{false, dst};
      m.transfer.src = src >= 0 ? Endpoint{false, src} : Endpoint{true, dst / gpn};
      m.transfer.bytes = bytes;
      m.blocking = blocking;
      m.what = fmt::format("layer {} expert {} to slot {}", l, e, s);
      out.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace moesim

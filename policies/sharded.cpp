#include "policies/sharded.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "policies/eplb.hpp"

namespace moesim::sharded {

std::vector<double> ShardMap::experts_owned(int gpus) const {
  std::vector<double> out(static_cast<std::size_t>(gpus), 0.0);
  for (const auto& list : owners)
    for (const Shard& s : list) out[static_cast<std::size_t>(s.gpu)] += s.fraction;
  return out;
}

ShardMap uniform_shards(int layers, int experts, int gpus) {
  ShardMap m;
  m.experts = experts;
  std::vector<Shard> all(static_cast<std::size_t>(gpus));
  for (int g = 0; g < gpus; ++g) all[g] = Shard{g, 1.0 / gpus};
  m.owners.assign(static_cast<std::size_t>(layers) * experts, all);
  return m;
}

std::vector<std::vector<int>> holder_gpus(const Placement& p, int layer, int experts) {
  std::vector<std::vector<int>> out(static_cast<std::size_t>(experts));
  const auto& slots = p.expert_of_slot[layer];
  for (int s = 0; s < static_cast<int>(slots.size()); ++s) {
    const int e = slots[s];
    if (e < 0 || e >= experts) continue;
    const int g = p.gpu_of_slot(s);
    if (out[e].empty() || out[e].back() != g) out[e].push_back(g);  // slots ascend, so GPUs do
  }
  return out;
}

ShardMap replica_shards(const Placement& p, int experts) {
  const int L = static_cast<int>(p.expert_of_slot.size());
  ShardMap m = uniform_shards(L, experts, p.gpus);
  for (int l = 0; l < L; ++l) {
    const auto holders = holder_gpus(p, l, experts);
    for (int e = 0; e < experts; ++e) {
      const auto& h = holders[e];
      if (h.empty()) continue;  // held nowhere: stays split over all GPUs
      auto& list = m.owners[static_cast<std::size_t>(l) * experts + e];
      list.clear();
      for (int g : h) list.push_back(Shard{g, 1.0 / static_cast<double>(h.size())});
    }
  }
  return m;
}

std::vector<int> spread_placement(const std::vector<double>& load, const std::vector<int>& count, int gpus,
                                  int slots_per_gpu, int gpus_per_node) {
  const int E = static_cast<int>(count.size());
  const int nodes = (gpus + gpus_per_node - 1) / gpus_per_node;
  int total = 0;
  for (int c : count) total += c;
  if (total > gpus * slots_per_gpu)
    throw std::invalid_argument(
        fmt::format("spread_placement: {} replicas for {} slots", total, gpus * slots_per_gpu));
  std::vector<double> weight(static_cast<std::size_t>(E), 0.0);
  for (int e = 0; e < E; ++e) weight[e] = count[e] > 0 ? load[e] / count[e] : 0.0;
  std::vector<int> order(static_cast<std::size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight[a] > weight[b]; });
  std::vector<int> layout(static_cast<std::size_t>(gpus) * slots_per_gpu, -1);
  std::vector<int> filled(static_cast<std::size_t>(gpus), 0);
  std::vector<double> gpu_load(static_cast<std::size_t>(gpus), 0.0);
  std::vector<int> on_node(static_cast<std::size_t>(nodes), 0);
  std::vector<char> on_gpu(static_cast<std::size_t>(gpus), 0);
  for (int e : order) {
    std::fill(on_node.begin(), on_node.end(), 0);
    std::fill(on_gpu.begin(), on_gpu.end(), 0);
    for (int r = 0; r < count[e]; ++r) {
      int best = -1;
      for (int g = 0; g < gpus; ++g) {
        if (filled[g] == slots_per_gpu) continue;
        if (best < 0) {
          best = g;
          continue;
        }
        // Lexicographic: (holds e, replicas of e on the node, load); the lower GPU on ties.
        const int nb = best / gpus_per_node, ng = g / gpus_per_node;
        if (on_gpu[g] != on_gpu[best]) {
          if (on_gpu[g] < on_gpu[best]) best = g;
        } else if (on_node[ng] != on_node[nb]) {
          if (on_node[ng] < on_node[nb]) best = g;
        } else if (gpu_load[g] < gpu_load[best]) {
          best = g;
        }
      }
      layout[static_cast<std::size_t>(best) * slots_per_gpu + filled[best]++] = e;
      gpu_load[best] += weight[e];
      on_gpu[best] = 1;
      ++on_node[best / gpus_per_node];
    }
  }
  return layout;
}

namespace {
// Adds a [src * G + dst] byte matrix to `out` as transfers, src then dst ascending.
void emit(const std::vector<double>& bytes, int G, std::vector<Transfer>& out) {
  for (int s = 0; s < G; ++s)
    for (int d = 0; d < G; ++d) {
      const double b = bytes[static_cast<std::size_t>(s) * G + d];
      if (b > 0.0) out.push_back(Transfer{Endpoint{false, s}, Endpoint{false, d}, b});
    }
}
}  // namespace

SyncPlan sharded_sync_plan(const PolicyContext& ctx, const Placement& current, const Placement& next,
                           const ShardMap& shards, bool rematerialize) {
  const ClusterSpec& cs = *ctx.cluster;
  const int G = ctx.gpus, E = ctx.experts, L = ctx.moe_layers;
  SyncPlan plan;
  plan.resize(G, cs.nodes);
  plan.replica_allreduce = false;  // the sparse reduce-scatter replaces it
  // Expert-data-parallel copies of the group (a parallel layout) each shard the experts over
  // their own GPUs, as HSDP does: the same shard's owners in every copy all-reduce it (one
  // collective per owner rank, below), instead of the core's all-reduce of whole experts.
  plan.copy_allreduce = false;
  std::vector<double> owned_grad_bytes(static_cast<std::size_t>(G), 0.0);
  const bool offload = ctx.training->optimizer_offload;
  const double grad_per_param = ctx.training->grad_bytes_per_param;
  const double weight_per_param = dtype_bytes(ctx.model->dtype);
  std::vector<double> grads(static_cast<std::size_t>(G) * G, 0.0), weights(static_cast<std::size_t>(G) * G, 0.0);
  // Owner g's fraction of an expert to (weights) or from (gradients) every holder h != g.
  auto gather = [&](const std::vector<int>& holders, const std::vector<Shard>& owners) {
    for (int h : holders)
      for (const Shard& o : owners)
        if (o.gpu != h) weights[static_cast<std::size_t>(o.gpu) * G + h] += o.fraction * ctx.expert_weight_bytes;
  };
  for (int l = 0; l < L; ++l) {
    const auto cur = holder_gpus(current, l, E);
    const auto nxt = holder_gpus(next, l, E);
    for (int e = 0; e < E; ++e) {
      const auto& owners = shards.of(l, e);
      for (int h : cur[e])
        for (const Shard& o : owners)
          if (o.gpu != h) grads[static_cast<std::size_t>(h) * G + o.gpu] += o.fraction * ctx.expert_grad_bytes;
      if (rematerialize) gather(cur[e], owners);
      gather(nxt[e], owners);
      for (const Shard& o : owners) {
        const double params = o.fraction * ctx.expert_params;
        owned_grad_bytes[o.gpu] += o.fraction * ctx.expert_grad_bytes;
        if (offload) {
          plan.host_optimizer_params[cs.node_of(o.gpu)] += params;
          plan.d2h_bytes[o.gpu] += params * grad_per_param;
          plan.h2d_bytes[o.gpu] += params * weight_per_param;
        } else {
          plan.gpu_optimizer_params[o.gpu] += params;
        }
      }
    }
  }
  emit(grads, G, plan.gradient_transfers);
  emit(weights, G, plan.weight_transfers);
  // A one-GPU collective: GroupPlanMap extends it to the same rank of every copy; without copies
  // it has one member and costs nothing.
  for (int g = 0; g < G; ++g)
    if (owned_grad_bytes[g] > 0.0)
      plan.grad_collectives.push_back(
          {Collective::AllReduce, owned_grad_bytes[g], {g}, "sharded expert gradients across expert-data-parallel copies"});
  return plan;
}

std::vector<Movement> reshard_moves(const PolicyContext& ctx, const ShardMap& from, const ShardMap& to,
                                    bool blocking) {
  const int G = ctx.gpus, E = ctx.experts;
  const bool offload = ctx.training->optimizer_offload;
  std::vector<double> bytes(static_cast<std::size_t>(G) * G, 0.0);
  std::vector<double> before(static_cast<std::size_t>(G)), after(static_cast<std::size_t>(G));
  for (int l = 0; l < from.layers(); ++l)
    for (int e = 0; e < E; ++e) {
      std::fill(before.begin(), before.end(), 0.0);
      std::fill(after.begin(), after.end(), 0.0);
      for (const Shard& s : from.of(l, e)) before[s.gpu] += s.fraction;
      for (const Shard& s : to.of(l, e)) after[s.gpu] += s.fraction;
      // Two cursors: receivers (fraction grows) in GPU order take from givers (it shrinks) in
      // GPU order.
      int give = 0;
      double left = 0.0;
      for (int r = 0; r < G; ++r) {
        double need = after[r] - before[r];
        while (need > 1e-12) {
          while (left <= 1e-12 && give < G) {
            left = before[give] - after[give];
            if (left <= 1e-12) ++give;
          }
          if (give >= G) break;
          const double x = std::min(need, left);
          bytes[static_cast<std::size_t>(give) * G + r] += x * ctx.expert_optimizer_bytes;
          need -= x;
          left -= x;
          if (left <= 1e-12) {
            ++give;
            left = 0.0;
          }
        }
      }
    }
  std::vector<Movement> out;
  const ClusterSpec& cs = *ctx.cluster;
  for (int s = 0; s < G; ++s)
    for (int d = 0; d < G; ++d) {
      const double x = bytes[static_cast<std::size_t>(s) * G + d];
      // Offloaded state moves between hosts: free inside one node; between nodes it is charged
      // GPU to GPU over the NIC (the network has no host-to-host transfer), its PCIe legs not.
      if (s == d || x <= 0.0 || (offload && cs.node_of(s) == cs.node_of(d))) continue;
      out.push_back(Movement{Transfer{Endpoint{false, s}, Endpoint{false, d}, x}, blocking,
                             fmt::format("re-shard optimizer state GPU {} -> GPU {}", s, d)});
    }
  return out;
}

LaerCost laer_cost(const std::vector<double>& counts, int experts, const std::vector<int>& layout, int gpus,
                   int slots_per_gpu, const LaerCostModel& m) {
  const int E = experts, G = gpus, gpn = std::max(1, m.gpus_per_node);
  std::vector<int> replicas(static_cast<std::size_t>(E), 0);
  for (int e : layout)
    if (e >= 0 && e < E) ++replicas[e];
  std::vector<double> received(static_cast<std::size_t>(G), 0.0);
  LaerCost c;
  for (int g = 0; g < G; ++g) {
    double nic_bytes = 0.0, intra_bytes = 0.0;
    for (int s = 0; s < static_cast<int>(layout.size()); ++s) {
      const int e = layout[s];
      if (e < 0 || e >= E) continue;
      const double n = counts[static_cast<std::size_t>(g) * E + e] / replicas[e];
      const int d = s / slots_per_gpu;
      received[d] += n;
      if (d == g) continue;
      (d / gpn == g / gpn ? intra_bytes : nic_bytes) += n * m.token_bytes;
    }
    c.comm_s += nic_bytes / m.nic_bps + intra_bytes / m.intra_bps;
  }
  const double busiest = *std::max_element(received.begin(), received.end());
  c.compute_s = busiest * m.flop_per_token / m.flop_rate;
  c.total_s = m.comm_weight * c.comm_s + m.compute_weight * c.compute_s;
  return c;
}

std::vector<std::vector<int>> laer_candidates(const std::vector<double>& load, int slots, int perturbations) {
  const int E = static_cast<int>(load.size());
  std::vector<std::vector<int>> out;
  auto add = [&out](std::vector<int> c) {
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(std::move(c));
  };
  std::vector<int> by_load(static_cast<std::size_t>(E));
  std::iota(by_load.begin(), by_load.end(), 0);
  std::stable_sort(by_load.begin(), by_load.end(), [&](int a, int b) { return load[a] > load[b]; });
  std::vector<int> uniform(static_cast<std::size_t>(E), slots / E);
  for (int i = 0; i < slots % E; ++i) ++uniform[by_load[i]];
  add(uniform);
  const std::vector<int> heap = eplb::replicate_experts(load, slots).count;
  add(heap);
  // Experts by load per replica under the heap: heaviest first (ties: lower index).
  std::vector<double> per(static_cast<std::size_t>(E));
  for (int e = 0; e < E; ++e) per[e] = load[e] / heap[e];
  std::vector<int> heavy(static_cast<std::size_t>(E));
  std::iota(heavy.begin(), heavy.end(), 0);
  std::stable_sort(heavy.begin(), heavy.end(), [&](int a, int b) { return per[a] > per[b]; });
  std::vector<int> donors;  // lightest first (ties: lower index), more than one replica
  for (int e : heavy)
    if (heap[e] > 1) donors.push_back(e);
  std::stable_sort(donors.begin(), donors.end(), [&](int a, int b) { return per[a] < per[b]; });
  for (int i = 0; i < perturbations && i < static_cast<int>(donors.size()) && i < E; ++i) {
    const int from = donors[i], to = heavy[i];
    if (from == to) continue;
    std::vector<int> c = heap;
    --c[from];
    ++c[to];
    add(std::move(c));
  }
  return out;
}

LaerPlan laer_plan(const std::vector<double>& counts, int gpus, int experts, int slots_per_gpu, int perturbations,
                   const LaerCostModel& m) {
  std::vector<double> load(static_cast<std::size_t>(experts), 0.0);
  for (int g = 0; g < gpus; ++g)
    for (int e = 0; e < experts; ++e) load[e] += counts[static_cast<std::size_t>(g) * experts + e];
  const auto candidates = laer_candidates(load, gpus * slots_per_gpu, perturbations);
  LaerPlan best;
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
    std::vector<int> layout = spread_placement(load, candidates[i], gpus, slots_per_gpu, m.gpus_per_node);
    const LaerCost c = laer_cost(counts, experts, layout, gpus, slots_per_gpu, m);
    if (i == 0 || c.total_s < best.cost.total_s) {
      best.layout = std::move(layout);
      best.count = candidates[i];
      best.candidate = i;
      best.cost = c;
    }
  }
  return best;
}

}  // namespace moesim::sharded

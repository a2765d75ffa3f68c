// FlexMoE's movement and cost-model pieces; see policies/flexmoe_cost.hpp and docs/policies.md.
#include "policies/flexmoe_cost.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "policies/common.hpp"

namespace moesim {

// The movements turning `from` into `to` when an expert's r replicas each own 1 / r of its
// optimizer state (ZeRO-1 over the expert-data-parallel group). Every slot that gains an expert
// receives its weights (placement_moves without optimizer state). Then, per expert whose set of
// holding GPUs changes from H to H', the state is re-partitioned with the fewest bytes: a GPU of
// H' needs 1/|H'| of the state if it is new, else what its shard grows by (1/|H'| - 1/|H|, when
// positive); a GPU of H supplies its whole 1/|H| shard if it leaves, else what its shard shrinks
// by. Both sums are 1 - |H and H'| min(1/|H|, 1/|H'|) of the state (an expand to r + 1 holders
// moves 1/(r + 1), a shrink from r or a migration 1/r). Each receiver is served by the
// suppliers in order, same node first, then the lowest GPU id.
std::vector<Movement> flexmoe_sharded_moves(const PolicyContext& ctx, const Placement& from,
                                            const Placement& to) {
  std::vector<Movement> out = placement_moves(ctx, from, to, /*with_optimizer=*/false, /*blocking=*/true);
  const int E = ctx.experts, gpn = std::max(1, ctx.cluster->gpus_per_node);
  const double O = ctx.expert_optimizer_bytes;
  if (O <= 0.0) return out;
  for (int l = 0; l < static_cast<int>(to.expert_of_slot.size()); ++l) {
    if (from.expert_of_slot[l] == to.expert_of_slot[l]) continue;
    const auto was = expert_slots(from, l, E), now = expert_slots(to, l, E);
    for (int e = 0; e < E; ++e) {
      auto gpus = [&](const std::vector<int>& slots) {
        std::vector<int> g;
        for (int s : slots)
          if (g.empty() || g.back() != s / from.slots_per_gpu) g.push_back(s / from.slots_per_gpu);
        return g;
      };
      const std::vector<int> H = gpus(was[e]), H2 = gpus(now[e]);
      if (H == H2 || H.empty() || H2.empty()) continue;
      const double a = O / static_cast<double>(H.size()), b = O / static_cast<double>(H2.size());
      auto holds = [](const std::vector<int>& v, int g) { return std::binary_search(v.begin(), v.end(), g); };
      std::vector<std::pair<int, double>> supply;
      for (int g : H) {
        const double give = holds(H2, g) ? a - b : a;
        if (give > 0.0) supply.emplace_back(g, give);
      }
      for (int g : H2) {
        double need = holds(H, g) ? b - a : b;
        // Same-node suppliers first, then the rest, each in GPU order.
        for (int pass = 0; pass < 2 && need > 1e-9 * O; ++pass) {
          for (auto& [src, left] : supply) {
            if (need <= 1e-9 * O) break;
            if (left <= 1e-9 * O || (src / gpn == g / gpn) != (pass == 0)) continue;
            const double x = std::min(need, left);
            left -= x;
            need -= x;
            Movement& m = out.emplace_back();
            m.transfer.src = Endpoint{false, src};
            m.transfer.dst = Endpoint{false, g};
            m.transfer.bytes = x;
            m.blocking = true;
            m.what = fmt::format("layer {} expert {} optimizer shard to GPU {}", l, e, g);
          }
        }
      }
    }
  }
  return out;
}

// Ring reduce-scatter or all-gather of `bytes` over `gpus`: r - 1 steps of bytes / r each.
// source: per-step latency 14 us, NCCL's Simple-protocol ring over the network, 8.4 us base
// (NVIDIA/nccl src/graph/tuning.cc, shared/reference/hardware-and-calibration.md).
double flexmoe_ring_seconds(const PolicyContext& ctx, const std::vector<int>& gpus, double bytes) {
  const int r = static_cast<int>(gpus.size());
  const int gpn = std::max(1, ctx.cluster->gpus_per_node);
  const bool cross = gpus.front() / gpn != gpus.back() / gpn;
  const double gbps = cross ? ctx.cluster->nic_gbps() : ctx.cluster->intra_gbps();
  if (gbps <= 0.0) return std::numeric_limits<double>::infinity();
  const double step_latency_s = cross ? 14e-6 : 3.4e-6;  // Simple ring: network / NVLink hop
  return 8.4e-6 + (r - 1) * (step_latency_s + bytes / r / (gbps * 1e9));
}
// Seconds of the expert sync, as the core orders it: one collective per (layer, expert) group
// of two or more GPUs, in (layer, expert) order on every GPU, each starting when its last
// member is free. Sharded: the gradients' reduce-scatter chain and the weights' all-gather
// chain (same groups, after the optimizer); otherwise an all-reduce (twice the steps).
double flexmoe_sync_seconds(const PolicyContext& ctx,
                            const std::vector<std::vector<std::vector<int>>>& groups, bool sharded,
                            std::vector<double>& free_s) {
  double total = 0.0;
  const int passes = 2;  // reduce-scatter + all-gather, or an all-reduce's two halves
  for (int pass = 0; pass < passes; ++pass) {
    const double bytes = pass == 0 || !sharded ? ctx.expert_grad_bytes : ctx.expert_weight_bytes;
    free_s.assign(static_cast<std::size_t>(ctx.gpus), 0.0);
    double end = 0.0;
    for (const auto& layer : groups) {
      for (const auto& h : layer) {
        if (h.size() < 2) continue;
        double t = 0.0;
        for (int g : h) t = std::max(t, free_s[g]);
        t += flexmoe_ring_seconds(ctx, h, bytes);
        for (int g : h) free_s[g] = t;
        end = std::max(end, t);
      }
    }
    total += end;
  }
  return total;
}

// Seconds of the slowest GPU's expert optimizer step, as the core charges it: with offload
// its node's host steps every share of the node at host_adam_params_per_s after the
// gradients come down and before the weights go up over PCIe; without, a fused Adam through
// HBM (adam_hbm_bytes_per_param). The dense part is the same on every GPU and left out.
double flexmoe_optimizer_seconds(const PolicyContext& ctx, const std::vector<double>& params) {
  const ClusterSpec& cs = *ctx.cluster;
  const TrainingSpec& tr = *ctx.training;
  const int gpn = std::max(1, cs.gpus_per_node);
  double worst = 0.0;
  for (int g0 = 0; g0 < static_cast<int>(params.size()); g0 += gpn) {
    const int g1 = std::min(static_cast<int>(params.size()), g0 + gpn);
    double node = 0.0;
    for (int g = g0; g < g1; ++g) node += params[g];
    for (int g = g0; g < g1; ++g) {
      double t = 0.0;
      if (tr.optimizer_offload) {
        if (tr.host_adam_params_per_s > 0.0) t += node / tr.host_adam_params_per_s;
        const double pcie = cs.pcie_gbps * 1e9;
        const double bytes = params[g] * (tr.grad_bytes_per_param + dtype_bytes(ctx.model->dtype));
        if (pcie > 0.0) t += bytes / pcie;
      } else if (cs.gpu.hbm_gbps > 0.0) {
        t += params[g] * tr.adam_hbm_bytes_per_param / (cs.gpu.hbm_gbps * 1e9);
      }
      worst = std::max(worst, t);
    }
  }
  return worst;
}

// List scheduling of the replica groups' collectives: each next one is the one whose members
// are all free earliest under the ring estimate (ties to the earlier in the list).
void flexmoe_greedy_order(const PolicyContext& ctx, std::vector<CollectiveOp>& ops) {
  std::vector<double> free_s(static_cast<std::size_t>(ctx.gpus), 0.0);
  std::vector<CollectiveOp> out;
  out.reserve(ops.size());
  std::vector<char> done(ops.size(), 0);
  for (std::size_t n = 0; n < ops.size(); ++n) {
    std::size_t best = ops.size();
    double best_s = 0.0;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      if (done[i] != 0) continue;
      double t = 0.0;
      for (int g : ops[i].gpus) t = std::max(t, free_s[g]);
      if (best == ops.size() || t < best_s) {
        best = i;
        best_s = t;
      }
    }
    done[best] = 1;
    const double end = best_s + flexmoe_ring_seconds(ctx, ops[best].gpus, ops[best].bytes);
    for (int g : ops[best].gpus) free_s[g] = end;
    out.push_back(std::move(ops[best]));
  }
  ops = std::move(out);
}

}  // namespace moesim

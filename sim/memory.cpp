#include "sim/memory.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace moesim {

void MemoryUse::max_with(const MemoryUse& o) {
  weights_bytes = std::max(weights_bytes, o.weights_bytes);
  gradients_bytes = std::max(gradients_bytes, o.gradients_bytes);
  optimizer_bytes = std::max(optimizer_bytes, o.optimizer_bytes);
  activations_bytes = std::max(activations_bytes, o.activations_bytes);
  dispatch_buffer_bytes = std::max(dispatch_buffer_bytes, o.dispatch_buffer_bytes);
  move_temporary_bytes = std::max(move_temporary_bytes, o.move_temporary_bytes);
}

MemoryUse gpu_state_memory(const MoeModelSpec& m, const TrainingSpec& t, const LayoutGroups& groups,
                           double dense_params, int in_flight, double expert_params, double expert_optimizer_params) {
  const ParallelLayout& lay = groups.layout();
  const double dp = lay.data;
  MemoryUse u;
  u.weights_bytes = (dense_params * (lay.zero_stage >= 3 ? 1.0 / dp : 1.0) + expert_params) * dtype_bytes(m.dtype);
  u.gradients_bytes = (dense_params * (lay.zero_stage >= 2 ? 1.0 / dp : 1.0) + expert_params) * t.grad_bytes_per_param;
  double opt = expert_optimizer_params;
  if (!t.optimizer_offload) opt += dense_params * (lay.zero_stage >= 1 ? 1.0 / dp : 1.0);
  u.optimizer_bytes = opt * t.optimizer_bytes_per_param;
  const double sbh = static_cast<double>(m.seq_len) * m.micro_batch_per_gpu * m.hidden;
  u.activations_bytes = static_cast<double>(in_flight) * groups.max_chunk_layers() * sbh * 34.0 / lay.tensor;
  return u;
}

namespace {
// Tokens each rank of a stage sends and receives in one layer's dispatch, as integers: false
// (sums unset) when the counts' magnitudes reach 2^53, where doubles would round.
template <class Local>
bool integer_sums(const GroupDispatch& groups, int S, const Local& local, std::vector<std::int64_t>& sent,
                  std::vector<std::int64_t>& received, std::vector<std::uint64_t>& slot) {
  constexpr std::uint64_t kExact = std::uint64_t{1} << 53;
  std::fill(sent.begin(), sent.end(), std::int64_t{0});
  std::fill(received.begin(), received.end(), std::int64_t{0});
  std::uint64_t magnitude = 0;
  for (std::size_t k = 0; k < groups.size(); ++k) {
    const LayerDispatch& d = groups[k];
    const auto slots = static_cast<std::size_t>(d.num_slots);
    // Rows of at most 2^9 cells, each below 2^53 in magnitude: no sum wraps. The sums run in
    // unsigned (modular) arithmetic, one branch-free pass, and are used only when none is big.
    if (slots > 512) return false;
    slot.assign(slots, 0);
    for (int src = 0; src < d.gpus; ++src) {
      const std::int64_t* row = d.buffered.data() + static_cast<std::size_t>(src) * slots;
      // The cells OR-ed together reach 2^53 exactly when some cell does, and a negative cell
      // (a huge unsigned one) does too: negative counts take the double sums below. Otherwise
      // the row's sum is its magnitude.
      std::uint64_t row_sum = 0, any = 0;
      for (std::size_t sl = 0; sl < slots; ++sl) {
        const auto u = static_cast<std::uint64_t>(row[sl]);
        any |= u;
        row_sum += u;
        slot[sl] += u;
      }
      if (any >= kExact) return false;
      magnitude += row_sum;
      if (magnitude >= kExact) return false;
      sent[local(k, src)] += static_cast<std::int64_t>(row_sum);
    }
    // Slot sl is on rank sl / S: each rank's S slots summed first (modular sums: any order).
    for (std::size_t sl0 = 0, j = 0; sl0 < slots; sl0 += static_cast<std::size_t>(S), ++j) {
      std::uint64_t sum = 0;
      for (std::size_t sl = sl0; sl < std::min(slots, sl0 + static_cast<std::size_t>(S)); ++sl)
        sum += slot[sl];
      received[local(k, static_cast<int>(j))] += static_cast<std::int64_t>(sum);
    }
  }
  return true;
}
}  // namespace

std::vector<MemoryUse> gpu_memory(const MoeModelSpec& m, const TrainingSpec& t, const LayoutGroups& groups,
                                  const Placement& placement, const std::vector<GroupDispatch>& dispatch,
                                  const std::vector<Movement>& movements, const SyncPlan& sync) {
  const ParallelLayout& lay = groups.layout();
  const int G = groups.gpus(), S = placement.slots_per_gpu, ep = lay.expert, Gs = groups.gpus_per_stage();
  const int M = lay.micro_batches;
  const double wb = dtype_bytes(m.dtype);
  const double token_bytes = static_cast<double>(m.hidden) * wb;
  const std::vector<double> dense = stage_dense_params(m, groups);
  std::vector<int> in_flight(static_cast<std::size_t>(groups.stages()));
  for (int st = 0; st < groups.stages(); ++st) in_flight[static_cast<std::size_t>(st)] = in_flight_chunks(groups, st);
  std::vector<int> moe_stage;  // [MoE layer]: its stage
  for (int l = 0; l < m.layers; ++l)
    if (m.is_moe_layer(l)) moe_stage.push_back(groups.stage_of_layer(l));
  // Experts each rank of the group holds, per stage.
  std::vector<double> experts(static_cast<std::size_t>(groups.stages()) * ep, 0.0);
  for (std::size_t l = 0; l < placement.expert_of_slot.size(); ++l)
    for (int j = 0; j < ep; ++j)
      for (int s = 0; s < S; ++s)
        if (placement.expert_of_slot[l][j * S + s] >= 0) experts[static_cast<std::size_t>(moe_stage[l]) * ep + j] += 1.0;
  std::vector<MemoryUse> out(G);
  for (int g = 0; g < G; ++g) {
    const auto st = static_cast<std::size_t>(groups.stage(g));
    out[g] = gpu_state_memory(m, t, groups, dense[st], in_flight[st],
                              experts[st * ep + static_cast<std::size_t>(groups.ep_rank(g))] * m.expert_params() /
                                  lay.expert_tensor,
                              sync.gpu_optimizer_params.empty() ? 0.0 : sync.gpu_optimizer_params[g]);
  }
  // Dispatch buffers: the largest layer's tokens sent plus received by each GPU, one micro-batch;
  // with expert_tensor > 1 the received tokens of the whole expert-tensor-parallel group, which
  // its all-gather collects on every GPU of it.
  const int etp = lay.expert_tensor;
  std::vector<double> sent(static_cast<std::size_t>(Gs)), received(static_cast<std::size_t>(Gs));
  std::vector<std::size_t> local_of_slot;
  std::vector<std::int64_t> sent_n(static_cast<std::size_t>(Gs)), received_n(static_cast<std::size_t>(Gs));
  std::vector<std::uint64_t> slot_n;
  for (std::size_t l = 0; l < dispatch.size(); ++l) {
    std::fill(sent.begin(), sent.end(), 0.0);
    std::fill(received.begin(), received.end(), 0.0);
    // Each cell is a sum of token counts from 0.0. Where the counts' magnitudes sum below 2^53
    // every partial sum is an integer a double holds exactly, so summing them as integers (in any
    // order) and converting once gives the same bits as the double sums below, far faster.
    if (integer_sums(dispatch[l], S, [&](std::size_t k, int j) {
          return static_cast<std::size_t>(groups.ep_group_rank(moe_stage[l], static_cast<int>(k), j) - moe_stage[l] * Gs);
        }, sent_n, received_n, slot_n)) {
      for (int i = 0; i < Gs; ++i) {
        sent[static_cast<std::size_t>(i)] = static_cast<double>(sent_n[static_cast<std::size_t>(i)]);
        received[static_cast<std::size_t>(i)] = static_cast<double>(received_n[static_cast<std::size_t>(i)]);
      }
    } else {
      for (std::size_t k = 0; k < dispatch[l].size(); ++k) {
        const LayerDispatch& d = dispatch[l][k];
        auto local = [&](int j) {
          return static_cast<std::size_t>(groups.ep_group_rank(moe_stage[l], static_cast<int>(k), j) - moe_stage[l] * Gs);
        };
        // The receiving rank of each slot, looked up once (not a division per cell); the sums run
        // in the same order as before.
        local_of_slot.resize(static_cast<std::size_t>(d.num_slots));
        for (int sl = 0; sl < d.num_slots; ++sl) local_of_slot[static_cast<std::size_t>(sl)] = local(sl / S);
        for (int src = 0; src < d.gpus; ++src) {
          double& to = sent[local(src)];
          const std::int64_t* row = d.buffered.data() + static_cast<std::size_t>(src) * d.num_slots;
          for (int sl = 0; sl < d.num_slots; ++sl) {
            const auto n = static_cast<double>(row[sl]);
            to += n;
            received[local_of_slot[static_cast<std::size_t>(sl)]] += n;
          }
        }
      }
    }
    for (int i = 0; i < Gs; ++i) {
      double tokens = sent[static_cast<std::size_t>(i)];
      for (int r = i - i % etp; r < i - i % etp + etp; ++r) tokens += received[static_cast<std::size_t>(r)];
      MemoryUse& u = out[static_cast<std::size_t>(moe_stage[l] * Gs + i)];
      const double b = M > 1 ? tokens / M * token_bytes : tokens * token_bytes;
      u.dispatch_buffer_bytes = std::max(u.dispatch_buffer_bytes, b);
    }
  }
  for (const Movement& mv : movements)
    if (!mv.transfer.dst.host) out[mv.transfer.dst.index].move_temporary_bytes += mv.transfer.bytes;
  return out;
}

std::vector<double> host_memory(const ClusterSpec& c, const MoeModelSpec& m, const TrainingSpec& t,
                                const LayoutGroups& groups, const SyncPlan& sync) {
  if (groups.layout().is_default()) return host_memory(c, m, t, sync);
  std::vector<double> params(static_cast<std::size_t>(c.nodes), 0.0);
  for (int n = 0; n < c.nodes; ++n) params[n] = sync.host_optimizer_params.empty() ? 0.0 : sync.host_optimizer_params[n];
  if (t.optimizer_offload) {
    const std::vector<double> dense = stage_dense_params(m, groups);
    const double shard = groups.layout().zero_stage >= 1 ? 1.0 / groups.layout().data : 1.0;
    for (int g = 0; g < groups.gpus(); ++g) params[c.node_of(g)] += dense[static_cast<std::size_t>(groups.stage(g))] * shard;
  }
  std::vector<double> out(static_cast<std::size_t>(c.nodes));
  for (int n = 0; n < c.nodes; ++n) out[n] = params[n] * t.optimizer_bytes_per_param;
  return out;
}

std::vector<double> host_memory(const ClusterSpec& c, const MoeModelSpec& m, const TrainingSpec& t,
                                const SyncPlan& sync) {
  std::vector<double> out(c.nodes, 0.0);
  for (int n = 0; n < c.nodes; ++n) {
    double params = sync.host_optimizer_params.empty() ? 0.0 : sync.host_optimizer_params[n];
    if (t.optimizer_offload) params += m.dense_params_total() * c.gpus_per_node;
    out[n] = params * t.optimizer_bytes_per_param;
  }
  return out;
}

std::string describe(const MemoryUse& u) {
  return fmt::format(
      "{:.2f} GB: weights {:.2f}, gradients {:.2f}, optimizer {:.2f}, activations {:.2f}, dispatch buffers {:.2f}, "
      "move temporaries {:.2f}",
      u.total() / 1e9, u.weights_bytes / 1e9, u.gradients_bytes / 1e9, u.optimizer_bytes / 1e9,
      u.activations_bytes / 1e9, u.dispatch_buffer_bytes / 1e9, u.move_temporary_bytes / 1e9);
}

}  // namespace moesim

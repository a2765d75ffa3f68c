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

double activation_bytes(const MoeModelSpec& m) {
  const double sbh = static_cast<double>(m.seq_len) * m.micro_batch_per_gpu * m.hidden;
  return m.layers * sbh * 34.0;
}

std::vector<MemoryUse> gpu_memory(const MoeModelSpec& m, const TrainingSpec& t, const Placement& placement,
                                  const std::vector<LayerDispatch>& dispatch, const std::vector<Movement>& movements,
                                  const SyncPlan& sync) {
  const int G = placement.gpus, S = placement.slots_per_gpu;
  const double wb = dtype_bytes(m.dtype);
  const double token_bytes = static_cast<double>(m.hidden) * wb;
  const double dense = m.dense_params_total();
  std::vector<MemoryUse> out(G);
  for (int g = 0; g < G; ++g) {
    double params = dense;
    for (const auto& layer : placement.expert_of_slot)
      for (int s = 0; s < S; ++s)
        if (layer[g * S + s] >= 0) params += m.expert_params();
    MemoryUse& u = out[g];
    u.weights_bytes = params * wb;
    u.gradients_bytes = params * t.grad_bytes_per_param;
    double opt = sync.gpu_optimizer_params.empty() ? 0.0 : sync.gpu_optimizer_params[g];
    if (!t.optimizer_offload) opt += dense;
    u.optimizer_bytes = opt * t.optimizer_bytes_per_param;
    u.activations_bytes = activation_bytes(m);
  }
  // Dispatch buffers: the largest layer's tokens sent plus received by each GPU.
  for (const LayerDispatch& d : dispatch) {
    std::vector<double> tokens(G, 0.0);
    for (int src = 0; src < d.gpus; ++src)
      for (int sl = 0; sl < d.num_slots; ++sl) {
        const auto n = static_cast<double>(d.buffered[static_cast<std::size_t>(src) * d.num_slots + sl]);
        tokens[src] += n;
        tokens[sl / S] += n;
      }
    for (int g = 0; g < G; ++g) out[g].dispatch_buffer_bytes = std::max(out[g].dispatch_buffer_bytes, tokens[g] * token_bytes);
  }
  for (const Movement& mv : movements)
    if (!mv.transfer.dst.host) out[mv.transfer.dst.index].move_temporary_bytes += mv.transfer.bytes;
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

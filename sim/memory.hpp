#pragma once
// Per-GPU and per-host memory of one iteration, by component, so that a policy that does not fit
// is reported (which GPU, which iteration, which step, how many bytes of what) instead of
// silently simulated.
#include <string>
#include <vector>

#include "models/specs.hpp"
#include "sim/layout.hpp"
#include "sim/policy.hpp"
#include "sim/training.hpp"

namespace moesim {

struct MemoryUse {
  double weights_bytes = 0.0;
  double gradients_bytes = 0.0;
  double optimizer_bytes = 0.0;
  double activations_bytes = 0.0;
  double dispatch_buffer_bytes = 0.0;
  double move_temporary_bytes = 0.0;  // copies in flight: old and new state coexist during a move
  [[nodiscard]] double total() const {
    return weights_bytes + gradients_bytes + optimizer_bytes + activations_bytes + dispatch_buffer_bytes +
           move_temporary_bytes;
  }
  void max_with(const MemoryUse& o);
};

// source: Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
// (MLSys 2023): s*b*h*(34 + 5*a*s/h) bytes per layer; the 5as/h attention-score term is not
// stored with FlashAttention (or selective recomputation), which every current MoE trainer uses.
[[nodiscard]] double activation_bytes(const MoeModelSpec& m);

// Memory of each GPU in one iteration that runs `placement` with `dispatch`, receives
// `movements`, and keeps optimizer state as `sync` says (dense state per training.optimizer_offload).
[[nodiscard]] std::vector<MemoryUse> gpu_memory(const MoeModelSpec& m, const TrainingSpec& t,
                                                const Placement& placement,
                                                const std::vector<LayerDispatch>& dispatch,
                                                const std::vector<Movement>& movements, const SyncPlan& sync);
// The same for every GPU under a parallel layout: `placement` and `dispatch` ([MoE layer][expert
// group]) in one expert-parallel group's view, `movements` and `sync` over all GPUs. Dense state
// is the GPU's stage's share (stage_dense_params), sharded over the data-parallel group by ZeRO
// (1: optimizer, 2: and gradients, 3: and weights); activations are those of the layers of the
// micro-batch chunks the schedule keeps in flight, split over the tensor-parallel group
// (sequence parallelism), and dispatch buffers hold one micro-batch.
[[nodiscard]] std::vector<MemoryUse> gpu_memory(const MoeModelSpec& m, const TrainingSpec& t, const LayoutGroups& groups,
                                                const Placement& placement, const std::vector<GroupDispatch>& dispatch,
                                                const std::vector<Movement>& movements, const SyncPlan& sync);
[[nodiscard]] std::vector<double> host_memory(const ClusterSpec& c, const MoeModelSpec& m, const TrainingSpec& t,
                                              const LayoutGroups& groups, const SyncPlan& sync);
// Optimizer state held by each node's host.
[[nodiscard]] std::vector<double> host_memory(const ClusterSpec& c, const MoeModelSpec& m, const TrainingSpec& t,
                                              const SyncPlan& sync);

[[nodiscard]] std::string describe(const MemoryUse& u);

}  // namespace moesim

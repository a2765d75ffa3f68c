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


// The state one GPU holds under a parallel layout: `dense_params` (its stage's share,
// stage_dense_params) sharded by ZeRO over the data-parallel group, `expert_params` of expert
// weights and gradients, `expert_optimizer_params` of expert optimizer state on the GPU, and the
// activations of `in_flight` chunks (in_flight_chunks) of the largest chunk's layers, split over
// the tensor-parallel group. Dispatch buffers and move temporaries are left at 0.
// Activations, source: Korthikanti et al., "Reducing Activation Recomputation in Large
// Transformer Models" (MLSys 2023): s*b*h*(34 + 5*a*s/h) bytes per layer, divided by t with
// sequence parallelism; the 5as/h attention-score term is not stored with FlashAttention (or
// selective recomputation), which every current MoE trainer uses.
[[nodiscard]] MemoryUse gpu_state_memory(const MoeModelSpec& m, const TrainingSpec& t, const LayoutGroups& groups,
                                         double dense_params, int in_flight, double expert_params,
                                         double expert_optimizer_params);
// Memory of each GPU in one iteration under a parallel layout: `placement` and `dispatch` ([MoE
// layer][expert group]) in one expert-parallel group's view, `movements` and `sync` over all
// GPUs. The state is gpu_state_memory's; dispatch buffers hold one micro-batch of the largest
// layer; move temporaries are the bytes the GPU receives (old and new copies coexist).
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

#pragma once

namespace moesim {

// Optimizer and gradient settings (scenario section `training`).
struct TrainingSpec {
  bool optimizer_offload = false;
  double grad_bytes_per_param = 2.0;        // bf16 gradients
  // source: mixed-precision Adam keeps fp32 master weights, m and v: 12 bytes per parameter
  // (ZeRO, Rajbhandari et al., SC 2020, section 3.1: K = 12).
  double optimizer_bytes_per_param = 12.0;
  // One fused Adam step reads fp32 master/m/v and the bf16 gradient (14 B) and writes master/m/v
  // and the bf16 weight (14 B).
  double adam_hbm_bytes_per_param = 28.0;
  double host_adam_params_per_s = 1.0e9;    // CPU Adam throughput of one host (assumption)
  // Host-side time per transformer layer, per micro-batch, in each forward and each backward, on
  // every GPU of the layer's stage (Python, kernel launches, framework hooks: what a roofline of
  // the kernels leaves out). 0, the default, charges nothing: the kernels alone, as before this
  // key existed. A figure for it comes from `moesim fit` against measured times, not from here.
  double layer_overhead_ns = 0.0;
};

}  // namespace moesim

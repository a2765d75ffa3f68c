#pragma once
// Tutel (Hwang et al., "Tutel: Adaptive Mixture-of-Experts at Scale", MLSys 2023, arXiv
// 2206.03382; github.com/microsoft/tutel): the rules of the policy in policies/tutel.cpp, apart
// so that tests can check them by hand.
#include <cstdint>
#include <string>

namespace moesim::tutel {

// Tutel's capacity per (source, expert), in assignments (tutel/impls/fast_dispatch.py,
// extract_critical): with s = ceil(local_tokens / experts),
//   x > 0: top_k * floor(x * s)                      (fixed; every buffer padded to it)
//   x = 0: max_needed                                (dropless: the largest count any source has
//                                                     for any expert, all-reduced MAX)
//   x < 0: min(max_needed, top_k * floor(-x * s))    (the needed size, capped)
// rounded up to a multiple of `alignment` (moe_layer.py: sharded count x a2a_ffn_overlap_degree).
[[nodiscard]] std::int64_t capacity(std::int64_t local_tokens, int top_k, int experts, double capacity_factor,
                                    std::int64_t max_needed, std::int64_t alignment);

// The parallelism of the MoE layer in one iteration, by Tutel's adaptive degree r over the
// `sharded` GPUs that hold one expert (moe_layer.py, experts/ffn.py):
//   data   (r = 0): no all-to-all; every GPU gathers every expert and computes its own tokens;
//   expert (r = 1): tokens all-to-all'ed to one holder, the holders' gradients reduced (DP + EP);
//   model  (r = sharded): every token to every holder, each computing its 1/sharded of the FFN
//                         width, partial outputs summed; no expert gradient reduction (MP + EP).
enum class Mode { data, expert, model };
[[nodiscard]] std::string mode_name(Mode m);

// What one iteration moves per GPU under each mode, in bytes (the forward and backward
// passes): the comparison the switch makes. Inputs per GPU and summed over the MoE layers.
struct ModeInputs {
  double buffer_tokens = 0.0;     // dispatch buffer rows of one source under expert mode (E x capacity per layer)
  double token_bytes = 0.0;       // one token's hidden vector
  int experts = 1;                // E
  int slots_per_gpu = 1;          // S
  int sharded = 1;                // holders of each expert (r of model mode)
  int gpus = 1;                   // G of the group
  int layers = 1;                 // MoE layers
  double expert_weight_bytes = 0.0;
  double expert_grad_bytes = 0.0;
};
struct ModeCost {
  double data_bytes = 0.0;
  double expert_bytes = 0.0;
  double model_bytes = 0.0;
};
//   expert: 4 exchanges (dispatch, combine, their backward) of the buffer's share leaving the
//           GPU, 1 - S/E, plus the all-gather of its S experts' weight shards and the
//           reduce-scatter of their gradients over the sharded holders, (sharded - 1) / sharded
//           x S x (weight + grad bytes) per layer;
//   model:  4 exchanges of sharded copies of the buffer, the share leaving 1 - S / (E sharded);
//   data:   the all-gather of every expert's weights and the reduce-scatter of their gradients
//           over the group, (G - 1) / G x E x (weight + grad bytes) per layer.
[[nodiscard]] ModeCost mode_costs(const ModeInputs& in);
// The cheapest mode; a tie keeps expert (Tutel's default, parallel_type 'adaptive:1'), then model.
[[nodiscard]] Mode cheapest(const ModeCost& c);

}  // namespace moesim::tutel

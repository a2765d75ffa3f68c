#pragma once
// Capacity rules shared by the policies that cut tokens off at a per-expert buffer size.
#include <cmath>
#include <cstdint>
#include <algorithm>

namespace moesim {

// DeepSpeed-MoE (sharded_moe.py): each rank's gate sees its local tokens; an expert accepts at
// most ceil(k * local_tokens / experts * capacity_factor) assignments from it, floored at
// min_capacity.
[[nodiscard]] inline std::int64_t deepspeed_capacity(std::int64_t local_tokens, int top_k, int experts,
                                                     double capacity_factor, std::int64_t min_capacity) {
  const double raw = static_cast<double>(top_k) * static_cast<double>(local_tokens) /
                     static_cast<double>(experts) * capacity_factor;
  return std::max(static_cast<std::int64_t>(std::ceil(raw)), min_capacity);
}

}  // namespace moesim

#pragma once
// Compute timings behind one interface: the roofline on a hardware profile now, calibration
// profiles measured by the CUDA kernels later.
#include <string>

#include "core/units.hpp"

namespace moesim {

class ComputeModel {
 public:
  virtual ~ComputeModel() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  // One GEMM [m x k] x [k x n] with `elem_bytes`-byte operands.
  [[nodiscard]] virtual TimeNs gemm_ns(double m, double n, double k, int elem_bytes) const = 0;
  // A memory-bound kernel streaming `bytes` through HBM.
  [[nodiscard]] virtual TimeNs memory_ns(double bytes) const = 0;
};

}  // namespace moesim

#pragma once
#include "models/specs.hpp"
#include "models/compute.hpp"

namespace moesim {

// time = max(FLOPs / (peak x gemm_efficiency), bytes touched / HBM bandwidth), per kernel.
class RooflineCompute final : public ComputeModel {
 public:
  explicit RooflineCompute(const GpuProfile& gpu) : gpu_(gpu) {}
  [[nodiscard]] std::string name() const override { return "roofline(" + gpu_.name + ")"; }
  [[nodiscard]] TimeNs gemm_ns(double m, double n, double k, int elem_bytes) const override {
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    const double flops = 2.0 * m * n * k;
    const double bytes = (m * k + k * n + m * n) * elem_bytes;
    return std::max(compute_ns(flops, gpu_.peak_tflops * gpu_.gemm_efficiency), memory_ns(bytes));
  }
  [[nodiscard]] TimeNs memory_ns(double bytes) const override { return transfer_ns(bytes, gpu_.hbm_gbps); }

 private:
  GpuProfile gpu_;
};

}  // namespace moesim

#pragma once
// `moesim calibrate --backend cuda|cpu|reference --model PRESET|file.yaml --out profile.yaml`:
// times the kernels of a model's layers over the shapes the simulator asks for and writes a
// profile that `compute.profile` can name (docs/calibration.md). Dispatched by app/main.cpp.
#include <string>
#include <vector>

#include "models/profile.hpp"

namespace moesim {

// `args` are the words after `moesim calibrate`. Returns the exit status (0); bad input, and a
// CUDA backend asked for where no device can be used, throw InputError (status 2).
int cmd_calibrate(const std::vector<std::string>& args);

// What the simulator predicts for one collective of `bytes` per rank (nccl-tests' size) over
// `gpus` GPUs of one node of cluster preset `preset` (its analytical network model: NCCL's cost
// model for all-reduce, the per-port model for all-to-all). Zero below 2 GPUs; a bad preset or
// collective is an InputError.
struct CollectivePrediction {
  double time_ns = 0;
  double busbw_gbps = 0;  // nccl-tests' definition
};
[[nodiscard]] CollectivePrediction predict_collective(const std::string& preset,
                                                      const std::string& collective, double bytes, int gpus);
// The table `moesim calibrate --collectives` prints: per collective and size, the measured time
// and bus bandwidth next to the simulator's for the same number of GPUs on `preset`.
[[nodiscard]] std::string collective_comparison(const CollectiveProfile& measured, const std::string& preset);

}  // namespace moesim

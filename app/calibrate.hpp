#pragma once
// `moesim calibrate --backend cuda|cpu|reference --model PRESET|file.yaml --out profile.yaml`:
// times the kernels of a model's layers over the shapes the simulator asks for and writes a
// profile that `compute.profile` can name (docs/calibration.md). Dispatched by app/main.cpp.
#include <string>
#include <vector>

namespace moesim {

// `args` are the words after `moesim calibrate`. Returns the exit status (0); bad input, and a
// CUDA backend asked for where no device can be used, throw InputError (status 2).
int cmd_calibrate(const std::vector<std::string>& args);

}  // namespace moesim

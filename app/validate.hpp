#pragma once
#include <string>
#include <vector>

namespace moesim {
// `moesim validate collectives [--cluster PRESET] [--nodes N] [--nics-per-node N]`: NCCL cost
// model predictions next to published measurements.
int cmd_validate(const std::vector<std::string>& args);
}  // namespace moesim

#pragma once
#include <optional>
#include <string>
#include <vector>

#include "sim/collectives.hpp"

namespace moesim {

// One row of `moesim validate collectives`: a prediction of NCCL's cost model over every GPU of
// a cluster, in nccl-tests' bus bandwidth, and the published measurement where one exists.
struct ValidationRow {
  Collective collective = Collective::AllReduce;
  double size_mib = 0.0;  // nccl-tests "size" (its "MB" are MiB: 64 MB = 67108864 bytes)
  CollectiveEstimate estimate;
  double bus_gbps = 0.0;            // nccl-tests bus bandwidth of the predicted time
  std::optional<double> published;  // GB/s
  double error_pct = 0.0;           // (predicted - published) / published
  double tolerance_pct = 0.0;       // the bound this row is held to (5, or a documented miss)
  std::string source;
};

// The rows for a preset (as in a scenario's `cluster.preset`), a node count and optionally a
// NIC count per node. Throws InputError for an unknown preset.
[[nodiscard]] std::vector<ValidationRow> validation_rows(const std::string& preset, int nodes,
                                                         std::optional<int> nics_per_node);

// `moesim validate collectives [--cluster PRESET] [--nodes N] [--nics-per-node N]`: NCCL cost
// model predictions next to published measurements.
int cmd_validate(const std::vector<std::string>& args);
}  // namespace moesim

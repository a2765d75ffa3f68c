#pragma once
// MLCommons Chakra execution traces (schema: traces/chakra/et_def.proto, vendored from
// github.com/mlcommons/chakra at 21585d8, Apache-2.0): one file a rank, `PREFIX.RANK.et`, holding
// a GlobalMetadata message and then the rank's nodes, each as a varint length and the message
// (Chakra's protolib encoding, which ASTRA-sim's feeder reads). Process groups go beside them in
// `comm_group.json` ({"1": [0, 1, ...], ...}), the file ASTRA-sim takes with
// --comm-group-configuration. What moesim writes and reads is in docs/chakra.md.
#include <string>

#include "sim/op_graph.hpp"

namespace moesim {

// Whether this build has Chakra support (Protobuf was found when it was configured).
[[nodiscard]] bool chakra_supported();

// Writes `g` into folder `dir` (made if missing) as DIR/PREFIX.RANK.et for every rank plus
// DIR/comm_group.json, each file written to a temporary name and renamed into place.
void write_chakra_et(const OpGraph& g, const std::string& dir, const std::string& prefix = "moesim");

// Reads DIR/PREFIX.0.et, DIR/PREFIX.1.et, ... (ranks until the first missing file) and
// DIR/comm_group.json when present. Compute nodes take `moesim_duration_ns` when present, else
// duration_micros; communication nodes the same (a caller may re-cost them from comm_type,
// comm_size and the split sizes). Collectives match across ranks by their order on each process
// group. Throws InputError naming the file, the node and the field on anything it cannot use.
[[nodiscard]] OpGraph read_chakra_et(const std::string& dir, const std::string& prefix = "moesim");

}  // namespace moesim

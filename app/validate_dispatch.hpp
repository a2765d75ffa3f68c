#pragma once
// `moesim validate dispatch`: the hierarchical (DeepEP-style) exchange on DeepEP's published test
// shape, reported the way DeepEP's tests count bandwidth, next to DeepEP's figures.
#include <string>
#include <vector>

namespace moesim {

struct DispatchValidationRow {
  int ep = 0;     // ranks in the expert-parallel group
  int nodes = 0;  // nodes it spans (8 GPUs each)
  bool combine = false;
  double time_us = 0.0;          // predicted time of the call
  double counted_bytes = 0.0;    // bytes DeepEP's test divides by the time, per rank
  double logical_gbps = 0.0;     // counted_bytes / time
  const char* bottleneck = "";   // "RDMA" (across nodes) or "NVL" (one node), as DeepEP reports
  double published_gbps = 0.0;
  double error_pct = 0.0;
};

// DeepEP's shape on `preset` (default deepseek-h800): 4096 tokens per rank, hidden 7168, top-8 of
// 256 experts routed uniformly, at most min(nodes, 4) nodes per token, FP8 dispatch and BF16
// combine, EP 8 in one node and EP 16, 32, 64 across nodes of 8 GPUs.
[[nodiscard]] std::vector<DispatchValidationRow> dispatch_validation_rows(const std::string& preset);
int cmd_validate_dispatch(const std::vector<std::string>& args);

}  // namespace moesim

#pragma once
// The hand scenario of the iteration tests: round numbers that make every nanosecond workable
// by hand. Two single-GPU nodes: 100 TFLOP/s at efficiency 1 (a GEMM of F FLOPs takes F / 1e5
// ns), HBM 1000 GB/s (B bytes take B / 1000 ns), one 80 Gb/s NIC per node at efficiency 1 (10
// GB/s). One MoE layer, hidden 1024, one attention head of 1024, sequence 1024, batch 1 (T =
// 1024 tokens per GPU), 2 experts of FFN width 4096 (2 matrices), vocab 1024. `extra` is YAML
// appended at the top level (it may override nothing that is already set).
#include <string>

namespace moesim::testing {

inline std::string hand_scenario(const std::string& trace_path, const std::string& extra = "") {
  return R"(
name: hand
cluster:
  nodes: 2
  gpus_per_node: 1
  intra_node: none
  gpu: {preset: a100-pcie-80gb, peak_tflops: 100, gemm_efficiency: 1.0, hbm_gbps: 1000}
  pcie_gbps: 10
  nic_gbit: 80
  nics_per_node: 1
  nic_efficiency: 1.0
  nic_latency_ns: 5000
  host_memory_bytes: 1.0e11
model:
  layers: 1
  hidden: 1024
  heads: 1
  kv_heads: 1
  head_dim: 1024
  ffn_hidden: 4096
  expert_ffn_hidden: 4096
  ffn_matrices: 2
  experts: 2
  top_k: 1
  vocab: 1024
  seq_len: 1024
  micro_batch_per_gpu: 1
placement: {slots_per_gpu: 1}
trace: {kind: csv, path: )" + trace_path + R"(}
run: {max_iterations: 400}
policies:
  - {name: static, capacity_factor: 1.0, min_capacity: 0}
)" + extra;
}

}  // namespace moesim::testing

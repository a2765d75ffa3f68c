#pragma once
// Data of the simulated world: GPU profiles, cluster shapes and MoE model shapes, loaded from
// the YAML presets under models/ (compiled into the binary) with scenario overrides on top.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace moesim {

struct GpuProfile {
  std::string name;
  std::string arch;            // "ampere" | "hopper" (selects NCCL's LL caps)
  double peak_tflops = 0.0;    // dense BF16/FP16 tensor throughput
  double hbm_bytes = 0.0;
  double hbm_gbps = 0.0;
  int nvlink_links = 0;        // NVLink links per GPU (0: none)
  double nvlink_gbps = 0.0;    // datasheet NVLink bandwidth per GPU, one direction
  double nccl_nvlink_link_gbps = 0.0;  // what NCCL assumes per NVLink link
  double gemm_efficiency = 0.0;        // share of peak a large GEMM reaches (roofline)
  int sms = 0;                         // streaming multiprocessors (0: not given)
  std::vector<std::string> sources;    // where the figures come from
};

// GPU generation, which selects NCCL's per-architecture bandwidth caps (sim/collectives.hpp).
enum class GpuArch { Ampere, Hopper };

enum class IntraNode { NVSwitch, PCIe, None };

// How the NICs of the nodes are connected (docs/network.md, docs/scenario.md `cluster.fabric`).
// Single: one non-blocking switch every NIC reaches. FatTree: a rail-optimised two-level fat
// tree: NIC k of each node connects to leaf k of its rail group (nodes_per_leaf consecutive
// nodes), every leaf to every spine; a leaf's uplinks carry its downlink capacity divided by the
// oversubscription ratio, split evenly over the spines.
enum class FabricKind { Single, FatTree };
struct FatTreeSpec {
  int nodes_per_leaf = 0;         // nodes in one rail group (their NIC k share leaf k)
  int spines = 0;                 // spine switches; every leaf has one uplink to each
  double oversubscription = 1.0;  // leaf downlink capacity / leaf uplink capacity (1: non-blocking)
  double leaf_latency_ns = 0.0;   // one traversal of a leaf switch
  double spine_latency_ns = 0.0;  // one traversal of a spine switch
};

// An explicit graph (`cluster.topology`). `where` is the element's position in its YAML file,
// for errors found when the graph is built.
struct TopologyVertexSpec {
  std::string name;
  std::string kind;  // gpu | host | node_switch | nic | switch
  int node = -1;     // gpu and host: the node they belong to
  std::string where;
};
struct TopologyLinkSpec {
  std::string a;
  std::string b;
  double gbps = 0.0;  // per direction (full duplex)
  double latency_ns = 0.0;
  std::string where;
};
struct TopologySpec {
  std::vector<TopologyVertexSpec> vertices;
  std::vector<TopologyLinkSpec> links;
};

// Scales the bandwidth of links (both directions) of the cluster graph (`network.link_factors`):
// either every link of one port class of a GPU (gpu >= 0, port "intra" | "nic" | "host"), or the
// link(s) between two named vertices (a, b). Factors on one link multiply.
struct LinkFactorSpec {
  int gpu = -1;
  std::string port;
  std::string a;
  std::string b;
  double factor = 1.0;
  std::string where;
};

struct ClusterSpec {
  std::string name;
  int nodes = 1;
  int gpus_per_node = 1;
  IntraNode intra_node = IntraNode::None;
  double pcie_gbps = 0.0;          // host link per GPU, one direction
  double nccl_pci_gbps = 0.0;      // what NCCL assumes for a PCIe hop
  double nic_gbit = 0.0;           // line rate of each NIC
  int nics_per_node = 0;
  double nic_efficiency = 0.0;     // NCCL-achievable share of the NIC line rate
  double host_memory_bytes = 0.0;  // per node
  double nic_latency_ns = 0.0;     // a GPU's network link in the graph: orders routes, not charged
  GpuProfile gpu;
  std::vector<std::string> sources;
  FabricKind fabric = FabricKind::Single;
  FatTreeSpec fat_tree;                      // fabric == FatTree
  std::optional<TopologySpec> topology;      // replaces the built shape when present
  std::vector<LinkFactorSpec> link_factors;  // from the scenario's network section

  [[nodiscard]] int num_gpus() const { return nodes * gpus_per_node; }
  [[nodiscard]] int node_of(int gpu_index) const { return gpu_index / gpus_per_node; }
  // Per-GPU bandwidths as the simulator uses them (GB/s, one direction).
  [[nodiscard]] double intra_gbps() const;  // GPU to GPU inside a node
  [[nodiscard]] double nic_gbps() const;    // one GPU's share of the node's NICs
  [[nodiscard]] GpuArch gpu_arch() const { return gpu.arch == "hopper" ? GpuArch::Hopper : GpuArch::Ampere; }
};

enum class DType { BF16, FP16, FP32 };
[[nodiscard]] int dtype_bytes(DType d);
[[nodiscard]] const char* to_string(DType d);

struct MoeModelSpec {
  std::string name;
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int ffn_hidden = 0;         // dense FFN width (non-MoE layers)
  int expert_ffn_hidden = 0;  // width of one routed expert
  int ffn_matrices = 2;       // 2: up/down (GELU); 3: gated (SwiGLU)
  int experts = 0;            // routed experts per MoE layer
  int top_k = 1;
  int shared_experts = 0;
  int first_dense_layers = 0;  // leading layers with a dense FFN
  int moe_layer_interval = 1;  // every n-th layer after those is MoE
  int vocab = 0;
  int seq_len = 0;
  int micro_batch_per_gpu = 0;
  DType dtype = DType::BF16;
  std::vector<std::string> sources;

  [[nodiscard]] bool is_moe_layer(int layer) const;
  [[nodiscard]] int num_moe_layers() const;
  [[nodiscard]] std::int64_t tokens_per_gpu() const {
    return static_cast<std::int64_t>(micro_batch_per_gpu) * seq_len;
  }
  [[nodiscard]] double expert_params() const;        // one routed expert
  [[nodiscard]] double attention_params() const;     // one layer
  [[nodiscard]] double dense_params_total() const;   // everything but routed experts
};

// Names of the shipped presets (for --help and error messages).
[[nodiscard]] std::vector<std::string> gpu_preset_names();
[[nodiscard]] std::vector<std::string> cluster_preset_names();
[[nodiscard]] std::vector<std::string> model_preset_names();

// `c` is the scenario's `cluster` mapping: `preset:` picks a shipped cluster; any other key
// overrides the preset's value. `gpu:` is a GPU preset name or a mapping {preset:, ...}.
[[nodiscard]] ClusterSpec load_cluster(Cfg c);
[[nodiscard]] MoeModelSpec load_model(Cfg c);

}  // namespace moesim

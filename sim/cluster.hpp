#pragma once
// The cluster as a Boost.Graph: GPUs, per-node switches (NVSwitch or PCIe) and hosts, and one
// switched fabric reached through each GPU's NIC share. Routes between GPUs are the
// lowest-latency paths; the analytical network model needs only which of a GPU's ports a route
// leaves and enters by, and the route's bottleneck bandwidth.
#include <boost/graph/adjacency_list.hpp>

#include <string>
#include <vector>

#include "models/specs.hpp"
#include "sim/units.hpp"

namespace moesim {

enum class VertexKind { Gpu, NodeSwitch, Host, Fabric };
// The port of a GPU a transfer uses: the intra-node link (NVLink/NVSwitch or PCIe switch), its
// share of the node's NICs, or its PCIe link to the host.
enum class Port { Intra = 0, Nic = 1, Host = 2 };
inline constexpr int kNumPorts = 3;
[[nodiscard]] const char* to_string(Port p);

struct VertexProps {
  VertexKind kind = VertexKind::Gpu;
  int index = 0;  // GPU id, node id, or 0 for the fabric
};
struct EdgeProps {
  Port port = Port::Intra;  // the GPU port this edge is (or the port class for switch edges)
  double gbps = 0.0;        // per direction
  double latency_ns = 0.0;
};

using ClusterGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, VertexProps, EdgeProps>;

struct Route {
  Port src_port = Port::Intra;
  Port dst_port = Port::Intra;
  double bottleneck_gbps = 0.0;
  double latency_ns = 0.0;
  int hops = 0;
};

class Cluster {
 public:
  explicit Cluster(const ClusterSpec& spec);

  [[nodiscard]] const ClusterSpec& spec() const { return spec_; }
  [[nodiscard]] int num_gpus() const { return spec_.num_gpus(); }
  [[nodiscard]] int node_of(int gpu) const { return spec_.node_of(gpu); }
  [[nodiscard]] const ClusterGraph& graph() const { return graph_; }
  // Bandwidth of a GPU's port, GB/s per direction (0 when the GPU has no such port).
  [[nodiscard]] double port_gbps(Port p) const { return port_gbps_[static_cast<int>(p)]; }
  // Route between two distinct GPUs (computed from the graph on first use per source).
  [[nodiscard]] const Route& route(int src_gpu, int dst_gpu) const;

 private:
  void compute_routes(int src_gpu) const;
  ClusterSpec spec_;
  ClusterGraph graph_;
  std::vector<ClusterGraph::vertex_descriptor> gpu_vertex_;
  double port_gbps_[kNumPorts] = {0, 0, 0};
  mutable std::vector<std::vector<Route>> routes_;  // [src][dst], filled lazily
};

}  // namespace moesim

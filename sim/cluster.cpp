#include "sim/cluster.hpp"

#include <boost/graph/dijkstra_shortest_paths.hpp>
#include <fmt/format.h>

#include <limits>

#include "sim/error.hpp"

namespace moesim {

const char* to_string(Port p) {
  switch (p) {
    case Port::Intra: return "intra";
    case Port::Nic: return "nic";
    case Port::Host: return "host";
  }
  return "?";
}

namespace {
// Per-hop latencies of the intra-node links for routing. source: NCCL src/graph/tuning.cc
// hardware latencies (NVLink 0.6 us, PCI 1.0 us, LL protocol).
constexpr double kNvlinkHopNs = 600.0;
constexpr double kPciHopNs = 1000.0;
}  // namespace

Cluster::Cluster(const ClusterSpec& spec) : spec_(spec) {
  const int g = spec.num_gpus();
  if (g <= 0) throw InputError("cluster: the cluster has zero GPUs");
  port_gbps_[static_cast<int>(Port::Intra)] = spec.gpus_per_node > 1 ? spec.intra_gbps() : 0.0;
  port_gbps_[static_cast<int>(Port::Nic)] = spec.nodes > 1 ? spec.nic_gbps() : 0.0;
  port_gbps_[static_cast<int>(Port::Host)] = spec.pcie_gbps;

  gpu_vertex_.resize(g);
  for (int i = 0; i < g; ++i) gpu_vertex_[i] = boost::add_vertex(VertexProps{VertexKind::Gpu, i}, graph_);
  auto fabric = boost::add_vertex(VertexProps{VertexKind::Fabric, 0}, graph_);
  const double intra_lat = spec.intra_node == IntraNode::NVSwitch ? kNvlinkHopNs : kPciHopNs;
  for (int n = 0; n < spec.nodes; ++n) {
    auto host = boost::add_vertex(VertexProps{VertexKind::Host, n}, graph_);
    ClusterGraph::vertex_descriptor sw{};
    const bool has_switch = spec.intra_node != IntraNode::None && spec.gpus_per_node > 1;
    if (has_switch) sw = boost::add_vertex(VertexProps{VertexKind::NodeSwitch, n}, graph_);
    for (int l = 0; l < spec.gpus_per_node; ++l) {
      auto v = gpu_vertex_[n * spec.gpus_per_node + l];
      // Intra-node edges first: they win latency ties in routing.
      if (has_switch) boost::add_edge(v, sw, EdgeProps{Port::Intra, spec.intra_gbps(), intra_lat}, graph_);
      // Through the CPU root complex: slower than a PCIe switch, so never a GPU-to-GPU route
      // when a switch exists.
      boost::add_edge(v, host, EdgeProps{Port::Host, spec.pcie_gbps, 2.0 * kPciHopNs}, graph_);
      if (spec.nodes > 1) {
        boost::add_edge(v, fabric, EdgeProps{Port::Nic, spec.nic_gbps(), spec.nic_latency_ns}, graph_);
      }
    }
  }
  routes_.resize(g);
}

void Cluster::compute_routes(int src_gpu) const {
  const auto nv = boost::num_vertices(graph_);
  std::vector<double> dist(nv, std::numeric_limits<double>::infinity());
  std::vector<ClusterGraph::vertex_descriptor> pred(nv);
  auto src = gpu_vertex_[src_gpu];
  boost::dijkstra_shortest_paths(
      graph_, src,
      boost::weight_map(boost::get(&EdgeProps::latency_ns, graph_))
          .distance_map(boost::make_iterator_property_map(dist.begin(), boost::get(boost::vertex_index, graph_)))
          .predecessor_map(boost::make_iterator_property_map(pred.begin(), boost::get(boost::vertex_index, graph_))));
  std::vector<Route>& out = routes_[src_gpu];
  out.assign(gpu_vertex_.size(), Route{});
  for (std::size_t d = 0; d < gpu_vertex_.size(); ++d) {
    if (static_cast<int>(d) == src_gpu) continue;
    auto v = gpu_vertex_[d];
    if (!std::isfinite(dist[v])) {
      throw InputError(fmt::format("cluster '{}': GPU {} cannot reach GPU {}", spec_.name, src_gpu, d));
    }
    Route r;
    r.latency_ns = dist[v];
    r.bottleneck_gbps = std::numeric_limits<double>::infinity();
    bool last = true;
    for (auto cur = v; cur != src; cur = pred[cur]) {
      auto [e, ok] = boost::edge(pred[cur], cur, graph_);
      const EdgeProps& ep = graph_[e];
      r.bottleneck_gbps = std::min(r.bottleneck_gbps, ep.gbps);
      if (last) r.dst_port = ep.port;
      last = false;
      if (pred[cur] == src) r.src_port = ep.port;
      ++r.hops;
    }
    out[d] = r;
  }
}

const Route& Cluster::route(int src_gpu, int dst_gpu) const {
  if (routes_[src_gpu].empty()) compute_routes(src_gpu);
  return routes_[src_gpu][dst_gpu];
}

}  // namespace moesim

#pragma once
// The cluster as a Boost.Graph: GPUs, per-node switches (NVSwitch or PCIe) and hosts, and the
// network the NICs reach: one non-blocking switch ("fabric"), a rail-optimised two-level fat
// tree (leaves and spines), or an explicit graph from the scenario (docs/network.md).
//
// Routes between GPUs are the lowest-latency paths (fewest hops among equal latencies); where
// several such paths exist (a fat tree with several spines) all of them are kept, and the flow
// model splits each message evenly over them (ECMP). GPUs do not forward: a route enters and
// leaves no GPU but its two ends. The analytical network model needs only which of a GPU's
// ports a route leaves and enters by, the oversubscribed uplink bundles it crosses, and the
// latency of the switch-to-switch links on it.
#include <boost/graph/adjacency_list.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "models/specs.hpp"
#include "core/units.hpp"

namespace moesim {

// Fabric: any network switch (the single fabric switch, a leaf, a spine, an explicit `switch`).
enum class VertexKind { Gpu, NodeSwitch, Host, Fabric, Nic };
// The port of a GPU a transfer uses: the intra-node link (NVLink/NVSwitch or PCIe switch), its
// share of the node's NICs, or its PCIe link to the host.
enum class Port { Intra = 0, Nic = 1, Host = 2 };
inline constexpr int kNumPorts = 3;
[[nodiscard]] const char* to_string(Port p);

struct VertexProps {
  VertexKind kind = VertexKind::Gpu;
  int index = 0;      // GPU id, node id (host, node switch), or a running index
  std::string name;   // unique; what `network.link_factors` names (docs/network.md)
  std::string where;  // explicit graphs: the vertex's position in its YAML file
};
struct EdgeProps {
  Port port = Port::Intra;  // the GPU port this edge is (or the port class for switch edges)
  double gbps = 0.0;        // per direction, after `network.link_factors`
  double latency_ns = 0.0;
  int id = 0;       // insertion index; the flow model's directed links are 2 id and 2 id + 1
  int bundle = -1;  // fat tree: the leaf whose uplinks this edge is one of (-1: none)
};

using ClusterGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, VertexProps, EdgeProps>;

struct Route {
  Port src_port = Port::Intra;
  Port dst_port = Port::Intra;
  double bottleneck_gbps = 0.0;  // the narrowest link over all equal-cost paths
  double latency_ns = 0.0;       // sum of the link latencies of a path
  int hops = 0;
  int paths = 0;                   // equal-cost paths (ECMP)
  double fabric_latency_ns = 0.0;  // links between two non-GPU vertices, the largest over the paths
  int up_bundle = -1;              // the leaf uplink bundle the route leaves its source leaf by (-1: none)
  int down_bundle = -1;            // the bundle it enters its destination leaf by
};

class Cluster {
 public:
  // Builds the graph; errors in the spec's topology or link factors (an unknown vertex, a GPU
  // that cannot reach another, ...) are InputErrors naming the element and its YAML position.
  explicit Cluster(const ClusterSpec& spec);

  [[nodiscard]] const ClusterSpec& spec() const { return spec_; }
  [[nodiscard]] int num_gpus() const { return spec_.num_gpus(); }
  [[nodiscard]] int node_of(int gpu) const { return spec_.node_of(gpu); }
  [[nodiscard]] const ClusterGraph& graph() const { return graph_; }
  // Nominal bandwidth of a GPU's port from the spec, GB/s per direction (0: no such port).
  [[nodiscard]] double port_gbps(Port p) const { return port_gbps_[static_cast<int>(p)]; }
  // Bandwidth of one GPU's port as built: the sum of its links of that class, after link factors.
  [[nodiscard]] double port_gbps(int gpu, Port p) const {
    return gpu_port_gbps_[static_cast<std::size_t>(gpu) * kNumPorts + static_cast<std::size_t>(p)];
  }
  // Route between two distinct GPUs (computed from the graph on first use per source).
  [[nodiscard]] const Route& route(int src_gpu, int dst_gpu) const;
  // The equal-cost paths of a route as directed links: edge `id` is link 2 id from its lower- to
  // its higher-numbered vertex and 2 id + 1 back. Path 0 has the lowest edge ids.
  [[nodiscard]] std::span<const int> path_links(int src_gpu, int dst_gpu, int path) const;
  // Bandwidth of a directed link (as in path_links), GB/s, after link factors.
  [[nodiscard]] double link_gbps(int link) const {
    return graph_[edge_of_id_[static_cast<std::size_t>(link / 2)]].gbps;
  }
  [[nodiscard]] int num_edges() const { return static_cast<int>(boost::num_edges(graph_)); }
  // A GPU's directed link towards its host (its PCIe link); -1 when it has none. Back is ^ 1.
  [[nodiscard]] int host_link(int gpu) const { return host_link_[static_cast<std::size_t>(gpu)]; }
  // Oversubscribed uplink bundles (fat-tree leaves): capacity per direction, and whether it is
  // below the bandwidth of the GPU links beneath (only then can it bound a time).
  [[nodiscard]] int num_bundles() const { return static_cast<int>(bundle_gbps_.size()); }
  [[nodiscard]] double bundle_gbps(int b) const { return bundle_gbps_[static_cast<std::size_t>(b)]; }
  [[nodiscard]] bool bundle_binding(int b) const { return bundle_binding_[static_cast<std::size_t>(b)] != 0; }
  // The leaf whose uplinks bundle `b` is: a bundle edge traversed from it goes up.
  [[nodiscard]] ClusterGraph::vertex_descriptor bundle_leaf(int b) const {
    return bundle_leaf_[static_cast<std::size_t>(b)];
  }
  // The vertex of each name (for errors and link factors).
  [[nodiscard]] const std::map<std::string, ClusterGraph::vertex_descriptor>& vertex_names() const {
    return names_;
  }

 private:
  void build_shape();
  void build_topology(const TopologySpec& t);
  void apply_link_factors();
  void finish_build();
  void check_reachable() const;
  ClusterGraph::vertex_descriptor add_vertex(VertexKind kind, int index, std::string name,
                                             std::string where = {});
  void add_edge(ClusterGraph::vertex_descriptor a, ClusterGraph::vertex_descriptor b, Port port, double gbps,
                double latency_ns, int bundle = -1);

  ClusterSpec spec_;
  ClusterGraph graph_;
  std::map<std::string, ClusterGraph::vertex_descriptor> names_;
  std::vector<ClusterGraph::vertex_descriptor> gpu_vertex_;
  std::vector<ClusterGraph::edge_descriptor> edge_of_id_;
  double port_gbps_[kNumPorts] = {0, 0, 0};
  std::vector<double> gpu_port_gbps_;  // [gpu * kNumPorts + port]
  std::vector<int> host_link_;
  std::vector<ClusterGraph::vertex_descriptor> bundle_leaf_;
  std::vector<double> bundle_gbps_;
  std::vector<char> bundle_binding_;
  // Routes are found per (source, destination) pair on first use (sim/cluster_routes.cpp), so
  // memory grows with the pairs that talk, not with GPUs squared. A pair's links are kept in
  // blocks that never move: the spans path_links hands out stay valid.
  struct PairRoute {
    Route route;
    const int* data = nullptr;  // paths + 1 offsets into the links after them, then the links
    int dst = -1;
  };
  struct SourceRoutes {
    std::deque<PairRoute> pairs;             // stable addresses
    std::vector<const PairRoute*> table;     // open addressing by destination; null: empty
    std::vector<const PairRoute*> dense;     // [dst], once the source talks to many GPUs
    std::vector<std::unique_ptr<int[]>> blocks;
    std::size_t block_size = 0, block_used = 0;
  };
  // A Dijkstra from one source, resumed when a farther destination is asked for: a vertex's
  // equal-cost predecessors are all known once it is settled (every edge adds a hop).
  struct RouteSearch {
    using Cost = std::tuple<int, std::int64_t, int>;
    int src = -1;
    std::uint64_t used = 0;
    std::vector<Cost> cost;
    std::vector<char> done;
    std::vector<std::vector<ClusterGraph::edge_descriptor>> pred;
    std::vector<std::pair<Cost, ClusterGraph::vertex_descriptor>> heap;
  };
  static constexpr std::size_t kRouteSearches = 8;  // searches kept, least recently used replaced
  [[nodiscard]] const PairRoute& pair_route(int src_gpu, int dst_gpu) const;
  [[nodiscard]] const PairRoute& find_route(int src_gpu, int dst_gpu) const;
  RouteSearch& search_to(int src_gpu, int dst_gpu) const;
  mutable std::vector<SourceRoutes> routes_;  // [src]
  mutable std::vector<RouteSearch> searches_;
  mutable std::uint64_t search_clock_ = 0;
};

}  // namespace moesim

#include "sim/cluster.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include "core/error.hpp"

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
// A bundle binds when its capacity is below the GPU links beneath by more than rounding.
constexpr double kBindingTolerance = 1e-9;

using Vertex = ClusterGraph::vertex_descriptor;

std::string vertex_label(const VertexProps& v) {
  return v.where.empty() ? fmt::format("'{}'", v.name) : fmt::format("'{}' ({})", v.name, v.where);
}
}  // namespace

Vertex Cluster::add_vertex(VertexKind kind, int index, std::string name, std::string where) {
  auto v = boost::add_vertex(VertexProps{kind, index, name, std::move(where)}, graph_);
  names_.emplace(std::move(name), v);
  return v;
}

void Cluster::add_edge(Vertex a, Vertex b, Port port, double gbps, double latency_ns, int bundle) {
  const int id = static_cast<int>(edge_of_id_.size());
  auto [e, ok] = boost::add_edge(a, b, EdgeProps{port, gbps, latency_ns, id, bundle}, graph_);
  edge_of_id_.push_back(e);
}

Cluster::Cluster(const ClusterSpec& spec) : spec_(spec) {
  const int g = spec.num_gpus();
  if (g <= 0) throw InputError("cluster: the cluster has zero GPUs");
  port_gbps_[static_cast<int>(Port::Intra)] = spec.gpus_per_node > 1 ? spec.intra_gbps() : 0.0;
  port_gbps_[static_cast<int>(Port::Nic)] = spec.nodes > 1 ? spec.nic_gbps() : 0.0;
  port_gbps_[static_cast<int>(Port::Host)] = spec.pcie_gbps;
  gpu_vertex_.resize(static_cast<std::size_t>(g));
  if (spec.topology)
    build_topology(*spec.topology);
  else
    build_shape();
  apply_link_factors();
  finish_build();
}

void Cluster::build_shape() {
  const ClusterSpec& spec = spec_;
  const int g = spec.num_gpus();
  for (int i = 0; i < g; ++i)
    gpu_vertex_[static_cast<std::size_t>(i)] = add_vertex(VertexKind::Gpu, i, fmt::format("gpu{}", i));
  const bool fat_tree = spec.fabric == FabricKind::FatTree && spec.nodes > 1;
  // Single fabric: one switch every NIC reaches (added first, as it always was: vertex and edge
  // numbering, and so the flow model's link order, stay those of earlier versions).
  Vertex fabric{};
  if (!fat_tree) fabric = add_vertex(VertexKind::Fabric, 0, "fabric");
  // Fat tree: leaf (group, rail) is vertex leaves[group * rails + rail]; then the spines.
  const FatTreeSpec& ft = spec.fat_tree;
  const int rails = fat_tree ? spec.nics_per_node : 0;
  const int groups = fat_tree ? (spec.nodes + ft.nodes_per_leaf - 1) / ft.nodes_per_leaf : 0;
  std::vector<Vertex> leaves, spines;
  for (int grp = 0; grp < groups; ++grp) {
    for (int r = 0; r < rails; ++r) {
      leaves.push_back(add_vertex(VertexKind::Fabric, grp * rails + r, fmt::format("leaf{}.{}", grp, r)));
    }
  }
  for (int s = 0; s < (fat_tree ? ft.spines : 0); ++s) {
    spines.push_back(
        add_vertex(VertexKind::Fabric, static_cast<int>(leaves.size()) + s, fmt::format("spine{}", s)));
  }
  const double intra_lat = spec.intra_node == IntraNode::NVSwitch ? kNvlinkHopNs : kPciHopNs;
  const char* switch_name = spec.intra_node == IntraNode::NVSwitch ? "nvswitch" : "pcie_switch";
  for (int n = 0; n < spec.nodes; ++n) {
    auto host = add_vertex(VertexKind::Host, n, fmt::format("host{}", n));
    Vertex sw{};
    const bool has_switch = spec.intra_node != IntraNode::None && spec.gpus_per_node > 1;
    if (has_switch) sw = add_vertex(VertexKind::NodeSwitch, n, fmt::format("{}{}", switch_name, n));
    for (int l = 0; l < spec.gpus_per_node; ++l) {
      auto v = gpu_vertex_[static_cast<std::size_t>(n * spec.gpus_per_node + l)];
      // Intra-node edges first: they win latency ties in routing.
      if (has_switch) add_edge(v, sw, Port::Intra, spec.intra_gbps(), intra_lat);
      // Through the CPU root complex: slower than a PCIe switch, so never a GPU-to-GPU route
      // when a switch exists.
      add_edge(v, host, Port::Host, spec.pcie_gbps, 2.0 * kPciHopNs);
      if (spec.nodes > 1) {
        // Rail-optimised: the GPUs of a NIC (gpus_per_node / nics_per_node of them, in order)
        // reach the leaf of that NIC's rail.
        Vertex to = fabric;
        if (fat_tree) {
          const int rail = l / (spec.gpus_per_node / rails);
          to = leaves[static_cast<std::size_t>((n / ft.nodes_per_leaf) * rails + rail)];
        }
        add_edge(v, to, Port::Nic, spec.nic_gbps(), spec.nic_latency_ns);
      }
    }
  }
  if (!fat_tree) return;
  // A leaf's downlinks: one NIC of each of its nodes; its uplinks carry that divided by the
  // oversubscription, evenly over the spines. The same NCCL-achievable share of the line rate
  // (nic_efficiency) applies to every fabric link.
  const double down_gbps = ft.nodes_per_leaf * gbit_to_gbyte(spec.nic_gbit) * spec.nic_efficiency;
  const double up_gbps = down_gbps / (ft.oversubscription * ft.spines);
  // A route between leaves crosses two uplinks: it adds one leaf and one spine traversal to the
  // message latency (NCCL's network hop figure covers the first switch).
  const double up_latency_ns = (ft.leaf_latency_ns + ft.spine_latency_ns) / 2.0;
  for (std::size_t leaf = 0; leaf < leaves.size(); ++leaf) {
    bundle_leaf_.push_back(leaves[leaf]);
    for (Vertex s : spines)
      add_edge(leaves[leaf], s, Port::Nic, up_gbps, up_latency_ns, static_cast<int>(leaf));
  }
}

void Cluster::build_topology(const TopologySpec& t) {
  // GPU ids are node-major: node n's GPUs, in the order they are listed, are
  // n * gpus_per_node ... (n + 1) * gpus_per_node - 1 (the spec checked the counts).
  std::vector<int> next(static_cast<std::size_t>(spec_.nodes), 0);
  int running = 0;
  for (const TopologyVertexSpec& v : t.vertices) {
    if (names_.count(v.name))
      throw InputError(fmt::format("{}: vertex name '{}' is used twice", v.where, v.name));
    if (v.kind == "gpu") {
      if (v.node < 0 || v.node >= spec_.nodes ||
          next[static_cast<std::size_t>(v.node)] >= spec_.gpus_per_node) {
        throw InputError(fmt::format("{}: GPU '{}' of node {} does not fit {} nodes of {} GPUs", v.where,
                                     v.name, v.node, spec_.nodes, spec_.gpus_per_node));
      }
      const int id = v.node * spec_.gpus_per_node + next[static_cast<std::size_t>(v.node)]++;
      gpu_vertex_[static_cast<std::size_t>(id)] = add_vertex(VertexKind::Gpu, id, v.name, v.where);
    } else if (v.kind == "host") {
      add_vertex(VertexKind::Host, v.node, v.name, v.where);
    } else if (v.kind == "node_switch") {
      add_vertex(VertexKind::NodeSwitch, running++, v.name, v.where);
    } else if (v.kind == "nic") {
      add_vertex(VertexKind::Nic, running++, v.name, v.where);
    } else if (v.kind == "switch") {
      add_vertex(VertexKind::Fabric, running++, v.name, v.where);
    } else {
      throw InputError(fmt::format("{}: unknown vertex kind '{}'", v.where, v.kind));
    }
  }
  for (int n = 0; n < spec_.nodes; ++n) {
    if (next[static_cast<std::size_t>(n)] != spec_.gpus_per_node) {
      throw InputError(fmt::format("cluster '{}': node {} has {} GPUs, not {}", spec_.name, n,
                                   next[static_cast<std::size_t>(n)], spec_.gpus_per_node));
    }
  }
  for (const TopologyLinkSpec& l : t.links) {
    auto find = [&](const std::string& name) {
      auto it = names_.find(name);
      if (it == names_.end()) throw InputError(fmt::format("{}: unknown vertex '{}'", l.where, name));
      return it->second;
    };
    const Vertex a = find(l.a), b = find(l.b);
    if (a == b) throw InputError(fmt::format("{}: a link from '{}' to itself", l.where, l.a));
    if (!(l.gbps > 0.0)) throw InputError(fmt::format("{}: gbps must be > 0, found {}", l.where, l.gbps));
    if (!(l.latency_ns >= 0.0))
      throw InputError(fmt::format("{}: latency_ns must be >= 0, found {}", l.where, l.latency_ns));
    // The port class of a GPU's link follows from what it reaches.
    auto port_to = [&](Vertex other) {
      switch (graph_[other].kind) {
        case VertexKind::Gpu:
        case VertexKind::NodeSwitch:
          return Port::Intra;
        case VertexKind::Host:
          return Port::Host;
        case VertexKind::Nic:
        case VertexKind::Fabric:
          return Port::Nic;
      }
      return Port::Nic;
    };
    Port port = Port::Nic;
    if (graph_[a].kind == VertexKind::Gpu)
      port = port_to(b);
    else if (graph_[b].kind == VertexKind::Gpu)
      port = port_to(a);
    if (port == Port::Host) {
      const VertexProps& gpu = graph_[graph_[a].kind == VertexKind::Gpu ? a : b];
      const VertexProps& host = graph_[graph_[a].kind == VertexKind::Host ? a : b];
      if (node_of(gpu.index) != host.index) {
        throw InputError(fmt::format("{}: GPU '{}' (node {}) is linked to host '{}' of node {}", l.where,
                                     gpu.name, node_of(gpu.index), host.name, host.index));
      }
    }
    add_edge(a, b, port, l.gbps, l.latency_ns);
  }
}

void Cluster::apply_link_factors() {
  for (const LinkFactorSpec& f : spec_.link_factors) {
    if (!(f.factor > 0.0))
      throw InputError(fmt::format("{}: factor must be > 0, found {}", f.where, f.factor));
    int hit = 0;
    if (f.gpu >= 0) {
      if (f.gpu >= num_gpus())
        throw InputError(fmt::format("{}: GPU {} does not exist ({} GPUs)", f.where, f.gpu, num_gpus()));
      Port port = f.port == "intra" ? Port::Intra : f.port == "nic" ? Port::Nic : Port::Host;
      if (f.port != "intra" && f.port != "nic" && f.port != "host") {
        throw InputError(fmt::format("{}: port '{}' is not one of intra, nic, host", f.where, f.port));
      }
      for (auto [it, end] = boost::out_edges(gpu_vertex_[static_cast<std::size_t>(f.gpu)], graph_); it != end;
           ++it) {
        if (graph_[*it].port != port) continue;
        graph_[*it].gbps *= f.factor;
        ++hit;
      }
      if (hit == 0) {
        throw InputError(
            fmt::format("{}: GPU {} has no {} link in cluster '{}'", f.where, f.gpu, f.port, spec_.name));
      }
      continue;
    }
    auto find = [&](const std::string& name) {
      auto it = names_.find(name);
      if (it == names_.end()) {
        throw InputError(
            fmt::format("{}: no vertex named '{}' in cluster '{}' (docs/network.md lists the names)", f.where,
                        name, spec_.name));
      }
      return it->second;
    };
    const Vertex a = find(f.a), b = find(f.b);
    for (auto [it, end] = boost::out_edges(a, graph_); it != end; ++it) {
      if (boost::target(*it, graph_) != b) continue;
      graph_[*it].gbps *= f.factor;
      ++hit;
    }
    if (hit == 0) throw InputError(fmt::format("{}: no link between '{}' and '{}'", f.where, f.a, f.b));
  }
}

void Cluster::finish_build() {
  const auto g = static_cast<std::size_t>(num_gpus());
  gpu_port_gbps_.assign(g * kNumPorts, 0.0);
  host_link_.assign(g, -1);
  for (std::size_t i = 0; i < g; ++i) {
    const Vertex v = gpu_vertex_[i];
    for (auto [it, end] = boost::out_edges(v, graph_); it != end; ++it) {
      const EdgeProps& e = graph_[*it];
      gpu_port_gbps_[i * kNumPorts + static_cast<std::size_t>(e.port)] += e.gbps;
      const Vertex other = boost::target(*it, graph_);
      if (e.port == Port::Host && graph_[other].kind == VertexKind::Host && host_link_[i] < 0) {
        host_link_[i] = 2 * e.id + (v < other ? 0 : 1);
      }
    }
  }
  bundle_gbps_.assign(bundle_leaf_.size(), 0.0);
  bundle_binding_.assign(bundle_leaf_.size(), 0);
  for (std::size_t b = 0; b < bundle_leaf_.size(); ++b) {
    double down = 0.0;
    for (auto [it, end] = boost::out_edges(bundle_leaf_[b], graph_); it != end; ++it) {
      const EdgeProps& e = graph_[*it];
      if (e.bundle == static_cast<int>(b))
        bundle_gbps_[b] += e.gbps;
      else if (graph_[boost::target(*it, graph_)].kind == VertexKind::Gpu)
        down += e.gbps;
    }
    bundle_binding_[b] = bundle_gbps_[b] < down * (1.0 - kBindingTolerance) ? 1 : 0;
  }
  check_reachable();
  routes_ = std::vector<SourceRoutes>(g);  // not resize: a deque does not move noexcept
  searches_.resize(kRouteSearches);
}

// GPUs do not forward, so GPU s reaches GPU d when they share a link or touch the same
// connected group of non-GPU vertices.
void Cluster::check_reachable() const {
  const auto nv = boost::num_vertices(graph_);
  std::vector<std::size_t> parent(nv);
  std::iota(parent.begin(), parent.end(), std::size_t{0});
  auto root = [&](std::size_t v) {
    while (parent[v] != v) v = parent[v] = parent[parent[v]];
    return v;
  };
  for (auto [it, end] = boost::edges(graph_); it != end; ++it) {
    const auto a = boost::source(*it, graph_), b = boost::target(*it, graph_);
    if (graph_[a].kind == VertexKind::Gpu || graph_[b].kind == VertexKind::Gpu) continue;
    parent[root(a)] = root(b);
  }
  const std::size_t g = gpu_vertex_.size();
  std::vector<std::vector<std::size_t>> groups(g);
  for (std::size_t i = 0; i < g; ++i) {
    for (auto [it, end] = boost::out_edges(gpu_vertex_[i], graph_); it != end; ++it) {
      const auto o = boost::target(*it, graph_);
      if (graph_[o].kind != VertexKind::Gpu) groups[i].push_back(root(o));
    }
    std::sort(groups[i].begin(), groups[i].end());
    groups[i].erase(std::unique(groups[i].begin(), groups[i].end()), groups[i].end());
  }
  // GPUs touching each group; one touched by every GPU (any switched cluster) settles all pairs
  // at once, so the pairwise check below runs only on clusters without a common fabric.
  std::map<std::size_t, std::vector<std::size_t>> members;
  for (std::size_t i = 0; i < g; ++i)
    for (const std::size_t c : groups[i]) members[c].push_back(i);
  for (const auto& [c, m] : members)
    if (m.size() == g) return;
  std::vector<std::size_t> seen(g, g);  // seen[d] == s: d is reachable from s
  for (std::size_t s = 0; s < g; ++s) {
    for (const std::size_t c : groups[s])
      for (const std::size_t d : members[c]) seen[d] = s;
    for (auto [it, end] = boost::out_edges(gpu_vertex_[s], graph_); it != end; ++it) {
      const VertexProps& o = graph_[boost::target(*it, graph_)];
      if (o.kind == VertexKind::Gpu) seen[static_cast<std::size_t>(o.index)] = s;
    }
    for (std::size_t d = 0; d < g; ++d) {
      if (s == d || seen[d] == s) continue;
      const VertexProps& vd = graph_[gpu_vertex_[d]];
      const VertexProps& vs = graph_[gpu_vertex_[s]];
      throw InputError(fmt::format(
          "{}cluster '{}': GPU {} (vertex {}) cannot be reached from GPU {} (vertex {}): no path of links "
          "between them that passes through no other GPU",
          vd.where.empty() ? "" : vd.where + ": ", spec_.name, d, fmt::format("'{}'", vd.name), s,
          vertex_label(vs)));
    }
  }
}

}  // namespace moesim

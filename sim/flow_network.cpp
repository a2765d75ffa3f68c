#include "sim/flow_network.hpp"

#include <boost/graph/dijkstra_shortest_paths.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include "sim/error.hpp"
#include "sim/maxmin.hpp"

namespace moesim {
namespace {

using PortBytes = std::array<double, kNumPorts>;

// AnalyticalNetwork's per-GPU bound: the busiest port's send or receive volume at its bandwidth.
TimeNs port_bound(const PortBytes& send, const PortBytes& recv, const Cluster& c) {
  TimeNs t = 0;
  for (int p = 0; p < kNumPorts; ++p) {
    const double v = std::max(send[p], recv[p]);
    if (v <= 0.0) continue;
    const double bw = c.port_gbps(static_cast<Port>(p));
    if (bw <= 0.0) throw std::logic_error("network: traffic on a port the cluster does not have");
    t = std::max(t, transfer_ns(v, bw));
  }
  return t;
}

TimeNs round_up_ns(double t) { return t <= 0.0 ? 0 : static_cast<TimeNs>(std::ceil(t)); }

// Flows whose ends fall within this relative distance of the earliest are retired together:
// in a symmetric exchange hundreds of flows end at the same instant up to rounding, and one
// re-share for all of them is both faster and what the exact model would do.
constexpr double kSameInstant = 1e-9;

}  // namespace

FlowNetwork::FlowNetwork(const Cluster& cluster, double end_window)
    : cluster_(cluster), end_window_(end_window), analytical_(cluster) {
  if (!(end_window >= 0.0 && end_window <= 0.1)) throw std::invalid_argument("network: end_window out of [0, 0.1]");
  const ClusterGraph& g = cluster.graph();
  const int gpus = cluster.num_gpus();
  for (auto [it, end] = boost::edges(g); it != end; ++it) {
    const EdgeProps& ep = g[*it];
    edge_id_.emplace(&ep, static_cast<int>(edge_id_.size()));
    link_gbps_.push_back(ep.gbps);
    link_gbps_.push_back(ep.gbps);
    link_latency_ns_.push_back(ep.latency_ns);
    link_latency_ns_.push_back(ep.latency_ns);
  }
  to_host_.assign(static_cast<std::size_t>(gpus), -1);
  from_host_.assign(static_cast<std::size_t>(gpus), -1);
  for (auto [vit, vend] = boost::vertices(g); vit != vend; ++vit) {
    if (g[*vit].kind != VertexKind::Gpu) continue;
    const auto gpu = static_cast<std::size_t>(g[*vit].index);
    for (auto [eit, eend] = boost::out_edges(*vit, g); eit != eend; ++eit) {
      const auto other = boost::target(*eit, g);
      if (g[other].kind != VertexKind::Host || g[*eit].port != Port::Host) continue;
      const int id = edge_id_.at(&g[*eit]);
      const bool up = *vit < other;  // link 2i runs from the lower vertex
      to_host_[gpu] = 2 * id + (up ? 0 : 1);
      from_host_[gpu] = 2 * id + (up ? 1 : 0);
    }
  }
  route_links_.resize(static_cast<std::size_t>(gpus));
  route_offsets_.resize(static_cast<std::size_t>(gpus));
}

// The same Dijkstra on latency as Cluster::compute_routes, so the paths (ties included) are
// the ones Cluster::route describes; here the path's edges are kept.
void FlowNetwork::compute_routes(int src_gpu) const {
  const ClusterGraph& g = cluster_.graph();
  const auto nv = boost::num_vertices(g);
  ClusterGraph::vertex_descriptor src{};
  std::vector<ClusterGraph::vertex_descriptor> gpu_vertex(static_cast<std::size_t>(cluster_.num_gpus()));
  for (auto [vit, vend] = boost::vertices(g); vit != vend; ++vit) {
    if (g[*vit].kind != VertexKind::Gpu) continue;
    gpu_vertex[static_cast<std::size_t>(g[*vit].index)] = *vit;
    if (g[*vit].index == src_gpu) src = *vit;
  }
  std::vector<double> dist(nv, std::numeric_limits<double>::infinity());
  std::vector<ClusterGraph::vertex_descriptor> pred(nv);
  boost::dijkstra_shortest_paths(
      g, src,
      boost::weight_map(boost::get(&EdgeProps::latency_ns, g))
          .distance_map(boost::make_iterator_property_map(dist.begin(), boost::get(boost::vertex_index, g)))
          .predecessor_map(boost::make_iterator_property_map(pred.begin(), boost::get(boost::vertex_index, g))));

  auto& links = route_links_[static_cast<std::size_t>(src_gpu)];
  auto& offs = route_offsets_[static_cast<std::size_t>(src_gpu)];
  links.clear();
  offs.assign(1, 0);
  std::vector<int> path;
  for (std::size_t d = 0; d < gpu_vertex.size(); ++d) {
    path.clear();
    const auto dst = gpu_vertex[d];
    if (static_cast<int>(d) != src_gpu) {
      if (!std::isfinite(dist[dst])) {
        throw InputError(fmt::format("cluster '{}': GPU {} cannot reach GPU {}", cluster_.spec().name, src_gpu, d));
      }
      for (auto cur = dst; cur != src; cur = pred[cur]) {
        const auto from = pred[cur];
        auto [e, ok] = boost::edge(from, cur, g);
        const int id = edge_id_.at(&g[e]);
        path.push_back(2 * id + (from < cur ? 0 : 1));
      }
      std::reverse(path.begin(), path.end());
    }
    links.insert(links.end(), path.begin(), path.end());
    offs.push_back(links.size());
  }
}

std::span<const int> FlowNetwork::route_links(int src_gpu, int dst_gpu) const {
  const auto s = static_cast<std::size_t>(src_gpu);
  if (route_offsets_[s].empty()) compute_routes(src_gpu);
  const auto& offs = route_offsets_[s];
  const auto d = static_cast<std::size_t>(dst_gpu);
  return {route_links_[s].data() + offs[d], offs[d + 1] - offs[d]};
}

std::vector<double> FlowNetwork::simulate(const std::vector<Flow>& flows, TimeNs bound_ns) const {
  last_ = RunStats{};
  last_.flows = flows.size();
  std::vector<double> finish(flows.size(), 0.0);
  if (flows.empty()) return finish;

  MaxMinSolver solver;
  for (double gbps : link_gbps_) solver.add_link(gbps > 0.0 ? gbps : 1.0);  // unused links need a capacity
  for (const Flow& f : flows) {
    for (int l : f.links) {
      if (!(link_gbps_[static_cast<std::size_t>(l)] > 0.0)) {
        throw std::logic_error("network: traffic on a link without bandwidth");
      }
    }
    solver.add_flow(f.links);
  }

  // Fluid state: each flow's bytes left at `since`, drained at `rate` from then on.
  const std::size_t n = flows.size();
  std::vector<double> left(n), rate(n, 0.0), since(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) left[i] = flows[i].bytes;
  IndexedMinHeap ends(n);  // flows by their end

  const double window = end_window_ * static_cast<double>(bound_ns);
  double now = 0.0;
  const auto reshare = [&] {
    for (int f : solver.update()) {
      const auto i = static_cast<std::size_t>(f);
      left[i] = std::max(0.0, left[i] - rate[i] * (now - since[i]));
      since[i] = now;
      rate[i] = solver.rate(f);
      if (!(rate[i] > 0.0)) throw std::logic_error("network: a flow was left without bandwidth");
      ends.set(f, now + left[i] / rate[i]);
    }
  };
  const auto retire = [&] {
    const int f = ends.top();
    const double at = ends.top_key();
    ends.pop();
    finish[static_cast<std::size_t>(f)] = at;
    solver.remove_flow(f);
    now = at;  // capacity is released at the last end of a batch: never early
  };
  reshare();
  while (!ends.empty()) {
    const double horizon = std::max(ends.top_key() * (1.0 + kSameInstant), ends.top_key() + window);
    retire();
    while (!ends.empty() && ends.top_key() <= horizon) retire();
    if (ends.empty()) break;
    ++last_.events;
    reshare();
  }
  last_.resolved = solver.total_resolved();
  for (double t : finish) last_.bandwidth_ns = std::max(last_.bandwidth_ns, t);
  return finish;
}

TimeNs FlowNetwork::all_to_all_v(const std::vector<double>& bytes) const {
  const int g = cluster_.num_gpus();
  if (bytes.size() != static_cast<std::size_t>(g) * static_cast<std::size_t>(g)) {
    throw std::logic_error("network: all-to-all matrix is not GPUs x GPUs");
  }
  std::vector<PortBytes> send(static_cast<std::size_t>(g), PortBytes{}), recv(static_cast<std::size_t>(g), PortBytes{});
  std::vector<Flow> flows;
  bool intra = false, nic = false;
  for (int s = 0; s < g; ++s) {
    for (int d = 0; d < g; ++d) {
      const double b = bytes[static_cast<std::size_t>(s) * static_cast<std::size_t>(g) + static_cast<std::size_t>(d)];
      if (s == d || b <= 0.0) continue;
      const Route& r = cluster_.route(s, d);
      send[static_cast<std::size_t>(s)][static_cast<int>(r.src_port)] += b;
      recv[static_cast<std::size_t>(d)][static_cast<int>(r.dst_port)] += b;
      intra |= r.src_port == Port::Intra;
      nic |= r.src_port == Port::Nic;
      flows.push_back(Flow{route_links(s, d), b});
    }
  }
  TimeNs bound = 0;
  for (std::size_t i = 0; i < send.size(); ++i) bound = std::max(bound, port_bound(send[i], recv[i], cluster_));
  (void)simulate(flows, bound);  // the makespan is in last_
  const TimeNs t = std::max(round_up_ns(last_.bandwidth_ns), bound);
  if (t == 0) return 0;
  return t + p2p_latency_ns(intra, nic, cluster_.spec().intra_node == IntraNode::NVSwitch);
}

CollectiveEstimate FlowNetwork::collective(Collective c, double bytes, const std::vector<int>& gpus) const {
  return analytical_.collective(c, bytes, gpus);
}

std::vector<TimeNs> FlowNetwork::transfers(const std::vector<Transfer>& ts) const {
  const int g = cluster_.num_gpus();
  const auto gn = static_cast<std::size_t>(g);
  std::vector<PortBytes> send(gn, PortBytes{}), recv(gn, PortBytes{});
  std::vector<char> intra(gn, 0), nic(gn, 0);
  std::vector<Flow> flows;
  std::vector<std::array<int, 2>> ends;  // GPUs each flow keeps busy (-1: none)
  for (const Transfer& t : ts) {
    if (t.bytes <= 0.0) continue;
    if (t.src.host && t.dst.host) throw std::logic_error("network: host-to-host transfers are not modelled");
    if (t.src.host) {
      const auto d = static_cast<std::size_t>(t.dst.index);
      recv[d][static_cast<int>(Port::Host)] += t.bytes;
      flows.push_back(Flow{std::span<const int>(&from_host_[d], 1), t.bytes});
      ends.push_back({t.dst.index, -1});
      continue;
    }
    if (t.dst.host) {
      const auto s = static_cast<std::size_t>(t.src.index);
      send[s][static_cast<int>(Port::Host)] += t.bytes;
      flows.push_back(Flow{std::span<const int>(&to_host_[s], 1), t.bytes});
      ends.push_back({t.src.index, -1});
      continue;
    }
    if (t.src.index == t.dst.index) continue;
    const Route& r = cluster_.route(t.src.index, t.dst.index);
    send[static_cast<std::size_t>(t.src.index)][static_cast<int>(r.src_port)] += t.bytes;
    recv[static_cast<std::size_t>(t.dst.index)][static_cast<int>(r.dst_port)] += t.bytes;
    for (int e : {t.src.index, t.dst.index}) {
      intra[static_cast<std::size_t>(e)] |= static_cast<char>(r.src_port == Port::Intra);
      nic[static_cast<std::size_t>(e)] |= static_cast<char>(r.src_port == Port::Nic);
    }
    flows.push_back(Flow{route_links(t.src.index, t.dst.index), t.bytes});
    ends.push_back({t.src.index, t.dst.index});
  }
  for (const Flow& f : flows) {
    if (f.links.empty() || f.links[0] < 0) throw std::logic_error("network: a GPU without a host link copies to the host");
  }
  std::vector<TimeNs> bound(gn, 0);
  for (std::size_t i = 0; i < gn; ++i) bound[i] = port_bound(send[i], recv[i], cluster_);
  const std::vector<double> finish = simulate(flows, *std::max_element(bound.begin(), bound.end()));
  std::vector<double> last(gn, 0.0);
  for (std::size_t i = 0; i < flows.size(); ++i) {
    for (int e : ends[i]) {
      if (e >= 0) last[static_cast<std::size_t>(e)] = std::max(last[static_cast<std::size_t>(e)], finish[i]);
    }
  }
  std::vector<TimeNs> out(gn, 0);
  const bool nvlink = cluster_.spec().intra_node == IntraNode::NVSwitch;
  for (std::size_t i = 0; i < gn; ++i) {
    TimeNs t = std::max(round_up_ns(last[i]), bound[i]);
    if (t > 0) t += p2p_latency_ns(intra[i] != 0, nic[i] != 0, nvlink);
    out[i] = t;
  }
  return out;
}

}  // namespace moesim

// Routes between GPUs, found per (source, destination) pair when first asked for: a resumable
// Dijkstra from the source runs until the destination is settled, then the destination's
// equal-cost paths are enumerated and stored. A run asks for the pairs its collectives join
// (the GPUs of each expert-parallel group, the ring neighbours of each data-parallel group), so
// time and memory follow those pairs, not GPUs squared.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "core/error.hpp"
#include "sim/cluster.hpp"

namespace moesim {

namespace {
using Vertex = ClusterGraph::vertex_descriptor;
// Routing cost: first whether the path leaves the source's node (a message between two GPUs of
// one node stays in the node whenever the node has a path, as NCCL's P2P and shared-memory
// transports do, whatever the NIC latency; every path between nodes leaves, so they compare on
// the rest), then latency in integer picoseconds (so that equal latencies tie exactly), then hops.
using Cost = std::tuple<int, std::int64_t, int>;
constexpr Cost kInfinite{std::numeric_limits<int>::max(), std::numeric_limits<std::int64_t>::max(),
                         std::numeric_limits<int>::max()};
// More equal-cost paths than this between two GPUs is an error (an explicit graph with a
// combinatorial number of shortest paths); a fat tree has one per spine.
constexpr std::size_t kMaxEqualCostPaths = 4096;
// Blocks of a source's stored links: the first small (most sources talk to few peers), then
// doubling up to this many ints.
constexpr std::size_t kFirstBlockInts = 256;
constexpr std::size_t kMaxBlockInts = std::size_t{1} << 16;

std::int64_t latency_ps(double ns) { return std::llround(ns * 1000.0); }

std::size_t slot_of(int dst, std::size_t mask) {
  return static_cast<std::size_t>((static_cast<std::uint64_t>(dst) * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

// A GPU's route to itself: no paths.
const int kNoLinks[1] = {1};
}  // namespace

const Route& Cluster::route(int src_gpu, int dst_gpu) const { return pair_route(src_gpu, dst_gpu).route; }

std::span<const int> Cluster::path_links(int src_gpu, int dst_gpu, int path) const {
  const PairRoute& p = pair_route(src_gpu, dst_gpu);
  const int* at = p.data + p.data[path];
  return {at, static_cast<std::size_t>(p.data[path + 1] - p.data[path])};
}

const Cluster::PairRoute& Cluster::pair_route(int src_gpu, int dst_gpu) const {
  static const PairRoute kSelf{Route{}, kNoLinks, -1};
  if (src_gpu == dst_gpu) return kSelf;
  const SourceRoutes& r = routes_[static_cast<std::size_t>(src_gpu)];
  if (!r.dense.empty()) {
    if (const PairRoute* p = r.dense[static_cast<std::size_t>(dst_gpu)]) return *p;
  } else if (!r.table.empty()) {
    const std::size_t mask = r.table.size() - 1;
    for (std::size_t h = slot_of(dst_gpu, mask); r.table[h] != nullptr; h = (h + 1) & mask)
      if (r.table[h]->dst == dst_gpu) return *r.table[h];
  }
  return find_route(src_gpu, dst_gpu);
}

Cluster::RouteSearch& Cluster::search_to(int src_gpu, int dst_gpu) const {
  RouteSearch* q = nullptr;
  for (RouteSearch& s : searches_)
    if (s.src == src_gpu) q = &s;
  const Vertex src = gpu_vertex_[static_cast<std::size_t>(src_gpu)];
  const auto later = [](const auto& a, const auto& b) { return std::greater<>{}(a, b); };
  if (q == nullptr) {
    q = &*std::min_element(searches_.begin(), searches_.end(),
                           [](const RouteSearch& a, const RouteSearch& b) { return a.used < b.used; });
    const auto nv = boost::num_vertices(graph_);
    q->src = src_gpu;
    q->cost.assign(nv, kInfinite);
    q->done.assign(nv, 0);
    q->pred.resize(nv);
    for (auto& p : q->pred) p.clear();
    q->heap.clear();
    q->cost[src] = {0, 0, 0};
    q->heap.emplace_back(q->cost[src], src);
  }
  q->used = ++search_clock_;
  // Dijkstra on (leaves the node, latency, hops), keeping every equal-cost predecessor edge;
  // GPUs other than the source are not expanded (they do not forward).
  const int src_node = spec_.node_of(src_gpu);
  const Vertex target = gpu_vertex_[static_cast<std::size_t>(dst_gpu)];
  while (q->done[target] == 0) {
    if (q->heap.empty())
      throw InputError(fmt::format("cluster '{}': GPU {} cannot reach GPU {}", spec_.name, src_gpu, dst_gpu));
    std::pop_heap(q->heap.begin(), q->heap.end(), later);
    const auto [c, v] = q->heap.back();
    q->heap.pop_back();
    if (q->done[v] != 0) continue;
    q->done[v] = 1;
    // Settled: every predecessor has a lower cost and was settled before, so the list is whole.
    std::sort(q->pred[v].begin(), q->pred[v].end(),
              [&](const auto& x, const auto& y) { return graph_[x].id < graph_[y].id; });
    if (v != src && graph_[v].kind == VertexKind::Gpu) continue;
    for (auto [it, end] = boost::out_edges(v, graph_); it != end; ++it) {
      const Vertex w = boost::target(*it, graph_);
      const EdgeProps& ep = graph_[*it];
      // Whether the path has left the source's node: it reached a NIC or network switch, or a GPU
      // or host of another node (node switches are inside a node by definition).
      const VertexProps& wp = graph_[w];
      const bool away = wp.kind == VertexKind::Nic || wp.kind == VertexKind::Fabric ||
                        (wp.kind == VertexKind::Gpu && spec_.node_of(wp.index) != src_node) ||
                        (wp.kind == VertexKind::Host && wp.index != src_node);
      const Cost next{std::max(std::get<0>(c), away ? 1 : 0), std::get<1>(c) + latency_ps(ep.latency_ns),
                      std::get<2>(c) + 1};
      if (next < q->cost[w]) {
        q->cost[w] = next;
        q->pred[w].assign(1, *it);
        q->heap.emplace_back(next, w);
        std::push_heap(q->heap.begin(), q->heap.end(), later);
      } else if (next == q->cost[w]) {
        q->pred[w].push_back(*it);
      }
    }
  }
  return *q;
}

const Cluster::PairRoute& Cluster::find_route(int src_gpu, int dst_gpu) const {
  const RouteSearch& q = search_to(src_gpu, dst_gpu);
  const Vertex src = gpu_vertex_[static_cast<std::size_t>(src_gpu)];
  Route r;
  r.bottleneck_gbps = std::numeric_limits<double>::infinity();
  std::vector<std::size_t> starts{0};
  std::vector<int> links;
  std::vector<int> rev;  // the path being enumerated, destination first
  // Depth-first over the predecessor edges, lowest edge id first: path 0 has the lowest ids.
  auto walk = [&](auto&& self, Vertex cur) -> void {
    if (cur == src) {
      if (starts.size() - 1 >= kMaxEqualCostPaths) {
        throw InputError(fmt::format("cluster '{}': more than {} equal-cost paths from GPU {} to GPU {}", spec_.name,
                                     kMaxEqualCostPaths, src_gpu, dst_gpu));
      }
      const bool first = starts.size() == 1;
      double fabric = 0.0, lat = 0.0;
      Vertex at = src;
      for (auto it = rev.rbegin(); it != rev.rend(); ++it) {
        const auto& e = edge_of_id_[static_cast<std::size_t>(*it)];
        const EdgeProps& ep = graph_[e];
        const Vertex a = boost::source(e, graph_), b = boost::target(e, graph_);
        const Vertex next = a == at ? b : a;
        links.push_back(2 * ep.id + (at < next ? 0 : 1));
        lat += ep.latency_ns;
        r.bottleneck_gbps = std::min(r.bottleneck_gbps, ep.gbps);
        if (graph_[at].kind != VertexKind::Gpu && graph_[next].kind != VertexKind::Gpu) fabric += ep.latency_ns;
        if (ep.bundle >= 0 && first) {
          if (at == bundle_leaf_[static_cast<std::size_t>(ep.bundle)])
            r.up_bundle = ep.bundle;
          else
            r.down_bundle = ep.bundle;
        }
        at = next;
      }
      if (first) {
        r.latency_ns = lat;
        r.hops = static_cast<int>(rev.size());
        r.src_port = graph_[edge_of_id_[static_cast<std::size_t>(rev.back())]].port;
        r.dst_port = graph_[edge_of_id_[static_cast<std::size_t>(rev.front())]].port;
      }
      r.fabric_latency_ns = std::max(r.fabric_latency_ns, fabric);
      starts.push_back(links.size());
      return;
    }
    for (const auto& e : q.pred[cur]) {
      rev.push_back(graph_[e].id);
      const Vertex a = boost::source(e, graph_), b = boost::target(e, graph_);
      self(self, a == cur ? b : a);
      rev.pop_back();
    }
  };
  walk(walk, gpu_vertex_[static_cast<std::size_t>(dst_gpu)]);
  r.paths = static_cast<int>(starts.size() - 1);

  SourceRoutes& out = routes_[static_cast<std::size_t>(src_gpu)];
  const std::size_t need = starts.size() + links.size();
  if (out.blocks.empty() || out.block_used + need > out.block_size) {
    const std::size_t grown = out.blocks.empty() ? kFirstBlockInts : std::min(2 * out.block_size, kMaxBlockInts);
    out.block_size = std::max(need, grown);
    out.blocks.push_back(std::make_unique<int[]>(out.block_size));
    out.block_used = 0;
  }
  int* data = out.blocks.back().get() + out.block_used;
  out.block_used += need;
  for (std::size_t k = 0; k < starts.size(); ++k) data[k] = static_cast<int>(starts.size() + starts[k]);
  std::copy(links.begin(), links.end(), data + starts.size());
  out.pairs.push_back(PairRoute{r, data, dst_gpu});

  const PairRoute* added = &out.pairs.back();
  // A source that talks to more than an eighth of the GPUs (an all-to-all over all of them)
  // indexes its routes directly, which costs less than the routes themselves.
  const std::size_t g = gpu_vertex_.size();
  if (out.dense.empty() && 8 * out.pairs.size() > g) {
    out.dense.assign(g, nullptr);
    for (const PairRoute& p : out.pairs) out.dense[static_cast<std::size_t>(p.dst)] = &p;
    std::vector<const PairRoute*>().swap(out.table);
  } else if (!out.dense.empty()) {
    out.dense[static_cast<std::size_t>(dst_gpu)] = added;
  } else {
    // Keep the table at most half full.
    if (2 * out.pairs.size() > out.table.size()) {
      out.table.assign(std::max<std::size_t>(16, 2 * out.table.size()), nullptr);
      for (const PairRoute& p : out.pairs) {
        const std::size_t mask = out.table.size() - 1;
        std::size_t h = slot_of(p.dst, mask);
        while (out.table[h] != nullptr) h = (h + 1) & mask;
        out.table[h] = &p;
      }
    } else {
      const std::size_t mask = out.table.size() - 1;
      std::size_t h = slot_of(dst_gpu, mask);
      while (out.table[h] != nullptr) h = (h + 1) & mask;
      out.table[h] = added;
    }
  }
  return out.pairs.back();
}

}  // namespace moesim

#include "sim/network.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace moesim {
namespace {
// source: NCCL src/graph/tuning.cc (2.30), Simple protocol: base 8.4 us; per-hop NVLink 3.4 us,
// PCI 5.7 us, network 14 us (Ring). NCCL runs all-to-all as grouped sends, all peers at once,
// so one message latency is paid, not one per peer.
constexpr double kP2pBaseUs = 8.4;
constexpr double kP2pNvlinkHopUs = 3.4;
constexpr double kP2pPciHopUs = 5.7;
constexpr double kP2pNetHopUs = 14.0;

}  // namespace

PortLoad::PortLoad(const Cluster& cluster, bool per_gpu) : cluster_(cluster), per_gpu_(per_gpu) {
  const auto g = static_cast<std::size_t>(cluster.num_gpus());
  send_.assign(g * kNumPorts, 0.0);
  recv_.assign(g * kNumPorts, 0.0);
  bundle_bytes_.assign(2 * static_cast<std::size_t>(cluster.num_bundles()), 0.0);
  if (!per_gpu) return;
  gpu_bundles_.assign(g * bundle_bytes_.size(), 0);
  intra_.assign(g, 0);
  nic_.assign(g, 0);
  fabric_ns_.assign(g, 0.0);
}

PortLoad::PortLoad(const Cluster& cluster, std::span<const int> gpus)
    : cluster_(cluster), members_(gpus), per_gpu_(false) {
  send_.assign(gpus.size() * kNumPorts, 0.0);
  recv_.assign(gpus.size() * kNumPorts, 0.0);
  bundle_bytes_.assign(2 * static_cast<std::size_t>(cluster.num_bundles()), 0.0);
}

void PortLoad::add(int src_gpu, int dst_gpu, double bytes) {
  if (!members_.empty()) throw std::logic_error("network: add by GPU to a group's load");
  add_at(static_cast<std::size_t>(src_gpu), static_cast<std::size_t>(dst_gpu), src_gpu, dst_gpu, bytes);
}

void PortLoad::add_member(std::size_t s, std::size_t d, double bytes) {
  add_at(s, d, members_[s], members_[d], bytes);
}

void PortLoad::add_members(const std::vector<double>& bytes) {
  if (per_gpu_ || members_.empty()) throw std::logic_error("network: add_members needs a group's load");
  add_members_with(bytes, nullptr);
}

void PortLoad::add_members(const std::vector<double>& bytes, std::vector<const Route*>& routes) {
  if (per_gpu_ || members_.empty()) throw std::logic_error("network: add_members needs a group's load");
  const std::size_t n = members_.size();
  if (routes.size() < n * n) throw std::logic_error("network: add_members' routes smaller than its group");
  add_members_with(bytes, routes.data());
}

void PortLoad::add_members_with(const std::vector<double>& bytes, const Route** routes) {
  const std::size_t n = members_.size();
  double* const send = send_.data();
  double* const recv = recv_.data();
  bool intra_used = false, nic_used = false;
  double fabric_ns = any_fabric_ns_;
  for (std::size_t s = 0; s < n; ++s) {
    const int src_gpu = members_[s];
    const double* row = bytes.data() + s * n;
    for (std::size_t d = 0; d < n; ++d) {
      const double b = row[d];
      if (s == d || b <= 0.0) continue;
      const Route* cached = routes != nullptr ? routes[s * n + d] : nullptr;
      if (cached == nullptr) {
        cached = &cluster_.route(src_gpu, members_[d]);
        if (routes != nullptr) routes[s * n + d] = cached;
      }
      const Route& r = *cached;
      if (r.up_bundle >= 0 || r.down_bundle >= 0) {
        add_at(s, d, src_gpu, members_[d], b);  // the bundles' rules, as add_member
        continue;
      }
      // add_at without bundles or per-GPU marks: the same sums in the same order.
      send[s * kNumPorts + static_cast<std::size_t>(r.src_port)] += b;
      recv[d * kNumPorts + static_cast<std::size_t>(r.dst_port)] += b;
      intra_used |= r.src_port == Port::Intra;
      nic_used |= r.src_port == Port::Nic;
      fabric_ns = std::max(fabric_ns, r.fabric_latency_ns);
    }
  }
  any_intra_ |= intra_used;
  any_nic_ |= nic_used;
  any_fabric_ns_ = std::max(any_fabric_ns_, fabric_ns);
}

void PortLoad::add_at(std::size_t s, std::size_t d, int src_gpu, int dst_gpu, double bytes) {
  const Route& r = cluster_.route(src_gpu, dst_gpu);
  send_[s * kNumPorts + static_cast<std::size_t>(r.src_port)] += bytes;
  recv_[d * kNumPorts + static_cast<std::size_t>(r.dst_port)] += bytes;
  const bool intra = r.src_port == Port::Intra, nic = r.src_port == Port::Nic;
  any_intra_ |= intra;
  any_nic_ |= nic;
  any_fabric_ns_ = std::max(any_fabric_ns_, r.fabric_latency_ns);
  if (per_gpu_) {
    for (std::size_t e : {s, d}) {
      intra_[e] |= static_cast<char>(intra);
      nic_[e] |= static_cast<char>(nic);
      fabric_ns_[e] = std::max(fabric_ns_[e], r.fabric_latency_ns);
    }
  }
  if (r.up_bundle < 0 && r.down_bundle < 0) return;
  for (int db : {r.up_bundle >= 0 ? 2 * r.up_bundle : -1, r.down_bundle >= 0 ? 2 * r.down_bundle + 1 : -1}) {
    if (db < 0 || !cluster_.bundle_binding(db / 2)) continue;
    bundle_bytes_[static_cast<std::size_t>(db)] += bytes;
    if (!per_gpu_) continue;
    for (std::size_t e : {s, d}) gpu_bundles_[e * bundle_bytes_.size() + static_cast<std::size_t>(db)] = 1;
  }
}

void PortLoad::add_host_copy(int gpu, bool to_host, double bytes) {
  auto& v = to_host ? send_ : recv_;
  v[static_cast<std::size_t>(gpu) * kNumPorts + static_cast<std::size_t>(Port::Host)] += bytes;
}

TimeNs PortLoad::bundle_time(int directed_bundle) const {
  const double v = bundle_bytes_[static_cast<std::size_t>(directed_bundle)];
  return v > 0.0 ? transfer_ns(v, cluster_.bundle_gbps(directed_bundle / 2)) : 0;
}

TimeNs PortLoad::gpu_time(int gpu, bool bundles) const {
  if (!members_.empty()) throw std::logic_error("network: gpu_time of a group's load");
  const auto g = static_cast<std::size_t>(gpu);
  TimeNs t = port_time(g, gpu);
  if (bundles && per_gpu_) {
    for (std::size_t db = 0; db < bundle_bytes_.size(); ++db) {
      if (gpu_bundles_[g * bundle_bytes_.size() + db] != 0)
        t = std::max(t, bundle_time(static_cast<int>(db)));
    }
  }
  return t;
}

TimeNs PortLoad::port_time(std::size_t g, int gpu) const {
  TimeNs t = 0;
  for (int p = 0; p < kNumPorts; ++p) {
    const double v = std::max(send_[g * kNumPorts + static_cast<std::size_t>(p)],
                              recv_[g * kNumPorts + static_cast<std::size_t>(p)]);
    if (v <= 0.0) continue;
    const double bw = cluster_.port_gbps(gpu, static_cast<Port>(p));
    if (bw <= 0.0) throw std::logic_error("network: traffic on a port the cluster does not have");
    t = std::max(t, transfer_ns(v, bw));
  }
  return t;
}

TimeNs PortLoad::max_time() const {
  TimeNs t = 0;
  if (members_.empty()) {
    for (int i = 0; i < cluster_.num_gpus(); ++i) t = std::max(t, port_time(static_cast<std::size_t>(i), i));
  } else {
    for (std::size_t e = 0; e < members_.size(); ++e) t = std::max(t, port_time(e, members_[e]));
  }
  for (std::size_t db = 0; db < bundle_bytes_.size(); ++db)
    t = std::max(t, bundle_time(static_cast<int>(db)));
  return t;
}

namespace {
TimeNs fabric_latency(double ns) { return ns > 0.0 ? static_cast<TimeNs>(std::ceil(ns)) : 0; }
}  // namespace

TimeNs PortLoad::gpu_latency(int gpu) const {
  if (!per_gpu_) throw std::logic_error("network: per-GPU latency of a load kept for one exchange");
  const auto g = static_cast<std::size_t>(gpu);
  const bool nvlink = cluster_.spec().intra_node == IntraNode::NVSwitch;
  return p2p_latency_ns(intra_[g] != 0, nic_[g] != 0, nvlink) + fabric_latency(fabric_ns_[g]);
}

TimeNs PortLoad::exchange_latency() const {
  const bool nvlink = cluster_.spec().intra_node == IntraNode::NVSwitch;
  return p2p_latency_ns(any_intra_, any_nic_, nvlink) + fabric_latency(any_fabric_ns_);
}

TimeNs p2p_latency_ns(bool uses_intra, bool uses_nic, bool nvlink) {
  double hop = 0.0;
  if (uses_intra) hop = nvlink ? kP2pNvlinkHopUs : kP2pPciHopUs;
  if (uses_nic) hop = std::max(hop, kP2pNetHopUs);
  if (!uses_intra && !uses_nic) return 0;
  return us_to_ns(kP2pBaseUs + hop);
}

std::vector<const Route*>& AnalyticalNetwork::group_routes(const std::vector<int>& gpus) const {
  constexpr std::size_t kGroupRoutes = 64;
  ++group_routes_clock_;
  for (GroupRoutes& g : group_routes_) {
    if (g.members == gpus) {
      g.used = group_routes_clock_;
      return g.routes;
    }
  }
  if (group_routes_.size() < kGroupRoutes) group_routes_.emplace_back();
  GroupRoutes& g =
      *std::min_element(group_routes_.begin(), group_routes_.end(),
                        [](const GroupRoutes& a, const GroupRoutes& b) { return a.used < b.used; });
  g.members = gpus;
  g.routes.assign(gpus.size() * gpus.size(), nullptr);
  g.used = group_routes_clock_;
  return g.routes;
}

TimeNs AnalyticalNetwork::all_to_all_v(const std::vector<double>& bytes) const {
  std::vector<int> all(static_cast<std::size_t>(cluster_.num_gpus()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return all_to_all_v(bytes, all);
}

TimeNs AnalyticalNetwork::all_to_all_v(const std::vector<double>& bytes, const std::vector<int>& gpus) const {
  const std::size_t n = gpus.size();
  // Arrays of the group only: untouched GPUs would add nothing to max_time.
  PortLoad load(cluster_, std::span<const int>(gpus));
  if (bytes.size() < n * n) throw std::logic_error("network: all-to-all-v matrix smaller than its group");
  // A group of up to 128 GPUs keeps its routes (128 KiB each, 8 MiB for all 64); the whole
  // cluster's would not pay.
  if (n <= 128)
    load.add_members(bytes, group_routes(gpus));
  else
    load.add_members(bytes);
  const TimeNs worst = load.max_time();
  if (worst == 0) return 0;
  return worst + load.exchange_latency();
}

namespace {
// The pace of a set of hops that run at once at one common rate (see RingPace).
// `by_port`: also hold the reference to the hop's nominal port bandwidth (between nodes, where
// the built shape gives a GPU its share of the NICs); inside a node NCCL's figure is the reference.
double pace_of(const Cluster& cluster, const std::vector<std::pair<int, int>>& hops, double assumed_gbps,
               bool by_port) {
  if (hops.empty()) return 1.0;
  // (directed link, share of one hop's rate it carries); summed per link after sorting.
  std::vector<std::pair<int, double>> load;
  std::vector<int> crossed;
  for (const auto& [a, b] : hops) {
    const int paths = cluster.route(a, b).paths;
    crossed.clear();
    for (int p = 0; p < paths; ++p) {
      const auto links = cluster.path_links(a, b, p);
      crossed.insert(crossed.end(), links.begin(), links.end());
    }
    std::sort(crossed.begin(), crossed.end());
    for (std::size_t k = 0; k < crossed.size();) {
      std::size_t n = 1;
      while (k + n < crossed.size() && crossed[k + n] == crossed[k]) ++n;
      // A link every path crosses carries the whole hop: exactly 1.
      load.emplace_back(crossed[k], static_cast<double>(n) / static_cast<double>(paths));
      k += n;
    }
  }
  std::sort(load.begin(), load.end());
  double rate = std::numeric_limits<double>::infinity();
  for (std::size_t k = 0; k < load.size();) {
    double share = 0.0;
    std::size_t n = 0;
    for (; k + n < load.size() && load[k + n].first == load[k].first; ++n) share += load[k + n].second;
    rate = std::min(rate, cluster.link_gbps(load[k].first) / share);
    k += n;
  }
  double reference = assumed_gbps;
  if (by_port) {
    const double nominal = cluster.port_gbps(cluster.route(hops.front().first, hops.front().second).src_port);
    if (nominal > 0.0) reference = std::min(reference, nominal);
  }
  if (!(reference > 0.0)) return 1.0;
  // Shares summed over ECMP paths can round a link that exactly matches to a hair below: that is 1.
  constexpr double kRounding = 1e-12;
  return rate >= reference * (1.0 - kRounding) ? 1.0 : rate / reference;
}
}  // namespace

RingPace ring_pace(const Cluster& cluster, const std::vector<int>& gpus, double intra_hop_gbps,
                   double inter_hop_gbps) {
  // Participants per node, in id order (ids are node-major).
  std::vector<int> sorted = gpus;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<std::vector<int>> nodes;
  int last_node = -1;
  for (int gpu : sorted) {
    const int n = cluster.node_of(gpu);
    if (nodes.empty() || n != last_node) nodes.emplace_back();
    nodes.back().push_back(gpu);
    last_node = n;
  }
  std::vector<std::pair<int, int>> intra, inter;
  for (const std::vector<int>& members : nodes) {
    const std::size_t k = members.size();
    if (k < 2) continue;
    for (std::size_t i = 0; i < k; ++i) intra.emplace_back(members[i], members[(i + 1) % k]);
  }
  const std::size_t m = nodes.size();
  for (std::size_t i = 0; m >= 2 && i < m; ++i) {
    const std::vector<int>& from = nodes[i];
    const std::vector<int>& to = nodes[(i + 1) % m];
    for (std::size_t j = 0; j < std::min(from.size(), to.size()); ++j) inter.emplace_back(from[j], to[j]);
  }
  return RingPace{pace_of(cluster, intra, intra_hop_gbps, false),
                  pace_of(cluster, inter, inter_hop_gbps, true)};
}

CollectiveGroup AnalyticalNetwork::group_of(const std::vector<int>& gpus) const {
  const ClusterSpec& s = cluster_.spec();
  CollectiveGroup grp;
  grp.ranks = static_cast<int>(gpus.size());
  std::vector<int> per_node;
  for (int gpu : gpus) {
    int n = s.node_of(gpu);
    if (per_node.empty() || static_cast<int>(per_node.size()) <= n) per_node.resize(n + 1, 0);
    per_node[n]++;
  }
  grp.nodes = static_cast<int>(std::count_if(per_node.begin(), per_node.end(), [](int v) { return v > 0; }));
  grp.ranks_per_node = per_node.empty() ? 0 : *std::max_element(per_node.begin(), per_node.end());
  grp.intra_hw = s.intra_node == IntraNode::NVSwitch ? IntraHw::NVLink : IntraHw::PCI;
  grp.intra_bus_gbps = grp.ranks_per_node > 1 ? s.intra_gbps() : 0.0;
  // A node's ring channels leave through the NICs of the participating GPUs.
  int nics = std::min(grp.ranks_per_node, s.nics_per_node);
  if (s.gpus_per_node > s.nics_per_node)
    nics = std::max(1, grp.ranks_per_node * s.nics_per_node / s.gpus_per_node);
  const double nic_gbps = gbit_to_gbyte(s.nic_gbit) * s.nic_efficiency;
  grp.inter_bus_gbps = nics * nic_gbps;
  grp.arch = s.gpu_arch();
  // NCCL's graph channels, which its per-channel caps scale with. Across nodes, one channel per
  // NIC at the NIC's bandwidth, duplicated (two at half the bandwidth each) from 25 GB/s per
  // channel up (NCCL src/graph/search.cc, ncclTopoCompute). Inside an NVSwitch node, one channel
  // per NVLink at NCCL's per-link figure (DGX-A100: 12 x 20 GB/s); over PCIe, one.
  constexpr double kDuplicateChannelGbps = 25.0;  // source: NCCL search.cc, bwIntra >= 25.0
  if (grp.nodes > 1) {
    grp.channels = nics * (nic_gbps >= kDuplicateChannelGbps ? 2 : 1);
  } else if (s.intra_node == IntraNode::NVSwitch) {
    grp.channels = std::max(1, s.gpu.nvlink_links);
  } else {
    grp.channels = 1;
  }
  // NVLink SHARP needs NVSwitch gen3, which Hopper NVSwitch nodes (DGX-H100) have and A100's
  // NVSwitch gen2 does not (NCCL enables NVLS on compute capability 9.0 with multicast support).
  grp.nvls = s.intra_node == IntraNode::NVSwitch && s.gpu_arch() == GpuArch::Hopper && grp.ranks_per_node > 1;
  // NCCL's assumed rate per ring hop: the node's bus bandwidth; across nodes, its NICs' bandwidth
  // shared by the participants of a node (one hop each per node boundary).
  const RingPace pace = ring_pace(cluster_, gpus, grp.intra_bus_gbps,
                                  grp.ranks_per_node > 0 ? grp.inter_bus_gbps / grp.ranks_per_node : 0.0);
  grp.intra_bus_gbps *= pace.intra;
  grp.inter_bus_gbps *= pace.inter;
  return grp;
}

CollectiveEstimate AnalyticalNetwork::collective(Collective c, double bytes,
                                                 const std::vector<int>& gpus) const {
  return nccl_collective(c, bytes, group_of(gpus));
}

std::vector<TimeNs> AnalyticalNetwork::transfers(const std::vector<Transfer>& ts) const {
  const int g = cluster_.num_gpus();
  PortLoad load(cluster_, true);
  for (const Transfer& t : ts) {
    if (t.bytes <= 0.0) continue;
    if (t.src.host && t.dst.host) throw std::logic_error("network: host-to-host transfers are not modelled");
    if (t.src.host) {
      load.add_host_copy(t.dst.index, false, t.bytes);
      continue;
    }
    if (t.dst.host) {
      load.add_host_copy(t.src.index, true, t.bytes);
      continue;
    }
    if (t.src.index == t.dst.index) continue;
    load.add(t.src.index, t.dst.index, t.bytes);
  }
  std::vector<TimeNs> out(static_cast<std::size_t>(g), 0);
  for (int i = 0; i < g; ++i) {
    TimeNs t = load.gpu_time(i, true);
    if (t > 0) t += load.gpu_latency(i);
    out[static_cast<std::size_t>(i)] = t;
  }
  return out;
}

}  // namespace moesim

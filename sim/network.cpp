#include "sim/network.hpp"

#include <algorithm>
#include <array>
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

using PortBytes = std::array<double, kNumPorts>;

TimeNs port_time(const PortBytes& send, const PortBytes& recv, const Cluster& c) {
  TimeNs t = 0;
  for (int p = 0; p < kNumPorts; ++p) {
    double v = std::max(send[p], recv[p]);
    if (v <= 0.0) continue;
    double bw = c.port_gbps(static_cast<Port>(p));
    if (bw <= 0.0) throw std::logic_error("network: traffic on a port the cluster does not have");
    t = std::max(t, transfer_ns(v, bw));
  }
  return t;
}
}  // namespace

TimeNs p2p_latency_ns(bool uses_intra, bool uses_nic, bool nvlink) {
  double hop = 0.0;
  if (uses_intra) hop = nvlink ? kP2pNvlinkHopUs : kP2pPciHopUs;
  if (uses_nic) hop = std::max(hop, kP2pNetHopUs);
  if (!uses_intra && !uses_nic) return 0;
  return us_to_ns(kP2pBaseUs + hop);
}

TimeNs AnalyticalNetwork::all_to_all_v(const std::vector<double>& bytes) const {
  const int g = cluster_.num_gpus();
  std::vector<PortBytes> send(g, PortBytes{}), recv(g, PortBytes{});
  bool intra = false, nic = false;
  for (int s = 0; s < g; ++s) {
    for (int d = 0; d < g; ++d) {
      double b = bytes[static_cast<std::size_t>(s) * g + d];
      if (s == d || b <= 0.0) continue;
      const Route& r = cluster_.route(s, d);
      send[s][static_cast<int>(r.src_port)] += b;
      recv[d][static_cast<int>(r.dst_port)] += b;
      intra |= r.src_port == Port::Intra;
      nic |= r.src_port == Port::Nic;
    }
  }
  TimeNs worst = 0;
  for (int i = 0; i < g; ++i) worst = std::max(worst, port_time(send[i], recv[i], cluster_));
  if (worst == 0) return 0;
  return worst + p2p_latency_ns(intra, nic, cluster_.spec().intra_node == IntraNode::NVSwitch);
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
  return grp;
}

CollectiveEstimate AnalyticalNetwork::collective(Collective c, double bytes,
                                                 const std::vector<int>& gpus) const {
  return nccl_collective(c, bytes, group_of(gpus));
}

std::vector<TimeNs> AnalyticalNetwork::transfers(const std::vector<Transfer>& ts) const {
  const int g = cluster_.num_gpus();
  std::vector<PortBytes> send(g, PortBytes{}), recv(g, PortBytes{});
  std::vector<char> intra(g, 0), nic(g, 0);
  for (const Transfer& t : ts) {
    if (t.bytes <= 0.0) continue;
    if (t.src.host && t.dst.host) throw std::logic_error("network: host-to-host transfers are not modelled");
    if (t.src.host) {
      recv[t.dst.index][static_cast<int>(Port::Host)] += t.bytes;
      continue;
    }
    if (t.dst.host) {
      send[t.src.index][static_cast<int>(Port::Host)] += t.bytes;
      continue;
    }
    if (t.src.index == t.dst.index) continue;
    const Route& r = cluster_.route(t.src.index, t.dst.index);
    send[t.src.index][static_cast<int>(r.src_port)] += t.bytes;
    recv[t.dst.index][static_cast<int>(r.dst_port)] += t.bytes;
    for (int e : {t.src.index, t.dst.index}) {
      intra[e] |= r.src_port == Port::Intra;
      nic[e] |= r.src_port == Port::Nic;
    }
  }
  std::vector<TimeNs> out(g, 0);
  const bool nvlink = cluster_.spec().intra_node == IntraNode::NVSwitch;
  for (int i = 0; i < g; ++i) {
    TimeNs t = port_time(send[i], recv[i], cluster_);
    if (t > 0) t += p2p_latency_ns(intra[i], nic[i], nvlink);
    out[i] = t;
  }
  return out;
}

}  // namespace moesim

#include "sim/collectives.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

namespace moesim {
namespace {

constexpr int kNumAlgos = 5;   // Ring, Tree, Nvls, NvlsTree, Pat (NcclAlgo order)
constexpr int kNumProtos = 3;  // LL, LL128, Simple (NcclProto order)
using ProtoRow = std::array<double, kNumProtos>;
using AlgoTable = std::array<ProtoRow, kNumAlgos>;
// Indexed by the number of nodes as NCCL does (tuning.cc: index2 = nNodes <= 2 ? nNodes-1 : 2).
using NodeRow = std::array<double, 3>;

// ---- Every constant of NCCL's cost model, in one place.
// source: NVIDIA/nccl src/graph/tuning.cc (ncclTopoTuneModel and the tables above it) and
// src/enqueue.cc (ncclTopoGetAlgoTime), releases 2.18 to 2.2x; the base and hardware latencies
// and LL caps as listed in shared/reference/hardware-and-calibration.md (2.30). Rows of the
// latency tables are [Ring, Tree, NVLS, NVLSTree, PAT], columns [LL, LL128, Simple].
struct NcclConstants {
  // tuning.cc baseLat: Tree 6.8/14/8.4, Ring 6.6/14/8.4; NVLS and NVLSTree have no base latency.
  static constexpr AlgoTable kBaseLatUs{
      {{6.6, 14.0, 8.4}, {6.8, 14.0, 8.4}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}};
  // tuning.cc hwLat[NCCL_HW_NVLINK]: Tree .6/1.25/4, Ring .6/1.9/3.4, NVLS 25, NVLSTree 25.
  static constexpr AlgoTable kNvlinkLatUs{
      {{0.6, 1.9, 3.4}, {0.6, 1.25, 4.0}, {0, 0, 25.0}, {0, 0, 25.0}, {0, 0, 0}}};
  // tuning.cc hwLat[NCCL_HW_PCI]: Tree 1/1.9/4, Ring 1/2.5/5.7 (no NVLS over PCI).
  static constexpr AlgoTable kPciLatUs{{{1.0, 2.5, 5.7}, {1.0, 1.9, 4.0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}};
  // tuning.cc hwLat[NCCL_HW_NET]: Tree 5/8.5/14, Ring 2.7/4/14, NVLS 18, NVLSTree 14.
  static constexpr AlgoTable kNetLatUs{
      {{2.7, 4.0, 14.0}, {5.0, 8.5, 14.0}, {0, 0, 18.0}, {0, 0, 14.0}, {0, 0, 0}}};
  // tuning.cc getNetOverhead: 1 us per inter-node ring step (x86 Intel, and the default); the
  // ring model charges max(intra-node hop, overhead), the overhead tripled for Simple.
  static constexpr double kNetOverheadUs = 1.0;
  static constexpr double kNetOverheadSimpleFactor = 3.0;
  // tuning.cc PAT latency: 8 us + log2(nodes) * network latency / 3.5 + 2.8 us per rank.
  static constexpr double kPatBaseUs = 8.0;
  static constexpr double kPatLogDivisor = 3.5;
  static constexpr double kPatPerRankUs = 2.8;

  // tuning.cc "model refinements" on the bus bandwidth:
  // Ring LL: 1/4 of the bus bandwidth across nodes or for all-reduce, 1/3 otherwise (LL moves
  // 8 bytes of data per 16-byte line and its flag polling halves it again), capped by llMaxBws.
  static constexpr double kRingLLFactor = 1.0 / 4.0;
  static constexpr double kRingLLFactorIntraNonReduce = 1.0 / 3.0;
  // Ring LL128: 120 of every 128 bytes are data (NCCL uses 0.92); 0.7 with under 2 GPUs per node.
  static constexpr double kRingLL128Factor = 0.92;
  static constexpr double kRingLL128FactorOnePerNode = 0.7;
  // Tree all-reduce: 0.92 of the bus bandwidth, capped per channel (perChMaxTreeBws).
  static constexpr double kTreeFactor = 0.92;
  // Tree LL: a further 1/3.8 (capped by llMaxBws); Tree LL128: 7/9 in one node, 120/128 across.
  static constexpr double kTreeLLFactor = 1.0 / 3.8;
  static constexpr double kTreeLL128FactorOneNode = 7.0 / 9.0;
  static constexpr double kTreeLL128Factor = 120.0 / 128.0;
  // PAT: 0.75 of the bus bandwidth.
  static constexpr double kPatFactor = 0.75;
  // Bus -> algorithm bandwidth: Ring n/steps, Tree 1/2 (up then down the tree), NVLS and
  // NVLSTree 5/6; all-gather / reduce-scatter on a non-ring algorithm use the bus bandwidth.
  static constexpr double kTreeAlgRatio = 0.5;
  static constexpr double kNvlsAlgRatio = 5.0 / 6.0;

  // tuning.cc llMaxBws, GB/s, for 1, 2 and more nodes (the Ampere and Hopper rows).
  static constexpr NodeRow kLLMaxAmpere{87.7, 22.5, 19.0};
  static constexpr NodeRow kLLMaxHopper{141.0, 45.0, 35.0};
  // tuning.cc perChMaxRingLL128Bws, GB/s per channel.
  static constexpr NodeRow kPerChRingLL128Ampere{20.0, 20.0, 20.0};
  static constexpr NodeRow kPerChRingLL128Hopper{36.7, 36.7, 36.7};
  // tuning.cc perChMaxTreeLL128Bws, GB/s per channel.
  static constexpr NodeRow kPerChTreeLL128Ampere{20.0, 20.0, 20.0};
  static constexpr NodeRow kPerChTreeLL128Hopper{36.7, 36.7, 29.0};
  // tuning.cc perChMaxTreeBws, GB/s per channel.
  static constexpr NodeRow kPerChTreeAmpere{24.0, 23.6, 17.8};
  static constexpr NodeRow kPerChTreeHopper{38.7, 41.4, 36.0};

  // enqueue.cc treeCorrectionFactor[protocol][log2(bytes / 64)]: "trees are not perfectly
  // sticky to the pipeline"; sizes from 512 MB up use 1.
  static constexpr int kTreeCorrectionSizes = 23;
  static constexpr std::array<std::array<double, kTreeCorrectionSizes>, kNumProtos> kTreeCorrection{{
      {1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0},
      {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, .8,
       .7,  .7,  .7,  .7,  .7,  .8,  .8,  .9,  .9,  1.0, 1.0},
      {.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9},
  }};
  // enqueue.cc: "plateau effect of ring": a Simple ring all-reduce across nodes pays 1.4x its
  // latency (compute capability 8.0 and up) once each rank's share of a channel is >= 64 bytes.
  static constexpr double kRingPlateauLatFactor = 1.4;
  static constexpr double kRingPlateauMinBytes = 64.0;
};

int idx(NcclAlgo a) { return static_cast<int>(a); }
int idx(NcclProto p) { return static_cast<int>(p); }
int node_idx(int nodes) { return nodes <= 2 ? nodes - 1 : 2; }
double by_arch(GpuArch arch, const NodeRow& ampere, const NodeRow& hopper, int nodes) {
  return (arch == GpuArch::Hopper ? hopper : ampere)[static_cast<std::size_t>(node_idx(nodes))];
}

// NCCL's log2i: floor(log2(n)), 0 for n <= 1.
int log2i(std::int64_t n) {
  int l = 0;
  while (n >>= 1) ++l;
  return l;
}

// tuning.cc nsteps: all-reduce 2(n-1), all-gather / reduce-scatter n-1, broadcast n.
int ring_steps(Collective c, int n) {
  switch (c) {
    case Collective::AllReduce:
      return 2 * (n - 1);
    case Collective::AllGather:
    case Collective::ReduceScatter:
      return n - 1;
    case Collective::Broadcast:
      return n;
  }
  return n;
}
// tuning.cc nInterSteps: all-reduce 2(nodes - 1), all-gather / reduce-scatter nodes - 1,
// broadcast nodes (as hardware-and-calibration.md lists them; with one GPU per node every step
// of the ring is then an inter-node step).
int ring_inter_steps(Collective c, int nodes) {
  switch (c) {
    case Collective::AllReduce:
      return 2 * (nodes - 1);
    case Collective::AllGather:
    case Collective::ReduceScatter:
      return nodes - 1;
    case Collective::Broadcast:
      return nodes;
  }
  return nodes;
}

bool algo_supported(Collective coll, NcclAlgo algo, NcclProto proto, const CollectiveGroup& g) {
  switch (algo) {
    case NcclAlgo::Ring:
      break;
    // Tree: all-reduce only (a chain inside each node, a tree across nodes).
    case NcclAlgo::Tree:
      if (coll != Collective::AllReduce) return false;
      break;
    // NVLS: all-reduce, all-gather, reduce-scatter inside one NVSwitch gen3 node (across nodes
    // NCCL needs CollNet/SHARP for it, which is not modelled), Simple only.
    case NcclAlgo::Nvls:
      if (!g.nvls || g.nodes != 1 || coll == Collective::Broadcast || proto != NcclProto::Simple)
        return false;
      break;
    // NVLSTree: NVLS inside each node, a tree across nodes; all-reduce, Simple only.
    case NcclAlgo::NvlsTree:
      if (!g.nvls || g.nodes <= 1 || g.ranks_per_node <= 1 || coll != Collective::AllReduce ||
          proto != NcclProto::Simple)
        return false;
      break;
    // PAT (NCCL 2.23+): all-gather and reduce-scatter with one GPU per node, Simple only.
    case NcclAlgo::Pat:
      if (g.ranks != g.nodes || g.nodes <= 1 ||
          (coll != Collective::AllGather && coll != Collective::ReduceScatter) || proto != NcclProto::Simple)
        return false;
      break;
  }
  // tuning.cc enables LL128 only where the intra-node path is NVLink (or there is none).
  if (proto == NcclProto::LL128 && g.intra_hw == IntraHw::PCI && g.ranks_per_node > 1) return false;
  return true;
}

}  // namespace

const char* to_string(Collective c) {
  switch (c) {
    case Collective::AllReduce:
      return "all_reduce";
    case Collective::AllGather:
      return "all_gather";
    case Collective::ReduceScatter:
      return "reduce_scatter";
    case Collective::Broadcast:
      return "broadcast";
  }
  return "?";
}
const char* to_string(NcclAlgo a) {
  switch (a) {
    case NcclAlgo::Ring:
      return "ring";
    case NcclAlgo::Tree:
      return "tree";
    case NcclAlgo::Nvls:
      return "nvls";
    case NcclAlgo::NvlsTree:
      return "nvlstree";
    case NcclAlgo::Pat:
      return "pat";
  }
  return "?";
}
const char* to_string(NcclProto p) {
  return p == NcclProto::LL ? "LL" : p == NcclProto::LL128 ? "LL128" : "Simple";
}

NcclCandidate nccl_candidate(Collective coll, NcclAlgo algo, NcclProto proto, const CollectiveGroup& g) {
  using K = NcclConstants;
  NcclCandidate c;
  const int n = g.ranks;
  if (n <= 1 || !algo_supported(coll, algo, proto, g)) return c;
  c.supported = true;
  const int a = idx(algo);
  const int p = idx(proto);
  const int channels = std::max(1, g.channels);
  const double ppn = static_cast<double>(n) / g.nodes;

  // Bus bandwidth: channels x per-channel bandwidth of NCCL's graph; beyond one node the NICs
  // bound it (NCCL's graph search gives every channel the bandwidth of its NIC).
  const double intra = g.intra_bus_gbps > 0 ? g.intra_bus_gbps : g.inter_bus_gbps;
  double bus = g.nodes > 1 ? std::min(intra, g.inter_bus_gbps) : g.intra_bus_gbps;
  // NVLSTree beyond two nodes: half the inter-node bandwidth (tuning.cc).
  if (algo == NcclAlgo::NvlsTree && g.nodes > 2) bus = std::min(intra, g.inter_bus_gbps / 2.0);
  const double ll_max = by_arch(g.arch, K::kLLMaxAmpere, K::kLLMaxHopper, g.nodes);
  switch (algo) {
    case NcclAlgo::Ring:
      if (proto == NcclProto::LL) {
        const bool quarter = g.nodes > 1 || coll == Collective::AllReduce;
        bus = std::min(ll_max, bus * (quarter ? K::kRingLLFactor : K::kRingLLFactorIntraNonReduce));
      } else if (proto == NcclProto::LL128) {
        bus =
            std::min(bus * (ppn < 2 ? K::kRingLL128FactorOnePerNode : K::kRingLL128Factor),
                     channels * by_arch(g.arch, K::kPerChRingLL128Ampere, K::kPerChRingLL128Hopper, g.nodes));
      }
      break;
    case NcclAlgo::Tree:
      bus = std::min(bus * K::kTreeFactor,
                     channels * by_arch(g.arch, K::kPerChTreeAmpere, K::kPerChTreeHopper, g.nodes));
      if (proto == NcclProto::LL) bus = std::min(bus * K::kTreeLLFactor, ll_max);
      if (proto == NcclProto::LL128) {
        bus =
            std::min(bus * (g.nodes == 1 ? K::kTreeLL128FactorOneNode : K::kTreeLL128Factor),
                     channels * by_arch(g.arch, K::kPerChTreeLL128Ampere, K::kPerChTreeLL128Hopper, g.nodes));
      }
      break;
    case NcclAlgo::Pat:
      bus *= K::kPatFactor;
      break;
    case NcclAlgo::Nvls:
    case NcclAlgo::NvlsTree:
      break;
  }
  c.bus_gbps = bus;
  const bool gather_like = coll == Collective::AllGather || coll == Collective::ReduceScatter;
  const int steps = ring_steps(coll, n);
  if (algo == NcclAlgo::Ring)
    c.alg_gbps = bus * n / steps;
  else if (gather_like)
    c.alg_gbps = bus;
  else if (algo == NcclAlgo::Tree)
    c.alg_gbps = bus * K::kTreeAlgRatio;
  else
    c.alg_gbps = bus * K::kNvlsAlgRatio;

  // Latency.
  const AlgoTable& intra_tab = g.intra_hw == IntraHw::NVLink ? K::kNvlinkLatUs : K::kPciLatUs;
  double intra_lat = intra_tab[a][p];
  // With one GPU per node every network latency is exposed: NCCL uses the tree's.
  const double inter_lat = ppn == 1.0 ? K::kNetLatUs[idx(NcclAlgo::Tree)][p] : K::kNetLatUs[a][p];
  double lat = K::kBaseLatUs[a][p];
  const int log_nodes = log2i(g.nodes);
  switch (algo) {
    case NcclAlgo::Ring:
      if (coll == Collective::Broadcast) {
        // Pipelined along the ring: n hops of the hardware the ring crosses (the network across
        // nodes); Simple takes the tree's hop latency "for chunk latency" (tuning.cc).
        const AlgoTable& hw = g.nodes > 1 ? K::kNetLatUs : intra_tab;
        const int hop_algo = proto == NcclProto::Simple ? idx(NcclAlgo::Tree) : a;
        lat += steps * hw[hop_algo][p];
      } else {
        if (g.nodes > 1) {
          double overhead =
              K::kNetOverheadUs * (proto == NcclProto::Simple ? K::kNetOverheadSimpleFactor : 1.0);
          intra_lat = std::max(intra_lat, overhead);
        }
        const int inter_steps = ring_inter_steps(coll, g.nodes);
        lat += (steps - inter_steps) * intra_lat + inter_steps * inter_lat;
      }
      break;
    case NcclAlgo::Tree:
      lat += 2.0 * ((n / g.nodes - 1) * intra_lat + log_nodes * inter_lat);
      break;
    case NcclAlgo::Nvls:
      lat = intra_lat + (g.nodes > 1 ? inter_lat : 0.0);
      break;
    case NcclAlgo::NvlsTree:
      lat += intra_lat + 2.0 * log_nodes * inter_lat;
      break;
    case NcclAlgo::Pat:
      lat = K::kPatBaseUs + log_nodes * (inter_lat / K::kPatLogDivisor) + n * K::kPatPerRankUs;
      break;
  }
  c.latency_us = lat;
  return c;
}

namespace {
struct Timed {
  TimeNs time_ns = -1;
  TimeNs latency_ns = 0;
  double alg_gbps = 0.0;
  double bus_gbps = 0.0;
};

Timed time_candidate(Collective coll, NcclAlgo algo, NcclProto proto, double bytes,
                     const CollectiveGroup& g) {
  using K = NcclConstants;
  Timed t;
  const NcclCandidate c = nccl_candidate(coll, algo, proto, g);
  if (!c.supported || c.alg_gbps <= 0.0) return t;
  double alg = c.alg_gbps;
  double lat_us = c.latency_us;
  // enqueue.cc ncclTopoGetAlgoTime corrections.
  const int log_size = log2i(static_cast<std::int64_t>(bytes) >> 6);
  if (algo == NcclAlgo::Tree && coll == Collective::AllReduce && log_size < K::kTreeCorrectionSizes) {
    alg *= K::kTreeCorrection[static_cast<std::size_t>(idx(proto))][static_cast<std::size_t>(log_size)];
  }
  if (algo == NcclAlgo::Ring && proto == NcclProto::Simple && g.nodes > 1 && coll == Collective::AllReduce &&
      bytes / (std::max(1, g.channels) * g.ranks) >= K::kRingPlateauMinBytes) {
    lat_us *= K::kRingPlateauLatFactor;
  }
  t.latency_ns = us_to_ns(lat_us);
  t.time_ns = t.latency_ns + transfer_ns(bytes, alg);
  t.alg_gbps = alg;
  t.bus_gbps = c.bus_gbps;
  return t;
}

// NCCL's search order (tuning.cc algorithm indices): Tree, Ring, ..., NVLS, NVLSTree, PAT; the
// first of equal times wins.
constexpr std::array<NcclAlgo, kNumAlgos> kSearchOrder{NcclAlgo::Tree, NcclAlgo::Ring, NcclAlgo::Nvls,
                                                       NcclAlgo::NvlsTree, NcclAlgo::Pat};
}  // namespace

TimeNs nccl_candidate_ns(Collective coll, NcclAlgo algo, NcclProto proto, double bytes,
                         const CollectiveGroup& g) {
  if (g.ranks <= 1 || bytes <= 0.0) return -1;
  return time_candidate(coll, algo, proto, bytes, g).time_ns;
}

CollectiveEstimate nccl_collective(Collective coll, double bytes, const CollectiveGroup& g) {
  CollectiveEstimate best;
  if (g.ranks <= 1 || bytes <= 0.0) return best;
  best.time_ns = std::numeric_limits<TimeNs>::max();
  for (NcclAlgo a : kSearchOrder) {
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      const Timed t = time_candidate(coll, a, p, bytes, g);
      if (t.time_ns < 0) continue;
      if (t.time_ns < best.time_ns)
        best = CollectiveEstimate{t.time_ns, a, p, t.bus_gbps, t.alg_gbps, t.latency_ns};
    }
  }
  return best;
}

double nccl_tests_bus_gbps(Collective coll, double bytes, TimeNs time_ns, int ranks) {
  if (time_ns <= 0 || ranks <= 1) return 0.0;
  double alg = bytes / static_cast<double>(time_ns);  // GB/s
  double n = ranks;
  switch (coll) {
    case Collective::AllReduce:
      return alg * 2.0 * (n - 1) / n;
    case Collective::AllGather:
    case Collective::ReduceScatter:
      return alg * (n - 1) / n;
    case Collective::Broadcast:
      return alg;
  }
  return alg;
}

}  // namespace moesim

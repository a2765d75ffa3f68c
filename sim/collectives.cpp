#include "sim/collectives.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace moesim {
namespace {

// ---- NCCL's constants. source: NVIDIA/nccl src/graph/tuning.cc (2.30), as summarised in
// shared/reference/hardware-and-calibration.md. Indexed [LL, LL128, Simple].
struct NcclConstants {
  // Base latency per algorithm, us.
  static constexpr std::array<double, 3> kBaseLatRing{6.6, 14.0, 8.4};
  static constexpr std::array<double, 3> kBaseLatTree{6.8, 14.0, 8.4};
  // Per-hop hardware latency, us.
  static constexpr std::array<double, 3> kNvlinkRing{0.6, 1.9, 3.4};
  static constexpr std::array<double, 3> kNvlinkTree{0.6, 1.25, 4.0};
  static constexpr std::array<double, 3> kPciRing{1.0, 2.5, 5.7};
  static constexpr std::array<double, 3> kPciTree{1.0, 1.9, 4.0};
  static constexpr std::array<double, 3> kNetRing{2.7, 4.0, 14.0};
  static constexpr std::array<double, 3> kNetTree{5.0, 8.5, 14.0};
  // Network overhead per step, us; tripled for Simple.
  static constexpr double kNetOverheadUs = 1.0;
  static constexpr double kNetOverheadSimpleFactor = 3.0;
  // Protocol efficiency on the bus bandwidth: LL moves 8 bytes per 16 (half), LL128 120 of 128
  // bytes usable (NCCL uses 0.92); Tree all-reduce carries a further 0.92.
  static constexpr double kLLFactor = 0.5;
  static constexpr double kLL128Factor = 0.92;
  static constexpr double kTreeAllReduceFactor = 0.92;
  // LL bandwidth caps (GB/s) for 1, 2, and 4+ nodes.
  static constexpr std::array<double, 3> kLLCapAmpere{87.7, 22.5, 19.0};
  static constexpr std::array<double, 3> kLLCapHopper{141.0, 45.0, 35.0};
};

int idx(NcclProto p) { return static_cast<int>(p); }

double ll_cap(GpuArch arch, int nodes) {
  const auto& caps = arch == GpuArch::Hopper ? NcclConstants::kLLCapHopper : NcclConstants::kLLCapAmpere;
  return caps[nodes <= 1 ? 0 : nodes == 2 ? 1 : 2];
}

int ring_steps(Collective c, int n) {
  return c == Collective::AllReduce ? 2 * (n - 1) : n - 1;
}

}  // namespace

const char* to_string(Collective c) {
  switch (c) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::AllGather: return "all_gather";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::Broadcast: return "broadcast";
  }
  return "?";
}
const char* to_string(NcclAlgo a) { return a == NcclAlgo::Ring ? "ring" : "tree"; }
const char* to_string(NcclProto p) {
  return p == NcclProto::LL ? "LL" : p == NcclProto::LL128 ? "LL128" : "Simple";
}

NcclCandidate nccl_candidate(Collective coll, NcclAlgo algo, NcclProto proto, const CollectiveGroup& g) {
  NcclCandidate c;
  const int n = g.ranks;
  if (n <= 1) return c;
  // NCCL's tree serves all-reduce only, and only pays off across nodes.
  if (algo == NcclAlgo::Tree && (coll != Collective::AllReduce || g.nodes <= 1)) return c;
  c.supported = true;
  const int p = idx(proto);

  // Bus bandwidth: the ring (and tree) crosses every node boundary once per channel, so beyond
  // one node the node's NICs bound it.
  double bus = g.nodes > 1 ? std::min(g.intra_bus_gbps > 0 ? g.intra_bus_gbps : g.inter_bus_gbps,
                                      g.inter_bus_gbps)
                           : g.intra_bus_gbps;
  if (proto == NcclProto::LL) bus = std::min(ll_cap(g.arch, g.nodes), bus * NcclConstants::kLLFactor);
  if (proto == NcclProto::LL128) bus *= NcclConstants::kLL128Factor;
  if (algo == NcclAlgo::Tree) bus *= NcclConstants::kTreeAllReduceFactor;
  c.bus_gbps = bus;

  const bool nvlink = g.intra_hw == IntraHw::NVLink;
  if (algo == NcclAlgo::Ring) {
    const int steps = ring_steps(coll, n);
    // Broadcast is pipelined along the ring: nccl-tests' bus bandwidth equals its algorithm
    // bandwidth. For the others the ring moves steps/n of the buffer per rank.
    c.alg_gbps = coll == Collective::Broadcast ? bus : bus * n / steps;
    const int inter_steps = g.nodes > 1 ? (coll == Collective::AllReduce ? 2 * (g.nodes - 1) : g.nodes - 1) : 0;
    double intra = (nvlink ? NcclConstants::kNvlinkRing : NcclConstants::kPciRing)[p];
    if (g.nodes > 1) {
      double overhead = NcclConstants::kNetOverheadUs *
                        (proto == NcclProto::Simple ? NcclConstants::kNetOverheadSimpleFactor : 1.0);
      intra = std::max(intra, overhead);
    }
    c.latency_us = NcclConstants::kBaseLatRing[p] + (steps - inter_steps) * intra +
                   inter_steps * NcclConstants::kNetRing[p];
  } else {
    // A tree all-reduce moves the buffer up and down once each: half the bus bandwidth.
    c.alg_gbps = bus * 0.5;
    const double intra = (nvlink ? NcclConstants::kNvlinkTree : NcclConstants::kPciTree)[p];
    c.latency_us = NcclConstants::kBaseLatTree[p] +
                   2.0 * ((g.ranks_per_node - 1) * intra + std::log2(static_cast<double>(g.nodes)) *
                                                                NcclConstants::kNetTree[p]);
  }
  return c;
}

CollectiveEstimate nccl_collective(Collective coll, double bytes, const CollectiveGroup& g) {
  CollectiveEstimate best;
  if (g.ranks <= 1 || bytes <= 0.0) return best;
  best.time_ns = std::numeric_limits<TimeNs>::max();
  for (NcclAlgo a : {NcclAlgo::Ring, NcclAlgo::Tree}) {
    for (NcclProto p : {NcclProto::LL, NcclProto::LL128, NcclProto::Simple}) {
      NcclCandidate c = nccl_candidate(coll, a, p, g);
      if (!c.supported || c.alg_gbps <= 0.0) continue;
      TimeNs lat = us_to_ns(c.latency_us);
      TimeNs t = lat + transfer_ns(bytes, c.alg_gbps);
      // Ties go to the earlier candidate (Ring before Tree, LL before Simple), as NCCL's loop.
      if (t < best.time_ns) {
        best = CollectiveEstimate{t, a, p, c.bus_gbps, c.alg_gbps, lat};
      }
    }
  }
  return best;
}

double nccl_tests_bus_gbps(Collective coll, double bytes, TimeNs time_ns, int ranks) {
  if (time_ns <= 0 || ranks <= 1) return 0.0;
  double alg = bytes / static_cast<double>(time_ns);  // GB/s
  double n = ranks;
  switch (coll) {
    case Collective::AllReduce: return alg * 2.0 * (n - 1) / n;
    case Collective::AllGather:
    case Collective::ReduceScatter: return alg * (n - 1) / n;
    case Collective::Broadcast: return alg;
  }
  return alg;
}

}  // namespace moesim

#pragma once
// NCCL's analytical cost model for all-reduce, all-gather, reduce-scatter and broadcast, as in
// NVIDIA/nccl src/graph/tuning.cc (ncclTopoTuneModel: a latency and a bus bandwidth for every
// algorithm and protocol) and src/enqueue.cc (ncclTopoGetAlgoTime: time = latency + bytes /
// algorithm bandwidth, with NCCL's size-dependent corrections; the fastest supported combination
// runs). Algorithms Ring, Tree (intra-node chain + inter-node tree), NVLS (NVLink SHARP on
// NVSwitch gen3 / Hopper), NVLSTree (NVLS inside a node, tree across nodes) and PAT (all-gather
// and reduce-scatter with one GPU per node); protocols LL, LL128 and Simple. All constants live in
// `NcclConstants` (collectives.cpp) with their sources, so that a recalibration touches one place.
#include <string>

#include "core/units.hpp"
#include "models/specs.hpp"

namespace moesim {

enum class Collective { AllReduce, AllGather, ReduceScatter, Broadcast };
enum class NcclAlgo { Ring, Tree, Nvls, NvlsTree, Pat };
enum class NcclProto { LL, LL128, Simple };
// The hardware a hop crosses inside a node: NVLink/NVSwitch or PCIe.
enum class IntraHw { NVLink, PCI };

[[nodiscard]] const char* to_string(Collective c);
[[nodiscard]] const char* to_string(NcclAlgo a);
[[nodiscard]] const char* to_string(NcclProto p);

// The group a collective runs on, reduced to what NCCL's model needs.
struct CollectiveGroup {
  int ranks = 1;           // participating GPUs
  int nodes = 1;           // distinct nodes among them
  int ranks_per_node = 1;  // the largest number of participants on one node
  IntraHw intra_hw = IntraHw::NVLink;
  // Bus bandwidth NCCL can drive inside a node (links x NCCL's per-link figure), GB/s.
  double intra_bus_gbps = 0.0;
  // Bus bandwidth NCCL can drive out of a node (NICs used x NCCL's per-NIC figure), GB/s.
  double inter_bus_gbps = 0.0;
  GpuArch arch = GpuArch::Ampere;
  // Channels of NCCL's ring/tree graph (the bus bandwidth is channels x per-channel bandwidth);
  // NCCL's per-channel caps scale with it. At least 1.
  int channels = 1;
  // NVLink SHARP (multicast and in-switch reduction): NVSwitch gen3, i.e. Hopper NVSwitch nodes.
  bool nvls = false;
};

struct CollectiveEstimate {
  TimeNs time_ns = 0;
  NcclAlgo algo = NcclAlgo::Ring;
  NcclProto proto = NcclProto::Simple;
  double bus_gbps = 0.0;  // NCCL's bus bandwidth for the chosen algorithm/protocol
  double alg_gbps = 0.0;  // the algorithm bandwidth the time was computed with
  TimeNs latency_ns = 0;
};

// Latency and bandwidth of one (collective, algorithm, protocol) combination, as tuning.cc
// tabulates them (before enqueue.cc's size-dependent corrections). `supported` is false when
// NCCL would not use that combination (e.g. Tree for all-gather, NVLS without NVSwitch gen3).
struct NcclCandidate {
  bool supported = false;
  double latency_us = 0.0;
  double bus_gbps = 0.0;
  double alg_gbps = 0.0;
};

[[nodiscard]] NcclCandidate nccl_candidate(Collective coll, NcclAlgo algo, NcclProto proto,
                                           const CollectiveGroup& g);

// Time of one candidate for `bytes` with enqueue.cc's corrections (Tree's correction factor by
// size, the ring plateau latency across nodes); -1 when the candidate is not supported.
[[nodiscard]] TimeNs nccl_candidate_ns(Collective coll, NcclAlgo algo, NcclProto proto, double bytes,
                                       const CollectiveGroup& g);

// The fastest supported combination for `bytes` (nccl-tests' "size": the per-rank buffer of
// all-reduce and broadcast, the whole gathered / scattered buffer of all-gather and
// reduce-scatter). One rank: zero time.
[[nodiscard]] CollectiveEstimate nccl_collective(Collective coll, double bytes, const CollectiveGroup& g);

// nccl-tests' bus bandwidth for a measured or predicted time (for validation tables).
[[nodiscard]] double nccl_tests_bus_gbps(Collective coll, double bytes, TimeNs time_ns, int ranks);

}  // namespace moesim

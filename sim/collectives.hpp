#pragma once
// NCCL's analytical cost model for the ring/tree collectives (all-reduce, all-gather,
// reduce-scatter, broadcast), as in NVIDIA/nccl src/graph/tuning.cc: for every algorithm and
// protocol, time = latency + bytes / algorithm bandwidth, and NCCL runs the fastest. All constants
// live in `NcclConstants` with their sources, so that a recalibration touches one place.
#include <string>

#include "sim/units.hpp"

namespace moesim {

enum class Collective { AllReduce, AllGather, ReduceScatter, Broadcast };
enum class NcclAlgo { Ring, Tree };
enum class NcclProto { LL, LL128, Simple };
// The hardware a hop crosses inside a node: NVLink/NVSwitch or PCIe.
enum class IntraHw { NVLink, PCI };
// GPU generation, which selects NCCL's LL bandwidth cap.
enum class GpuArch { Ampere, Hopper };

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
};

struct CollectiveEstimate {
  TimeNs time_ns = 0;
  NcclAlgo algo = NcclAlgo::Ring;
  NcclProto proto = NcclProto::Simple;
  double bus_gbps = 0.0;  // NCCL's bus bandwidth for the chosen algorithm/protocol
  double alg_gbps = 0.0;  // bytes / (time without latency)
  TimeNs latency_ns = 0;
};

// Latency and bandwidth of one (collective, algorithm, protocol) combination. Returns false in
// `supported` when NCCL would not use that combination (e.g. Tree for all-gather).
struct NcclCandidate {
  bool supported = false;
  double latency_us = 0.0;
  double bus_gbps = 0.0;
  double alg_gbps = 0.0;
};

[[nodiscard]] NcclCandidate nccl_candidate(Collective coll, NcclAlgo algo, NcclProto proto,
                                           const CollectiveGroup& g);

// The fastest supported combination for `bytes` (the per-rank buffer size, as nccl-tests
// reports "size"). One rank: zero time.
[[nodiscard]] CollectiveEstimate nccl_collective(Collective coll, double bytes,
                                                 const CollectiveGroup& g);

// nccl-tests' bus bandwidth for a measured or predicted time (for validation tables).
[[nodiscard]] double nccl_tests_bus_gbps(Collective coll, double bytes, TimeNs time_ns, int ranks);

}  // namespace moesim

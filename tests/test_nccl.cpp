// NCCL's cost model against numbers worked out by hand from the constants in
// shared/reference/hardware-and-calibration.md (tuning.cc).
#include <catch2/catch.hpp>

#include "sim/collectives.hpp"

using namespace moesim;

namespace {
CollectiveGroup dgx_a100_node() {
  CollectiveGroup g;
  g.ranks = 8;
  g.nodes = 1;
  g.ranks_per_node = 8;
  g.intra_hw = IntraHw::NVLink;
  g.intra_bus_gbps = 12 * 20.0;  // 12 NVLinks x 20 GB/s (SM80)
  g.inter_bus_gbps = 0.0;
  g.arch = GpuArch::Ampere;
  return g;
}
CollectiveGroup sixteen_single_gpu_nodes() {
  CollectiveGroup g;
  g.ranks = 16;
  g.nodes = 16;
  g.ranks_per_node = 1;
  g.intra_hw = IntraHw::PCI;
  g.intra_bus_gbps = 0.0;
  g.inter_bus_gbps = 12.0;  // one 100 Gb/s NIC as NCCL counts it
  g.arch = GpuArch::Ampere;
  return g;
}
}  // namespace

TEST_CASE("NCCL candidates on one DGX-A100 node", "[nccl]") {
  auto g = dgx_a100_node();
  // Ring Simple: bus 240, alg = 240 * 8 / 14; latency 8.4 + 14 steps * 3.4 = 56.0 us.
  auto s = nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::Simple, g);
  REQUIRE(s.supported);
  CHECK(s.bus_gbps == Approx(240.0));
  CHECK(s.alg_gbps == Approx(240.0 * 8 / 14));
  CHECK(s.latency_us == Approx(56.0));
  // Ring LL: bus = min(87.7 cap, 240 * 0.5) = 87.7; latency 6.6 + 14 * 0.6 = 15.0 us.
  auto ll = nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL, g);
  CHECK(ll.bus_gbps == Approx(87.7));
  CHECK(ll.latency_us == Approx(15.0));
  // Ring LL128: bus 240 * 0.92 = 220.8; latency 14.0 + 14 * 1.9 = 40.6 us.
  auto ll128 = nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL128, g);
  CHECK(ll128.bus_gbps == Approx(220.8));
  CHECK(ll128.latency_us == Approx(40.6));
  // NCCL's tree is for all-reduce across nodes only.
  CHECK_FALSE(nccl_candidate(Collective::AllReduce, NcclAlgo::Tree, NcclProto::Simple, g).supported);
  // All-gather: 7 steps, alg = 240 * 8 / 7; latency 8.4 + 7 * 3.4 = 32.2 us.
  auto ag = nccl_candidate(Collective::AllGather, NcclAlgo::Ring, NcclProto::Simple, g);
  CHECK(ag.alg_gbps == Approx(240.0 * 8 / 7));
  CHECK(ag.latency_us == Approx(32.2));
}

TEST_CASE("NCCL picks the fastest: exact nanoseconds on one DGX-A100 node", "[nccl]") {
  auto g = dgx_a100_node();
  // 1e9 bytes: Simple 56000 + ceil(1e9 / 137.142857) = 56000 + 7291667 = 7347667 ns;
  // LL128 40600 + ceil(1e9 / 126.171429) = 40600 + 7925725 = 7966325 ns. Simple wins.
  auto big = nccl_collective(Collective::AllReduce, 1e9, g);
  CHECK(big.algo == NcclAlgo::Ring);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 7347667);
  // 1000 bytes: LL 15000 + ceil(1000 / 50.114286) = 15000 + 20 = 15020 ns.
  auto small = nccl_collective(Collective::AllReduce, 1000, g);
  CHECK(small.proto == NcclProto::LL);
  CHECK(small.time_ns == 15020);
  // One rank or no bytes: nothing to do.
  g.ranks = 1;
  CHECK(nccl_collective(Collective::AllReduce, 1e9, g).time_ns == 0);
}

TEST_CASE("NCCL across 16 single-GPU nodes: ring vs tree", "[nccl]") {
  auto g = sixteen_single_gpu_nodes();
  // Ring Simple: bus 12, alg 12 * 16 / 30 = 6.4; 30 steps, all inter-node:
  // latency 8.4 + 30 * 14 = 428.4 us. 1e8 bytes: 428400 + 15625000 = 16053400 ns.
  auto big = nccl_collective(Collective::AllReduce, 1e8, g);
  CHECK(big.algo == NcclAlgo::Ring);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 16053400);
  // Tree LL: bus min(19.0 cap, 12 * 0.5) * 0.92 = 5.52, alg 2.76; latency
  // 6.8 + 2 * (0 * 0.6 + log2(16) * 5.0) = 46.8 us. 65536 bytes: 46800 + ceil(23744.93) = 70545 ns,
  // ahead of ring LL (87600 + 20480 = 108080) and tree LL128 (82000 + 12905 = 94905).
  auto small = nccl_collective(Collective::AllReduce, 65536, g);
  CHECK(small.algo == NcclAlgo::Tree);
  CHECK(small.proto == NcclProto::LL);
  CHECK(small.time_ns == 70545);
}

TEST_CASE("nccl-tests bus bandwidth conversion and the published A100 figure", "[nccl]") {
  // all-reduce: busbw = algbw * 2(n-1)/n.
  CHECK(nccl_tests_bus_gbps(Collective::AllReduce, 8e9, 1'000'000'000, 8) == Approx(8.0 * 14 / 8));
  CHECK(nccl_tests_bus_gbps(Collective::AllGather, 8e9, 1'000'000'000, 8) == Approx(8.0 * 7 / 8));
  // Predicted bus bandwidth of a 1 GB all-reduce on one DGX-A100 node against the measured
  // 232.5 GB/s (NCCL issue 1048): within 5 %.
  auto est = nccl_collective(Collective::AllReduce, 1e9, dgx_a100_node());
  double bus = nccl_tests_bus_gbps(Collective::AllReduce, 1e9, est.time_ns, 8);
  CHECK(bus == Approx(232.5).epsilon(0.05));
}

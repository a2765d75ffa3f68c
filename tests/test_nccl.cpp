// NCCL's cost model against numbers worked out by hand from the constants in sim/collectives.cpp
// (NCCL src/graph/tuning.cc and src/enqueue.cc; shared/reference/hardware-and-calibration.md).
// Times: latency (us, rounded to ns) + ceil(bytes / algorithm bandwidth in GB/s) ns.
#include <catch2/catch.hpp>

#include <cmath>
#include <optional>
#include <utility>

#include "app/scenario.hpp"
#include "app/validate.hpp"
#include "sim/collectives.hpp"
#include "sim/network.hpp"

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
  g.channels = 12;  // one per NVLink
  return g;
}
CollectiveGroup dgx_h100_node() {
  CollectiveGroup g = dgx_a100_node();
  g.intra_bus_gbps = 18 * 20.6;  // 18 NVLinks x 20.6 GB/s (SM90) = 370.8
  g.arch = GpuArch::Hopper;
  g.channels = 18;
  g.nvls = true;
  return g;
}
CollectiveGroup two_dgx_a100_four_nics() {
  CollectiveGroup g = dgx_a100_node();
  g.ranks = 16;
  g.nodes = 2;
  g.inter_bus_gbps = 4 * 24.0;  // 4 HDR NICs x 24 GB/s
  g.channels = 4;               // one per NIC (24 < 25 GB/s: not duplicated)
  return g;
}
CollectiveGroup two_dgx_h100_nodes() {
  CollectiveGroup g = dgx_h100_node();
  g.ranks = 16;
  g.nodes = 2;
  g.inter_bus_gbps = 8 * 48.0;  // 8 NDR NICs x 48 GB/s
  g.channels = 16;              // 8 NICs, duplicated (48 >= 25 GB/s)
  return g;
}
ClusterSpec cluster_of(const std::string& cluster_yaml) {
  return load_scenario_text(
             "cluster: " + cluster_yaml +
                 "\nmodel: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 16}\npolicies: [static]\n",
             "<test>", {}, std::nullopt)
      .cluster;
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
  g.channels = 1;
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
  // Ring LL: bus = min(87.7 cap, 240 / 4) = 60; latency 6.6 + 14 * 0.6 = 15.0 us.
  auto ll = nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL, g);
  CHECK(ll.bus_gbps == Approx(60.0));
  CHECK(ll.latency_us == Approx(15.0));
  // Ring LL128: bus min(240 * 0.92, 12 channels * 20) = 220.8; latency 14.0 + 14 * 1.9 = 40.6 us.
  auto ll128 = nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL128, g);
  CHECK(ll128.bus_gbps == Approx(220.8));
  CHECK(ll128.latency_us == Approx(40.6));
  // Tree inside one node is a chain: bus min(240 * 0.92, 12 * 24) = 220.8, alg half of it;
  // latency 8.4 + 2 * (7 * 4.0 + 0) = 64.4 us. LL128: 220.8 * 7/9, latency 14 + 2 * 7 * 1.25 = 31.5.
  auto tree = nccl_candidate(Collective::AllReduce, NcclAlgo::Tree, NcclProto::Simple, g);
  REQUIRE(tree.supported);
  CHECK(tree.alg_gbps == Approx(110.4));
  CHECK(tree.latency_us == Approx(64.4));
  auto tree128 = nccl_candidate(Collective::AllReduce, NcclAlgo::Tree, NcclProto::LL128, g);
  CHECK(tree128.bus_gbps == Approx(220.8 * 7 / 9));
  CHECK(tree128.latency_us == Approx(31.5));
  // Tree serves all-reduce only; no NVLS on A100 (NVSwitch gen2); PAT needs one GPU per node.
  CHECK_FALSE(nccl_candidate(Collective::AllGather, NcclAlgo::Tree, NcclProto::Simple, g).supported);
  CHECK_FALSE(nccl_candidate(Collective::AllReduce, NcclAlgo::Nvls, NcclProto::Simple, g).supported);
  CHECK_FALSE(nccl_candidate(Collective::AllGather, NcclAlgo::Pat, NcclProto::Simple, g).supported);
  // All-gather: 7 steps, alg = 240 * 8 / 7; latency 8.4 + 7 * 3.4 = 32.2 us.
  auto ag = nccl_candidate(Collective::AllGather, NcclAlgo::Ring, NcclProto::Simple, g);
  CHECK(ag.alg_gbps == Approx(240.0 * 8 / 7));
  CHECK(ag.latency_us == Approx(32.2));
  // Broadcast: n = 8 steps at the tree's NVLink hop for Simple: 8.4 + 8 * 4.0 = 40.4 us, alg =
  // bus. LL inside one node for a non-reduction: 1/3 of the bus, min(87.7, 80) = 80.
  auto bc = nccl_candidate(Collective::Broadcast, NcclAlgo::Ring, NcclProto::Simple, g);
  CHECK(bc.alg_gbps == Approx(240.0));
  CHECK(bc.latency_us == Approx(40.4));
  auto bc_ll = nccl_candidate(Collective::Broadcast, NcclAlgo::Ring, NcclProto::LL, g);
  CHECK(bc_ll.bus_gbps == Approx(80.0));
  CHECK(bc_ll.latency_us == Approx(6.6 + 8 * 0.6));
}

TEST_CASE("NCCL picks the fastest: exact nanoseconds on one DGX-A100 node", "[nccl]") {
  auto g = dgx_a100_node();
  // 1e9 bytes: Ring Simple 56000 + ceil(1e9 / 137.142857) = 56000 + 7291667 = 7347667 ns;
  // Ring LL128 40600 + ceil(1e9 / 126.171429) = 7966325; Tree Simple (no correction from 512 MB:
  // log2(1e9 / 64) = 23) 64400 + ceil(1e9 / 110.4) = 9122372. Ring Simple wins.
  auto big = nccl_collective(Collective::AllReduce, 1e9, g);
  CHECK(big.algo == NcclAlgo::Ring);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 7347667);
  // 1000 bytes: Ring LL 15000 + ceil(1000 / 34.285714) = 15000 + 30 = 15030 ns; Tree LL
  // (bus min(220.8 / 3.8, 87.7) = 58.105, alg 29.053, correction 1.0 at log2(1000/64) = 3)
  // 15200 + 35 = 15235 ns.
  auto small = nccl_collective(Collective::AllReduce, 1000, g);
  CHECK(small.algo == NcclAlgo::Ring);
  CHECK(small.proto == NcclProto::LL);
  CHECK(small.time_ns == 15030);
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Tree, NcclProto::LL, 1000, g) == 15235);
  // 1e6 bytes: Ring LL 15000 + ceil(29166.67) = 44167 ns wins over Tree LL128 (alg 171.733 / 2
  // x correction 0.7 at log2(1e6 / 64) = 13: 60.107; 31500 + ceil(16637.2) = 48138 ns) and Ring
  // LL128 (40600 + 7926 = 48526 ns).
  auto mid = nccl_collective(Collective::AllReduce, 1e6, g);
  CHECK(mid.proto == NcclProto::LL);
  CHECK(mid.time_ns == 44167);
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Tree, NcclProto::LL128, 1e6, g) == 48138);
  // 2e6 bytes: Ring LL128 40600 + ceil(15851.5) = 56452 ns against Ring LL 15000 + 58334 = 73334
  // and Ring Simple 56000 + 14584 = 70584.
  auto two = nccl_collective(Collective::AllReduce, 2e6, g);
  CHECK(two.proto == NcclProto::LL128);
  CHECK(two.time_ns == 56452);
  // One rank or no bytes: nothing to do.
  g.ranks = 1;
  CHECK(nccl_collective(Collective::AllReduce, 1e9, g).time_ns == 0);
}

TEST_CASE("NVLS on one DGX-H100 node: exact nanoseconds and where it wins", "[nccl]") {
  auto g = dgx_h100_node();
  // NVLS all-reduce: bus 370.8, alg 370.8 * 5/6 = 309; latency the NVLS NVLink hop, 25 us.
  auto nv = nccl_candidate(Collective::AllReduce, NcclAlgo::Nvls, NcclProto::Simple, g);
  REQUIRE(nv.supported);
  CHECK(nv.alg_gbps == Approx(309.0));
  CHECK(nv.latency_us == Approx(25.0));
  CHECK_FALSE(nccl_candidate(Collective::AllReduce, NcclAlgo::Nvls, NcclProto::LL128, g).supported);
  CHECK_FALSE(nccl_candidate(Collective::Broadcast, NcclAlgo::Nvls, NcclProto::Simple, g).supported);
  // 1e9 bytes: 25000 + ceil(1e9 / 309) = 25000 + 3236246 = 3261246 ns, ahead of Ring Simple
  // (56000 + ceil(1e9 / 211.885714) = 4775526).
  auto big = nccl_collective(Collective::AllReduce, 1e9, g);
  CHECK(big.algo == NcclAlgo::Nvls);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 3261246);
  // Ring LL: bus min(141, 370.8 / 4) = 92.7, alg 52.971; 15 us. It beats NVLS below
  // 10 us / (1/52.971 - 1/309) = 639 kB: at 524288 bytes 15000 + ceil(9897.6) = 24898 ns against
  // NVLS 25000 + 1697 = 26697; at 1e6 bytes NVLS 25000 + 3237 = 28237 against LL 33879.
  auto half = nccl_collective(Collective::AllReduce, 524288, g);
  CHECK(half.algo == NcclAlgo::Ring);
  CHECK(half.proto == NcclProto::LL);
  CHECK(half.time_ns == 24898);
  auto one = nccl_collective(Collective::AllReduce, 1e6, g);
  CHECK(one.algo == NcclAlgo::Nvls);
  CHECK(one.time_ns == 28237);
  // NVLS all-gather: alg = bus 370.8 (no ratio for all-gather), 25 us; the ring (alg
  // 370.8 * 8/7 = 423.771, 32.2 us) wins only from 7.2 us / (1/370.8 - 1/423.771) = 21.4 MB.
  auto ag = nccl_collective(Collective::AllGather, 16e6, g);
  CHECK(ag.algo == NcclAlgo::Nvls);
  CHECK(ag.time_ns == 25000 + 43150);  // ceil(16e6 / 370.8) = 43150
  CHECK(nccl_collective(Collective::AllGather, 64e6, g).algo == NcclAlgo::Ring);
}

TEST_CASE("NVLSTree across two DGX-H100 nodes: exact nanoseconds", "[nccl]") {
  auto g = two_dgx_h100_nodes();
  CHECK_FALSE(nccl_candidate(Collective::AllReduce, NcclAlgo::Nvls, NcclProto::Simple, g).supported);
  // NVLSTree: bus min(370.8, 384) = 370.8, alg 309; latency 25 + 2 * log2(2) * 14 = 53 us.
  auto nt = nccl_candidate(Collective::AllReduce, NcclAlgo::NvlsTree, NcclProto::Simple, g);
  REQUIRE(nt.supported);
  CHECK(nt.alg_gbps == Approx(309.0));
  CHECK(nt.latency_us == Approx(53.0));
  // 1e9 bytes: 53000 + 3236246 = 3289246 ns. Ring Simple: alg 370.8 * 16/30 = 197.76, latency
  // (8.4 + 28 * 3.4 + 2 * 14) * 1.4 (ring plateau) = 184.24 us: 184240 + ceil(5056634.3) = 5240875.
  auto big = nccl_collective(Collective::AllReduce, 1e9, g);
  CHECK(big.algo == NcclAlgo::NvlsTree);
  CHECK(big.time_ns == 3289246);
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Ring, NcclProto::Simple, 1e9, g) == 5240875);
}

TEST_CASE("NCCL across two DGX-A100 nodes with 4 NICs: ring plateau and tree", "[nccl]") {
  auto g = two_dgx_a100_four_nics();
  // Ring Simple: bus min(240, 96) = 96, alg 96 * 16/30 = 51.2; latency 8.4 + 28 * 3.4 + 2 * 14
  // = 131.6 us, x 1.4 for the ring plateau = 184.24 us. 1e9 bytes: 184240 + 19531250 = 19715490.
  auto big = nccl_collective(Collective::AllReduce, 1e9, g);
  CHECK(big.algo == NcclAlgo::Ring);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 19715490);
  // Tree Simple: bus min(96 * 0.92, 4 * 23.6) = 88.32, alg 44.16; latency 8.4 + 2 * (7 * 4 + 1 * 14)
  // = 92.4 us. 1e9 bytes (no correction): 92400 + ceil(22644927.5) = 22737328.
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Tree, NcclProto::Simple, 1e9, g) == 22737328);
  // Ring LL128 is held by the per-channel cap: min(96 * 0.92, 4 channels * 20) = 80.
  CHECK(nccl_candidate(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL128, g).bus_gbps == Approx(80.0));
}

TEST_CASE("NCCL across 16 single-GPU nodes: tree, ring and PAT", "[nccl]") {
  auto g = sixteen_single_gpu_nodes();
  // Ring Simple all-reduce: bus 12, alg 12 * 16 / 30 = 6.4; all 30 steps inter-node at 14 us:
  // (8.4 + 30 * 14) * 1.4 = 599.76 us. 1e8 bytes: 599760 + 15625000 = 16224760 ns.
  auto big = nccl_collective(Collective::AllReduce, 1e8, g);
  CHECK(big.algo == NcclAlgo::Ring);
  CHECK(big.proto == NcclProto::Simple);
  CHECK(big.time_ns == 16224760);
  // 65536 bytes: Tree LL128: bus 12 * 0.92 * 120/128 = 10.35, alg 5.175 (correction 1.0 at
  // log2(65536 / 64) = 10); latency 14 + 2 * 4 * 8.5 = 82 us: 82000 + ceil(12663.8) = 94664 ns.
  // Tree LL: bus 11.04 / 3.8 = 2.9053, alg 1.45263 x 0.6 = 0.87158; 46.8 us: 46800 + 75193 =
  // 121993. Ring LL: bus 12 / 4 = 3, alg 1.6; 6.6 + 30 * 5.0 (one GPU per node: the tree's network
  // latency) = 156.6 us: 156600 + 40960 = 197560.
  auto small = nccl_collective(Collective::AllReduce, 65536, g);
  CHECK(small.algo == NcclAlgo::Tree);
  CHECK(small.proto == NcclProto::LL128);
  CHECK(small.time_ns == 94664);
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Tree, NcclProto::LL, 65536, g) == 121993);
  CHECK(nccl_candidate_ns(Collective::AllReduce, NcclAlgo::Ring, NcclProto::LL, 65536, g) == 197560);
  // PAT all-gather: bus = alg = 12 * 0.75 = 9; latency 8 + log2(16) * 14 / 3.5 + 16 * 2.8 = 68.8 us.
  // 1e6 bytes: 68800 + ceil(111111.1) = 179912 ns, ahead of Ring Simple (alg 12.8, 8.4 + 15 * 14 =
  // 218.4 us: 218400 + 78125 = 296525). 1e8 bytes: the ring (8030900) beats PAT (11179912).
  auto pat = nccl_collective(Collective::AllGather, 1e6, g);
  CHECK(pat.algo == NcclAlgo::Pat);
  CHECK(pat.proto == NcclProto::Simple);
  CHECK(pat.time_ns == 179912);
  auto ring = nccl_collective(Collective::AllGather, 1e8, g);
  CHECK(ring.algo == NcclAlgo::Ring);
  CHECK(ring.time_ns == 8030900);
  CHECK(nccl_candidate_ns(Collective::ReduceScatter, NcclAlgo::Pat, NcclProto::Simple, 1e8, g) == 11179912);
}

TEST_CASE("nccl-tests bus bandwidth conversion", "[nccl]") {
  // all-reduce: busbw = algbw * 2(n-1)/n.
  CHECK(nccl_tests_bus_gbps(Collective::AllReduce, 8e9, 1'000'000'000, 8) == Approx(8.0 * 14 / 8));
  CHECK(nccl_tests_bus_gbps(Collective::AllGather, 8e9, 1'000'000'000, 8) == Approx(8.0 * 7 / 8));
  CHECK(nccl_tests_bus_gbps(Collective::Broadcast, 8e9, 1'000'000'000, 8) == Approx(8.0));
}

TEST_CASE("NVLS is chosen on H100 NVSwitch presets at large sizes, never on A100 or PCIe",
          "[nccl][validate]") {
  auto uses_nvls = [](const ValidationRow& r) {
    return r.estimate.algo == NcclAlgo::Nvls || r.estimate.algo == NcclAlgo::NvlsTree;
  };
  for (const ValidationRow& r : validation_rows("dgx-h100", 1, std::nullopt)) {
    if (r.collective == Collective::AllReduce && r.size_mib >= 64) CHECK(r.estimate.algo == NcclAlgo::Nvls);
    if (r.collective == Collective::Broadcast) CHECK_FALSE(uses_nvls(r));
  }
  for (const ValidationRow& r : validation_rows("dgx-h100", 2, std::nullopt)) {
    if (r.collective == Collective::AllReduce && r.size_mib >= 64)
      CHECK(r.estimate.algo == NcclAlgo::NvlsTree);
  }
  for (int nodes : {1, 2}) {
    for (const ValidationRow& r : validation_rows("dgx-a100", nodes, std::nullopt)) CHECK_FALSE(uses_nvls(r));
  }
  for (const ValidationRow& r : validation_rows("swiftmoe-cloud", 16, std::nullopt))
    CHECK_FALSE(uses_nvls(r));
}

TEST_CASE("validation: every published figure at >= 64 MB within its stated tolerance", "[nccl][validate]") {
  int compared = 0, misses = 0;
  for (auto [nodes, nics] : {std::pair{1, std::optional<int>{}}, std::pair{2, std::optional<int>{4}}}) {
    for (const ValidationRow& r : validation_rows("dgx-a100", nodes, nics)) {
      if (!r.published) continue;
      REQUIRE(r.size_mib >= 64);
      ++compared;
      CHECK(std::abs(r.error_pct) <= r.tolerance_pct);
      // The target is 5 %; a looser tolerance is a documented miss (docs/validation.md): the
      // 64 MB one-node row and issue 1048's two-node figure from 256 MB up, nothing else.
      if (r.tolerance_pct > 5.0) {
        ++misses;
        CHECK(((nodes == 1 && r.size_mib == 64) || (nodes == 2 && r.size_mib >= 256)));
      }
    }
  }
  CHECK(compared == 10);
  CHECK(misses == 4);
}

TEST_CASE("group_of: NCCL's group, channels and NVLS from the cluster", "[nccl]") {
  {
    Cluster c(cluster_of("{preset: dgx-a100, nodes: 2, nics_per_node: 4}"));
    AnalyticalNetwork net(c);
    // One node: 12 NVLinks x 20 GB/s, one channel per NVLink; A100 has no NVLS.
    CollectiveGroup one = net.group_of({0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(one.nodes == 1);
    CHECK(one.intra_bus_gbps == Approx(240.0));
    CHECK(one.channels == 12);
    CHECK_FALSE(one.nvls);
    // Both nodes: 4 NICs x 200 Gb/s x 0.96 = 96 GB/s, one channel per NIC (24 < 25 GB/s).
    std::vector<int> all(16);
    for (int i = 0; i < 16; ++i) all[static_cast<std::size_t>(i)] = i;
    CollectiveGroup two = net.group_of(all);
    CHECK(two.nodes == 2);
    CHECK(two.ranks_per_node == 8);
    CHECK(two.inter_bus_gbps == Approx(96.0));
    CHECK(two.channels == 4);
    CHECK(two.arch == GpuArch::Ampere);
  }
  {
    Cluster c(cluster_of("{preset: dgx-h100, nodes: 2}"));
    AnalyticalNetwork net(c);
    std::vector<int> all(16);
    for (int i = 0; i < 16; ++i) all[static_cast<std::size_t>(i)] = i;
    // 8 NDR NICs x 50 GB/s x 0.96 = 384 GB/s; 48 GB/s per NIC >= 25: two channels each.
    CollectiveGroup two = net.group_of(all);
    CHECK(two.intra_bus_gbps == Approx(18 * 20.6));
    CHECK(two.inter_bus_gbps == Approx(384.0));
    CHECK(two.channels == 16);
    CHECK(two.nvls);
    // One GPU on each node: no NVLink in the group, so no NVLS; one NIC, two channels.
    CollectiveGroup pair = net.group_of({0, 8});
    CHECK(pair.ranks_per_node == 1);
    CHECK_FALSE(pair.nvls);
    CHECK(pair.inter_bus_gbps == Approx(48.0));
    CHECK(pair.channels == 2);
  }
  {
    Cluster c(cluster_of("{preset: swiftmoe-cloud, nodes: 4}"));
    AnalyticalNetwork net(c);
    // One 100 Gb/s NIC per node: 12 GB/s, one channel, PCIe, no NVLS.
    CollectiveGroup g = net.group_of({0, 1, 2, 3});
    CHECK(g.intra_hw == IntraHw::PCI);
    CHECK(g.inter_bus_gbps == Approx(12.0));
    CHECK(g.channels == 1);
    CHECK_FALSE(g.nvls);
  }
}

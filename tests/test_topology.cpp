// Topologies from YAML: the rail-optimised fat tree (oversubscription, ECMP), explicit graphs,
// per-link bandwidth factors, and bad input. Times are worked out by hand in the comments.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "sim/flow_network.hpp"
#include "tests/network_fixture.hpp"

using namespace moesim;
using Catch::Matchers::Contains;

namespace {

const std::string kOrigin = "topo.yaml";
const std::string kRest =
    "model: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 16}\npolicies: [static]\n";

// The scenario text with `cluster` (a YAML flow mapping or block) and an optional network section.
std::string scenario(const std::string& cluster, const std::string& network = "") {
  return "cluster: " + cluster + "\n" + (network.empty() ? "" : "network: " + network + "\n") + kRest;
}

// A whole scenario, or only its cluster mapping when `text` starts with '{'.
ClusterSpec load(const std::string& text) {
  return load_scenario_text(text.front() == '{' ? scenario(text) : text, kOrigin, {}, std::nullopt).cluster;
}

// "topo.yaml:LINE:COL" (1-based) of the first occurrence of `needle` in `text`.
std::string pos(const std::string& text, const std::string& needle) {
  const std::string at = test::text_position(text, needle, kOrigin);
  REQUIRE(!at.empty());
  return at;
}

std::string error_of(const std::string& text) {
  try {
    (void)load(text);
  } catch (const InputError& e) {
    return e.what();
  }
  FAIL("no InputError for:\n" << text);
  return "";
}

using test::World;

// swiftmoe-cloud: one GPU and one 100 Gb/s NIC per node: 12.5 x 0.96 = 12 GB/s per GPU.
// A fat tree over it, two nodes per leaf (one rail): a leaf's downlinks 2 x 12 = 24 GB/s, its
// uplinks 24 / oversubscription, split over the spines.
std::string fat_tree(int nodes, int spines, double oversub, int leaf_ns = 0, int spine_ns = 0) {
  return fmt::format(
      "{{preset: swiftmoe-cloud, nodes: {}, fabric: {{kind: fat_tree, nodes_per_leaf: 2, spines: {}, "
      "oversubscription: {}, leaf_latency_ns: {}, spine_latency_ns: {}}}}}",
      nodes, spines, oversub, leaf_ns, spine_ns);
}

constexpr double kMB = 1e6;
// NCCL point-to-point latency, Simple protocol: base 8.4 us + network hop 14 us, or + NVLink 3.4 us.
constexpr TimeNs kNetLatency = 22'400;
constexpr TimeNs kNvlinkLatency = 11'800;
// 120 MB at 12 GB/s.
constexpr TimeNs k120At12 = 10'000'000;

std::vector<double> random_matrix(int g, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 50.0);
  std::vector<double> m(static_cast<std::size_t>(g) * static_cast<std::size_t>(g));
  for (double& x : m) x = std::floor(u(rng)) * 1e5;
  return m;
}

}  // namespace

TEST_CASE("fat tree: the graph a preset with a fat-tree fabric builds", "[topology]") {
  World w(load(fat_tree(5, 3, 2.0)));
  const auto& names = w.cluster.vertex_names();
  // 5 nodes, 2 per leaf: 3 rail groups of one rail; 3 spines; no single fabric switch.
  for (const char* n : {"leaf0.0", "leaf1.0", "leaf2.0", "spine0", "spine2", "gpu4", "host4"})
    CHECK(names.count(n));
  CHECK_FALSE(names.count("fabric"));
  CHECK_FALSE(names.count("leaf3.0"));
  REQUIRE(w.cluster.num_bundles() == 3);
  // Each uplink 24 / (2 x 3) = 4 GB/s; three of them: 12 GB/s per leaf, half the downlinks.
  CHECK(w.cluster.bundle_gbps(0) == Approx(12.0));
  CHECK(w.cluster.bundle_binding(0));
  // The last leaf has one node (12 GB/s beneath it): its 12 GB/s of uplinks cannot bind.
  CHECK_FALSE(w.cluster.bundle_binding(2));
  const Route& same = w.cluster.route(0, 1);
  CHECK(same.paths == 1);
  CHECK(same.hops == 2);
  CHECK(same.up_bundle == -1);
  const Route& across = w.cluster.route(0, 2);
  CHECK(across.paths == 3);  // one per spine
  CHECK(across.hops == 4);
  CHECK(across.up_bundle == 0);
  CHECK(across.down_bundle == 1);
  CHECK(across.src_port == Port::Nic);
  CHECK(across.dst_port == Port::Nic);
  // Paths 0..2 go through spines 0..2: they share only the GPU links.
  auto p0 = w.flow.route_links(0, 2, 0), p1 = w.flow.route_links(0, 2, 1);
  CHECK(p0[0] == p1[0]);
  CHECK(p0[1] != p1[1]);
  CHECK(p0[3] == p1[3]);
}

TEST_CASE("fat tree: rails of a DGX node reach their own leaves", "[topology]") {
  // dgx-h100: 8 GPUs and 8 NICs per node: GPU l of every node sits on rail l.
  World w(
      load("{preset: dgx-h100, nodes: 4, fabric: {kind: fat_tree, nodes_per_leaf: 2, spines: 4, "
           "oversubscription: 1, leaf_latency_ns: 0, spine_latency_ns: 0}}"));
  // Same rail, same group: GPU 3 of node 0 and GPU 3 of node 1 meet at leaf0.3.
  CHECK(w.cluster.route(3, 11).hops == 2);
  CHECK(w.cluster.route(3, 11).paths == 1);
  // Another rail: through a spine (4 paths), not through another GPU of the node.
  CHECK(w.cluster.route(3, 12).hops == 4);
  CHECK(w.cluster.route(3, 12).paths == 4);
  // Inside the node: NVSwitch.
  CHECK(w.cluster.route(3, 4).src_port == Port::Intra);
}

TEST_CASE("fat tree: oversubscription 1 without contention equals the single fabric", "[topology]") {
  SECTION("one GPU per node") {
    World ft(load(fat_tree(4, 2, 1.0)));
    World single(load("{preset: swiftmoe-cloud, nodes: 4}"));
    // A permutation, two messages between leaves: 120 MB at 12 GB/s = 10 ms + 22.4 us.
    auto m = ft.empty();
    ft.at(m, 0, 2) = ft.at(m, 1, 3) = ft.at(m, 2, 1) = ft.at(m, 3, 0) = 120 * kMB;
    for (World* w : {&ft, &single}) {
      CHECK(w->analytical.all_to_all_v(m) == k120At12 + kNetLatency);
      CHECK(w->flow.all_to_all_v(m) == k120At12 + kNetLatency);
    }
    // The analytical model equals the single fabric on any matrix (uplinks never bind at 1:1).
    for (std::uint32_t seed = 1; seed <= 5; ++seed) {
      auto r = random_matrix(4, seed);
      CHECK(ft.analytical.all_to_all_v(r) == single.analytical.all_to_all_v(r));
    }
  }
  SECTION("DGX-H100 nodes, traffic across rails and leaves") {
    const std::string tree =
        "{preset: dgx-h100, nodes: 4, fabric: {kind: fat_tree, nodes_per_leaf: 2, spines: 4, "
        "oversubscription: 1, "
        "leaf_latency_ns: 0, spine_latency_ns: 0}}";
    World ft(load(tree));
    World single(load("{preset: dgx-h100, nodes: 4}"));
    // GPU l of node 0 sends 96 MB to GPU l + 1 of node 2: another rail and another leaf. Per GPU
    // NIC 8 x 50 x 0.96 / 8 = 48 GB/s; each message split over 4 spines at 12 GB/s per part
    // (uplinks 2 x 48 / 4 = 24 GB/s each, one message per leaf): 96e6 / 48 = 2 ms + 22.4 us.
    auto m = ft.empty();
    for (int l = 0; l < 8; ++l) ft.at(m, l, 16 + (l + 1) % 8) = 96 * kMB;
    for (World* w : {&ft, &single}) {
      CHECK(w->analytical.all_to_all_v(m) == 2'000'000 + kNetLatency);
      CHECK(w->flow.all_to_all_v(m) == 2'000'000 + kNetLatency);
    }
    for (std::uint32_t seed = 1; seed <= 3; ++seed) {
      auto r = random_matrix(32, seed);
      CHECK(ft.analytical.all_to_all_v(r) == single.analytical.all_to_all_v(r));
      std::vector<Transfer> ts{{{false, 0}, {false, 17}, 50 * kMB}, {{false, 5}, {true, 0}, 10 * kMB}};
      CHECK(ft.analytical.transfers(ts) == single.analytical.transfers(ts));
      CHECK(ft.flow.transfers(ts) == single.flow.transfers(ts));
    }
  }
  SECTION("switch latencies add to routes between leaves only") {
    World ft(load(fat_tree(4, 2, 1.0, 300, 500)));
    auto m = ft.empty();
    ft.at(m, 0, 1) = 120 * kMB;  // same leaf: unchanged
    CHECK(ft.analytical.all_to_all_v(m) == k120At12 + kNetLatency);
    CHECK(ft.flow.all_to_all_v(m) == k120At12 + kNetLatency);
    auto across = ft.empty();
    ft.at(across, 0, 2) = 120 * kMB;  // another leaf: + one leaf (300) and one spine (500) traversal
    CHECK(ft.cluster.route(0, 2).fabric_latency_ns == 800.0);
    CHECK(ft.analytical.all_to_all_v(across) == k120At12 + kNetLatency + 800);
    CHECK(ft.flow.all_to_all_v(across) == k120At12 + kNetLatency + 800);
  }
}

TEST_CASE("fat tree: oversubscribed uplinks are shared links", "[topology]") {
  // 4 nodes, 2 per leaf, one spine, 2:1: each leaf's uplink is 24 / 2 = 12 GB/s.
  World w(load(fat_tree(4, 1, 2.0)));
  SECTION("between leaves: two 120 MB messages share leaf 0's 12 GB/s uplink") {
    auto m = w.empty();
    w.at(m, 0, 2) = w.at(m, 1, 3) = 120 * kMB;
    // 6 GB/s each: 120e6 / 6 = 20 ms + 22.4 us. The analytical model charges the bundle as one
    // port: 240e6 / 12 = 20 ms.
    CHECK(w.flow.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    CHECK(w.analytical.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    const auto t =
        w.flow.transfers({{{false, 0}, {false, 2}, 120 * kMB}, {{false, 1}, {false, 3}, 120 * kMB}});
    CHECK(t == std::vector<TimeNs>(4, 2 * k120At12 + kNetLatency));
  }
  SECTION("one message alone gets the whole uplink: its NIC's 12 GB/s") {
    auto m = w.empty();
    w.at(m, 0, 2) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == k120At12 + kNetLatency);
    CHECK(w.analytical.all_to_all_v(m) == k120At12 + kNetLatency);
  }
  SECTION("within one leaf: unchanged") {
    auto m = w.empty();
    w.at(m, 0, 1) = w.at(m, 1, 0) = w.at(m, 2, 3) = w.at(m, 3, 2) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == k120At12 + kNetLatency);
    CHECK(w.analytical.all_to_all_v(m) == k120At12 + kNetLatency);
  }
  SECTION("flow mode is never faster than the single fabric's per-port bound") {
    World single(load("{preset: swiftmoe-cloud, nodes: 4}"));
    for (std::uint32_t seed = 1; seed <= 5; ++seed) {
      auto r = random_matrix(4, seed);
      CHECK(w.flow.all_to_all_v(r) >= single.analytical.all_to_all_v(r));
      CHECK(w.flow.all_to_all_v(r) >= w.analytical.all_to_all_v(r));  // the bundles are cuts too
    }
  }
}

TEST_CASE("fat tree: ECMP spreads messages over the spines", "[topology][ecmp]") {
  SECTION("two spines, 1:1: two messages that would share one spine's 12 GB/s each get full rate") {
    // Uplinks 24 / 2 = 12 GB/s per spine. On one spine both would get 6 GB/s (20 ms); split in
    // halves over both spines each half gets 6 GB/s, each message 12 GB/s: 10 ms + 22.4 us.
    World w(load(fat_tree(4, 2, 1.0)));
    REQUIRE(w.cluster.route(0, 2).paths == 2);
    auto m = w.empty();
    w.at(m, 0, 2) = w.at(m, 1, 3) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == k120At12 + kNetLatency);
    // The spines are interchangeable: each message is one flow over leaf 0's uplinks together.
    CHECK(w.flow.last_run().flows == 2);
    // Deterministic.
    CHECK(w.flow.all_to_all_v(m) == k120At12 + kNetLatency);
  }
  SECTION("two spines, one uplink at half speed: the parts of a message go at different rates") {
    // Leaf 0's uplinks: to spine 0 12 x 0.5 = 6 GB/s, to spine 1 12 GB/s. Each message is split
    // into two 60 MB parts. Spine 0: two parts share 6 GB/s, 3 each. Spine 1: two parts, each
    // limited by its NIC's remaining 12 - 3 = 9 and the uplink's 12 / 2 = 6: 6 each, done at
    // 60e6 / 6 = 10 ms. Then the spine-0 parts keep 3 GB/s (the uplink is the limit): 30 MB left,
    // 10 ms more: 20 ms. The analytical bundle (6 + 12 = 18 GB/s): 240e6 / 18 = 13.33 ms.
    World w(load(scenario(fat_tree(4, 2, 1.0), "{link_factors: [{a: leaf0.0, b: spine0, factor: 0.5}]}")));
    auto m = w.empty();
    w.at(m, 0, 2) = w.at(m, 1, 3) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    CHECK(w.flow.last_run().flows == 4);  // two messages x two paths
    CHECK(w.analytical.all_to_all_v(m) == 13'333'334 + kNetLatency);
  }
  SECTION("one flow over a leaf's uplinks together is the split into parts, on random matrices") {
    // 6 nodes (3 leaves), 4 spines, 2:1. A factor of 1 - 1e-9 on one uplink breaks the symmetry,
    // so that network splits every message into 4 parts; the exact fluid models (no end window)
    // then agree to rounding.
    World sym(load(fat_tree(6, 4, 2.0)));
    World split(load(
        scenario(fat_tree(6, 4, 2.0), "{link_factors: [{a: leaf2.0, b: spine3, factor: 0.999999999}]}")));
    const FlowNetwork exact_sym(sym.cluster, 0.0), exact_split(split.cluster, 0.0);
    for (std::uint32_t seed = 1; seed <= 5; ++seed) {
      auto r = random_matrix(6, seed);
      std::size_t inside = 0, across = 0;  // messages; nodes 2 i and 2 i + 1 share leaf i
      for (int x = 0; x < 6; ++x) {
        for (int y = 0; y < 6; ++y) {
          if (x == y || sym.at(r, x, y) <= 0.0) continue;
          (x / 2 == y / 2 ? inside : across) += 1;
        }
      }
      const auto a = static_cast<double>(exact_sym.all_to_all_v(r));
      CHECK(exact_sym.last_run().flows == inside + across);
      const auto b = static_cast<double>(exact_split.all_to_all_v(r));
      CHECK(exact_split.last_run().flows == inside + 4 * across);
      CHECK(std::abs(a - b) <= 1e-6 * a);
    }
  }
  SECTION("two spines, 2:1: the spread still meets the bundle's 12 GB/s") {
    // Uplinks 24 / (2 x 2) = 6 GB/s per spine, two halves on each: 3 GB/s per half, 6 per
    // message: 20 ms; the analytical bundle: 240e6 / 12 = 20 ms.
    World w(load(fat_tree(4, 2, 2.0)));
    auto m = w.empty();
    w.at(m, 0, 2) = w.at(m, 1, 3) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    CHECK(w.analytical.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
  }
}

TEST_CASE("link factors scale a link in both network models", "[topology][link_factors]") {
  SECTION("a GPU's NIC at half speed") {
    // GPU 1's NIC 12 x 0.5 = 6 GB/s: 120e6 / 6 = 20 ms + 22.4 us in both models.
    World w(load(scenario("{preset: swiftmoe-cloud, nodes: 4}",
                          "{link_factors: [{gpu: 1, port: nic, factor: 0.5}]}")));
    CHECK(w.cluster.port_gbps(1, Port::Nic) == Approx(6.0));
    CHECK(w.cluster.port_gbps(0, Port::Nic) == Approx(12.0));
    auto m = w.empty();
    w.at(m, 0, 1) = 120 * kMB;
    CHECK(w.analytical.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    CHECK(w.flow.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    // Elsewhere nothing changes.
    auto m2 = w.empty();
    w.at(m2, 2, 3) = 120 * kMB;
    CHECK(w.analytical.all_to_all_v(m2) == k120At12 + kNetLatency);
  }
  SECTION("the same link named by its two vertices") {
    World w(load(scenario("{preset: swiftmoe-cloud, nodes: 4}",
                          "{link_factors: [{a: gpu1, b: fabric, factor: 0.5}]}")));
    CHECK(w.cluster.port_gbps(1, Port::Nic) == Approx(6.0));
  }
  SECTION("an NVLink port at a quarter") {
    // dgx-a100: NVLink 12 x 20 = 240 GB/s; x 0.25 = 60 GB/s: 120e6 / 60 = 2 ms + 11.8 us.
    World w(load(scenario("{preset: dgx-a100}", "{link_factors: [{gpu: 0, port: intra, factor: 0.25}]}")));
    // The receiver's port runs at 240 GB/s: the analytical model gives it 120e6 / 240 = 0.5 ms;
    // in flow mode it waits for the flow, 2 ms.
    const std::vector<Transfer> ts{{{false, 0}, {false, 3}, 120 * kMB}};
    const TimeNs slow = 2'000'000 + kNvlinkLatency;
    CHECK(w.analytical.transfers(ts) ==
          std::vector<TimeNs>{slow, 0, 0, 500'000 + kNvlinkLatency, 0, 0, 0, 0});
    CHECK(w.flow.transfers(ts) == std::vector<TimeNs>{slow, 0, 0, slow, 0, 0, 0, 0});
  }
  SECTION("a fat-tree uplink at half speed binds in both models") {
    // One spine, 1:1: leaf 0's uplink 24 GB/s, x 0.5 = 12 GB/s shared by two 120 MB messages:
    // 20 ms + 22.4 us (the analytical bundle: 240e6 / 12). Without the factor: 10 ms.
    const std::string c = fat_tree(4, 1, 1.0);
    World plain(load(scenario(c)));
    World slow(load(scenario(c, "{link_factors: [{a: leaf0.0, b: spine0, factor: 0.5}]}")));
    CHECK_FALSE(plain.cluster.bundle_binding(0));
    CHECK(slow.cluster.bundle_binding(0));
    auto m = plain.empty();
    plain.at(m, 0, 2) = plain.at(m, 1, 3) = 120 * kMB;
    CHECK(plain.flow.all_to_all_v(m) == k120At12 + kNetLatency);
    CHECK(plain.analytical.all_to_all_v(m) == k120At12 + kNetLatency);
    CHECK(slow.flow.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
    CHECK(slow.analytical.all_to_all_v(m) == 2 * k120At12 + kNetLatency);
  }
  SECTION("factors on one link multiply") {
    World w(load(
        scenario("{preset: swiftmoe-cloud, nodes: 2}",
                 "{link_factors: [{gpu: 0, port: host, factor: 0.5}, {a: gpu0, b: host0, factor: 0.5}]}")));
    CHECK(w.cluster.port_gbps(0, Port::Host) == Approx(8.0));  // 32 x 0.25
  }
}

namespace {
// Two nodes of two GPUs: an NVSwitch-like node switch (240 GB/s per GPU), a host per node
// (32 GB/s PCIe), ONE 24 GB/s NIC per node shared by its two GPUs (GPU-NIC links 64 GB/s), one
// switch. Node 1's GPUs are listed first: ids follow the node, then the order within it.
const std::string kGraph = R"(cluster:
  preset: dgx-a100
  name: two-by-two
  topology:
    vertices:
      - {name: b0, kind: gpu, node: 1}
      - {name: b1, kind: gpu, node: 1}
      - {name: a0, kind: gpu, node: 0}
      - {name: a1, kind: gpu, node: 0}
      - {name: ha, kind: host, node: 0}
      - {name: hb, kind: host, node: 1}
      - {name: swa, kind: node_switch}
      - {name: swb, kind: node_switch}
      - {name: nica, kind: nic}
      - {name: nicb, kind: nic}
      - {name: core, kind: switch}
    links:
      - {a: a0, b: swa, gbps: 240, latency_ns: 600}
      - {a: a1, b: swa, gbps: 240, latency_ns: 600}
      - {a: b0, b: swb, gbps: 240, latency_ns: 600}
      - {a: b1, b: swb, gbps: 240, latency_ns: 600}
      - {a: a0, b: ha, gbps: 32, latency_ns: 2000}
      - {a: a1, b: ha, gbps: 32, latency_ns: 2000}
      - {a: b0, b: hb, gbps: 32, latency_ns: 2000}
      - {a: b1, b: hb, gbps: 32, latency_ns: 2000}
      - {a: a0, b: nica, gbps: 64, latency_ns: 1000}
      - {a: a1, b: nica, gbps: 64, latency_ns: 1000}
      - {a: b0, b: nicb, gbps: 64, latency_ns: 1000}
      - {a: b1, b: nicb, gbps: 64, latency_ns: 1000}
      - {a: nica, b: core, gbps: 24, latency_ns: 2500}
      - {a: nicb, b: core, gbps: 24, latency_ns: 2500}
)";
}  // namespace

TEST_CASE("explicit graph: GPUs, hosts, NICs and switches from the scenario", "[topology][graph]") {
  const ClusterSpec s = load(kGraph + kRest);
  CHECK(s.nodes == 2);
  CHECK(s.gpus_per_node == 2);
  World w(s);
  CHECK(w.gpus() == 4);
  CHECK(w.cluster.node_of(2) == 1);
  // a0 is GPU 0, b0 GPU 2.
  CHECK(w.cluster.graph()[boost::vertex(2, w.cluster.graph())].name == "a0");  // listed third
  CHECK(w.cluster.vertex_names().at("a0") == boost::vertex(2, w.cluster.graph()));
  CHECK(w.cluster.graph()[w.cluster.vertex_names().at("b0")].index == 2);
  CHECK(w.cluster.port_gbps(0, Port::Nic) == 64.0);
  CHECK(w.cluster.port_gbps(0, Port::Intra) == 240.0);
  CHECK(w.cluster.host_link(3) >= 0);
  const Route& r = w.cluster.route(0, 2);
  CHECK(r.hops == 4);  // a0 - nica - core - nicb - b0
  CHECK(r.src_port == Port::Nic);
  CHECK(r.fabric_latency_ns == 5000.0);  // the two NIC-to-switch links
  CHECK(w.cluster.route(0, 1).src_port == Port::Intra);

  SECTION("the shared NIC is a shared link in flow mode only") {
    // a0 -> b0 and a1 -> b1, 120 MB each, through nica's 24 GB/s: 12 GB/s each, 10 ms in flow
    // mode; the analytical model sees each GPU's own 64 GB/s NIC link: 1.875 ms. Both add
    // 22.4 us and the 5 us of switch-to-switch links.
    auto m = w.empty();
    w.at(m, 0, 2) = w.at(m, 1, 3) = 120 * kMB;
    CHECK(w.flow.all_to_all_v(m) == k120At12 + kNetLatency + 5000);
    CHECK(w.analytical.all_to_all_v(m) == 1'875'000 + kNetLatency + 5000);
  }
  SECTION("host copies use the GPU's link to its host") {
    // 64 MB to the host at 32 GB/s: 2 ms, no point-to-point latency.
    const std::vector<Transfer> ts{{{false, 3}, {true, 1}, 64 * kMB}};
    CHECK(w.flow.transfers(ts) == std::vector<TimeNs>{0, 0, 0, 2'000'000});
    CHECK(w.analytical.transfers(ts) == std::vector<TimeNs>{0, 0, 0, 2'000'000});
  }
  SECTION("link factors name the graph's vertices") {
    World slow(load(kGraph + "network: {link_factors: [{a: nica, b: core, factor: 0.5}]}\n" + kRest));
    auto m = slow.empty();
    slow.at(m, 0, 2) = 120 * kMB;  // alone on nica's 12 GB/s: 10 ms
    CHECK(slow.flow.all_to_all_v(m) == k120At12 + kNetLatency + 5000);
  }
}

TEST_CASE("explicit graph: the single-fabric cluster written out gives the same times", "[topology][graph]") {
  // swiftmoe-cloud, 2 nodes: GPU - host 32 GB/s (2 us), GPU - fabric 12 GB/s (5 us).
  const std::string text = R"(cluster:
  preset: swiftmoe-cloud
  topology:
    vertices:
      - {name: g0, kind: gpu, node: 0}
      - {name: g1, kind: gpu, node: 1}
      - {name: h0, kind: host, node: 0}
      - {name: h1, kind: host, node: 1}
      - {name: fabric, kind: switch}
    links:
      - {a: g0, b: h0, gbps: 32, latency_ns: 2000}
      - {a: g0, b: fabric, gbps: 12, latency_ns: 5000}
      - {a: g1, b: h1, gbps: 32, latency_ns: 2000}
      - {a: g1, b: fabric, gbps: 12, latency_ns: 5000}
)" + kRest;
  World graph(load(text));
  World preset(load(scenario("{preset: swiftmoe-cloud, nodes: 2}")));
  for (std::uint32_t seed = 1; seed <= 5; ++seed) {
    auto m = random_matrix(2, seed);
    CHECK(graph.analytical.all_to_all_v(m) == preset.analytical.all_to_all_v(m));
    CHECK(graph.flow.all_to_all_v(m) == preset.flow.all_to_all_v(m));
    const std::vector<Transfer> ts{{{false, 0}, {false, 1}, m[1]}, {{true, 1}, {false, 1}, m[2]}};
    CHECK(graph.analytical.transfers(ts) == preset.analytical.transfers(ts));
    CHECK(graph.flow.transfers(ts) == preset.flow.transfers(ts));
  }
}

TEST_CASE("topology: bad input names the element and its position", "[topology][errors]") {
  SECTION("an unknown cluster preset") {
    const std::string t = scenario("{preset: dgx-z100}");
    CHECK_THAT(error_of(t),
               Contains(pos(t, "dgx-z100") + ": key 'cluster.preset': unknown preset 'dgx-z100'"));
  }
  SECTION("zero and negative bandwidth") {
    for (const char* bw : {"0", "-5"}) {
      std::string t = kGraph + kRest;
      const std::string from = "{a: nica, b: core, gbps: 24";
      t.replace(t.find(from), from.size(), fmt::format("{{a: nica, b: core, gbps: {}", bw));
      // The position is the value's: after "{a: nica, b: core, gbps: ".
      CHECK_THAT(error_of(t), Contains(pos(t, fmt::format("{}, latency_ns: 2500", bw)) +
                                       ": key 'cluster.topology.links[12].gbps': " + std::string(bw) +
                                       " GB/s: a link's bandwidth must be > 0"));
    }
  }
  SECTION("a link to an unknown vertex") {
    std::string t = kGraph + kRest;
    t.replace(t.find("{a: nicb, b: core"), 17, "{a: nicb, b: kore");
    CHECK_THAT(error_of(t),
               Contains(pos(t, "kore") + ": key 'cluster.topology.links[13].b': unknown vertex 'kore'"));
  }
  SECTION("a GPU that cannot reach the others") {
    std::string t = kGraph + kRest;
    t.replace(t.find("      - {a: nicb, b: core"),
              std::string("      - {a: nicb, b: core, gbps: 24, latency_ns: 2500}\n").size(), "");
    // b0 (GPU 2) is named with its declaration's position.
    const std::string msg = error_of(t);
    CHECK_THAT(msg, Contains(pos(t, "{name: b0") + ": key 'cluster.topology.vertices[0]'"));
    CHECK_THAT(msg, Contains("GPU 2 (vertex 'b0'"));
    CHECK_THAT(msg, Contains("cannot be reached from GPU 0 (vertex 'a0'"));
  }
  SECTION("a GPU without its host link") {
    std::string t = kGraph + kRest;
    t.replace(t.find("      - {a: b1, b: hb"),
              std::string("      - {a: b1, b: hb, gbps: 32, latency_ns: 2000}\n").size(), "");
    CHECK_THAT(error_of(t), Contains(pos(t, "{name: b1") +
                                     ": key 'cluster.topology.vertices[1]': GPU 'b1' has 0 links to a host"));
  }
  SECTION("a duplicate vertex name, a vertex kind, nodes set beside the topology") {
    std::string t = kGraph + kRest;
    t.replace(t.find("{name: hb,"), 10, "{name: ha,");
    CHECK_THAT(error_of(t),
               Contains(pos(t, "ha, kind: host, node: 1") +
                        ": key 'cluster.topology.vertices[5].name': vertex 'ha' is already declared"));
    std::string k = kGraph + kRest;
    k.replace(k.find("kind: switch"), 12, "kind: router");
    CHECK_THAT(error_of(k), Contains(pos(k, "router") +
                                     ": key 'cluster.topology.vertices[10].kind': 'router' is not allowed"));
    std::string n = kGraph + kRest;
    n.replace(n.find("  name: two-by-two"), 18, "  nodes: 2");
    CHECK_THAT(error_of(n), Contains(pos(n, "2\n  topology") +
                                     ": key 'cluster.nodes': cannot be set together with topology:"));
  }
  SECTION("fat tree keys") {
    const std::string missing =
        scenario("{preset: swiftmoe-cloud, nodes: 4, fabric: {kind: fat_tree, spines: 2}}");
    CHECK_THAT(error_of(missing), Contains("key 'cluster.fabric.nodes_per_leaf': is required"));
    const std::string single =
        scenario("{preset: swiftmoe-cloud, nodes: 4, fabric: {kind: single, spines: 2}}");
    CHECK_THAT(error_of(single), Contains(pos(single, "spines") + ": unknown key 'cluster.fabric.spines'"));
    const std::string rails = scenario(
        "{preset: dgx-h100, nodes: 4, nics_per_node: 3, fabric: {kind: fat_tree, nodes_per_leaf: 2, spines: "
        "2, "
        "oversubscription: 2, leaf_latency_ns: 0, spine_latency_ns: 0}}");
    CHECK_THAT(error_of(rails),
               Contains("key 'cluster.fabric': is a rail-optimised fat tree: nics_per_node (3) must divide"));
    const std::string under = scenario(fat_tree(4, 2, 0.5));
    CHECK_THAT(error_of(under),
               Contains(pos(under, "0.5") + ": key 'cluster.fabric.oversubscription': 0.5 is out of range"));
  }
  SECTION("link factors") {
    const std::string c = "{preset: swiftmoe-cloud, nodes: 4}";
    const std::string unknown = scenario(c, "{link_factors: [{a: gpu1, b: leaf0.0, factor: 0.5}]}");
    CHECK_THAT(error_of(unknown), Contains(pos(unknown, "gpu1") +
                                           ": key 'network.link_factors[0].a': no vertex named 'leaf0.0'"));
    const std::string nolink = scenario(c, "{link_factors: [{a: gpu1, b: gpu2, factor: 0.5}]}");
    CHECK_THAT(error_of(nolink), Contains("no link between 'gpu1' and 'gpu2'"));
    const std::string zero = scenario(c, "{link_factors: [{gpu: 1, port: nic, factor: 0}]}");
    CHECK_THAT(
        error_of(zero),
        Contains(pos(zero, "0}") +
                 ": key 'network.link_factors[0].factor': 0: a bandwidth factor must be in (0, 1000]"));
    const std::string noport =
        scenario("{preset: swiftmoe-cloud, nodes: 1}", "{link_factors: [{gpu: 0, port: nic, factor: 0.5}]}");
    CHECK_THAT(error_of(noport), Contains("GPU 0 has no nic link"));
    const std::string both = scenario(c, "{link_factors: [{gpu: 1, a: gpu1, factor: 0.5}]}");
    CHECK_THAT(error_of(both), Contains("give either gpu: and port:"));
    // Set from the command line: the error names the assignment.
    try {
      (void)load_scenario_text(scenario(c), kOrigin,
                               {"network.link_factors=[{a: gpu0, b: sw2, factor: 0.5}]"}, std::nullopt);
      FAIL("no error");
    } catch (const InputError& e) {
      CHECK_THAT(std::string(e.what()),
                 Contains("--set 'network.link_factors=[{a: gpu0, b: sw2, factor: 0.5}]': key "
                          "'network.link_factors[0].a': no vertex named 'sw2'"));
    }
    const std::string range = scenario(c, "{link_factors: [{gpu: 4, port: nic, factor: 0.5}]}");
    CHECK_THAT(error_of(range),
               Contains(pos(range, "4, port") + ": key 'network.link_factors[0].gpu': 4 is out of range"));
  }
}

TEST_CASE("topology: moesim run exits with status 2 on a bad graph", "[topology][errors][cli]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("moesim_topo_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string t = kGraph + kRest;
  t.replace(t.find("{a: nicb, b: core"), 17, "{a: nicb, b: kore");
  { std::ofstream(dir / "bad.yaml") << t; }
  const std::string cmd = std::string(MOESIM_BINARY) + " run " + (dir / "bad.yaml").string() + " --out " +
                          (dir / "out").string() + " > " + (dir / "log").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 2);
  std::ifstream in(dir / "log");
  std::stringstream log;
  log << in.rdbuf();
  CHECK_THAT(log.str(), Contains("bad.yaml:" + pos(t, "kore").substr(kOrigin.size() + 1) +
                                 ": key 'cluster.topology.links[13].b': unknown vertex 'kore'"));
  CHECK_FALSE(fs::exists(dir / "out" / "summary.json"));
  fs::remove_all(dir);
}

TEST_CASE("fat tree: the dgx-h100-fat-tree preset", "[topology]") {
  World w(load(scenario("{preset: dgx-h100-fat-tree}")));
  CHECK(w.gpus() == 256);
  // 32 nodes, 16 per leaf, 8 rails: 16 leaves; 2:1.
  CHECK(w.cluster.num_bundles() == 16);
  CHECK(w.cluster.bundle_binding(0));
  // 16 nodes x 48 GB/s under a leaf, half of it up: 384 GB/s.
  CHECK(w.cluster.bundle_gbps(0) == Approx(384.0));
  CHECK(w.cluster.route(0, 128).paths == w.cluster.spec().fat_tree.spines);
  // Each key overrides the preset's, from the file or the command line; the summary shows it.
  const Scenario one =
      load_scenario_text(scenario("{preset: dgx-h100-fat-tree}"), kOrigin,
                         {"cluster.fabric.oversubscription=1", "cluster.nodes=4"}, std::nullopt);
  CHECK(one.cluster.fat_tree.oversubscription == 1.0);
  CHECK(one.cluster.fat_tree.spines == 8);
  CHECK(one.cluster.num_gpus() == 32);
  CHECK_FALSE(Cluster(one.cluster).bundle_binding(0));
  const auto j = one.to_json();
  CHECK(j["cluster"]["fabric"]["kind"] == "fat_tree");
  CHECK(j["cluster"]["fabric"]["oversubscription"] == 1.0);
  CHECK(j["cluster"]["fabric"]["nodes_per_leaf"] == 16);
  CHECK(j["network"]["link_factors"].is_array());
  // Back to one switch: kind single drops the fat tree.
  const Scenario flat = load_scenario_text(scenario("{preset: dgx-h100-fat-tree, fabric: {kind: single}}"),
                                           kOrigin, {}, std::nullopt);
  CHECK(flat.cluster.fabric == FabricKind::Single);
  CHECK(Cluster(flat.cluster).vertex_names().count("fabric") == 1);
}

TEST_CASE("fat tree: a whole run in both network models", "[topology][e2e]") {
  // 4 DGX-H100 nodes, 2 per leaf, 2:1 (from the preset), 32 GPUs; GPT-Small-MoE's 16 experts.
  const std::string text =
      "cluster: {preset: dgx-h100-fat-tree, nodes: 4, fabric: {nodes_per_leaf: 2}}\n"
      "model: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 1}\n"
      "run: {max_iterations: 3}\npolicies: [static, symi]\n";
  std::vector<double> mean_ns;
  for (const char* net : {"analytical", "flow", "flow"}) {
    const Scenario s =
        load_scenario_text(text, kOrigin, {fmt::format("network.model={}", net)}, std::nullopt);
    const auto results = run_scenario(s);
    REQUIRE(results.size() == 2);
    CHECK(results[0].iterations_run == 3);
    CHECK(results[0].mean_iteration_ns > 0.0);
    mean_ns.push_back(results[0].mean_iteration_ns);
  }
  CHECK(mean_ns[1] == mean_ns[2]);  // deterministic
}

using test::gpu_range;

TEST_CASE("collectives: an unmodified built shape runs at NCCL's own bandwidth", "[topology][collectives]") {
  // The pace is exactly 1 on every preset as built, for whole clusters and for partial groups
  // (one GPU per node, uneven nodes), so that the cost model's figures are untouched.
  const std::vector<std::string> clusters{
      "{preset: dgx-a100, nodes: 2}", "{preset: dgx-a100, nodes: 2, nics_per_node: 4}",
      "{preset: dgx-h100, nodes: 2}", "{preset: dgx-h100-fat-tree}", "{preset: swiftmoe-cloud, nodes: 16}",
      fat_tree(4, 2, 2.0),
      // Uplinks exactly as wide as the NICs, over 5 spines (shares summed in fifths).
      "{preset: swiftmoe-cloud, nodes: 4, nic_efficiency: 0.92, fabric: {kind: fat_tree, nodes_per_leaf: 1, "
      "spines: 5, oversubscription: 1, leaf_latency_ns: 0, spine_latency_ns: 0}}"};
  for (const std::string& cluster : clusters) {
    CAPTURE(cluster);
    World w(load(scenario(cluster)));
    const int per_node = w.cluster.spec().gpus_per_node;
    const int g = w.gpus();
    std::vector<std::vector<int>> groups{gpu_range(0, g), {0, g - 1}, {0, per_node, 2 * per_node - 1}};
    if (per_node > 2) groups.push_back({0, 1, 2, per_node + 1});
    groups.push_back({g - 1, 0});  // unsorted: taken sorted
    for (const auto& grp : groups) {
      // Inside a node against NCCL's NVLink figure; between nodes against the GPUs' own NIC shares
      // alone (no NCCL figure below them).
      constexpr double kAny = std::numeric_limits<double>::infinity();
      const RingPace p = ring_pace(w.cluster, grp, w.cluster.spec().intra_gbps(), kAny);
      CHECK(p.intra == 1.0);
      CHECK(p.inter == 1.0);
    }
  }
}

TEST_CASE("collectives run at the pace of their ring's slowest link", "[topology][collectives]") {
  SECTION("an NVLink port at half speed") {
    // dgx-a100: the ring through GPU 3 crosses its 120 GB/s link: bus 240 x 0.5 = 120. 1e9 bytes:
    // ring Simple, alg 120 x 8 / 14 = 68.571 GB/s, 56 us + ceil(14583333.3) = 14,639,334 ns (7,347,667
    // at full speed, tests/test_nccl.cpp). LL128 (110.4 bus, 40.6 us) and the chain tree are slower.
    World plain(load(scenario("{preset: dgx-a100}")));
    World slow(load(scenario("{preset: dgx-a100}", "{link_factors: [{gpu: 3, port: intra, factor: 0.5}]}")));
    const std::vector<int> all = gpu_range(0, 8);
    CHECK(slow.analytical.group_of(all).intra_bus_gbps == Approx(120.0));
    const CollectiveEstimate e = slow.analytical.collective(Collective::AllReduce, 1e9, all);
    CHECK(e.algo == NcclAlgo::Ring);
    CHECK(e.proto == NcclProto::Simple);
    CHECK(e.time_ns == 14'639'334);
    CHECK(plain.analytical.collective(Collective::AllReduce, 1e9, all).time_ns == 7'347'667);
    // Both network models price collectives alike.
    CHECK(slow.flow.collective(Collective::AllReduce, 1e9, all).time_ns == 14'639'334);
    // A group whose ring avoids GPU 3 runs at full speed.
    const std::vector<int> without{0, 1, 2, 4};
    CHECK(slow.analytical.collective(Collective::AllReduce, 1e9, without).time_ns ==
          plain.analytical.collective(Collective::AllReduce, 1e9, without).time_ns);
  }
  SECTION("a GPU's NIC at half speed, and a fat tree's uplinks") {
    // swiftmoe-cloud, 4 single-GPU nodes of 12 GB/s: ring Simple all-reduce, alg 12 x 4 / 6 = 8
    // GB/s; all 6 steps cross the network: (8.4 + 6 x 14) x 1.4 = 129.36 us. 1e9 bytes:
    // 125,000,000 + 129,360 ns. At half bus bandwidth (6 GB/s): 250,000,000 + 129,360 ns. (Tree:
    // alg 12 x 0.92 / 2 at best, slower.)
    const std::vector<int> all = gpu_range(0, 4);
    World plain(load(scenario("{preset: swiftmoe-cloud, nodes: 4}")));
    CHECK(plain.analytical.collective(Collective::AllReduce, 1e9, all).time_ns == 125'129'360);
    // GPU 1's NIC at 6 GB/s carries the hops 0 -> 1 and 1 -> 2.
    World nic(load(scenario("{preset: swiftmoe-cloud, nodes: 4}",
                            "{link_factors: [{gpu: 1, port: nic, factor: 0.5}]}")));
    CHECK(nic.analytical.group_of(all).inter_bus_gbps == Approx(6.0));
    CHECK(nic.analytical.collective(Collective::AllReduce, 1e9, all).time_ns == 250'129'360);
    const std::vector<int> without{0, 2, 3};
    CHECK(nic.analytical.collective(Collective::AllReduce, 1e9, without).time_ns ==
          plain.analytical.collective(Collective::AllReduce, 1e9, without).time_ns);
    // Fat tree, two nodes per leaf, two spines. 4:1: a leaf's uplinks carry 24 / 4 = 6 GB/s, 3 per
    // spine; the ring's hop 1 -> 2 leaves leaf 0 over both (half on each): 6 GB/s, half the NIC.
    World four(load(scenario(fat_tree(4, 2, 4.0))));
    CHECK(four.analytical.group_of(all).inter_bus_gbps == Approx(6.0));
    CHECK(four.analytical.collective(Collective::AllReduce, 1e9, all).time_ns == 250'129'360);
    // 2:1: the uplinks carry 12 GB/s, as much as the NIC: full speed. A ring inside one leaf
    // never crosses them.
    World two(load(scenario(fat_tree(4, 2, 2.0))));
    CHECK(two.analytical.collective(Collective::AllReduce, 1e9, all).time_ns == 125'129'360);
    CHECK(four.analytical.collective(Collective::AllReduce, 1e9, {0, 1}).time_ns ==
          plain.analytical.collective(Collective::AllReduce, 1e9, {0, 1}).time_ns);
    // dgx-h100-fat-tree with a leaf per node (2:1): a leaf's uplinks carry 48 / 2 = 24 GB/s (3 to
    // each of 8 spines) and every hop between nodes leaves its leaf: half of 8 NICs x 48 = 384.
    World leaf_per_node(load(scenario("{preset: dgx-h100-fat-tree, nodes: 4, fabric: {nodes_per_leaf: 1}}")));
    CHECK(leaf_per_node.analytical.group_of(gpu_range(0, 32)).inter_bus_gbps == Approx(192.0));
  }
  SECTION("two GPUs' rings through one NIC of an explicit graph") {
    // The spec (dgx-a100) tells NCCL of a NIC per GPU: 2 x 24 = 48 GB/s out of each node. The
    // graph has one 24 GB/s NIC per node, which both rings cross (hops 0 -> 2 and 1 -> 3): 12 GB/s
    // each, half of what NCCL assumes: 24 GB/s. Inside a node the 240 GB/s links are as assumed.
    World w(load(kGraph + kRest));
    const CollectiveGroup c = w.analytical.group_of(gpu_range(0, 4));
    CHECK(c.inter_bus_gbps == Approx(24.0));
    CHECK(c.intra_bus_gbps == Approx(240.0));
    // The link factor on nica's uplink halves it again.
    World slow(load(kGraph + "network: {link_factors: [{a: nica, b: core, factor: 0.5}]}\n" + kRest));
    CHECK(slow.analytical.group_of(gpu_range(0, 4)).inter_bus_gbps == Approx(12.0));
  }
  SECTION("a faster link does not lift NCCL's own figure") {
    World fast(load(scenario("{preset: dgx-a100}", "{link_factors: [{gpu: 3, port: intra, factor: 2}]}")));
    CHECK(fast.analytical.group_of(gpu_range(0, 8)).intra_bus_gbps == Approx(240.0));
  }
}

TEST_CASE("routes between GPUs of one node stay in the node whatever the NIC latency", "[topology]") {
  // With the NIC link faster than the NVLink hop (0 ns against 600), the lowest-latency path
  // between two GPUs of a node would go out through the fabric; NCCL's P2P transport keeps it on
  // NVLink, and so does the route. Between nodes the NIC is the only way.
  for (const char* latency : {"0", "5000"}) {
    CAPTURE(latency);
    World w(load(scenario(fmt::format("{{preset: dgx-h100, nodes: 2, nic_latency_ns: {}}}", latency))));
    CHECK(w.cluster.route(0, 1).src_port == Port::Intra);
    CHECK(w.cluster.route(0, 1).hops == 2);
    CHECK(w.cluster.route(0, 8).src_port == Port::Nic);
    // 120 MB from GPU 0 to GPU 1 over NVLink (18 x 20.6 = 370.8 GB/s): 323,625 ns + 11.8 us.
    auto m = w.empty();
    w.at(m, 0, 1) = 120 * kMB;
    CHECK(w.analytical.all_to_all_v(m) == 323'625 + kNvlinkLatency);
    CHECK(w.flow.all_to_all_v(m) == 323'625 + kNvlinkLatency);
  }
  // Between nodes latency decides, also where a host reaches a NIC: a0 - nica - core - nicb - b0
  // (7 us) over a0 - ha - nica - core - nicb - hb - b0 (9 us).
  std::string graph = kGraph;
  graph.insert(graph.find("      - {a: nica, b: core"),
               "      - {a: ha, b: nica, gbps: 32, latency_ns: 0}\n      - {a: hb, b: nicb, gbps: 32, "
               "latency_ns: 0}\n");
  World g(load(graph + kRest));
  CHECK(g.cluster.route(0, 2).hops == 4);
  CHECK(g.cluster.route(0, 2).src_port == Port::Nic);
  CHECK(g.cluster.route(0, 1).src_port == Port::Intra);
  // PCIe nodes: through the node's PCIe switch (1 us hops), not the NIC.
  World pcie(load(
      scenario("{preset: swiftmoe-cloud, nodes: 2, gpus_per_node: 2, intra_node: pcie, nic_latency_ns: 0}")));
  CHECK(pcie.cluster.route(0, 1).src_port == Port::Intra);
}

TEST_CASE("analytical all-to-all: a group's cached routes give the fresh network's times",
          "[topology][network]") {
  // 16 GPUs two ways: 16 nodes on a 2:1 fat tree (some routes cross bundles, some do not), and
  // 2 DGX nodes of 8 (NVLink inside a node, the NIC between). 80 groups (more than the 64 the
  // network keeps) are visited twice in a shuffled order, with matrices whose zero cells differ
  // between visits (routes are filled on first use): every time must equal that of a network
  // built for the one call.
  for (const std::string& spec : {fat_tree(16, 2, 2.0), std::string("{preset: dgx-h100, nodes: 2}")}) {
    World w(load(spec));
    REQUIRE(w.gpus() == 16);
    std::mt19937 rng(7);
    std::vector<std::vector<int>> groups;
    for (int i = 0; i < 80; ++i) {
      std::vector<int> all = test::gpu_range(0, 16);
      std::shuffle(all.begin(), all.end(), rng);
      all.resize(static_cast<std::size_t>(2 + i % 11));
      groups.push_back(all);
    }
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < groups.size(); ++i) order.insert(order.end(), {i, i});
    std::shuffle(order.begin(), order.end(), rng);
    std::uint32_t seed = 1;
    int nonzero_times = 0;
    for (const std::size_t i : order) {
      const auto n = static_cast<int>(groups[i].size());
      std::vector<double> m = random_matrix(n, seed++);
      for (std::size_t c = 0; c < m.size(); c += 3 + seed % 3) m[c] = 0.0;
      const AnalyticalNetwork fresh(w.cluster);
      const TimeNs expected = fresh.all_to_all_v(m, groups[i]);
      CHECK(w.analytical.all_to_all_v(m, groups[i]) == expected);
      nonzero_times += expected > 0 ? 1 : 0;
    }
    CHECK(nonzero_times > 150);  // the comparison is not between empty exchanges
  }
}

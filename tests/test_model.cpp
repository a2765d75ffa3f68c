// Convergence model, cluster graph and model presets.
#include <catch2/catch.hpp>

#include "app/scenario.hpp"
#include "sim/cluster.hpp"
#include "sim/convergence.hpp"
#include "sim/network.hpp"

using namespace moesim;

TEST_CASE("convergence: the default line reproduces the SwiftMoE Table 1 points", "[convergence]") {
  ConvergenceSpec c;
  // Table 1: survival 44.90 % -> 618, 65.56 % -> 527, 74.91 % -> 478 iterations; the fit is
  // within 6 iterations of each.
  CHECK(c.iterations_needed(0.4490) == Approx(618).margin(6));
  CHECK(c.iterations_needed(0.6556) == Approx(527).margin(6));
  CHECK(c.iterations_needed(0.7491) == Approx(478).margin(6));
  CHECK(c.iterations_needed(1.0) == Approx(360.9));
  c.form = "table";
  CHECK(c.iterations_needed(0.4490) == 618);
  CHECK(c.iterations_needed(0.30) == 618);  // clamped below the first point
  CHECK(c.iterations_needed(0.95) == 478);  // clamped above the last point
  CHECK(c.iterations_needed((0.4490 + 0.6556) / 2) == Approx((618 + 527) / 2.0));
}

TEST_CASE("cluster graph: routes and ports of a 2 x DGX-H100 cluster", "[cluster]") {
  Scenario s = load_scenario_text("cluster: {preset: dgx-h100, nodes: 2}\nmodel: {preset: mixtral-8x7b}\nplacement: {slots_per_gpu: 1}\npolicies: [static]\n",
                                  "c.yaml", {}, std::nullopt);
  Cluster c(s.cluster);
  REQUIRE(c.num_gpus() == 16);
  // Inside a node: through the NVSwitch (2 NVLink hops); across nodes: NIC, fabric, NIC.
  const Route& in = c.route(0, 7);
  CHECK(in.src_port == Port::Intra);
  CHECK(in.dst_port == Port::Intra);
  CHECK(in.hops == 2);
  CHECK(in.bottleneck_gbps == Approx(18 * 20.6));
  const Route& out = c.route(0, 8);
  CHECK(out.src_port == Port::Nic);
  CHECK(out.dst_port == Port::Nic);
  // One 400 Gb/s NIC per GPU at NCCL's 0.96: 48 GB/s.
  CHECK(out.bottleneck_gbps == Approx(48.0));
  CHECK(c.port_gbps(Port::Host) == 64.0);
}

TEST_CASE("analytical all-to-all-v: the busiest port sets the time", "[cluster][network]") {
  Scenario s = load_scenario_text("cluster: {preset: dgx-a100, nodes: 2}\nmodel: {preset: mixtral-8x7b}\nplacement: {slots_per_gpu: 1}\npolicies: [static]\n",
                                  "c.yaml", {}, std::nullopt);
  Cluster c(s.cluster);
  AnalyticalNetwork net(c);
  std::vector<double> bytes(16 * 16, 0.0);
  // GPU 0 sends 240 MB to GPU 1 (NVSwitch, 12 x 20 = 240 GB/s) and 24 MB to GPU 8 (NIC,
  // 200 Gb/s * 0.96 = 24 GB/s): 1 ms on each port; latency 8.4 + 14 (network hop) = 22.4 us.
  bytes[0 * 16 + 1] = 240e6;
  bytes[0 * 16 + 8] = 24e6;
  CHECK(net.all_to_all_v(bytes) == 1'000'000 + 22'400);
  // GPU 1 (same node as GPU 0) also sends 24 MB to GPU 8: GPU 8 now receives 48 MB on its NIC.
  bytes[1 * 16 + 8] = 24e6;
  CHECK(net.all_to_all_v(bytes) == 2'000'000 + 22'400);
  // Intra-node only: NVLink hop latency (3.4 us) instead of the network's.
  std::vector<double> intra(16 * 16, 0.0);
  intra[2 * 16 + 3] = 240e6;
  CHECK(net.all_to_all_v(intra) == 1'000'000 + 11'800);
}

TEST_CASE("model presets carry their published shapes", "[models]") {
  auto load = [](const std::string& preset) {
    return load_scenario_text("cluster: {preset: dgx-h100, nodes: 32}\nmodel: {preset: " + preset +
                                  "}\nplacement: {slots_per_gpu: 8}\npolicies: [static]\n",
                              "m.yaml", {}, std::nullopt)
        .model;
  };
  auto gpt = load("gpt-small-moe");
  CHECK(gpt.tokens_per_gpu() == 2048);
  CHECK(gpt.num_moe_layers() == 12);
  auto ds = load("deepseek-v3");
  CHECK(ds.num_moe_layers() == 58);  // 61 layers, the first 3 dense
  CHECK(ds.experts == 256);
  CHECK(ds.top_k == 8);
  // One DeepSeek-V3 routed expert: 7168 x 2048 x 3 = 44040192 parameters.
  CHECK(ds.expert_params() == 44040192.0);
  auto mix = load("mixtral-8x7b");
  // Mixtral: 32 layers x 8 experts x 176160768 ~ 45.1B expert parameters of its 46.7B.
  CHECK(mix.expert_params() * 8 * 32 == Approx(45.1e9).epsilon(0.01));
  CHECK(mix.dense_params_total() + mix.expert_params() * 8 * 32 == Approx(46.7e9).epsilon(0.01));
}

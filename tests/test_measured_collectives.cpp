// Measured NCCL collectives (a profile's `collectives:` section) in place of NCCL's cost model.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "app/runner.hpp"
#include "models/profile.hpp"
#include "policies/registry.hpp"
#include "sim/measured_collectives.hpp"
#include "tests/network_fixture.hpp"

using namespace moesim;

namespace {
ClusterSpec dgx_h100(int nodes) { return test::cluster_spec("dgx-h100", nodes); }
using test::gpu_range;
}  // namespace

TEST_CASE("measured all-reduce times replace the model where they apply", "[collectives][profile]") {
  const Cluster two_nodes(dgx_h100(2));
  const AnalyticalNetwork base(two_nodes);
  // 8 ranks: 100 us at 1 MiB, 300 us at 4 MiB.
  MeasuredCollectiveNetwork net(base, two_nodes, {{Collective::AllReduce, 8, {1048576.0, 4194304.0}, {100000.0, 300000.0}}},
                                "hand-made");
  const std::vector<int> node0 = gpu_range(0, 8);
  // At the measured sizes: the measurements.
  CHECK(net.collective(Collective::AllReduce, 1048576.0, node0).time_ns == 100000);
  CHECK(net.collective(Collective::AllReduce, 4194304.0, node0).time_ns == 300000);
  // 2 MiB is halfway in log size: 100 us x (300/100)^(1/2) = 173,205.08 ns.
  const CollectiveEstimate mid = net.collective(Collective::AllReduce, 2097152.0, node0);
  CHECK(mid.time_ns == 173205);
  // nccl-tests' bus bandwidth: 2 MiB / 173,205.08 ns = 12.108 GB/s algorithm, x 2 x 7/8 = 21.19.
  CHECK(mid.bus_gbps == Approx(2097152.0 / 173205.0808 * 1.75).epsilon(1e-6));
  CHECK(net.measured_calls() == 3);
  CHECK(net.modelled_calls() == 0);

  // Everything else is the wrapped model's: another size, group size, collective, or a group
  // spanning the two nodes (the measurement ran on one machine).
  for (const auto& [c, bytes, gpus] : {std::tuple{Collective::AllReduce, 8388608.0, node0},
                                       std::tuple{Collective::AllReduce, 524288.0, node0},
                                       std::tuple{Collective::AllReduce, 2097152.0, gpu_range(0, 4)},
                                       std::tuple{Collective::AllGather, 2097152.0, node0},
                                       std::tuple{Collective::AllReduce, 2097152.0, gpu_range(4, 12)}}) {
    CHECK(net.collective(c, bytes, gpus).time_ns == base.collective(c, bytes, gpus).time_ns);
  }
  CHECK(net.modelled_calls() == 5);
  CHECK_THAT(net.report(), Catch::Matchers::Contains("answered 3 lookups; NCCL's model 5"));
}

TEST_CASE("measured collective curves are checked and made monotone", "[collectives][profile]") {
  const Cluster one(dgx_h100(1));
  const AnalyticalNetwork base(one);
  // A noisy dip (90 us after 100 us) is flattened: more bytes never take less time.
  MeasuredCollectiveNetwork net(base, one, {{Collective::AllReduce, 8, {1.0e6, 2.0e6, 4.0e6}, {100000.0, 90000.0, 300000.0}}},
                                "noisy");
  CHECK(net.collective(Collective::AllReduce, 2.0e6, gpu_range(0, 8)).time_ns == 100000);
  CHECK(net.collective(Collective::AllReduce, 1.5e6, gpu_range(0, 8)).time_ns == 100000);
  CHECK_THROWS_AS(MeasuredCollectiveNetwork(base, one, {{Collective::AllReduce, 8, {2.0e6, 1.0e6}, {1.0, 2.0}}}, "x"),
                  std::invalid_argument);
  CHECK_THROWS_AS(MeasuredCollectiveNetwork(base, one, {{Collective::AllReduce, 8, {1.0e6}, {0.0}}}, "x"),
                  std::invalid_argument);
  CHECK_THROWS_AS(MeasuredCollectiveNetwork(base, one, {{Collective::AllReduce, 8, {}, {}}}, "x"), std::invalid_argument);
}

TEST_CASE("a measured curve does not apply to a ring through a slowed link", "[collectives][profile]") {
  // GPU 3's NVLink at half speed: the measurement (taken on links as specified) no longer
  // describes the 8-GPU ring, which the model slows; a 4-GPU group without GPU 3 keeps it.
  ClusterSpec spec = dgx_h100(1);
  LinkFactorSpec f;
  f.gpu = 3;
  f.port = "intra";
  f.factor = 0.5;
  spec.link_factors.push_back(f);
  const Cluster slow(spec);
  const AnalyticalNetwork base(slow);
  MeasuredCollectiveNetwork net(base, slow,
                                {{Collective::AllReduce, 8, {1.0e6, 4.0e6}, {100000.0, 300000.0}},
                                 {Collective::AllReduce, 4, {1.0e6, 4.0e6}, {50000.0, 150000.0}}},
                                "hand-made");
  CHECK(net.collective(Collective::AllReduce, 1.0e6, gpu_range(0, 8)).time_ns ==
        base.collective(Collective::AllReduce, 1.0e6, gpu_range(0, 8)).time_ns);
  CHECK(net.collective(Collective::AllReduce, 1.0e6, {4, 5, 6, 7}).time_ns == 50000);
  CHECK(net.measured_calls() == 1);
  CHECK(net.modelled_calls() == 1);
}

TEST_CASE("a scenario's network.collective_profile drives its gradient all-reduce", "[collectives][profile][e2e]") {
  // A profile whose 8-GPU all-reduce takes exactly 1 s at every size from 1 byte to 1 TB.
  ComputeProfile p;
  p.backend = "cuda";
  p.measured = true;
  p.device = "hand-made";
  p.collectives.present = true;
  p.collectives.backend = "nccl";
  p.collectives.device = "hand-made";
  p.collectives.nccl = "2.28.9";
  p.collectives.gpus = 8;
  CollectiveSeries ar;
  ar.collective = "all_reduce";
  for (double bytes : {1.0, 1.0e12}) {
    CollectivePoint q;
    q.bytes = bytes;
    q.median_ns = q.p10_ns = q.p90_ns = 1.0e9;
    q.busbw_gbps = collective_busbw_gbps("all_reduce", bytes, 1.0e9, 8);
    ar.points.push_back(q);
  }
  p.collectives.series.push_back(ar);
  const auto dir = std::filesystem::temp_directory_path() / ("moesim_coll_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "nccl.yaml").string();
  std::ofstream(file) << profile_to_yaml(p);

  const std::vector<std::string> sets{"cluster.preset=dgx-h100", "cluster.nodes=1", "placement.slots_per_gpu=2",
                                      "run.max_iterations=2", "run.stop_at_convergence=false"};
  Scenario modelled = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml", sets, std::nullopt);
  modelled.policies = parse_policy_specs("static");
  std::vector<std::string> with = sets;
  with.push_back("network.collective_profile=" + file);
  Scenario measured = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml", with, std::nullopt);
  measured.policies = modelled.policies;
  CHECK(measured.collective_profile == file);

  const PolicyResult a = run_scenario(modelled).front();
  const PolicyResult b = run_scenario(measured).front();
  // The dense gradients' all-reduce over the node's 8 GPUs now takes the measured second.
  CHECK(a.mean_phase_ns[static_cast<int>(Phase::GradSync)] < 1.0e9);
  CHECK(b.mean_phase_ns[static_cast<int>(Phase::GradSync)] >= 1.0e9);
  CHECK(a.collectives_note.empty());
  CHECK_THAT(b.collectives_note, Catch::Matchers::Contains("all_reduce over 8 GPUs"));

  // A profile without a collectives section is refused, naming the key.
  std::vector<std::string> bad = sets;
  bad.push_back("network.collective_profile=h100-sxm-reference");
  Scenario wrong = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml", bad, std::nullopt);
  wrong.policies = modelled.policies;
  CHECK_THROWS_WITH(run_scenario(wrong), Catch::Matchers::Contains("network.collective_profile") &&
                                             Catch::Matchers::Contains("has no collectives: section"));
  std::filesystem::remove_all(dir);
}

// Communication overlapped with computation on a second stream: chunked all-to-all against expert
// compute (2 and 4 chunks, by hand) and bucketed gradient reduction during the backward pass.
#include <catch2/catch.hpp>

#include "app/runner.hpp"
#include "file_fixture.hpp"
#include "hand_fixture.hpp"
#include "core/error.hpp"

using namespace moesim;
using moesim::testing::hand_scenario;

namespace {
const char* kTrace = "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n";

IterationResult one_iteration(const std::string& extra) {
  testing::TempDir dir;
  Scenario s = load_scenario_text(hand_scenario(dir.write("t.csv", kTrace), extra), "hand.yaml",
                                  {"run.max_iterations=1"}, std::nullopt);
  return run_scenario(s).at(0).rows.at(0).result;
}
}  // namespace

TEST_CASE("overlap: two and four all-to-all chunks against the experts, by hand", "[overlap][iteration]") {
  // Serial (test_iteration's hand scenario): each all-to-all 127258 ns (104858 + 22400 latency),
  // the experts 171800 forward and 343600 backward, iteration 2963878 ns.
  const IterationResult serial = one_iteration("");
  CHECK(serial.iteration_ns == 2963878);

  // 2 chunks: a chunk's exchange moves 524288 B: 52429 + 22400 = 74829 ns; a chunk's experts
  // (512 tokens) 85900 forward, 171800 backward. Forward on the communication lane: D0 [0, 74829],
  // D1 [74829, 149658], C0 after E0 [74829, 160729]: [160729, 235558]; E1 [160729, 246629], C1
  // [246629, 321458]: 321458 instead of 2 x 127258 + 171800 = 426316. Backward: C0 [0, 74829],
  // C1 [.., 149658], E0 [74829, 246629], D0 [246629, 321458], E1 [246629, 418429], D1 [418429,
  // 493258]: 493258 instead of 598116. Saved 2 x 104858 = 209716 ns.
  const IterationResult two = one_iteration("overlap: {a2a_chunks: 2}\n");
  CHECK(two.iteration_ns == 2963878 - 209716);
  // The compute lane waits for D0 and C1 forward, C0 and D1 backward: 4 x 74829.
  CHECK(two.phase_ns[static_cast<int>(Phase::AllToAll)] == 4 * 74829);
  CHECK(two.phase_ns[static_cast<int>(Phase::Compute)] == serial.phase_ns[static_cast<int>(Phase::Compute)]);
  CHECK(two.a2a_bytes == serial.a2a_bytes);

  // 4 chunks: 262144 B, 26215 + 22400 = 48615 ns per exchange; 256 tokens take 2 x 21475 = 42950
  // ns forward. Forward, the communication lane never idles after D0: 8 x 48615 = 388920 ns.
  // Backward (experts 85900 a chunk) ends with D3 after E3: C0 [0, 48615], C1 [.., 97230], E0
  // [48615, 134515], D0 [134515, 183130], E1 [134515, 220415], C2 [183130, 231745], D1 [231745,
  // 280360], E2 [231745, 317645], C3 [280360, 328975], D2 [328975, 377590], E3 [328975, 414875],
  // D3 [414875, 463490]. Blocks 388920 + 463490 = 852410 against 1024432: 172022 saved, less
  // than with 2 chunks: the message latency of 8 exchanges outweighs the finer overlap.
  const IterationResult four = one_iteration("overlap: {a2a_chunks: 4}\n");
  CHECK(four.iteration_ns == 2963878 - 172022);
  CHECK(four.exposed_comm_ns < serial.exposed_comm_ns);
  for (const IterationResult& r : {serial, two, four}) {
    TimeNs sum = 0;
    for (TimeNs p : r.phase_ns) sum += p;
    CHECK(sum == r.iteration_ns);  // the compute lane's phases still tile the iteration
  }
}

TEST_CASE("overlap: bucketed gradient reduction hides behind the backward pass", "[overlap][iteration]") {
  // Four layers: the buckets of layers 3, 2, 1 reduce while the earlier layers' backward runs;
  // only layer 0's and the embedding's are exposed. Same bytes, shorter iteration.
  testing::TempDir dir;
  std::string trace = "iteration,layer,src_gpu,expert,tokens\n";
  for (int l = 0; l < 4; ++l)
    for (int g = 0; g < 2; ++g)
      for (int e = 0; e < 2; ++e) trace += "0," + std::to_string(l) + "," + std::to_string(g) + "," + std::to_string(e) + ",512\n";
  const std::string path = dir.write("t4.csv", trace);
  auto run = [&](bool overlap) {
    std::vector<std::string> sets{"run.max_iterations=1", "model.layers=4"};
    if (overlap) sets.push_back("overlap.grad_sync=true");
    Scenario s = load_scenario_text(hand_scenario(path), "hand.yaml", sets, std::nullopt);
    return run_scenario(s).at(0).rows.at(0).result;
  };
  const IterationResult serial = run(false), overlapped = run(true);
  CHECK(overlapped.iteration_ns < serial.iteration_ns);
  CHECK(overlapped.grad_sync_bytes == serial.grad_sync_bytes);
  CHECK(overlapped.phase_ns[static_cast<int>(Phase::GradSync)] < serial.phase_ns[static_cast<int>(Phase::GradSync)]);
  // Nothing else moves: compute, all-to-all and optimizer are the same.
  for (Phase p : {Phase::Compute, Phase::AllToAll, Phase::Optimizer})
    CHECK(overlapped.phase_ns[static_cast<int>(p)] == serial.phase_ns[static_cast<int>(p)]);
  TimeNs sum = 0;
  for (TimeNs p : overlapped.phase_ns) sum += p;
  CHECK(sum == overlapped.iteration_ns);
  // Bad values name the key.
  REQUIRE_THROWS_WITH(load_scenario_text(hand_scenario(path, "overlap: {a2a_chunks: 0}\n"), "hand.yaml", {}, std::nullopt),
                      Catch::Matchers::Contains("overlap.a2a_chunks") && Catch::Matchers::Contains("[1, 64]"));
}

TEST_CASE("overlap: SMs held by the all-to-all kernels slow the experts that overlap them, by hand",
          "[overlap][iteration]") {
  // The hand GPU is an A100 (108 SMs); 27 of them for communication leave 81, so an overlapped
  // expert chunk takes 108/81 = 4/3 as long: 85900 -> ceil(114533.3) = 114534 ns forward, twice
  // that backward (229068). Forward on the communication lane: D0 [0, 74829], D1 [.., 149658];
  // E0 [74829, 189363]; C0 after E0 [189363, 264192]; E1 [189363, 303897]; C1 [303897, 378726].
  // Backward: C0 [0, 74829], C1 [.., 149658]; E0 [74829, 303897]; D0 [303897, 378726]; E1
  // [303897, 532965]; D1 [532965, 607794]. Against the serial blocks (426316, 598116): 47590 ns
  // saved forward, 9678 lost backward, so the iteration is 2963878 - 47590 + 9678 = 2925966 ns.
  const IterationResult r = one_iteration("overlap: {a2a_chunks: 2, dispatch_sms: 27}\n");
  CHECK(r.iteration_ns == 2925966);
  const IterationResult free_sms = one_iteration("overlap: {a2a_chunks: 2}\n");
  // The experts' compute grows by 2 x (114534 - 85900) forward and 2 x (229068 - 171800) backward.
  CHECK(r.phase_ns[static_cast<int>(Phase::Compute)] - free_sms.phase_ns[static_cast<int>(Phase::Compute)] ==
        2 * (114534 - 85900) + 2 * (229068 - 171800));
  CHECK(on_fewer_sms(85900, 108, 27) == 114534);
  CHECK(on_fewer_sms(85900, 108, 0) == 85900);
}

TEST_CASE("overlap: dispatch_sms is refused where it cannot apply", "[overlap][scenario]") {
  testing::TempDir dir;
  auto error = [&](const std::string& extra, std::vector<std::string> sets = {}) {
    try {
      (void)load_scenario_text(hand_scenario(dir.write("t.csv", kTrace), extra), "hand.yaml", sets, std::nullopt);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(error("overlap: {dispatch_sms: 20}\n"),
             Contains("key 'overlap.dispatch_sms': 20 SMs for the all-to-all kernels take nothing from compute "
                      "unless they run beside it: set overlap.a2a_chunks to 2 or more"));
  CHECK_THAT(error("overlap: {a2a_chunks: 2, dispatch_sms: 108}\n"),
             Contains("key 'overlap.dispatch_sms': 108 must leave SMs for compute: allowed 0 to 107 (GPU "
                      "a100-pcie-80gb has 108 SMs)"));
  CHECK_THAT(error("overlap: {a2a_chunks: 2, dispatch_sms: 8}\n", {"cluster.gpu.sms=0"}),
             Contains("does not say how many SMs it has: set cluster.gpu.sms"));
}

// Router-side policies (policies/router_model.hpp): the score-margin helpers and each policy's
// redirect of a 2-source, 4-expert count matrix worked by hand (exact accepted per slot), the
// auxfree bias update, expert choice's exact loads, the null experts' removed compute, locmoe's
// inter-node share, parameter errors, and the shared expert's charged compute.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <optional>
#include <random>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "policies/router_model.hpp"
#include "tests/file_fixture.hpp"
#include "tests/hand_fixture.hpp"
#include "tests/policy_fixture.hpp"

using namespace moesim;

namespace {

// `nodes` x 1 GPUs with 2 slots each and 4 experts: round-robin slots 0..3 hold experts 0..3, so
// GPU 0 holds experts 0 and 1 and GPU 1 experts 2 and 3. One MoE layer, top-1.
struct RouterWorld : testing::PolicyWorld {
  Placement placement;
  RouterWorld(std::int64_t tokens, const std::string& params) : PolicyWorld(2, 1, 2, 4, 1, tokens) {
    model.top_k = 1;
    model.hidden = 100;
    build(params);
    placement = policy->initial_placement();
  }
  [[nodiscard]] LayerDispatch run(const std::vector<std::int64_t>& m) {
    LayerDispatch d;
    policy->dispatch(0, m.data(), placement, d);
    return d;
  }
  [[nodiscard]] IterationCounts counts(const std::vector<std::int64_t>& m) const {
    IterationCounts c;
    c.reset(TraceShape{1, 2, 4});
    c.counts = m;
    return c;
  }
};

std::int64_t sum(const std::vector<std::int64_t>& v) {
  std::int64_t s = 0;
  for (std::int64_t x : v) s += x;
  return s;
}

// Load of each expert (slot e holds expert e here) summed over the sources.
std::vector<std::int64_t> slot_loads(const LayerDispatch& d) {
  std::vector<std::int64_t> l(static_cast<std::size_t>(d.num_slots), 0);
  for (int s = 0; s < d.gpus; ++s)
    for (int j = 0; j < d.num_slots; ++j) l[j] += d.accepted[static_cast<std::size_t>(s) * d.num_slots + j];
  return l;
}

}  // namespace

TEST_CASE("router apportion: largest remainder, ties to the lower index", "[router]") {
  std::vector<std::int64_t> out(4);
  // 5 over [6, 4, 0, 0]: 3.0, 2.0 exactly.
  const double a[] = {6, 4, 0, 0};
  router::apportion(5, a, 4, out.data());
  CHECK(out == std::vector<std::int64_t>{3, 2, 0, 0});
  // 4 over [3, 5]: 1.5, 2.5 -> floors 1, 2, one left, remainders tie -> the lower index.
  const double b[] = {3, 5, 0, 0};
  router::apportion(4, b, 4, out.data());
  CHECK(out == std::vector<std::int64_t>{2, 2, 0, 0});
  // Zero weight: nothing.
  const double z[] = {0, 0, 0, 0};
  router::apportion(7, z, 4, out.data());
  CHECK(out == std::vector<std::int64_t>{0, 0, 0, 0});
}

TEST_CASE("auxfree: the bias update's sign and magnitude after one iteration", "[router][auxfree]") {
  // Loads [8, 4, 2, 2], mean 4: expert 0 overloaded loses gamma, expert 1 at the mean keeps 0,
  // experts 2 and 3 under-loaded gain gamma (DeepSeek-V3's gamma = 0.001).
  const std::int64_t load[] = {8, 4, 2, 2};
  double bias[] = {0, 0, 0, 0};
  router::update_bias(load, 4, 1e-3, bias);
  CHECK(bias[0] == -1e-3);
  CHECK(bias[1] == 0.0);
  CHECK(bias[2] == 1e-3);
  CHECK(bias[3] == 1e-3);
  RouterWorld w(8, "{name: auxfree}");
  CHECK(w.policy->parameters()["bias_step"] == 1e-3);
  (void)w.policy->after_iteration(0, w.counts({5, 1, 1, 1, 3, 3, 1, 1}), w.placement);
  CHECK(w.policy->parameters()["bias_min"] == -1e-3);
  CHECK(w.policy->parameters()["bias_max"] == 1e-3);
}

TEST_CASE("auxfree: a bias re-routes by the score-margin odds, by hand", "[router][auxfree]") {
  // score_margin 1 and a step of ln 2: after one iteration expert 0's odds halve and experts 2
  // and 3's double (expert 1 sat at the mean).
  RouterWorld w(8, "{name: auxfree, score_margin: 1, bias_step: 0.6931471805599453, redirect_cost: 0.25}");
  const std::vector<std::int64_t> m{5, 1, 1, 1, 3, 3, 1, 1};
  // Before any update the bias is 0: the gate's counts, nothing redirected.
  LayerDispatch d0 = w.run(m);
  CHECK(d0.accepted == m);
  CHECK(d0.dropped == 0);
  (void)w.policy->after_iteration(0, w.counts(m), w.placement);
  LayerDispatch d = w.run(m);
  // Source 0: weights 5/2, 1, 2, 2 (sum 7.5): 8 x = 2.667, 1.067, 2.133, 2.133 -> floors
  // 2, 1, 2, 2 and the last one to expert 0 (.667) -> 3, 1, 2, 2.
  // Source 1: weights 1.5, 3, 2, 2 (sum 8.5): 1.412, 2.824, 1.882, 1.882 -> floors 1, 2, 1, 1
  // and three more to experts 2, 3 (.882), then 1 (.824) -> 1, 3, 2, 2.
  CHECK(d.accepted == std::vector<std::int64_t>{3, 1, 2, 2, 1, 3, 2, 2});
  CHECK(slot_loads(d) == std::vector<std::int64_t>{4, 4, 4, 4});
  // Experts 2 and 3 gained 1 at each source: 4 redirected x 0.25 = 1 drop-equivalent.
  CHECK(d.routed == 16);
  CHECK(d.dropped == 1);
  // Balanced now: a second update leaves the bias where it is.
  (void)w.policy->after_iteration(1, w.counts(m), w.placement);
  CHECK(w.policy->parameters()["bias_max"] == 0.6931471805599453);
  CHECK(w.run(m).accepted == d.accepted);
}

TEST_CASE("globalbatch: global balance keeps the per-micro-batch imbalance, by hand", "[router][globalbatch]") {
  // Source 0 [6, 2, 0, 0], source 1 [0, 2, 4, 2]: loads [6, 4, 4, 2], mean 4.
  const std::vector<std::int64_t> m{6, 2, 0, 0, 0, 2, 4, 2};
  // Per-source capacity ceil(8 / 4 x 1) = 2 (min_capacity 0).
  SECTION("scope global") {
    RouterWorld w(8, "{name: globalbatch, redirect_cost: 0.5}");
    CHECK(w.policy->parameters()["source_capacity"] == 2);
    // Expert 0's excess 2 comes from source 0 (the only one that sent it) and goes to expert 3,
    // the only one below its target: source 0 [4, 2, 0, 2], source 1 unchanged.
    std::vector<std::int64_t> routed;
    auto* rp = dynamic_cast<router::RouterPolicy*>(w.policy.get());
    REQUIRE(rp != nullptr);
    const router::RouteStats st = rp->routed_counts(0, m.data(), w.placement, routed);
    CHECK(routed == std::vector<std::int64_t>{4, 2, 0, 2, 0, 2, 4, 2});
    CHECK(st.redirected == 2);
    // The capacity then cuts 2 at source 0 (expert 0) and 2 at source 1 (expert 2); the 2
    // redirected cost 0.5 each: dropped 4 + 1.
    LayerDispatch d = w.run(m);
    CHECK(d.accepted == std::vector<std::int64_t>{2, 2, 0, 2, 0, 2, 2, 2});
    CHECK(d.dropped == 5);
  }
  SECTION("scope micro") {
    RouterWorld w(8, "{name: globalbatch, scope: micro, redirect_cost: 0.5}");
    // Each source to its own mean 2: source 0 moves 4 (expert 0) to experts 2 and 3, source 1
    // moves 2 (expert 2) to expert 0: 6 redirected, no capacity drop, 3 drop-equivalents.
    LayerDispatch d = w.run(m);
    CHECK(d.accepted == std::vector<std::int64_t>{2, 2, 2, 2, 2, 2, 2, 2});
    CHECK(d.dropped == 3);
  }
}

TEST_CASE("expertchoice: every expert takes exactly C, by hand", "[router][expertchoice]") {
  // Source 0 [6, 2, 0, 0], source 1 [4, 4, 0, 0]: R = 16, C = 16 / 4 = 4.
  const std::vector<std::int64_t> m{6, 2, 0, 0, 4, 4, 0, 0};
  RouterWorld w(8, "{name: expertchoice}");
  LayerDispatch d = w.run(m);
  // Expert 0 keeps 4 of [6, 4]: 2.4, 1.6 -> 2, 1 and the last to source 1 -> 2, 2.
  // Expert 1 keeps 4 of [2, 4]: 1.33, 2.67 -> 1, 2 and the last to source 1 -> 1, 3.
  // Experts 2 and 3 fill 4 each from the sources' tokens [8, 8] -> 2, 2.
  CHECK(d.accepted == std::vector<std::int64_t>{2, 1, 2, 2, 2, 3, 2, 2});
  CHECK(slot_loads(d) == std::vector<std::int64_t>{4, 4, 4, 4});
  // U = 6 + 2 = 8 unchosen, F = 8 fillers, u = 0.5: 16 x 0.5 x (1 - 8 / 16) = 4 tokens with no
  // expert (residual_cost 1, k 1: 4 drops) + min(8, 8) redirected x 0.1 = 0.8 -> 1.
  CHECK(d.dropped == 5);
  CHECK(d.routed == 16);
}

TEST_CASE("expertchoice never drops by capacity: each expert's load is C on random counts", "[router][expertchoice]") {
  RouterWorld w(64, "{name: expertchoice, residual_cost: 0, redirect_cost: 0}");
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::int64_t> m(8, 0);
    for (int s = 0; s < 2; ++s)
      for (int t = 0; t < 64; ++t) m[static_cast<std::size_t>(s) * 4 + (rng() % 7 < 4 ? 0 : rng() % 4)]++;
    LayerDispatch d = w.run(m);
    // C = floor(128 / 4) = 32 for every expert: nothing cut, nothing charged.
    CHECK(slot_loads(d) == std::vector<std::int64_t>{32, 32, 32, 32});
    CHECK(d.dropped == 0);
  }
}

TEST_CASE("nullexperts: the null share removes exactly its compute and traffic", "[router][nullexperts]") {
  RouterWorld w(8, "{name: nullexperts, null_share: 0.25}");
  const std::vector<std::int64_t> m{6, 2, 0, 0, 4, 4, 0, 0};
  LayerDispatch d = w.run(m);
  // Source 0: 0.25 x 8 = 2 nulls over [6, 2]: 1.5, 0.5 -> 1, 0 and the tie to expert 0 -> 2, 0.
  // Source 1: 2 over [4, 4] -> 1, 1.
  CHECK(d.accepted == std::vector<std::int64_t>{4, 2, 0, 0, 3, 3, 0, 0});
  CHECK(d.buffered == d.accepted);  // not sent either
  CHECK(sum(d.accepted) == 16 - 4);
  CHECK(d.routed == 16);
  CHECK(d.dropped == 0);  // null_cost 0
  // The default share is AdaMoE's 14.5 %.
  RouterWorld def(8, "{name: nullexperts}");
  CHECK(def.policy->parameters()["null_share"] == 0.145);
}

TEST_CASE("locmoe: the inter-node share falls by local_share on 2 nodes, by hand", "[router][locmoe]") {
  RouterWorld w(16, "{name: locmoe, capacity_factor: 0}");
  const std::vector<std::int64_t> m{4, 2, 6, 4, 3, 5, 2, 6};
  auto inter = [](const std::vector<std::int64_t>& a) {  // source 0 -> experts 2, 3; source 1 -> 0, 1
    return a[2] + a[3] + a[4] + a[5];
  };
  CHECK(inter(m) == 18);
  LayerDispatch d = w.run(m);
  // Source 0: 0.5 x 10 = 5 taken from experts 2, 3 by [6, 4] -> 3, 2, given to experts 0, 1 by
  // [4, 2]: 3.33, 1.67 -> 3, 1 and the last to expert 1 -> 3, 2: [7, 4, 3, 2].
  // Source 1: 0.5 x 8 = 4 from experts 0, 1 by [3, 5]: 1.5, 2.5 -> 1, 2 + the tie to expert 0
  // -> 2, 2, to experts 2, 3 by [2, 6] -> 1, 3: [1, 3, 3, 9].
  CHECK(d.accepted == std::vector<std::int64_t>{7, 4, 3, 2, 1, 3, 3, 9});
  CHECK(inter(d.accepted) == 9);  // exactly half of 18
  CHECK(d.dropped == 1);          // 9 redirected x 0.1 = 0.9 -> 1
}

TEST_CASE("router policies: bad parameters name the key, the value and what is allowed", "[router]") {
  auto message = [](const std::string& params) {
    try {
      RouterWorld w(8, params);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string scope = message("{name: globalbatch, scope: batch}");
  CHECK_THAT(scope, Catch::Contains("scope") && Catch::Contains("'batch'") && Catch::Contains("global"));
  const std::string cf = message("{name: expertchoice, capacity_factor: 8}");
  CHECK_THAT(cf, Catch::Contains("capacity_factor") && Catch::Contains("allowed (0, 4]"));
  const std::string nc = message("{name: locmoe, next_choice: room}");
  CHECK_THAT(nc, Catch::Contains("next_choice") && Catch::Contains("'room'") && Catch::Contains("uniform"));
  const std::string share = message("{name: nullexperts, null_share: 1.5}");
  CHECK_THAT(share, Catch::Contains("null_share") && Catch::Contains("1.5"));
  // No redirect in null experts: the key is unknown there.
  CHECK_THAT(message("{name: nullexperts, redirect_cost: 0.1}"), Catch::Contains("redirect_cost"));
}

TEST_CASE("a shared expert's compute is charged: the hand scenario with and without one", "[router][shared]") {
  // deepseek-v3 carries 1 shared expert, qwen3-30b-a3b none.
  for (const auto& [preset, shared] : std::vector<std::pair<std::string, int>>{{"deepseek-v3", 1}, {"qwen3-30b-a3b", 0}}) {
    YAML::Node n = YAML::Load("{preset: " + preset + "}");
    CHECK(load_model(Cfg(n, "test.yaml", "model")).shared_experts == shared);
  }
  testing::TempDir dir;
  const std::string trace =
      dir.write("t.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,512\n0,0,0,1,512\n0,0,1,0,512\n0,0,1,1,512\n");
  auto compute_ns = [&](int shared) {
    Scenario s = load_scenario_text(testing::hand_scenario(trace), "hand.yaml",
                                    {"model.shared_experts=" + std::to_string(shared), "run.max_iterations=1"},
                                    std::nullopt);
    return run_scenario(s).at(0).rows.at(0).result.phase_ns[static_cast<int>(Phase::Compute)];
  };
  // A shared expert of width 4096 (2 matrices) on all 1024 tokens: two GEMMs of
  // 2 x 1024 x 4096 x 1024 = 8589934592 FLOPs at 1e5 FLOP/ns -> 85900 ns each, 171800 forward,
  // twice that backward: 3 x 171800 = 515400 ns more compute.
  CHECK(compute_ns(1) - compute_ns(0) == 515400);
}

// The flow-level network model: its routes are Cluster's, it agrees exactly with the analytical
// model where no two flows contend, it is never faster where they do, and contention cases
// worked by hand.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "app/scenario.hpp"
#include "sim/flow_network.hpp"
#include "sim/maxmin.hpp"
#include "tests/network_fixture.hpp"

using namespace moesim;

namespace {
ClusterSpec spec_of(const std::string& preset, int nodes) { return test::cluster_spec(preset, nodes); }
using test::World;

constexpr double kMB = 1e6;
// NCCL point-to-point latency, Simple protocol: base 8.4 us + network hop 14 us, or + NVLink 3.4 us.
constexpr TimeNs kNetLatency = 22'400;
constexpr TimeNs kNvlinkLatency = 11'800;
}  // namespace

TEST_CASE("flow: routes are Cluster's lowest-latency paths", "[flow]") {
  for (const char* preset : {"dgx-a100", "swiftmoe-cloud"}) {
    World w(spec_of(preset, 2));
    for (int s = 0; s < w.gpus(); ++s) {
      for (int d = 0; d < w.gpus(); ++d) {
        if (s == d) continue;
        const Route& r = w.cluster.route(s, d);
        auto links = w.flow.route_links(s, d);
        REQUIRE(static_cast<int>(links.size()) == r.hops);
        double lat = 0.0, bw = 1e300;
        for (int l : links) {
          lat += w.flow.link_latency_ns(l);
          bw = std::min(bw, w.flow.link_gbps(l));
        }
        CHECK(lat == r.latency_ns);
        CHECK(bw == r.bottleneck_gbps);
        // The way back crosses the same edges in the other direction (link ids differ by 1).
        auto back = w.flow.route_links(d, s);
        REQUIRE(back.size() == links.size());
        for (std::size_t i = 0; i < links.size(); ++i) CHECK((links[i] ^ 1) == back[back.size() - 1 - i]);
      }
    }
  }
}

TEST_CASE("flow: without contention both models give the same time", "[flow]") {
  World w(spec_of("dgx-a100", 2));  // NVLink 12 x 20 = 240 GB/s, NIC 8 x 25 x 0.96 / 8 = 24 GB/s
  SECTION("one flow over NVLink") {
    auto m = w.empty();
    w.at(m, 0, 3) = 100 * kMB;
    // 1e8 / 240 = 416666.67 -> 416667 ns, + 11.8 us
    CHECK(w.flow.all_to_all_v(m) == 416'667 + kNvlinkLatency);
    CHECK(w.flow.all_to_all_v(m) == w.analytical.all_to_all_v(m));
  }
  SECTION("one flow over the network") {
    auto m = w.empty();
    w.at(m, 2, 13) = 100 * kMB;
    // 1e8 / 24 = 4166666.67 -> 4166667 ns, + 22.4 us
    CHECK(w.flow.all_to_all_v(m) == 4'166'667 + kNetLatency);
    CHECK(w.flow.all_to_all_v(m) == w.analytical.all_to_all_v(m));
  }
  SECTION("disjoint flows: a permutation, every size different") {
    for (int shift : {1, 5, 8, 11}) {
      auto m = w.empty();
      for (int s = 0; s < w.gpus(); ++s) w.at(m, s, (s + shift) % w.gpus()) = (3.7 + s * 1.3) * kMB;
      CHECK(w.flow.all_to_all_v(m) == w.analytical.all_to_all_v(m));
    }
  }
  SECTION("one GPU's flows meet only at its own port") {
    auto m = w.empty();
    w.at(m, 0, 1) = 10 * kMB;
    w.at(m, 0, 2) = 30 * kMB;
    w.at(m, 0, 9) = 7 * kMB;
    w.at(m, 0, 12) = 20 * kMB;
    CHECK(w.flow.all_to_all_v(m) == w.analytical.all_to_all_v(m));
  }
  SECTION("transfers, host copies included") {
    std::vector<Transfer> ts{{{false, 0}, {false, 9}, 50 * kMB},
                             {{false, 1}, {true, 0}, 64 * kMB},
                             {{true, 1}, {false, 10}, 32 * kMB},
                             {{false, 3}, {false, 4}, 80 * kMB}};
    CHECK(w.flow.transfers(ts) == w.analytical.transfers(ts));
  }
  SECTION("nothing to send") {
    CHECK(w.flow.all_to_all_v(w.empty()) == 0);
    CHECK(w.flow.transfers({}) == std::vector<TimeNs>(16, 0));
  }
}

TEST_CASE("flow: contention worked by hand", "[flow]") {
  World w(spec_of("dgx-a100", 2));
  SECTION("two senders share one receiver's NIC") {
    // GPUs 0 and 1 (node 0) send 100 MB each to GPU 8 (node 1): each has its own NIC, so they
    // meet on GPU 8's 24 GB/s NIC link: 12 GB/s each, 200 MB / 24 GB/s = 8333333.3 -> 8333334 ns.
    auto m = w.empty();
    w.at(m, 0, 8) = 100 * kMB;
    w.at(m, 1, 8) = 100 * kMB;
    CHECK(w.flow.all_to_all_v(m) == 8'333'334 + kNetLatency);
    CHECK(w.flow.last_run().events == 0);  // both end together
    CHECK(w.analytical.all_to_all_v(m) == 8'333'334 + kNetLatency);  // the port bound sees it too
  }
  SECTION("a shared receiver idles the senders' spare bandwidth") {
    // a: 0->8 100 MB, x: 0->10 and 0->11 50 MB each; b: 1->8 100 MB, y: 1->12 and 1->13 50 MB.
    // Every port carries 200 MB: the analytical model says 200 / 24 = 8.33 ms.
    // Max-min: GPU 0's and GPU 1's NICs each split three ways, 8 GB/s per flow (GPU 8's NIC then
    // carries 16 of 24). At 50 / 8 = 6.25 ms the x and y flows end; a and b have 50 MB left and
    // now share GPU 8's NIC, 12 GB/s each: 50 / 12 = 4.1667 ms more, 10.4167 ms in all.
    auto m = w.empty();
    w.at(m, 0, 8) = 100 * kMB;
    w.at(m, 0, 10) = 50 * kMB;
    w.at(m, 0, 11) = 50 * kMB;
    w.at(m, 1, 8) = 100 * kMB;
    w.at(m, 1, 12) = 50 * kMB;
    w.at(m, 1, 13) = 50 * kMB;
    CHECK(w.analytical.all_to_all_v(m) == 8'333'334 + kNetLatency);
    CHECK(w.flow.all_to_all_v(m) == 10'416'667 + kNetLatency);
    CHECK(w.flow.last_run().events == 1);
    // Per GPU: 0, 1 and 8 wait for a and b; 10 to 13 only for their 6.25 ms flow.
    std::vector<Transfer> ts;
    for (int s = 0; s < 2; ++s)
      for (int d = 0; d < 16; ++d)
        if (w.at(m, s, d) > 0) ts.push_back(Transfer{{false, s}, {false, d}, w.at(m, s, d)});
    auto busy = w.flow.transfers(ts);
    CHECK(busy[0] == 10'416'667 + kNetLatency);
    CHECK(busy[8] == 10'416'667 + kNetLatency);
    CHECK(busy[10] == 6'250'000 + kNetLatency);
    CHECK(busy[2] == 0);
  }
}

TEST_CASE("flow: with contention never faster than the analytical model", "[flow]") {
  for (const char* preset : {"dgx-a100", "swiftmoe-cloud"}) {
    World w(spec_of(preset, preset == std::string("dgx-a100") ? 3 : 12));
    std::mt19937_64 rng(2024);
    for (int trial = 0; trial < 25; ++trial) {
      auto m = w.empty();
      const int density = 1 + trial % 4;  // a quarter of the pairs up to all of them
      std::uniform_real_distribution<double> size(0.0, 64.0);
      for (int s = 0; s < w.gpus(); ++s)
        for (int d = 0; d < w.gpus(); ++d)
          if (s != d && static_cast<int>(rng() % 4) < density) {
            // Skewed: a few hot receivers get much more.
            const double hot = d % 7 == 0 ? 8.0 : 1.0;
            w.at(m, s, d) = std::floor(size(rng) * hot * kMB);
          }
      const TimeNs a = w.analytical.all_to_all_v(m);
      const TimeNs f = w.flow.all_to_all_v(m);
      REQUIRE(f >= a);
      // Not only because of the clamp: the fluid model itself ends no earlier (to rounding).
      const TimeNs lat = f - static_cast<TimeNs>(std::ceil(std::max(w.flow.last_run().bandwidth_ns, 0.0)));
      CHECK(w.flow.last_run().bandwidth_ns + static_cast<double>(lat) >= static_cast<double>(a) - 1.0);
      // The combine all-to-all (the transpose) takes as long: the links are symmetric.
      auto t = w.empty();
      for (int s = 0; s < w.gpus(); ++s)
        for (int d = 0; d < w.gpus(); ++d) w.at(t, d, s) = w.at(m, s, d);
      CHECK(std::llabs(w.flow.all_to_all_v(t) - f) <= 1);
      // Per-GPU busy times, too.
      std::vector<Transfer> ts;
      for (int s = 0; s < w.gpus(); ++s)
        for (int d = 0; d < w.gpus(); ++d)
          if (w.at(m, s, d) > 0 && (s + d) % 3 == 0) ts.push_back(Transfer{{false, s}, {false, d}, w.at(m, s, d)});
      const auto fb = w.flow.transfers(ts);
      const auto ab = w.analytical.transfers(ts);
      for (std::size_t g = 0; g < fb.size(); ++g) REQUIRE(fb[g] >= ab[g]);
    }
  }
}

TEST_CASE("flow: collectives follow NCCL's model as in the analytical mode", "[flow]") {
  World w(spec_of("dgx-h100", 2));
  std::vector<int> all(16);
  for (int i = 0; i < 16; ++i) all[static_cast<std::size_t>(i)] = i;
  for (Collective c : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter}) {
    for (double bytes : {1e6, 256e6}) {
      CHECK(w.flow.collective(c, bytes, all).time_ns == w.analytical.collective(c, bytes, all).time_ns);
      CHECK(w.flow.collective(c, bytes, {0, 1, 2, 3}).time_ns ==
            w.analytical.collective(c, bytes, {0, 1, 2, 3}).time_ns);
    }
  }
}

TEST_CASE("flow: a uniform all-to-all ends in few events, deterministically", "[flow]") {
  World w(spec_of("dgx-h100", 4));  // 32 GPUs: 7 NVLink peers, 24 network peers each
  auto m = w.empty();
  for (int s = 0; s < w.gpus(); ++s)
    for (int d = 0; d < w.gpus(); ++d)
      if (s != d) w.at(m, s, d) = 1 << 20;
  const TimeNs t = w.flow.all_to_all_v(m);
  CHECK(w.flow.last_run().flows == 32 * 31);
  CHECK(w.flow.last_run().events <= 2);  // the NVLink flows end together, then the network ones
  // NIC 8 x 50 x 0.96 / 8 = 48 GB/s carries 24 MiB: 524288 ns, the same as the port bound.
  CHECK(t == w.analytical.all_to_all_v(m));
  CHECK(t == 524'288 + kNetLatency);
  CHECK(w.flow.all_to_all_v(m) == t);
}

TEST_CASE("flow: retiring ends in windows costs little accuracy", "[flow]") {
  World w(spec_of("dgx-a100", 3));
  const FlowNetwork exact(w.cluster, 0.0);
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 5; ++trial) {
    auto m = w.empty();
    for (int s = 0; s < w.gpus(); ++s)
      for (int d = 0; d < w.gpus(); ++d)
        if (s != d) w.at(m, s, d) = std::floor(static_cast<double>(1 + rng() % 1000) * (d % 5 == 0 ? 4.0 : 1.0) * 1e5);
    const TimeNs a = w.analytical.all_to_all_v(m);
    const TimeNs e = exact.all_to_all_v(m);
    const TimeNs f = w.flow.all_to_all_v(m);
    CHECK(e >= a);
    CHECK(f >= a);
    // The default window is 1e-3 of the bandwidth bound; the error stays within a few windows.
    const double bound = static_cast<double>(a - kNetLatency);
    CHECK(std::abs(static_cast<double>(f - e)) <= 3e-3 * bound);
    CHECK(w.flow.last_run().events <= exact.last_run().events);
  }
  CHECK_THROWS(FlowNetwork(w.cluster, -1.0));
  CHECK_THROWS(FlowNetwork(w.cluster, 0.5));
}

namespace {
// The exact fluid run (end_window 0) written plainly: the general max-min path throughout, and
// each batch found by scanning every live flow. Single-path routes only. Returns the end of the
// last flow and counts the re-shares.
double reference_run(const World& w, std::vector<double> m, std::size_t& events) {
  MaxMinSolver solver;
  solver.set_fresh_path(false);
  for (int l = 0; l < w.flow.num_links(); ++l) solver.add_link(w.flow.link_gbps(l) > 0.0 ? w.flow.link_gbps(l) : 1.0);
  std::vector<double> left;
  for (int s = 0; s < w.gpus(); ++s)
    for (int d = 0; d < w.gpus(); ++d)
      if (s != d && w.at(m, s, d) > 0.0) {
        REQUIRE(w.cluster.route(s, d).paths == 1);
        (void)solver.add_flow(w.flow.route_links(s, d));
        left.push_back(w.at(m, s, d));
      }
  const std::size_t n = left.size();
  std::vector<double> rate(n, 0.0), since(n, 0.0), end(n, -1.0);
  std::vector<char> live(n, 1);
  double now = 0.0, last = 0.0;
  events = 0;
  const auto reshare = [&] {
    for (int f : solver.update()) {
      const auto i = static_cast<std::size_t>(f);
      left[i] = std::max(0.0, left[i] - rate[i] * (now - since[i]));
      since[i] = now;
      rate[i] = solver.rate(f);
      end[i] = now + left[i] / rate[i];
    }
  };
  reshare();
  for (std::size_t alive = n; alive > 0;) {
    double first = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < n; ++i)
      if (live[i]) first = std::min(first, end[i]);
    const double horizon = first * (1.0 + 1e-9);  // FlowNetwork's kSameInstant
    std::vector<std::pair<double, int>> batch;
    for (std::size_t i = 0; i < n; ++i)
      if (live[i] && end[i] <= horizon) batch.emplace_back(end[i], static_cast<int>(i));
    std::sort(batch.begin(), batch.end());
    for (const auto& [at, f] : batch) {
      live[static_cast<std::size_t>(f)] = 0;
      --alive;
      last = std::max(last, at);
      solver.remove_flow(f);
    }
    now = batch.back().first;
    if (alive == 0) break;
    ++events;
    reshare();
  }
  return last;
}
}  // namespace

// The flow model's fast paths (the first solve from empty, the end queue's scans, the per-thread
// arrays kept from call to call) against the plain exact run: the same end, bit for bit, and the
// same events, on skewed and uniform matrices of two clusters, calls of both interleaved.
TEST_CASE("flow: the exact run matches a plain reference bit for bit", "[flow]") {
  World a(spec_of("dgx-a100", 3)), b(spec_of("swiftmoe-cloud", 12));
  const FlowNetwork exact_a(a.cluster, 0.0), exact_b(b.cluster, 0.0);
  std::mt19937_64 rng(77);
  for (int trial = 0; trial < 12; ++trial) {
    for (auto [w, net] : {std::pair{&a, &exact_a}, std::pair{&b, &exact_b}}) {
      auto m = w->empty();
      const int kind = trial % 3;  // uniform, skewed, sparse with ties
      for (int s = 0; s < w->gpus(); ++s)
        for (int d = 0; d < w->gpus(); ++d) {
          if (s == d) continue;
          if (kind == 0) w->at(m, s, d) = 1 << 20;
          if (kind == 1) w->at(m, s, d) = std::floor(static_cast<double>(1 + rng() % 1000) * (d % 5 == 0 ? 4.0 : 1.0) * 1e4);
          if (kind == 2 && rng() % 3 == 0) w->at(m, s, d) = static_cast<double>(1 + rng() % 4) * 1e6;
        }
      std::size_t events = 0;
      const double ref = reference_run(*w, m, events);
      (void)net->all_to_all_v(m);
      REQUIRE(net->last_run().bandwidth_ns == ref);
      CHECK(net->last_run().events == events);
    }
  }
}

// Enough flows (over 4,096) for the end queue's sampled scans in heap mode: dense, four sizes.
TEST_CASE("flow: a large exact run matches the plain reference bit for bit", "[flow]") {
  World w(spec_of("dgx-a100", 9));  // 72 GPUs, 5,112 flows
  const FlowNetwork exact(w.cluster, 0.0);
  std::mt19937_64 rng(3);
  auto m = w.empty();
  for (int s = 0; s < w.gpus(); ++s)
    for (int d = 0; d < w.gpus(); ++d)
      if (s != d) w.at(m, s, d) = static_cast<double>(1 + rng() % 4) * 1e6;
  std::size_t events = 0;
  const double ref = reference_run(w, m, events);
  (void)exact.all_to_all_v(m);
  CHECK(exact.last_run().bandwidth_ns == ref);
  CHECK(exact.last_run().events == events);
  CHECK(events > 8);  // past the scans, into the heap
}

TEST_CASE("flow: a repeated exchange is restored bit for bit as solved afresh", "[flow]") {
  // The same pairs with other bytes start from the first allocation saved when the pairs came
  // twice in a row; a different exchange in between makes the next one solve afresh. Both give
  // the same result, to the bit.
  World w(spec_of("dgx-h100", 4));
  std::mt19937_64 rng(5);
  const auto matrix = [&](bool hole) {
    auto m = w.empty();
    for (int s = 0; s < w.gpus(); ++s)
      for (int d = 0; d < w.gpus(); ++d)
        if (s != d) w.at(m, s, d) = static_cast<double>(1 + rng() % 4096) * 1024.0;
    if (hole) w.at(m, 0, 1) = 0.0;
    return m;
  };
  const auto a = matrix(false), b = matrix(false), c = matrix(true);
  (void)w.flow.all_to_all_v(a);
  (void)w.flow.all_to_all_v(a);  // seen twice: saved
  const TimeNs restored = w.flow.all_to_all_v(b);
  const FlowNetwork::RunStats r1 = w.flow.last_run();
  (void)w.flow.all_to_all_v(c);  // other pairs: the next exchange is solved afresh
  const TimeNs fresh = w.flow.all_to_all_v(b);
  const FlowNetwork::RunStats r2 = w.flow.last_run();
  CHECK(r1.restored);
  CHECK_FALSE(r2.restored);
  CHECK(r1.events > 2);  // skewed bytes: many re-shares after the restored start
  CHECK(restored == fresh);
  CHECK(r1.bandwidth_ns == r2.bandwidth_ns);
  CHECK(r1.events == r2.events);
  CHECK(r1.resolved == r2.resolved);
  // GPU-to-host copies in between (other flows) change nothing either.
  const std::vector<Transfer> copies{{{false, 0}, {true, 0}, 1e6}};
  (void)w.flow.transfers(copies);
  CHECK(w.flow.all_to_all_v(b) == fresh);
  CHECK_FALSE(w.flow.last_run().restored);  // the copies came in between
  CHECK(w.flow.last_run().bandwidth_ns == r2.bandwidth_ns);
}

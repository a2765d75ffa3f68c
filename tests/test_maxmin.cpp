// The max-min fair solver against allocations worked by hand, and its incremental updates
// against a from-scratch solve and an independent check of the bottleneck property.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "sim/maxmin.hpp"

using namespace moesim;

namespace {
int flow(MaxMinSolver& s, std::initializer_list<int> links, double cap = MaxMinSolver::kNoCap) {
  return s.add_flow(std::vector<int>(links), cap);
}

// The flows whose rate changed, in increasing id order.
std::vector<int> update(MaxMinSolver& s) {
  std::vector<int> changed = s.update();
  std::sort(changed.begin(), changed.end());
  return changed;
}

// Max-min fairness, checked directly (Bertsekas & Gallager): capacities respected, and every
// flow has a saturated link on which no flow gets more, or runs at its cap.
void check_max_min(const MaxMinSolver& s, const std::vector<double>& caps) {
  constexpr double kTol = 1e-9;
  std::vector<double> load(static_cast<std::size_t>(s.num_links()), 0.0), top(load.size(), 0.0);
  for (int f = 0; f < s.num_flows(); ++f) {
    if (!s.active(f)) continue;
    REQUIRE(s.rate(f) > 0.0);
    for (int l : s.links_of(f)) {
      load[static_cast<std::size_t>(l)] += s.rate(f);
      top[static_cast<std::size_t>(l)] = std::max(top[static_cast<std::size_t>(l)], s.rate(f));
    }
  }
  for (std::size_t l = 0; l < load.size(); ++l) REQUIRE(load[l] <= s.capacity(static_cast<int>(l)) * (1 + kTol));
  for (int f = 0; f < s.num_flows(); ++f) {
    if (!s.active(f)) continue;
    bool bottleneck = s.rate(f) >= caps[static_cast<std::size_t>(f)] * (1 - kTol);
    for (int l : s.links_of(f)) {
      const auto li = static_cast<std::size_t>(l);
      bottleneck |= load[li] >= s.capacity(l) * (1 - kTol) && s.rate(f) >= top[li] * (1 - kTol);
    }
    REQUIRE(bottleneck);
  }
}
}  // namespace

TEST_CASE("maxmin: two flows on one link get half each", "[maxmin]") {
  MaxMinSolver s;
  s.add_link(10.0);
  int a = flow(s, {0}), b = flow(s, {0});
  auto changed = update(s);
  CHECK(changed == std::vector<int>{a, b});
  CHECK(s.rate(a) == 5.0);
  CHECK(s.rate(b) == 5.0);
  CHECK(s.load(0) == 10.0);
}

TEST_CASE("maxmin: a bottleneck elsewhere frees bandwidth", "[maxmin]") {
  // A crosses links 1 and 2, B only link 1; link 2 is the smaller. Equal shares would be 5 and 5
  // on link 1, but A cannot use more than link 2's 4, so B gets the 6 left on link 1.
  MaxMinSolver s;
  s.add_link(10.0);  // link "1"
  s.add_link(4.0);   // link "2"
  int a = flow(s, {0, 1}), b = flow(s, {0});
  s.update();
  CHECK(s.rate(a) == 4.0);
  CHECK(s.rate(b) == 6.0);
}

namespace {
// L0 = 12, L1 = 9, L2 = 4; f0 {L0, L1}, f1 {L0}, f2 {L1, L2}, f3 {L2}, f4 {L1}.
// Water-filling, raising every unfrozen flow together:
//   shares L0 12/2 = 6, L1 9/3 = 3, L2 4/2 = 2: L2 fills first, f2 = f3 = 2;
//   L1 has 9 - 2 = 7 for f0, f4: 3.5 each, below L0's 12/2 = 6: f0 = f4 = 3.5;
//   L0 has 12 - 3.5 = 8.5 for f1 alone: f1 = 8.5.
// Every link ends full: L0 3.5 + 8.5, L1 3.5 + 2 + 3.5, L2 2 + 2.
MaxMinSolver three_links() {
  MaxMinSolver s;
  s.add_link(12.0);
  s.add_link(9.0);
  s.add_link(4.0);
  flow(s, {0, 1});
  flow(s, {0});
  flow(s, {1, 2});
  flow(s, {2});
  flow(s, {1});
  s.update();
  return s;
}
const std::vector<double> kThreeLinkRates{3.5, 8.5, 2.0, 2.0, 3.5};
}  // namespace

TEST_CASE("maxmin: three links, water-filling worked by hand", "[maxmin]") {
  MaxMinSolver s = three_links();
  for (int f = 0; f < 5; ++f) CHECK(s.rate(f) == Approx(kThreeLinkRates[static_cast<std::size_t>(f)]).epsilon(1e-12));
  CHECK(s.load(0) == Approx(12.0));
  CHECK(s.load(1) == Approx(9.0));
  CHECK(s.load(2) == Approx(4.0));
}

TEST_CASE("maxmin: adding a flow, then removing it, restores the rates", "[maxmin]") {
  MaxMinSolver s = three_links();
  // f5 on {L0, L2}: L2 4/3 first (f2 = f3 = f5 = 4/3); L1 then has 9 - 4/3 = 23/3 for f0, f4:
  // 23/6 each, below L0's (12 - 4/3) / 2 = 16/3; L0 leaves 32/3 - 23/6 = 41/6 to f1.
  int f5 = flow(s, {0, 2});
  auto changed = update(s);
  CHECK(changed == std::vector<int>{0, 1, 2, 3, 4, 5});
  CHECK(s.rate(f5) == Approx(4.0 / 3));
  CHECK(s.rate(2) == Approx(4.0 / 3));
  CHECK(s.rate(3) == Approx(4.0 / 3));
  CHECK(s.rate(0) == Approx(23.0 / 6));
  CHECK(s.rate(4) == Approx(23.0 / 6));
  CHECK(s.rate(1) == Approx(41.0 / 6));
  s.remove_flow(f5);
  s.update();
  CHECK_FALSE(s.active(f5));
  for (int f = 0; f < 5; ++f) CHECK(s.rate(f) == Approx(kThreeLinkRates[static_cast<std::size_t>(f)]).epsilon(1e-12));
}

TEST_CASE("maxmin: a rate cap binds before the link does", "[maxmin]") {
  MaxMinSolver s;
  s.add_link(10.0);
  int a = flow(s, {0}, 1.0), b = flow(s, {0});
  s.update();
  CHECK(s.rate(a) == 1.0);
  CHECK(s.rate(b) == 9.0);
  int c = s.add_flow(std::vector<int>{}, 2.5);  // a flow limited only by its cap
  s.update();
  CHECK(s.rate(c) == 2.5);
}

TEST_CASE("maxmin: updates re-solve only the flows that can change", "[maxmin]") {
  SECTION("another component is left alone") {
    MaxMinSolver s;
    s.add_link(10.0);
    s.add_link(10.0);
    for (int i = 0; i < 4; ++i) flow(s, {0});
    for (int i = 0; i < 3; ++i) flow(s, {1});
    s.update();
    CHECK(s.last_resolved() == 7);
    int extra = flow(s, {1});
    auto changed = update(s);
    CHECK(changed == std::vector<int>{4, 5, 6, extra});
    CHECK(s.last_resolved() == 4);  // the three on link 1 and the new one
    CHECK(s.rate(0) == 2.5);
    CHECK(s.rate(extra) == 2.5);
  }
  SECTION("a finished flow whose neighbours are bottlenecked elsewhere changes nothing") {
    // Senders 0..2 and receivers 3..5, one flow from each sender to each receiver, all links 9:
    // every flow gets 3. When 0->3 ends, the others on link 0 and link 3 are still held to 3 by
    // their other (full) link, so nothing is re-solved.
    MaxMinSolver s;
    for (int l = 0; l < 6; ++l) s.add_link(9.0);
    for (int a = 0; a < 3; ++a)
      for (int b = 3; b < 6; ++b) flow(s, {a, b});
    s.update();
    for (int f = 0; f < 9; ++f) CHECK(s.rate(f) == Approx(3.0));
    s.remove_flow(0);
    CHECK(s.update().empty());
    CHECK(s.last_resolved() == 0);
    // Ending 1->4 as well leaves 0->4 (flow 1) and 1->3 (flow 3) without a full link: sender 2
    // and receiver 5 still hold their other flows to 3, so each of the two gets 9 - 3 = 6.
    s.remove_flow(4);
    auto changed = update(s);
    CHECK(changed == std::vector<int>{1, 3});
    CHECK(s.rate(1) == Approx(6.0));
    CHECK(s.rate(3) == Approx(6.0));
    CHECK(s.last_resolved() < 8);
  }
}

TEST_CASE("maxmin: incremental updates match a fresh solve", "[maxmin]") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    const int nl = 3 + static_cast<int>(rng() % 10);
    MaxMinSolver s;
    std::vector<double> link_caps;
    for (int l = 0; l < nl; ++l) {
      link_caps.push_back(1.0 + static_cast<double>(rng() % 100));
      s.add_link(link_caps.back());
    }
    std::vector<std::vector<int>> paths;
    std::vector<double> caps;
    std::vector<int> live;
    for (int step = 0; step < 60; ++step) {
      const bool add = live.empty() || rng() % 3 != 0;
      const int batch = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < batch; ++k) {
        if (add) {
          std::vector<int> p;
          const int len = 1 + static_cast<int>(rng() % 3);
          while (static_cast<int>(p.size()) < len) {
            int l = static_cast<int>(rng() % static_cast<std::uint64_t>(nl));
            if (std::find(p.begin(), p.end(), l) == p.end()) p.push_back(l);
          }
          const double cap = rng() % 4 == 0 ? 0.5 + static_cast<double>(rng() % 20) : MaxMinSolver::kNoCap;
          paths.push_back(p);
          caps.push_back(cap);
          live.push_back(s.add_flow(p, cap));
        } else if (!live.empty()) {
          const auto i = static_cast<std::size_t>(rng() % live.size());
          s.remove_flow(live[i]);
          live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
      std::vector<double> before(static_cast<std::size_t>(s.num_flows()));
      for (int f = 0; f < s.num_flows(); ++f) before[static_cast<std::size_t>(f)] = s.rate(f);
      const std::vector<int> changed = update(s);
      check_max_min(s, caps);
      // Same flows, solved from scratch.
      MaxMinSolver fresh;
      for (double c : link_caps) fresh.add_link(c);
      std::vector<int> ids;
      for (int f : live) ids.push_back(fresh.add_flow(paths[static_cast<std::size_t>(f)], caps[static_cast<std::size_t>(f)]));
      fresh.update();
      for (std::size_t i = 0; i < live.size(); ++i) REQUIRE(s.rate(live[i]) == Approx(fresh.rate(ids[i])).epsilon(1e-9));
      // `changed` lists exactly the active flows whose rate moved.
      for (int f = 0; f < s.num_flows(); ++f) {
        const bool listed = std::binary_search(changed.begin(), changed.end(), f);
        if (s.active(f) && s.rate(f) != before[static_cast<std::size_t>(f)]) REQUIRE(listed);
        if (!s.active(f)) REQUIRE_FALSE(listed);
      }
    }
  }
}

TEST_CASE("maxmin: an exchange drained in batches matches a fresh solve at every step", "[maxmin]") {
  // Senders 0..5 and receivers 6..11 as in an all-to-all, plus a shared core link 12 that a
  // third of the flows also cross (an oversubscribed fabric).
  std::mt19937_64 rng(3);
  for (int round = 0; round < 10; ++round) {
    MaxMinSolver s;
    std::vector<double> link_caps;
    for (int l = 0; l < 13; ++l) {
      link_caps.push_back(l == 12 ? 30.0 : 5.0 + static_cast<double>(rng() % 16));
      s.add_link(link_caps.back());
    }
    std::vector<std::vector<int>> paths;
    std::vector<int> live;
    for (int a = 0; a < 6; ++a)
      for (int b = 6; b < 12; ++b) {
        paths.push_back(rng() % 3 == 0 ? std::vector<int>{a, 12, b} : std::vector<int>{a, b});
        live.push_back(s.add_flow(paths.back()));
      }
    const std::vector<double> no_caps(paths.size(), MaxMinSolver::kNoCap);
    s.update();
    while (!live.empty()) {
      const std::size_t batch = std::min<std::size_t>(live.size(), 1 + rng() % 4);
      for (std::size_t k = 0; k < batch; ++k) {
        const auto i = static_cast<std::size_t>(rng() % live.size());
        s.remove_flow(live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
      s.update();
      check_max_min(s, no_caps);
      MaxMinSolver fresh;
      for (double c : link_caps) fresh.add_link(c);
      std::vector<int> ids;
      for (int f : live) ids.push_back(fresh.add_flow(paths[static_cast<std::size_t>(f)]));
      fresh.update();
      for (std::size_t i = 0; i < live.size(); ++i) REQUIRE(s.rate(live[i]) == Approx(fresh.rate(ids[i])).epsilon(1e-9));
    }
  }
}

TEST_CASE("maxmin: deterministic", "[maxmin]") {
  auto run = [] {
    std::mt19937_64 rng(11);
    MaxMinSolver s;
    for (int l = 0; l < 20; ++l) s.add_link(1.0 + static_cast<double>(rng() % 50) / 7.0);
    std::vector<double> out;
    for (int step = 0; step < 200; ++step) {
      std::vector<int> p{static_cast<int>(rng() % 10), 10 + static_cast<int>(rng() % 10)};
      s.add_flow(p);
      if (step % 3 == 2) s.remove_flow(step - 2);
      s.update();
    }
    for (int f = 0; f < s.num_flows(); ++f) out.push_back(s.rate(f));
    return out;
  };
  CHECK(run() == run());  // bit-identical
}

TEST_CASE("maxmin: bad input is refused", "[maxmin]") {
  MaxMinSolver s;
  CHECK_THROWS(s.add_link(0.0));
  CHECK_THROWS(s.add_link(-1.0));
  s.add_link(1.0);
  CHECK_THROWS(flow(s, {0, 0}));
  CHECK_THROWS(flow(s, {1}));
  CHECK_THROWS(s.add_flow(std::vector<int>{}));  // no link, no cap: unbounded
  int f = flow(s, {0});
  s.remove_flow(f);
  s.update();
  CHECK_THROWS(s.remove_flow(f));
}

namespace {
// Water-filling from scratch, the textbook way: raise every unfrozen flow together until a link
// fills or a flow reaches its cap; freeze those flows; repeat.
std::vector<double> reference_max_min(const std::vector<double>& link_caps, const std::vector<std::vector<int>>& paths,
                                      const std::vector<double>& caps) {
  const std::size_t n = paths.size();
  std::vector<double> rate(n, 0.0);
  std::vector<char> frozen(n, 0);
  std::size_t left = n;
  while (left > 0) {
    double level = std::numeric_limits<double>::infinity();
    for (std::size_t l = 0; l < link_caps.size(); ++l) {
      double used = 0.0;
      int unfrozen = 0;
      for (std::size_t f = 0; f < n; ++f) {
        if (std::find(paths[f].begin(), paths[f].end(), static_cast<int>(l)) == paths[f].end()) continue;
        if (frozen[f])
          used += rate[f];
        else
          ++unfrozen;
      }
      if (unfrozen > 0) level = std::min(level, std::max(0.0, link_caps[l] - used) / unfrozen);
    }
    for (std::size_t f = 0; f < n; ++f)
      if (!frozen[f]) level = std::min(level, caps[f]);
    // Freeze the flows at their cap or on a link that is now full.
    std::vector<double> load(link_caps.size(), 0.0);
    for (std::size_t f = 0; f < n; ++f)
      for (int l : paths[f]) load[static_cast<std::size_t>(l)] += frozen[f] ? rate[f] : level;
    for (std::size_t f = 0; f < n; ++f) {
      if (frozen[f]) continue;
      bool stop = level >= caps[f] * (1 - 1e-12);
      for (int l : paths[f]) stop |= load[static_cast<std::size_t>(l)] >= link_caps[static_cast<std::size_t>(l)] * (1 - 1e-12);
      if (!stop) continue;
      rate[f] = level;
      frozen[f] = 1;
      --left;
    }
  }
  return rate;
}
}  // namespace

// Large batches of ends over few, crowded links: the re-solved set grows over rounds and often
// takes every flow, the paths the benchmarks exercise most.
TEST_CASE("maxmin: incremental updates match a reference water-filling on random instances", "[maxmin]") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 12; ++round) {
    const int nl = 4 + static_cast<int>(rng() % 12);
    MaxMinSolver s;
    std::vector<double> link_caps;
    for (int l = 0; l < nl; ++l) {
      link_caps.push_back(1.0 + static_cast<double>(rng() % 50));
      s.add_link(link_caps.back());
    }
    std::vector<std::vector<int>> paths;
    std::vector<double> caps;
    std::vector<int> live;
    const int flows = 40 + static_cast<int>(rng() % 120);
    for (int k = 0; k < flows; ++k) {
      std::vector<int> p;
      const int len = 1 + static_cast<int>(rng() % 4);
      while (static_cast<int>(p.size()) < std::min(len, nl)) {
        const int l = static_cast<int>(rng() % static_cast<std::uint64_t>(nl));
        if (std::find(p.begin(), p.end(), l) == p.end()) p.push_back(l);
      }
      paths.push_back(p);
      caps.push_back(rng() % 6 == 0 ? 0.05 + static_cast<double>(rng() % 10) * 0.1 : MaxMinSolver::kNoCap);
      live.push_back(s.add_flow(p, caps.back()));
    }
    while (!live.empty()) {
      (void)s.update();
      std::vector<std::vector<int>> live_paths;
      std::vector<double> live_caps;
      for (int f : live) {
        live_paths.push_back(paths[static_cast<std::size_t>(f)]);
        live_caps.push_back(caps[static_cast<std::size_t>(f)]);
      }
      const std::vector<double> ref = reference_max_min(link_caps, live_paths, live_caps);
      for (std::size_t i = 0; i < live.size(); ++i) REQUIRE(s.rate(live[i]) == Approx(ref[i]).epsilon(1e-9));
      // End a batch of flows, sometimes most of them, and now and then start new ones.
      const std::size_t ends = 1 + static_cast<std::size_t>(rng() % (1 + live.size() / 3));
      for (std::size_t k = 0; k < ends && !live.empty(); ++k) {
        const auto i = static_cast<std::size_t>(rng() % live.size());
        s.remove_flow(live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
      if (rng() % 4 == 0) {
        const auto l = static_cast<int>(rng() % static_cast<std::uint64_t>(nl));
        paths.push_back({l});
        caps.push_back(MaxMinSolver::kNoCap);
        live.push_back(s.add_flow(paths.back(), caps.back()));
      }
    }
  }
}

namespace {
// Every rate and link sum of two solvers, bit for bit.
void require_same_bits(const MaxMinSolver& a, const MaxMinSolver& b) {
  REQUIRE(a.num_flows() == b.num_flows());
  for (int f = 0; f < a.num_flows(); ++f) {
    REQUIRE(a.active(f) == b.active(f));
    if (a.active(f)) REQUIRE(a.rate(f) == b.rate(f));
  }
  for (int l = 0; l < a.num_links(); ++l) REQUIRE(a.load(l) == b.load(l));
}
}  // namespace

// The first update from no active flows takes its own path (update_fresh); the general path is
// the reference. Instances mix links whose flows all get one rate (the path that sums in id
// order) with links of differing rates and caps (the set's order), then go on incrementally,
// and a reset() solver rebuilt with the same calls repeats them.
TEST_CASE("maxmin: the first solve from empty is bit-identical to the general path", "[maxmin]") {
  std::mt19937_64 rng(29);
  MaxMinSolver reused;
  for (int round = 0; round < 40; ++round) {
    MaxMinSolver fresh, general;
    general.set_fresh_path(false);
    reused.reset();
    const int nl = 2 + static_cast<int>(rng() % 30);
    for (int l = 0; l < nl; ++l) {
      // Few distinct capacities, so that many shares tie exactly.
      const double c = round % 2 == 0 ? 10.0 * static_cast<double>(1 + rng() % 3) : 0.5 + static_cast<double>(rng() % 997) / 7.0;
      for (MaxMinSolver* s : {&fresh, &general, &reused}) s->add_link(c);
    }
    std::vector<int> live;
    const int flows = 1 + static_cast<int>(rng() % 300);
    for (int k = 0; k < flows; ++k) {
      std::vector<int> p;
      const int len = 1 + static_cast<int>(rng() % 3);
      while (static_cast<int>(p.size()) < std::min(len, nl)) {
        const int l = static_cast<int>(rng() % static_cast<std::uint64_t>(nl));
        if (std::find(p.begin(), p.end(), l) == p.end()) p.push_back(l);
      }
      const double cap = rng() % 8 == 0 ? 0.1 + static_cast<double>(rng() % 20) * 0.3 : MaxMinSolver::kNoCap;
      for (MaxMinSolver* s : {&fresh, &general, &reused}) (void)s->add_flow(p, cap);
      live.push_back(k);
    }
    // A flow removed before it was ever solved.
    if (round % 5 == 0) {
      for (MaxMinSolver* s : {&fresh, &general, &reused}) s->remove_flow(live.back());
      live.pop_back();
    }
    const std::vector<int> fc = update(fresh), gc = update(general), rc = update(reused);
    CHECK(fc == gc);
    CHECK(rc == gc);
    CHECK(fresh.last_resolved() == general.last_resolved());
    require_same_bits(fresh, general);
    require_same_bits(reused, general);
    // Then incremental: batches of ends and a few new flows.
    while (!live.empty()) {
      const std::size_t ends = 1 + static_cast<std::size_t>(rng() % (1 + live.size() / 4));
      for (std::size_t k = 0; k < ends && !live.empty(); ++k) {
        const auto i = static_cast<std::size_t>(rng() % live.size());
        for (MaxMinSolver* s : {&fresh, &general, &reused}) s->remove_flow(live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
      if (rng() % 3 == 0) {
        const std::vector<int> p{static_cast<int>(rng() % static_cast<std::uint64_t>(nl))};
        int id = -1;
        for (MaxMinSolver* s : {&fresh, &general, &reused}) id = s->add_flow(p);
        live.push_back(id);
      }
      CHECK(update(fresh) == update(general));
      (void)update(reused);
      require_same_bits(fresh, general);
      require_same_bits(reused, general);
    }
    // Everything ended: every link is empty again (sums may keep a rounding residue).
    for (int l = 0; l < fresh.num_links(); ++l) CHECK(std::abs(fresh.load(l)) < 1e-9);
  }
}

TEST_CASE("maxmin: a restored snapshot replays the same drain bit for bit", "[maxmin]") {
  // An all-to-all's senders 0..5 and receivers 6..11 with a shared core link 12, some flows
  // capped; more flows are added after the first update (lists outgrow their laid-out room)
  // and the snapshot is taken after that second update.
  std::mt19937_64 rng(11);
  for (int round = 0; round < 10; ++round) {
    MaxMinSolver s;
    for (int l = 0; l < 13; ++l) s.add_link(l == 12 ? 30.0 : 5.0 + static_cast<double>(rng() % 16));
    std::vector<int> live;
    const auto add = [&](int a, int b) {
      const std::vector<int> path = rng() % 3 == 0 ? std::vector<int>{a, 12, b} : std::vector<int>{a, b};
      live.push_back(
          s.add_flow(path, rng() % 5 == 0 ? 1.0 + static_cast<double>(rng() % 4) : MaxMinSolver::kNoCap));
    };
    for (int a = 0; a < 6; ++a)
      for (int b = 6; b < 12; ++b) add(a, b);
    s.update();
    for (int k = 0; k < 40; ++k) add(static_cast<int>(rng() % 6), 6 + static_cast<int>(rng() % 6));
    const std::vector<int> at_save = s.update();
    std::vector<double> rates_at_save;
    for (int f : live) rates_at_save.push_back(s.rate(f));
    MaxMinSolver::Snapshot snap;
    s.save(snap);
    // One drain in random batches, recording every step's changed flows, rates and loads.
    const std::uint64_t seed = rng();
    const auto drain = [&] {
      std::mt19937_64 r(seed);
      std::vector<int> on = live;
      std::vector<double> seen;
      while (!on.empty()) {
        const std::size_t batch = std::min<std::size_t>(on.size(), 1 + r() % 4);
        for (std::size_t k = 0; k < batch; ++k) {
          const auto i = static_cast<std::size_t>(r() % on.size());
          s.remove_flow(on[i]);
          on.erase(on.begin() + static_cast<std::ptrdiff_t>(i));
        }
        for (int f : s.update()) {
          seen.push_back(f);
          seen.push_back(s.rate(f));
        }
        for (int l = 0; l < s.num_links(); ++l) seen.push_back(s.load(l));
      }
      seen.push_back(static_cast<double>(s.total_resolved()));
      return seen;
    };
    const std::vector<double> once = drain();
    REQUIRE(s.restore(snap) == at_save);
    for (std::size_t i = 0; i < live.size(); ++i) REQUIRE(s.rate(live[i]) == rates_at_save[i]);
    const std::vector<double> again = drain();
    REQUIRE(again.size() == once.size());
    for (std::size_t i = 0; i < once.size(); ++i) REQUIRE(again[i] == once[i]);  // exact, not approximate
  }
  MaxMinSolver other;
  other.add_link(1.0);
  MaxMinSolver::Snapshot empty;
  other.save(empty);
  other.add_flow(std::vector<int>{0});
  CHECK_THROWS_AS(other.restore(empty), std::logic_error);  // saved with other flows
  CHECK_THROWS_AS(other.save(empty), std::logic_error);     // a flow is pending
}

TEST_CASE("maxmin: clear_flows leaves the links as new", "[maxmin]") {
  // A solver used for one exchange, cleared, then given another: every rate, load and changed
  // list as a new solver's, to the bit.
  std::mt19937_64 rng(17);
  const auto exchange = [&](MaxMinSolver& s, std::uint64_t seed) {
    std::mt19937_64 r(seed);
    std::vector<int> on;
    for (int a = 0; a < 6; ++a)
      for (int b = 6; b < 12; ++b)
        if (r() % 4 != 0)
          on.push_back(s.add_flow(r() % 3 == 0 ? std::vector<int>{a, 12, b} : std::vector<int>{a, b}));
    std::vector<double> seen;
    while (!on.empty()) {
      for (int f : s.update()) {
        seen.push_back(f);
        seen.push_back(s.rate(f));
      }
      for (int l = 0; l < s.num_links(); ++l) seen.push_back(s.load(l));
      const std::size_t batch = std::min<std::size_t>(on.size(), 1 + r() % 5);
      for (std::size_t k = 0; k < batch; ++k) {
        const auto i = static_cast<std::size_t>(r() % on.size());
        s.remove_flow(on[i]);
        on.erase(on.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    return seen;
  };
  for (int round = 0; round < 10; ++round) {
    std::vector<double> caps;
    for (int l = 0; l < 13; ++l) caps.push_back(l == 12 ? 30.0 : 5.0 + static_cast<double>(rng() % 16));
    MaxMinSolver used, fresh;
    for (double c : caps) {
      used.add_link(c);
      fresh.add_link(c);
    }
    (void)exchange(used, rng());
    used.clear_flows();
    const std::uint64_t seed = rng();
    REQUIRE(used.num_flows() == 0);
    REQUIRE(used.num_links() == 13);
    REQUIRE(exchange(used, seed) == exchange(fresh, seed));
  }
}

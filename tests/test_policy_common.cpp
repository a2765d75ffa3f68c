// The shared dispatch building blocks against their plain definitions: ExactDivider against / and
// %, the blocked transpose, and dispatch_even against a direct transcription of its rule (the
// 128-bit, sort-based version it replaced) on random placements, capacities and counts, including
// totals above 2^31 that take the 128-bit path.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "policies/common.hpp"

using namespace moesim;

namespace {

__extension__ using Wide = __int128;

// dispatch_even's rule written out directly: one vector per expert, 128-bit shares, a full sort.
void reference_dispatch(const Placement& p, int layer, int experts, const std::int64_t* counts,
                        const EvenDispatchOptions& opt, LayerDispatch& out) {
  const int G = p.gpus, slots = p.num_slots();
  out.reset(G, slots);
  const auto replicas = expert_slots(p, layer, experts);
  std::vector<std::int64_t> acc(G);
  for (int e = 0; e < experts; ++e) {
    std::int64_t total = 0;
    for (int g = 0; g < G; ++g) total += counts[static_cast<std::size_t>(g) * experts + e];
    out.routed += total;
    const auto& reps = replicas[e];
    const auto r = static_cast<std::int64_t>(reps.size());
    const std::int64_t limit = r == 0 ? 0 : opt.replica_capacity < 0 ? total : std::min(total, r * opt.replica_capacity);
    out.dropped += total - limit;
    if (limit == 0) continue;
    std::int64_t given = 0;
    std::vector<std::pair<std::int64_t, int>> rem;
    for (int g = 0; g < G; ++g) {
      const std::int64_t n = counts[static_cast<std::size_t>(g) * experts + e];
      const Wide prod = static_cast<Wide>(n) * limit;
      acc[g] = static_cast<std::int64_t>(prod / total);
      given += acc[g];
      rem.emplace_back(-static_cast<std::int64_t>(prod % total), g);
    }
    std::sort(rem.begin(), rem.end());
    for (std::size_t i = 0; given < limit && i < rem.size(); ++i, ++given) acc[rem[i].second]++;
    for (int g = 0; g < G; ++g) {
      if (acc[g] == 0) continue;
      std::vector<int> targets;
      if (opt.prefer_local_node)
        for (int s : reps)
          if (p.gpu_of_slot(s) / opt.gpus_per_node == g / opt.gpus_per_node) targets.push_back(s);
      if (targets.empty()) targets = reps;
      const auto k = static_cast<std::int64_t>(targets.size());
      for (std::int64_t i = 0; i < k; ++i) {
        const std::size_t idx = static_cast<std::size_t>(g) * slots + targets[(i + g) % k];
        const std::int64_t v = acc[g] / k + (i < acc[g] % k ? 1 : 0);
        out.accepted[idx] += v;
        out.buffered[idx] += v;
      }
    }
  }
}

}  // namespace

TEST_CASE("ExactDivider gives the quotient and remainder of / and %", "[policy][dispatch]") {
  std::mt19937_64 rng(7);
  const std::vector<std::int64_t> divisors{1, 2, 3, 7, 1000003, (std::int64_t{1} << 31) - 1, std::int64_t{1} << 31,
                                           (std::int64_t{1} << 32) - 1};
  for (const std::int64_t d : divisors) {
    const ExactDivider div(d);
    std::vector<std::int64_t> ps{0, 1, d - 1, d, d + 1, (std::int64_t{1} << 62) - 1, std::int64_t{1} << 62};
    for (int i = 0; i < 2000; ++i) ps.push_back(static_cast<std::int64_t>(rng() >> (2 + rng() % 60)));
    for (const std::int64_t p : ps) {
      std::int64_t q = -1, r = -1;
      div.divmod(p, q, r);
      REQUIRE(q == p / d);
      REQUIRE(r == p % d);
    }
  }
}

TEST_CASE("transpose of a matrix whose sides are not multiples of the block", "[policy][dispatch]") {
  const int rows = 13, cols = 21;
  std::vector<std::int64_t> in(static_cast<std::size_t>(rows) * cols), out(in.size(), -1);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::int64_t>(i) * 3 + 1;
  transpose(in.data(), rows, cols, out.data());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      REQUIRE(out[static_cast<std::size_t>(c) * rows + r] == in[static_cast<std::size_t>(r) * cols + c]);
}

TEST_CASE("dispatch_even equals its direct definition on random placements and counts", "[policy][dispatch]") {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const int gpn = 1 + static_cast<int>(rng() % 4);
    const int G = gpn * (1 + static_cast<int>(rng() % 5));
    const int S = 1 + static_cast<int>(rng() % 4);
    const int E = 1 + static_cast<int>(rng() % 12);
    Placement p;
    p.gpus = G;
    p.slots_per_gpu = S;
    std::vector<int> layout(static_cast<std::size_t>(G) * S);
    for (int& x : layout) x = static_cast<int>(rng() % (E + 1)) - 1;  // -1: empty slot
    p.expert_of_slot = {layout};
    // Small counts, and every fourth trial counts near 2^33: totals above 2^31 (128-bit path).
    const int shift = trial % 4 == 0 ? 33 : 10;
    std::vector<std::int64_t> counts(static_cast<std::size_t>(G) * E);
    for (auto& c : counts) c = rng() % 5 == 0 ? 0 : static_cast<std::int64_t>(rng() % (std::uint64_t{1} << shift));
    EvenDispatchOptions opt;
    opt.replica_capacity = rng() % 3 == 0 ? -1 : static_cast<std::int64_t>(rng() % (std::uint64_t{1} << (shift + 1)));
    opt.prefer_local_node = rng() % 2 == 0;
    opt.gpus_per_node = gpn;
    LayerDispatch got, want;
    dispatch_even(p, 0, E, counts.data(), opt, got);
    reference_dispatch(p, 0, E, counts.data(), opt, want);
    INFO("trial " << trial);
    REQUIRE(got.gpus == want.gpus);
    REQUIRE(got.num_slots == want.num_slots);
    REQUIRE(got.accepted == want.accepted);
    REQUIRE(got.buffered == want.buffered);
    REQUIRE(got.routed == want.routed);
    REQUIRE(got.dropped == want.dropped);
  }
}

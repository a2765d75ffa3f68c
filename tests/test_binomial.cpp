#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "traces/binomial.hpp"

using moesim::sample_binomial;

namespace {

// Exact Binomial(n, p) pmf at k, through log-gamma (accurate to ~1e-13 relative here).
double binomial_pmf(std::int64_t n, double p, std::int64_t k) {
  const auto nd = static_cast<double>(n);
  const auto kd = static_cast<double>(k);
  return std::exp(std::lgamma(nd + 1.0) - std::lgamma(kd + 1.0) - std::lgamma(nd - kd + 1.0) +
                  kd * std::log(p) + (nd - kd) * std::log1p(-p));
}

// Pearson chi-square of `samples` draws against the exact pmf. Cells are merged from the left
// until each expects at least 10 draws (what is left at the right end joins the last cell).
struct ChiSquare {
  double stat = 0.0;
  int dof = 0;
};

ChiSquare chi_square(std::mt19937_64& rng, std::int64_t n, double p, int samples) {
  std::vector<double> observed(static_cast<std::size_t>(n) + 1, 0.0);
  for (int i = 0; i < samples; ++i) {
    const std::int64_t k = sample_binomial(rng, n, p);
    REQUIRE(k >= 0);
    REQUIRE(k <= n);
    observed[static_cast<std::size_t>(k)] += 1.0;
  }
  std::vector<double> cell_obs;
  std::vector<double> cell_exp;
  double o = 0.0;
  double e = 0.0;
  for (std::int64_t k = 0; k <= n; ++k) {
    o += observed[static_cast<std::size_t>(k)];
    e += samples * binomial_pmf(n, p, k);
    if (e >= 10.0) {
      cell_obs.push_back(o);
      cell_exp.push_back(e);
      o = e = 0.0;
    }
  }
  cell_obs.back() += o;
  cell_exp.back() += e;
  ChiSquare r;
  for (std::size_t i = 0; i < cell_obs.size(); ++i) {
    const double d = cell_obs[i] - cell_exp[i];
    r.stat += d * d / cell_exp[i];
  }
  r.dof = static_cast<int>(cell_obs.size()) - 1;
  return r;
}

}  // namespace

TEST_CASE("binomial: mean and variance match n p and n p (1 - p)", "[binomial]") {
  struct Case {
    std::int64_t n;
    double p;
  };
  // Both methods (inversion below n p = 10, BTRD above), the switch-over, p > 1/2, and both
  // sides of BTRD's log-factorial table (n <= 16384). (Not n = 1, p = 1/2: its sample variance
  // has a vanishing asymptotic standard error.)
  const std::vector<Case> cases = {
      {10, 0.3},  {2048, 1.0 / 16.0}, {2048, 0.5},     {100000, 0.001},    {1000000, 0.37},
      {5, 0.999}, {20, 0.5},          {1000, 0.00999}, {1000, 0.01},       {2048, 0.93},
      {1, 0.3},   {16384, 0.25},      {16385, 0.25},   {1000000000, 1e-9},
  };
  std::mt19937_64 rng(20240601);
  constexpr int kSamples = 200000;
  for (const Case& c : cases) {
    INFO("n = " << c.n << ", p = " << c.p);
    double sum = 0.0;
    double sum_sq = 0.0;
    std::int64_t lo = c.n;
    std::int64_t hi = 0;
    std::vector<double> xs(kSamples);
    for (double& x : xs) {
      const std::int64_t k = sample_binomial(rng, c.n, c.p);
      lo = std::min(lo, k);
      hi = std::max(hi, k);
      x = static_cast<double>(k);
      sum += x;
    }
    CHECK(lo >= 0);
    CHECK(hi <= c.n);
    const double mean = sum / kSamples;
    for (double x : xs) sum_sq += (x - mean) * (x - mean);
    const double var = sum_sq / (kSamples - 1);

    const auto nd = static_cast<double>(c.n);
    const double npq = nd * c.p * (1.0 - c.p);
    // Standard errors of the sample mean and variance; the latter from the binomial's fourth
    // central moment n p q (1 + 3 p q (n - 2)).
    const double se_mean = std::sqrt(npq / kSamples);
    const double mu4 = npq * (1.0 + 3.0 * c.p * (1.0 - c.p) * (nd - 2.0));
    const double se_var = std::sqrt((mu4 - npq * npq) / kSamples);
    CHECK(std::abs(mean - nd * c.p) < 5.0 * se_mean);
    CHECK(std::abs(var - npq) < 5.0 * se_var);
    // Where the variance is not tiny, 5 standard errors are within 2 %.
    if (npq >= 1.0) CHECK(std::abs(var / npq - 1.0) < 0.02);
  }
}

TEST_CASE("binomial: frequencies follow the pmf (chi-square)", "[binomial]") {
  // Critical values are ~5 standard deviations above the chi-square mean (dof), so a correct
  // sampler fails with probability well below 1e-5; fixed seeds make the outcome reproducible.
  const auto critical = [](int dof) { return dof + 5.0 * std::sqrt(2.0 * dof) + 5.0; };

  const auto run = [&](std::uint64_t seed, std::int64_t n, double p, int samples) {
    std::mt19937_64 rng(seed);
    const ChiSquare r = chi_square(rng, n, p, samples);
    INFO("n = " << n << ", p = " << p << ": chi2 = " << r.stat << " on " << r.dof << " dof");
    CHECK(r.dof >= 10);
    CHECK(r.stat < critical(r.dof));
  };
  SECTION("inversion") { run(11, 20, 0.3, 200000); }
  SECTION("BTRD at its lower limit n p = 10") { run(12, 20, 0.5, 200000); }
  SECTION("BTRD, the trace's typical draw") { run(13, 2048, 1.0 / 16.0, 400000); }
  SECTION("BTRD, wide") { run(14, 2048, 0.5, 400000); }
  // Above the log-factorial table (n > 16384), BTRD evaluates f(k) / f(m) its own way: by
  // products near the mode, by a squeeze and by Stirling's formula further out.
  SECTION("BTRD beyond the table, near the mode") { run(15, 50000, 0.002, 400000); }
  SECTION("BTRD beyond the table, wide") { run(16, 100000, 0.3, 400000); }
}

TEST_CASE("binomial: edge cases", "[binomial]") {
  std::mt19937_64 rng(5);
  const std::mt19937_64 before = rng;
  CHECK(sample_binomial(rng, 100, 0.0) == 0);
  CHECK(sample_binomial(rng, 100, -0.5) == 0);
  CHECK(sample_binomial(rng, 100, std::numeric_limits<double>::quiet_NaN()) == 0);
  CHECK(sample_binomial(rng, 100, 1.0) == 100);
  CHECK(sample_binomial(rng, 100, 1.5) == 100);
  CHECK(sample_binomial(rng, 0, 0.3) == 0);
  CHECK(sample_binomial(rng, -4, 0.3) == 0);
  // Degenerate cases draw nothing, so they do not shift the stream of later draws.
  CHECK(rng == before);

  // Always within [0, n], for small n across the whole range of p (both methods, both sides of
  // the symmetry) and near-degenerate p.
  for (std::int64_t n = 1; n <= 60; ++n) {
    for (double p : {1e-300, 1e-12, 0.01, 0.1, 0.25, 0.4999, 0.5, 0.5001, 0.75, 0.9, 0.99, 1.0 - 1e-12}) {
      for (int i = 0; i < 200; ++i) {
        const std::int64_t k = sample_binomial(rng, n, p);
        REQUIRE(k >= 0);
        REQUIRE(k <= n);
      }
    }
  }
  // Huge n: still in range, and near the mean.
  const std::int64_t big = std::int64_t{1} << 60;
  const std::int64_t k = sample_binomial(rng, big, 0.25);
  CHECK(std::abs(static_cast<double>(k) / static_cast<double>(big) - 0.25) < 1e-6);
}

TEST_CASE("binomial: deterministic given the engine state", "[binomial]") {
  const auto sequence = [](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> out;
    for (int i = 0; i < 2000; ++i) {
      // Mixed parameters so that both methods and the symmetry are in the sequence.
      const std::int64_t n = 1 + (i * 37) % 3000;
      const double p = 0.001 + 0.998 * ((i * 13) % 100) / 100.0;
      out.push_back(sample_binomial(rng, n, p));
    }
    return out;
  };
  CHECK(sequence(7) == sequence(7));
  CHECK(sequence(7) != sequence(8));

  // p > 1/2 is defined as n minus the draw with 1 - p, from the same engine state.
  std::mt19937_64 a(99);
  std::mt19937_64 b(99);
  for (int i = 0; i < 100; ++i) {
    CHECK(sample_binomial(a, 2048, 0.8) == 2048 - sample_binomial(b, 2048, 0.2));
    CHECK(sample_binomial(a, 30, 0.9) == 30 - sample_binomial(b, 30, 0.1));
  }

  // Pinned values: the stream is ours (only raw mt19937_64 outputs), so it must not change by
  // accident, since every synthetic trace depends on it. Update deliberately if the algorithm
  // changes.
  std::mt19937_64 rng(1);
  std::vector<std::int64_t> got;
  for (double p : {0.3, 0.5, 1.0 / 16.0, 0.001, 0.9}) {
    got.push_back(sample_binomial(rng, 20, p));
    got.push_back(sample_binomial(rng, 2048, p));
  }
  CHECK(got == std::vector<std::int64_t>{4, 597, 14, 1032, 0, 139, 0, 0, 18, 1815});
}

namespace {

// FNV-1a over 64-bit values: a compact fingerprint of a long stream of draws.
std::uint64_t fnv1a(std::uint64_t h, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xFFU;
    h *= 0x100000001B3ULL;
  }
  return h;
}

// (n, p) over every path of the sampler: inversion, BTRD with the log-factorial table (n <=
// 16384), BTRD with Hoermann's evaluation near and far from the mode, p > 1/2, and edge cases.
std::vector<std::pair<std::int64_t, double>> pinned_cases() {
  std::vector<std::pair<std::int64_t, double>> v;
  for (std::int64_t n : {0LL, 1LL, 7LL, 40LL, 300LL, 5000LL, 16384LL, 16385LL, 200'000LL, 3'932'160LL}) {
    for (double p : {0.0, 1e-7, 0.0009, 0.004, 0.03, 0.2, 0.5, 0.61, 0.97, 1.0}) v.emplace_back(n, p);
  }
  return v;
}

}  // namespace

TEST_CASE("binomial: the stream is pinned on every path", "[binomial]") {
  // Every synthetic trace (and the regression baseline) depends on this stream: a faster
  // implementation must reproduce it bit for bit, including how many engine outputs it uses.
  std::mt19937_64 rng(2026);
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (int rep = 0; rep < 60; ++rep) {
    for (const auto& [n, p] : pinned_cases())
      h = fnv1a(h, static_cast<std::uint64_t>(sample_binomial(rng, n, p)));
  }
  h = fnv1a(h, rng());  // the engine's position after the draws
  CHECK(h == 0x1dd3d428eb5100d6ULL);
}

TEST_CASE("binomial: Mt64 is std::mt19937_64", "[binomial]") {
  for (std::uint64_t seed : {0ULL, 1ULL, 5489ULL, 0xFFFFFFFFFFFFFFFFULL}) {
    std::mt19937_64 a(seed);
    moesim::Mt64 b(seed);
    bool same = true;
    for (int i = 0; i < 5000; ++i) same = same && a() == b();  // several refills
    CHECK(same);
    // Reseeding starts over, as std's does.
    a.seed(seed + 7);
    b.seed(seed + 7);
    CHECK(a() == b());
  }
  std::mt19937_64 a;
  moesim::Mt64 b;
  CHECK(a() == b());  // the default seed
  // std distributions draw the same from it.
  std::normal_distribution<double> na;
  std::normal_distribution<double> nb;
  for (int i = 0; i < 100; ++i) CHECK(na(a) == nb(b));
}

TEST_CASE("binomial: a batch is the same draws as one call each", "[binomial]") {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    // Counts of every kind in one batch: nothing left, inversion, the table, Hoermann's path.
    const std::size_t count = 1 + rng() % 150;
    std::vector<std::int64_t> n(count);
    for (auto& v : n) {
      const std::uint64_t kind = rng() % 5;
      const std::uint64_t range = kind == 1 ? 40 : kind == 2 ? 16384 : 4'000'000;
      v = kind == 0 ? 0 : static_cast<std::int64_t>(rng() % range);
    }
    const double ps[] = {0.0, 1.0, 1e-6, 0.003, 0.02, 0.3, 0.5, 0.7, 0.999, -0.1, 1.5};
    const double p = trial < 11 ? ps[trial] : static_cast<double>(rng() >> 11) * 0x1.0p-53;
    moesim::Mt64 one(static_cast<std::uint64_t>(trial));
    moesim::Mt64 batch(static_cast<std::uint64_t>(trial));
    std::vector<std::int64_t> want(count);
    for (std::size_t i = 0; i < count; ++i) want[i] = sample_binomial(one, n[i], p);
    std::vector<std::int64_t> got(count, -1);
    moesim::sample_binomial_batch(batch, p, n.data(), got.data(), count);
    REQUIRE(got == want);
    REQUIRE(one() == batch());  // the engine is left at the same position
  }
}

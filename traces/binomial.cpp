#include "traces/binomial.hpp"

#include <cmath>
#include <vector>

namespace moesim {

namespace {

// Uniform on the open interval (0, 1): the top 52 bits plus one half, scaled. Exact in a double,
// never 0 or 1 (so the logs and divisions below are safe), and independent of the standard
// library's generate_canonical.
double uniform_open(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 12) + 0.5) * 0x1.0p-52; }

// Remainder of Stirling's formula: log(k!) - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2].
// Tabulated below 10 (computed to 17 digits with mpmath), where the series converges slowly;
// from 10 on, four terms of the series in z = k + 1 are accurate to better than 1e-12.
double stirling_tail(std::int64_t k) {
  static constexpr double kTable[10] = {
      0.081061466795327258,  0.041340695955409294,  0.027677925684998339, 0.020790672103765093,
      0.016644691189821192,  0.013876128823070748,  0.011896709945891770, 0.010411265261972096,
      0.0092554621827127329, 0.0083305634333628713,
  };
  if (k < 10) return kTable[k];
  const double iz = 1.0 / static_cast<double>(k + 1);
  const double iz2 = iz * iz;
  // 1/(12z) - 1/(360z^3) + 1/(1260z^5) - 1/(1680z^7), in Horner form with one division.
  return iz * (1.0 / 12.0 - iz2 * (1.0 / 360.0 - iz2 * (1.0 / 1260.0 - iz2 * (1.0 / 1680.0))));
}

// log(k!) for k <= kLogFactorialMax, so that for the usual batch sizes an exact pmf ratio costs
// four loads and a log instead of a product loop or Stirling's formula with three logs (the
// terms are below 2e5, so their rounding errors stay near 1e-11). Built once, on first use.
constexpr std::int64_t kLogFactorialMax = 16384;

const double* log_factorials() {
  static const std::vector<double> table = [] {
    std::vector<double> t(static_cast<std::size_t>(kLogFactorialMax) + 1);
    for (std::size_t k = 0; k < t.size(); ++k) t[k] = std::lgamma(static_cast<double>(k) + 1.0);
    return t;
  }();
  return table.data();
}

// Small mean (n p < 10, p <= 0.5): walk the cdf from k = 0. P(0) = (1-p)^n >= e^-14 here, so it
// never underflows, and the expected number of steps is about n p + 1.
std::int64_t binomial_inversion(std::mt19937_64& rng, std::int64_t n, double p) {
  const double odds = p / (1.0 - p);
  const double p0 = std::exp(static_cast<double>(n) * std::log1p(-p));
  for (;;) {
    double u = uniform_open(rng);
    double f = p0;
    for (std::int64_t k = 0;; ++k) {
      if (u < f) return k;
      u -= f;
      // Rounding can leave u just above the total mass; the pmf has then run out (k == n, or it
      // underflowed far in the tail), and drawing afresh is the exact response.
      if (k == n || f == 0.0) break;
      f *= odds * static_cast<double>(n - k) / static_cast<double>(k + 1);
    }
  }
}

// Large mean (n p >= 10, p <= 0.5): BTRD. A point (u, v) uniform on (-1/2, 1/2) x (0, 1) is
// mapped to k = floor((2a / (1/2 - |u|) + b) u + c), whose density in k is a hat over the pmf;
// (u, v) is accepted when v, scaled by the hat, lies under f(k) / f(m), m the mode. The constants
// are Hoermann's; we checked numerically (1,600 cases, n from 20 to 1e8, n p >= 10) that the hat
// dominates the pmf and the central box (|u| <= 0.43, v <= v_r) lies under it, with margins of
// 0.5 % or more, so the output is exactly binomial.
// The trace generator calls this with new (n, p) every time, so the set-up is kept to one sqrt
// and one division, and the common path (the central box) to one more division.
std::int64_t binomial_btrd(std::mt19937_64& rng, std::int64_t n, double p) {
  const double nd = static_cast<double>(n);
  const double q = 1.0 - p;
  const double npq = nd * (p * q);
  const double sd = std::sqrt(npq);
  const double b = 1.15 + 2.53 * sd;
  const double a = -0.0873 + 0.0248 * b + 0.01 * p;
  const double c = nd * p + 0.5;
  // v_r = 0.92 - 4.2 / b, kept multiplied by b so that the branch needs no division.
  const double v_r_b = 0.92 * b - 4.2;
  const double inv_v_r = b / v_r_b;

  for (;;) {
    double v = uniform_open(rng);
    if (v * b <= 0.86 * v_r_b) {
      // Central box (v <= 0.86 v_r), entirely under the pmf: accept without evaluating it.
      // v / v_r is uniform on (0, 0.86), giving u on (-0.43, 0.43). Taken with probability
      // 0.86 v_r: about 3/4 of the draws once n p q is in the hundreds, 1/4 to 2/5 near n p = 10.
      // The argument is >= 4 here (checked with the constants), so truncation is floor.
      const double u = v * inv_v_r - 0.43;
      return static_cast<std::int64_t>((2.0 * a / (0.5 - std::abs(u)) + b) * u + c);
    }
    double u = 0.0;
    if (v * b >= v_r_b) {
      // Above the box: v is already uniform on [v_r, 1); u is fresh.
      u = uniform_open(rng) - 0.5;
    } else {
      // The side strips 0.43 < |u| < 0.5 below v_r: reuse v for u, draw v afresh.
      u = v * inv_v_r - 0.93;
      u = std::copysign(0.5, u) - u;
      v = uniform_open(rng) / inv_v_r;
    }
    const double us = 0.5 - std::abs(u);
    const double x = (2.0 * a / us + b) * u + c;
    // floor(x) outside [0, n]: reject (this also catches us == 0, where x is infinite). Inside,
    // x >= 0 and truncation is floor.
    if (!(x >= 0.0 && x < nd + 1.0)) continue;
    const auto k = static_cast<std::int64_t>(x);
    // v relative to the hat at u: v * alpha / (a / us^2 + b), with one division.
    const double alpha = (2.83 + 5.1 / b) * sd;
    const double us2 = us * us;
    v *= alpha * us2 / (a + b * us2);

    // The mode; (n + 1) p >= 10 here, so truncation is floor.
    const auto m = static_cast<std::int64_t>((nd + 1.0) * p);
    const double odds = p / q;
    if (n <= kLogFactorialMax) {
      const double* lf = log_factorials();
      const double log_ratio =
          lf[m] + lf[n - m] - lf[k] - lf[n - k] + static_cast<double>(k - m) * std::log(odds);
      if (std::log(v) <= log_ratio) return k;
      continue;
    }

    // Larger n: Hoermann's own evaluation of f(k) / f(m).
    const std::int64_t km = k > m ? k - m : m - k;
    if (km <= 15) {
      // Near the mode: f(k) / f(m) as a product of f(i) / f(i-1) = (n + 1 - i) (p/q) / i, with
      // numerator and denominator kept apart to avoid a division per step (at most 15 factors,
      // each below 2^64, cannot overflow a double).
      double num = 1.0;
      double den = 1.0;
      if (m < k) {
        for (std::int64_t i = m + 1; i <= k; ++i) {
          num *= odds * static_cast<double>(n + 1 - i);
          den *= static_cast<double>(i);
        }
        if (v * den <= num) return k;
      } else {
        for (std::int64_t i = k + 1; i <= m; ++i) {
          num *= odds * static_cast<double>(n + 1 - i);
          den *= static_cast<double>(i);
        }
        if (v * num <= den) return k;
      }
      continue;
    }

    // Far from the mode, in logs: a squeeze from the normal expansion of log f(k) / f(m)
    // settles most cases; otherwise evaluate it exactly through Stirling's formula.
    v = std::log(v);
    const double kmd = static_cast<double>(km);
    const double inv_npq = 1.0 / npq;
    const double rho = kmd * inv_npq * (((kmd * (1.0 / 3.0) + 0.625) * kmd + 1.0 / 6.0) * inv_npq + 0.5);
    const double t = -0.5 * kmd * kmd * inv_npq;
    if (v < t - rho) return k;
    if (v > t + rho) continue;

    const double md = static_cast<double>(m);
    const double kd = static_cast<double>(k);
    const double nm = nd - md + 1.0;
    const double h =
        (md + 0.5) * std::log((md + 1.0) / (odds * nm)) + stirling_tail(m) + stirling_tail(n - m);
    const double nk = nd - kd + 1.0;
    const double log_ratio = h + (nd + 1.0) * std::log(nm / nk) +
                             (kd + 0.5) * std::log(nk * odds / (kd + 1.0)) - stirling_tail(k) -
                             stirling_tail(n - k);
    if (v <= log_ratio) return k;
  }
}

}  // namespace

std::int64_t sample_binomial(std::mt19937_64& rng, std::int64_t n, double p) {
  if (n <= 0 || !(p > 0.0)) return 0;  // !(p > 0) also maps NaN to 0
  if (p >= 1.0) return n;
  // Both methods assume p <= 1/2; 1 - p is exact for p > 1/2.
  if (p > 0.5) return n - sample_binomial(rng, n, 1.0 - p);
  // BTRD's constants are valid from n p >= 10 on; below, inversion is exact and short.
  if (static_cast<double>(n) * p < 10.0) return binomial_inversion(rng, n, p);
  return binomial_btrd(rng, n, p);
}

}  // namespace moesim

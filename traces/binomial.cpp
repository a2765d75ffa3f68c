#include "traces/binomial.hpp"

#include <algorithm>
#include <cmath>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace moesim {

namespace {

// Uniform on the open interval (0, 1): the top 52 bits plus one half, scaled. Exact in a double,
// never 0 or 1 (so the logs and divisions below are safe), and independent of the standard
// library's generate_canonical.
template <class Rng>
double uniform_open(Rng& rng) {
  return (static_cast<double>(rng() >> 12) + 0.5) * 0x1.0p-52;
}

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
// never underflows, and the expected number of steps is about n p + 1. `odds` is p / (1 - p) and
// `log1m_p` log1p(-p), passed in so that a batch with one p computes them once.
template <class Rng>
std::int64_t binomial_inversion(Rng& rng, std::int64_t n, double odds, double log1m_p) {
  const double p0 = std::exp(static_cast<double>(n) * log1m_p);
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
// The set-up is split in what depends on p alone (BtrdP, once per batch) and what depends on n
// too (BtrdN: one sqrt and one division); the common path (the central box) costs one more
// division. Every value is computed by the same operations in the same order as in the scalar
// form this replaced, so the stream is unchanged.
struct BtrdP {
  double p = 0.0;
  double q = 0.0;
  double pq = 0.0;
  double p01 = 0.0;   // 0.01 p, a term of a
  double odds = 0.0;  // p / q
  // std::log(odds), which every draw outside the box recomputed; a batch computes it once, a
  // single draw only if it needs it (has_log_odds false).
  double log_odds = 0.0;
  bool has_log_odds = false;
};

BtrdP btrd_p(double p, bool with_log_odds) {
  BtrdP c;
  c.p = p;
  c.q = 1.0 - p;
  c.pq = p * c.q;
  c.p01 = 0.01 * p;
  c.odds = p / c.q;
  if (with_log_odds) {
    c.log_odds = std::log(c.odds);
    c.has_log_odds = true;
  }
  return c;
}

struct BtrdN {
  std::int64_t n = 0;
  double nd = 0.0;
  double npq = 0.0;
  double sd = 0.0;
  double b = 0.0;
  double a = 0.0;
  double c = 0.0;
  double v_r_b = 0.0;  // v_r = 0.92 - 4.2 / b, kept multiplied by b so the box test needs no division
  double inv_v_r = 0.0;
};

inline BtrdN btrd_n(const BtrdP& P, std::int64_t n) {
  BtrdN d;
  d.n = n;
  d.nd = static_cast<double>(n);
  d.npq = d.nd * P.pq;
  d.sd = std::sqrt(d.npq);
  d.b = 1.15 + 2.53 * d.sd;
  d.a = -0.0873 + 0.0248 * d.b + P.p01;
  d.c = d.nd * P.p + 0.5;
  d.v_r_b = 0.92 * d.b - 4.2;
  d.inv_v_r = d.b / d.v_r_b;
  return d;
}

// Central box (v <= 0.86 v_r), entirely under the pmf: accepted without evaluating it. v / v_r is
// uniform on (0, 0.86), giving u on (-0.43, 0.43). Taken with probability 0.86 v_r: about 3/4 of
// the draws once n p q is in the hundreds, 1/4 to 2/5 near n p = 10.
inline bool btrd_in_box(double v, double b, double v_r_b) { return v * b <= 0.86 * v_r_b; }

// The argument is >= 4 in the box (checked with the constants), so truncation is floor.
inline std::int64_t btrd_box_k(double v, double a, double b, double c, double inv_v_r) {
  const double u = v * inv_v_r - 0.43;
  return static_cast<std::int64_t>((2.0 * a / (0.5 - std::abs(u)) + b) * u + c);
}

// One try of BTRD for a v outside the central box: the draw, or -1 when (u, v) is rejected.
// `alpha` is (2.83 + 5.1 / b) sd and `inv_npq` 1 / (n p q), computed once for all the tries.
template <class Rng>
std::int64_t btrd_outside(Rng& rng, const BtrdP& P, const BtrdN& d, double alpha, double inv_npq, double v) {
  const double nd = d.nd;
  const double b = d.b;
  const double a = d.a;
  const std::int64_t n = d.n;
  double u = 0.0;
  if (v * b >= d.v_r_b) {
    // Above the box: v is already uniform on [v_r, 1); u is fresh.
    u = uniform_open(rng) - 0.5;
  } else {
    // The side strips 0.43 < |u| < 0.5 below v_r: reuse v for u, draw v afresh.
    u = v * d.inv_v_r - 0.93;
    u = std::copysign(0.5, u) - u;
    v = uniform_open(rng) / d.inv_v_r;
  }
  const double us = 0.5 - std::abs(u);
  const double x = (2.0 * a / us + b) * u + d.c;
  // floor(x) outside [0, n]: reject (this also catches us == 0, where x is infinite). Inside,
  // x >= 0 and truncation is floor.
  if (!(x >= 0.0 && x < nd + 1.0)) return -1;
  const auto k = static_cast<std::int64_t>(x);
  // v relative to the hat at u: v * alpha / (a / us^2 + b), with one division.
  const double us2 = us * us;
  v *= alpha * us2 / (a + b * us2);

  // The mode; (n + 1) p >= 10 here, so truncation is floor.
  const auto m = static_cast<std::int64_t>((nd + 1.0) * P.p);
  const double odds = P.odds;
  if (n <= kLogFactorialMax) {
    const double* lf = log_factorials();
    const double log_ratio = lf[m] + lf[n - m] - lf[k] - lf[n - k] +
                             static_cast<double>(k - m) * (P.has_log_odds ? P.log_odds : std::log(odds));
    return std::log(v) <= log_ratio ? k : -1;
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
      return v * den <= num ? k : -1;
    }
    for (std::int64_t i = k + 1; i <= m; ++i) {
      num *= odds * static_cast<double>(n + 1 - i);
      den *= static_cast<double>(i);
    }
    return v * num <= den ? k : -1;
  }

  // Far from the mode, in logs: a squeeze from the normal expansion of log f(k) / f(m)
  // settles most cases; otherwise evaluate it exactly through Stirling's formula.
  v = std::log(v);
  const double kmd = static_cast<double>(km);
  const double rho = kmd * inv_npq * (((kmd * (1.0 / 3.0) + 0.625) * kmd + 1.0 / 6.0) * inv_npq + 0.5);
  const double t = -0.5 * kmd * kmd * inv_npq;
  if (v < t - rho) return k;
  if (v > t + rho) return -1;

  const double md = static_cast<double>(m);
  const double kd = static_cast<double>(k);
  const double nm = nd - md + 1.0;
  const double h = (md + 0.5) * std::log((md + 1.0) / (odds * nm)) + stirling_tail(m) + stirling_tail(n - m);
  const double nk = nd - kd + 1.0;
  const double log_ratio = h + (nd + 1.0) * std::log(nm / nk) +
                           (kd + 0.5) * std::log(nk * odds / (kd + 1.0)) - stirling_tail(k) -
                           stirling_tail(n - k);
  return v <= log_ratio ? k : -1;
}

// BTRD from its first v on: tries until one is accepted, each further try with a fresh v.
template <class Rng>
std::int64_t btrd_finish(Rng& rng, const BtrdP& P, const BtrdN& d, double v) {
  const double alpha = (2.83 + 5.1 / d.b) * d.sd;
  const double inv_npq = 1.0 / d.npq;
  for (;;) {
    if (btrd_in_box(v, d.b, d.v_r_b)) return btrd_box_k(v, d.a, d.b, d.c, d.inv_v_r);
    const std::int64_t k = btrd_outside(rng, P, d, alpha, inv_npq, v);
    if (k >= 0) return k;
    v = uniform_open(rng);
  }
}

template <class Rng>
std::int64_t sample_one(Rng& rng, std::int64_t n, double p) {
  if (n <= 0 || !(p > 0.0)) return 0;  // !(p > 0) also maps NaN to 0
  if (p >= 1.0) return n;
  // Both methods assume p <= 1/2; 1 - p is exact for p > 1/2.
  if (p > 0.5) return n - sample_one(rng, n, 1.0 - p);
  // BTRD's constants are valid from n p >= 10 on; below, inversion is exact and short.
  if (static_cast<double>(n) * p < 10.0) return binomial_inversion(rng, n, p / (1.0 - p), std::log1p(-p));
  const BtrdP P = btrd_p(p, false);
  const BtrdN d = btrd_n(P, n);
  const double v = uniform_open(rng);
  if (btrd_in_box(v, d.b, d.v_r_b)) return btrd_box_k(v, d.a, d.b, d.c, d.inv_v_r);
  return btrd_finish(rng, P, d, v);
}

// The batch in chunks: first every draw's BTRD set-up, in a loop without branches, then the
// draws in order (the engine is consumed in exactly the order of one call per draw), most of
// them ending in the box after one engine output.
template <class Rng>
void sample_batch(Rng& rng, double p, const std::int64_t* n, std::int64_t* out, std::size_t count) {
  if (!(p > 0.0)) {
    for (std::size_t i = 0; i < count; ++i) out[i] = 0;
    return;
  }
  if (p >= 1.0) {
    for (std::size_t i = 0; i < count; ++i) out[i] = n[i] > 0 ? n[i] : 0;
    return;
  }
  const bool flip = p > 0.5;
  const double pp = flip ? 1.0 - p : p;
  const BtrdP P = btrd_p(pp, true);
  const double log1m_p = std::log1p(-pp);
  constexpr std::size_t kChunk = 64;
  // The set-up by field, so that the loop that computes it vectorises where the target allows.
  double npq[kChunk];
  double sd[kChunk];
  double b[kChunk];
  double a[kChunk];
  double c[kChunk];
  double v_r_b[kChunk];
  double box_b[kChunk];  // 0.86 v_r_b, btrd_in_box's bound
  double inv_v_r[kChunk];
  for (std::size_t start = 0; start < count; start += kChunk) {
    const std::size_t len = std::min(kChunk, count - start);
    const std::int64_t* nc = n + start;
    std::size_t j0 = 0;
#if defined(__SSE2__)
    // Two draws at a time with SSE2 (baseline on x86-64): std::sqrt's errno path keeps the
    // compiler from vectorising the loop below, and the divider is the set-up's bottleneck.
    // sqrtpd, divpd, mulpd and addpd round each lane as their scalar forms do, and the
    // operations are btrd_n's in its order, so every value is the same.
    {
      const __m128d pq2 = _mm_set1_pd(P.pq);
      const __m128d p2 = _mm_set1_pd(P.p);
      const __m128d p01 = _mm_set1_pd(P.p01);
      for (; j0 + 2 <= len; j0 += 2) {
        const __m128d nd = _mm_set_pd(static_cast<double>(nc[j0 + 1]), static_cast<double>(nc[j0]));
        const __m128d npq2 = _mm_mul_pd(nd, pq2);
        const __m128d sd2 = _mm_sqrt_pd(npq2);
        const __m128d b2 = _mm_add_pd(_mm_set1_pd(1.15), _mm_mul_pd(_mm_set1_pd(2.53), sd2));
        const __m128d a2 =
            _mm_add_pd(_mm_add_pd(_mm_set1_pd(-0.0873), _mm_mul_pd(_mm_set1_pd(0.0248), b2)), p01);
        const __m128d c2 = _mm_add_pd(_mm_mul_pd(nd, p2), _mm_set1_pd(0.5));
        const __m128d v_r_b2 = _mm_sub_pd(_mm_mul_pd(_mm_set1_pd(0.92), b2), _mm_set1_pd(4.2));
        _mm_storeu_pd(npq + j0, npq2);
        _mm_storeu_pd(sd + j0, sd2);
        _mm_storeu_pd(b + j0, b2);
        _mm_storeu_pd(a + j0, a2);
        _mm_storeu_pd(c + j0, c2);
        _mm_storeu_pd(v_r_b + j0, v_r_b2);
        _mm_storeu_pd(box_b + j0, _mm_mul_pd(_mm_set1_pd(0.86), v_r_b2));
        _mm_storeu_pd(inv_v_r + j0, _mm_div_pd(b2, v_r_b2));
      }
    }
#endif
    for (std::size_t j = j0; j < len; ++j) {
      const BtrdN d = btrd_n(P, nc[j]);
      npq[j] = d.npq;
      sd[j] = d.sd;
      b[j] = d.b;
      a[j] = d.a;
      c[j] = d.c;
      v_r_b[j] = d.v_r_b;
      box_b[j] = 0.86 * d.v_r_b;
      inv_v_r[j] = d.inv_v_r;
    }
    for (std::size_t j = 0; j < len; ++j) {
      const std::int64_t nj = nc[j];
      std::int64_t x = 0;
      if (nj <= 0) {
        out[start + j] = 0;
        continue;
      }
      if (static_cast<double>(nj) * pp < 10.0) {
        x = binomial_inversion(rng, nj, P.odds, log1m_p);
      } else {
        const double v = uniform_open(rng);
        if (v * b[j] <= box_b[j]) {  // btrd_in_box, its bound from the set-up
          x = btrd_box_k(v, a[j], b[j], c[j], inv_v_r[j]);
        } else {
          // Outside the box (about 1 draw in 4): the rest of BTRD, from the set-up above.
          BtrdN d;
          d.n = nj;
          d.nd = static_cast<double>(nj);
          d.npq = npq[j];
          d.sd = sd[j];
          d.b = b[j];
          d.a = a[j];
          d.c = c[j];
          d.v_r_b = v_r_b[j];
          d.inv_v_r = inv_v_r[j];
          x = btrd_finish(rng, P, d, v);
        }
      }
      out[start + j] = flip ? nj - x : x;
    }
  }
}

}  // namespace

std::int64_t sample_binomial(std::mt19937_64& rng, std::int64_t n, double p) { return sample_one(rng, n, p); }
std::int64_t sample_binomial(Mt64& rng, std::int64_t n, double p) { return sample_one(rng, n, p); }

void sample_binomial_batch(Mt64& rng, double p, const std::int64_t* n, std::int64_t* out, std::size_t count) {
  sample_batch(rng, p, n, out, count);
}

}  // namespace moesim

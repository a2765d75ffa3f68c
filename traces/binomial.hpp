#pragma once
// Exact binomial sampler whose random stream is fully defined by our own code: it consumes only
// raw std::mt19937_64 outputs (whose sequence the C++ standard fixes), never a std distribution,
// so synthetic traces do not depend on the standard library's binomial algorithm. It is also
// cheap to call with a new (n, p) every time, which the trace generator does for every draw.
#include <cstddef>
#include <cstdint>
#include <random>

#include "traces/mt64.hpp"

namespace moesim {

// One draw from Binomial(n, p). Exact (no normal or Poisson approximation):
//  - n * min(p, 1 - p) < 10: inversion by sequential search from k = 0;
//  - otherwise: Hoermann's BTRD (transformed rejection with decomposition, "The generation of
//    binomial random variates", J. Stat. Comput. Simul. 46, 1993).
// p > 0.5 is drawn as n - Binomial(n, 1 - p). Edge cases: n <= 0 or p <= 0 (or NaN) gives 0,
// p >= 1 gives n; these consume no random numbers. The result always lies in [0, n].
// Deterministic given the engine state.
[[nodiscard]] std::int64_t sample_binomial(std::mt19937_64& rng, std::int64_t n, double p);
// The same draw from Mt64, whose output sequence is std::mt19937_64's: same results.
[[nodiscard]] std::int64_t sample_binomial(Mt64& rng, std::int64_t n, double p);

// out[i] = sample_binomial(rng, n[i], p) for i = 0 .. count - 1, in that order: the same results
// and the same engine state after as those calls, faster for many draws with one p (the
// synthetic generator's draws for one expert from every source GPU).
void sample_binomial_batch(Mt64& rng, double p, const std::int64_t* n, std::int64_t* out, std::size_t count);

}  // namespace moesim

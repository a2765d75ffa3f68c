#include "traces/cross_layer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"

namespace moesim {

CrossLayerPairs synthetic_cross_layer(const TraceShape& shape, const SyntheticTraceSpec& spec, double affinity) {
  if (!(affinity >= 0.0 && affinity <= 1.0))
    throw InputError(fmt::format("synthetic cross-layer affinity {} is out of range; allowed 0..1", affinity));
  const auto E = static_cast<std::size_t>(shape.experts);
  const std::vector<double> logp = synthetic_base_logp(shape, spec);
  // Normalised popularity and rank order (most popular first, ties to the lower id) per layer.
  std::vector<std::vector<double>> p(static_cast<std::size_t>(shape.layers), std::vector<double>(E));
  std::vector<std::vector<std::size_t>> order(static_cast<std::size_t>(shape.layers), std::vector<std::size_t>(E));
  for (std::size_t l = 0; l < p.size(); ++l) {
    double total = 0.0;
    for (std::size_t e = 0; e < E; ++e) total += p[l][e] = std::exp(logp[l * E + e]);
    for (double& x : p[l]) x /= total;
    std::iota(order[l].begin(), order[l].end(), std::size_t{0});
    std::stable_sort(order[l].begin(), order[l].end(), [&](std::size_t a, std::size_t b) { return p[l][a] > p[l][b]; });
  }
  CrossLayerPairs out;
  out.experts = shape.experts;
  out.source = fmt::format("synthetic(affinity={})", affinity);
  for (std::size_t l = 0; l + 1 < p.size(); ++l) {
    std::vector<double> w(E * E);
    std::vector<std::size_t> partner(E);
    for (std::size_t r = 0; r < E; ++r) partner[order[l][r]] = order[l + 1][r];
    for (std::size_t i = 0; i < E; ++i)
      for (std::size_t j = 0; j < E; ++j)
        w[i * E + j] = p[l][i] * ((j == partner[i] ? affinity : 0.0) + (1.0 - affinity) * p[l + 1][j]);
    out.weight.push_back(std::move(w));
  }
  return out;
}

}  // namespace moesim

#include "sim/cross_layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace moesim {

std::vector<double> reconcile_pairs(const std::vector<double>& pairs, const std::vector<double>& rows,
                                    const std::vector<double>& cols, int experts) {
  const auto E = static_cast<std::size_t>(experts);
  std::vector<double> j(E * E, 0.0);
  double row_total = 0.0, col_total = 0.0;
  for (double r : rows) row_total += r;
  for (double c : cols) col_total += c;
  if (row_total <= 0.0 || col_total <= 0.0) return j;
  std::vector<double> col(E);
  for (std::size_t b = 0; b < E; ++b) col[b] = cols[b] * (row_total / col_total);
  for (std::size_t a = 0; a < E; ++a)
    for (std::size_t b = 0; b < E; ++b)
      if (rows[a] > 0.0 && col[b] > 0.0) j[a * E + b] = pairs[a * E + b];
  // Rows and columns with a target but no recorded weight: independent choices.
  for (std::size_t a = 0; a < E; ++a) {
    if (rows[a] <= 0.0) continue;
    double s = 0.0;
    for (std::size_t b = 0; b < E; ++b) s += j[a * E + b];
    if (s <= 0.0)
      for (std::size_t b = 0; b < E; ++b) j[a * E + b] = col[b];
  }
  for (std::size_t b = 0; b < E; ++b) {
    if (col[b] <= 0.0) continue;
    double s = 0.0;
    for (std::size_t a = 0; a < E; ++a) s += j[a * E + b];
    if (s <= 0.0)
      for (std::size_t a = 0; a < E; ++a) j[a * E + b] = rows[a];
  }
  // The fitted matrix is diag(x) W diag(y): alternate x (rows exact) and y (columns exact) by
  // matrix-vector products until the columns are within 1e-6 of their targets with x fresh (the
  // same inputs stop at the same sweep, so results stay bit-identical), at most 50 sweeps.
  std::vector<double> x(E, 0.0), y(E, 0.0), t(E);
  for (std::size_t b = 0; b < E; ++b) y[b] = col[b] > 0.0 ? 1.0 : 0.0;
  auto fit_rows = [&] {
    for (std::size_t a = 0; a < E; ++a) {
      if (rows[a] <= 0.0) {
        x[a] = 0.0;
        continue;
      }
      double s = 0.0;
      const double* w = j.data() + a * E;
      for (std::size_t b = 0; b < E; ++b) s += w[b] * y[b];
      x[a] = s > 0.0 ? rows[a] / s : 0.0;
    }
  };
  constexpr int kSweeps = 50;
  for (int sweep = 0; sweep < kSweeps; ++sweep) {
    fit_rows();
    std::fill(t.begin(), t.end(), 0.0);
    for (std::size_t a = 0; a < E; ++a) {
      if (x[a] == 0.0) continue;
      const double* w = j.data() + a * E;
      for (std::size_t b = 0; b < E; ++b) t[b] += x[a] * w[b];
    }
    double worst = 0.0;
    for (std::size_t b = 0; b < E; ++b)
      if (t[b] > 0.0 && y[b] > 0.0) worst = std::max(worst, std::abs(col[b] / (y[b] * t[b]) - 1.0));
    if (worst < 1e-6) break;
    for (std::size_t b = 0; b < E; ++b) y[b] = t[b] > 0.0 ? col[b] / t[b] : 0.0;
  }
  fit_rows();
  for (std::size_t a = 0; a < E; ++a)
    for (std::size_t b = 0; b < E; ++b) j[a * E + b] *= x[a] * y[b];
  return j;
}

namespace {

// Each expert's accepted assignments (all sources) and, per GPU, the share of them held there.
struct ExpertSpread {
  std::vector<double> total;                                // [expert]
  std::vector<std::vector<std::pair<int, double>>> gpus;   // [expert]: (GPU, accepted)
};

ExpertSpread spread_of(const LayerDispatch& d, const std::vector<int>& layout, int slots_per_gpu, int experts) {
  ExpertSpread out;
  out.total.assign(static_cast<std::size_t>(experts), 0.0);
  out.gpus.resize(static_cast<std::size_t>(experts));
  for (int slot = 0; slot < d.num_slots; ++slot) {
    const int e = layout[static_cast<std::size_t>(slot)];
    if (e < 0) continue;
    double n = 0.0;
    for (int s = 0; s < d.gpus; ++s) n += static_cast<double>(d.accepted[static_cast<std::size_t>(s) * d.num_slots + slot]);
    if (n <= 0.0) continue;
    out.total[static_cast<std::size_t>(e)] += n;
    auto& g = out.gpus[static_cast<std::size_t>(e)];
    const int gpu = slot / slots_per_gpu;
    if (!g.empty() && g.back().first == gpu) g.back().second += n;
    else g.emplace_back(gpu, n);
  }
  return out;
}

}  // namespace

std::vector<double> follow_hops(const LayerDispatch& from, const std::vector<int>& from_layout, const LayerDispatch& to,
                                const std::vector<int>& to_layout, int slots_per_gpu, const std::vector<double>& pairs,
                                int experts) {
  const int G = from.gpus;
  const auto E = static_cast<std::size_t>(experts);
  const ExpertSpread a = spread_of(from, from_layout, slots_per_gpu, experts);
  const ExpertSpread b = spread_of(to, to_layout, slots_per_gpu, experts);
  const std::vector<double> joint = reconcile_pairs(pairs, a.total, b.total, experts);
  // at[g * E + j]: assignments on GPU g (at layer l) whose next expert is j.
  std::vector<double> at(static_cast<std::size_t>(G) * E, 0.0);
  for (std::size_t i = 0; i < E; ++i)
    for (const auto& [g, n] : a.gpus[i]) {
      const double share = n / a.total[i];
      double* row = at.data() + static_cast<std::size_t>(g) * E;
      for (std::size_t jx = 0; jx < E; ++jx) row[jx] += share * joint[i * E + jx];
    }
  std::vector<double> hops(static_cast<std::size_t>(G) * G, 0.0);
  for (std::size_t jx = 0; jx < E; ++jx)
    for (const auto& [h, n] : b.gpus[jx]) {
      const double share = n / b.total[jx];
      for (int g = 0; g < G; ++g) hops[static_cast<std::size_t>(g) * G + h] += at[static_cast<std::size_t>(g) * E + jx] * share;
    }
  return hops;
}

}  // namespace moesim

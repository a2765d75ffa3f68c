#pragma once
// Turns token survival into training progress. Each iteration with survival s contributes
// 1 / N(s) of the run, where N(s) is the number of iterations a run at constant survival s needs
// to reach the target loss; training has converged when the progress reaches 1.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/config.hpp"

namespace moesim {

struct ConvergenceSpec {
  // "linear": N(s) = a - b s. "table": piecewise-linear through (survival, iterations) points,
  // constant beyond the first and last point.
  std::string form = "linear";
  // source: SwiftMoE/SYMI (arXiv 2504.19925) Table 1, GPT-Small 32 experts top-1 on 16 GPUs:
  // survival 44.90 % -> 618, 65.56 % -> 527, 74.91 % -> 478 iterations; least-squares line
  // 827.5 - 466.6 s (residual at most 6). Beyond 74.91 % survival the line is an extrapolation.
  double a_iterations = 827.5;
  double b_iterations = 466.6;
  std::vector<double> table_survival{0.4490, 0.6556, 0.7491};
  std::vector<double> table_iterations{618, 527, 478};
  std::string source = "SwiftMoE/SYMI arXiv 2504.19925 Table 1 (GPT-Small, top-1, 16 GPUs)";

  [[nodiscard]] double iterations_needed(double survival) const;
  [[nodiscard]] nlohmann::json to_json() const;
};

[[nodiscard]] ConvergenceSpec load_convergence(Cfg c);

}  // namespace moesim

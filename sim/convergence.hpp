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
  // constant beyond the first and last point. "effective_tokens": N(s) = N1 / (1 - alpha (1 - s)):
  // each dropped assignment removes its share alpha of what an iteration teaches (alpha: the
  // expert path's share of learning), so a run at survival s needs 1 / (1 - alpha (1 - s)) times
  // the iterations of a dropless one.
  std::string form = "linear";
  // source: SwiftMoE/SYMI (arXiv 2504.19925) Table 1, GPT-Small 32 experts top-1 on 16 GPUs:
  // survival 44.90 % -> 618, 65.56 % -> 527, 74.91 % -> 478 iterations; least-squares line
  // 827.5 - 466.6 s (residual at most 6). Beyond 74.91 % survival the line is an extrapolation.
  double a_iterations = 827.5;
  double b_iterations = 466.6;
  std::vector<double> table_survival{0.4490, 0.6556, 0.7491};
  std::vector<double> table_iterations{618, 527, 478};
  // The same three points, least squares over alpha in steps of 1e-5 with the best N1 for each:
  // N1 = 409.12, alpha = 0.61663 (residuals +1.7, -7.6, +6.0 iterations; 409 at full survival,
  // where the line says 361: the two forms disagree most where no point was measured).
  double n1_iterations = 409.12;
  double alpha = 0.61663;
  std::string source = "SwiftMoE/SYMI arXiv 2504.19925 Table 1 (GPT-Small, top-1, 16 GPUs)";
  // The model preset the default figures were measured on, and the highest survival among them:
  // beyond it every form extrapolates.
  std::string fitted_for = "gpt-small-moe";
  double data_max_survival = 0.7491;
  // Set at load when the scenario's model is not `fitted_for` and it kept the default figures.
  std::string note;

  [[nodiscard]] double iterations_needed(double survival) const;
  [[nodiscard]] nlohmann::json to_json() const;
  // This spec under another form, its figures unchanged.
  [[nodiscard]] ConvergenceSpec with_form(const std::string& f) const;
};

// The forms `compare --convergence-band` runs, in this order.
inline const std::vector<std::string> kConvergenceForms{"linear", "table", "effective_tokens"};

// `model_name`: the scenario's model, for the note on a fit made for another model.
[[nodiscard]] ConvergenceSpec load_convergence(Cfg c, const std::string& model_name);

}  // namespace moesim

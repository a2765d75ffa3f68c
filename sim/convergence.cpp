#include "sim/convergence.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace moesim {

double ConvergenceSpec::iterations_needed(double survival) const {
  if (form == "linear") return a_iterations - b_iterations * survival;
  if (form == "effective_tokens") return n1_iterations / (1.0 - alpha * (1.0 - survival));
  const auto& xs = table_survival;
  const auto& ys = table_iterations;
  if (survival <= xs.front()) return ys.front();
  if (survival >= xs.back()) return ys.back();
  std::size_t i = 1;
  while (xs[i] < survival) ++i;
  const double f = (survival - xs[i - 1]) / (xs[i] - xs[i - 1]);
  return ys[i - 1] + f * (ys[i] - ys[i - 1]);
}

nlohmann::json ConvergenceSpec::to_json() const {
  nlohmann::json j;
  j["form"] = form;
  if (form == "linear") {
    j["a_iterations"] = a_iterations;
    j["b_iterations"] = b_iterations;
    j["iterations_at_full_survival"] = iterations_needed(1.0);
  } else if (form == "effective_tokens") {
    j["n1_iterations"] = n1_iterations;
    j["alpha"] = alpha;
    j["iterations_at_zero_survival"] = iterations_needed(0.0);
  } else {
    j["table_survival"] = table_survival;
    j["table_iterations"] = table_iterations;
  }
  j["source"] = source;
  j["fitted_for"] = fitted_for;
  j["data_max_survival"] = data_max_survival;
  j["note"] = note.empty() ? nlohmann::json(nullptr) : nlohmann::json(note);
  return j;
}

ConvergenceSpec ConvergenceSpec::with_form(const std::string& f) const {
  ConvergenceSpec c = *this;
  c.form = f;
  return c;
}

ConvergenceSpec load_convergence(Cfg c, const std::string& model_name) {
  ConvergenceSpec s;
  s.form = c.get_enum("form", s.form, {"linear", "table", "effective_tokens"});
  s.a_iterations = c.get_double("a_iterations", s.a_iterations, 1.0, 1e12);
  s.b_iterations = c.get_double("b_iterations", s.b_iterations, -1e12, 1e12);
  s.table_survival = c.get_double_list("table_survival", s.table_survival, 0.0, 1.0);
  s.table_iterations = c.get_double_list("table_iterations", s.table_iterations, 1.0, 1e12);
  s.n1_iterations = c.get_double("n1_iterations", s.n1_iterations, 1.0, 1e12);
  // alpha = 1 would make a run that drops everything never converge.
  s.alpha = c.get_double("alpha", s.alpha, 0.0, 0.999999);
  const bool custom = c.has("a_iterations") || c.has("b_iterations") || c.has("table_survival") ||
                      c.has("table_iterations") || c.has("n1_iterations") || c.has("alpha");
  s.source = c.get_string("source", custom ? "scenario" : s.source);
  // Figures of the scenario's own are taken to be for its model unless it says otherwise.
  s.fitted_for = c.get_string("fitted_for", custom ? model_name : s.fitted_for);
  s.data_max_survival = c.get_double("data_max_survival", custom ? 1.0 : s.data_max_survival, 0.0, 1.0);
  if (s.fitted_for != model_name)
    s.note = fmt::format("the {} convergence figures were fitted for model {} ({}) and are applied here to {}: "
                         "times to convergence compare policies on {}'s learning curve; set convergence.* for "
                         "this model",
                         s.form, s.fitted_for, s.source, model_name, s.fitted_for);
  if (s.form == "linear") {
    // N(s) must stay positive over the whole survival range.
    for (double v : {0.0, 1.0}) {
      if (s.iterations_needed(v) < 1.0) {
        c.fail("b_iterations", fmt::format("a_iterations - b_iterations * {} = {} iterations; it must be "
                                           ">= 1 for every survival in [0, 1]",
                                           v, s.iterations_needed(v)));
      }
    }
  } else {
    if (s.table_survival.size() != s.table_iterations.size() || s.table_survival.empty()) {
      c.fail("table_iterations", fmt::format("has {} points but table_survival has {}; they must match and "
                                             "be non-empty",
                                             s.table_iterations.size(), s.table_survival.size()));
    }
    for (std::size_t i = 1; i < s.table_survival.size(); ++i) {
      if (s.table_survival[i] <= s.table_survival[i - 1]) {
        c.fail("table_survival", "must be strictly increasing");
      }
    }
  }
  c.finish();
  return s;
}

}  // namespace moesim

#include "sim/convergence.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace moesim {

double ConvergenceSpec::iterations_needed(double survival) const {
  if (form == "linear") return a_iterations - b_iterations * survival;
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
  } else {
    j["table_survival"] = table_survival;
    j["table_iterations"] = table_iterations;
  }
  j["source"] = source;
  return j;
}

ConvergenceSpec load_convergence(Cfg c) {
  ConvergenceSpec s;
  s.form = c.get_enum("form", s.form, {"linear", "table"});
  s.a_iterations = c.get_double("a_iterations", s.a_iterations, 1.0, 1e12);
  s.b_iterations = c.get_double("b_iterations", s.b_iterations, -1e12, 1e12);
  s.table_survival = c.get_double_list("table_survival", s.table_survival, 0.0, 1.0);
  s.table_iterations = c.get_double_list("table_iterations", s.table_iterations, 1.0, 1e12);
  const bool custom = c.has("a_iterations") || c.has("b_iterations") || c.has("table_survival") ||
                      c.has("table_iterations");
  s.source = c.get_string("source", custom ? "scenario" : s.source);
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

// `moesim fit`'s report and overlay (app/fit.hpp).
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <sstream>

#include "app/fit.hpp"

namespace moesim {
namespace {

std::string num(double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.6g}", v); }

std::string range(const FitResult& r, std::size_t i) {
  if (r.at_bound[i]) return "at its bound";
  if (std::isnan(r.low95[i])) return r.dof <= 0 ? "- (no residual dof)" : "-";
  return fmt::format("[{:.6g}, {:.6g}]", r.low95[i], r.high95[i]);
}

}  // namespace

std::string fit_report(const FitResult& r) {
  std::string out;
  int held = 0;
  for (const FitPoint& p : r.points) held += p.held_out ? 1 : 0;
  out += fmt::format("moesim fit: {} to {}: {} measurements fitted, {} held out; {} parameters; {} evaluations of the "
                     "table, {} Levenberg-Marquardt iterations ({})\n\n",
                     r.scenario, r.measured, r.fitted_rows, held, r.params.size(), r.evaluations, r.lm_iterations,
                     r.converged ? "converged" : "NOT converged: raise the iteration limit or check the rows");
  out += fmt::format("{:<34} {:>14} {:>14} {:>12}  {}\n", "parameter", "uncalibrated", "fitted", "std_error",
                     "95% range (Student t)");
  for (std::size_t i = 0; i < r.params.size(); ++i)
    out += fmt::format("{:<34} {:>14} {:>14} {:>12}  {}\n", r.params[i], num(r.initial[i]), num(r.fitted[i]),
                       num(r.std_error[i]), range(r, i));
  out += "\n";
  out += fmt::format("{:>4} {:>5}  {:<8}  {:<14} {:<50} {:>12} {:>13} {:>12} {:>10} {:>11}\n", "row", "line", "use",
                     "measured", "policy and overrides", "measured", "uncalibrated", "calibrated", "residual",
                     "residual_%");
  for (const FitPoint& p : r.points) {
    const double u = p.ns_per_unit;
    out += fmt::format("{:>4} {:>5}  {:<8}  {:<14} {:<50} {:>12.6g} {:>13.6g} {:>12.6g} {:>+10.3f} {:>+11.3f}\n", p.row,
                       p.line, p.held_out ? "held out" : "fitted", p.column, p.what, p.measured_ns / u, p.uncalibrated_ns / u, p.calibrated_ns / u,
                       (p.calibrated_ns - p.measured_ns) / u, 100.0 * (p.calibrated_ns - p.measured_ns) / p.measured_ns);
  }
  out += fmt::format("\nrms relative residual of the fitted measurements: {:.4f} %\n", 100.0 * r.rms_relative);
  return out;
}

std::string fit_overlay_yaml(const FitResult& r) {
  std::string out = fmt::format(
      "# Written by `moesim fit` from {} and {}.\n"
      "# Use it from a scenario with include: [SCENARIO.yaml, this file] (docs/scenario.md, Includes).\n"
      "# {} measurements fitted, rms relative residual {:.4f} %, residual degrees of freedom {}{}.\n",
      r.scenario, r.measured, r.fitted_rows, 100.0 * r.rms_relative, r.dof, r.converged ? "" : ", NOT converged");
  for (std::size_t i = 0; i < r.params.size(); ++i)
    out += fmt::format("# {}: {} (uncalibrated {}; 95 % range {})\n", r.params[i], num(r.fitted[i]), num(r.initial[i]),
                       range(r, i));
  for (const FitPoint& p : r.points)
    if (p.held_out)
      out += fmt::format("# held out: row {} {} {}: measured {:.6g}, predicted {:.6g} ({:+.3f} %)\n", p.row, p.what,
                         p.column, p.measured_ns / p.ns_per_unit, p.calibrated_ns / p.ns_per_unit,
                         100.0 * (p.calibrated_ns - p.measured_ns) / p.measured_ns);
  // The dotted keys as nested mappings, in the order of the keys (std::map: deterministic).
  struct Tree {
    std::map<std::string, Tree> children;
    std::string value;
  };
  Tree root;
  for (std::size_t i = 0; i < r.params.size(); ++i) {
    Tree* t = &root;
    std::stringstream parts(r.params[i]);
    for (std::string part; std::getline(parts, part, '.');) t = &t->children[part];
    t->value = fmt::format("{}", r.fitted[i]);  // the shortest text that reads back as the same double
  }
  auto emit = [&out](auto&& self, const Tree& t, int depth) -> void {
    for (const auto& [key, child] : t.children) {
      out += std::string(static_cast<std::size_t>(2 * depth), ' ') + key + ":";
      if (child.children.empty()) {
        out += " " + child.value + "\n";
      } else {
        out += "\n";
        self(self, child, depth + 1);
      }
    }
  };
  emit(emit, root, 0);
  return out;
}

}  // namespace moesim

#pragma once
// A small mixed 0-1 program and its solution with GLPK (libglpk-dev), for the planners that
// publish an integer program (moetuner). GLPK keeps global state, so calls are serialised.
#include <string>
#include <utility>
#include <vector>

namespace moesim::ilp {

struct Program {
  // Variables: binary where `binary[j]`, else continuous in [0, +inf).
  std::vector<char> binary;
  std::vector<double> objective;
  bool maximize = false;
  struct Row {
    std::vector<std::pair<int, double>> terms;  // (variable, coefficient)
    double lo = 0.0, hi = 0.0;                  // lo == hi: equality
    bool has_lo = true, has_hi = true;
  };
  std::vector<Row> rows;

  int add_var(bool is_binary, double cost) {
    binary.push_back(is_binary ? 1 : 0);
    objective.push_back(cost);
    return static_cast<int>(binary.size()) - 1;
  }
};

struct Solution {
  bool solved = false;  // an optimal solution, or one within the gap
  std::string why;      // when not solved: "time limit", "infeasible", ...
  std::vector<double> x;
};

// Branch and bound with GLPK's presolver and cuts. Stops at `time_limit_ms` (not solved, whatever
// the incumbent, so that a result never depends on how far a slower machine got) or once the
// relative gap is at most `mip_gap`.
[[nodiscard]] Solution solve(const Program& p, int time_limit_ms, double mip_gap);

}  // namespace moesim::ilp

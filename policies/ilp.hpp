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
  // A feasible solution to start from (one value per variable), e.g. the greedy plan; empty: none.
  // Branch and bound then only searches for better ones, and stops at once when it is within the gap.
  std::vector<double> start;

  int add_var(bool is_binary, double cost) {
    binary.push_back(is_binary ? 1 : 0);
    objective.push_back(cost);
    return static_cast<int>(binary.size()) - 1;
  }
};

struct Solution {
  bool solved = false;  // an optimal solution, one within the gap, or the best at the node limit
  std::string why;      // when not solved: "time limit", "infeasible", ...
  std::vector<double> x;
  bool node_limit = false;  // solved, but branch and bound stopped at the node limit
  double gap = 0.0;         // the relative gap when it stopped
};

// Branch and bound with GLPK's cuts. Stops once the relative gap is at most `mip_gap`; after
// `node_limit` subproblems (solved: the best solution found, the same on every machine); or at
// `time_limit_ms` (not solved, whatever the incumbent, so that a result never depends on how far
// a slower machine got).
[[nodiscard]] Solution solve(const Program& p, int time_limit_ms, double mip_gap, int node_limit);

}  // namespace moesim::ilp

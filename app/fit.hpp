#pragma once
// `moesim fit`: fits a scenario's free efficiency parameters to measured times by bounded
// least squares, and writes them as a YAML overlay that scenarios include (docs/calibration.md).
//
// MEASURED.csv has one row per measurement, a header naming its columns:
// - `policy`: the label of one of the scenario's policies (required when it lists several);
// - `policy.PARAM`: a parameter of that policy for this row (e.g. `policy.capacity_factor`);
// - `TIME_UNIT`, with TIME `forward`, `iteration` or a phase of the iteration (`compute`, `a2a`,
//   `grad_sync`, `optimizer`, `movement`, `wait`, `pipeline_bubble`, `tp_comm`) and UNIT `ns`,
//   `us`, `ms` or `s`: a measured time (empty: not measured in this row);
// - any other column: a dotted scenario key, set for the row as `--set key=value` would (empty:
//   not set).
// Lines that are blank or start with '#' are comments.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "app/scenario.hpp"

namespace moesim {

// A scenario key `moesim fit` can fit, with the bounds it keeps the fit in.
struct FitParameter {
  std::string key;       // dotted scenario key
  double min = 0.0;      // bounds: the key's allowed range, or a narrower physical one (see fit.cpp)
  double max = 0.0;
  double typical = 1.0;  // magnitude for finite-difference steps near zero
  std::string meaning;
};
[[nodiscard]] const std::vector<FitParameter>& fit_parameters();
// The parameter of `key`; an InputError listing the fittable keys when there is none.
[[nodiscard]] const FitParameter& fit_parameter(const std::string& key);
// Its value in a loaded scenario.
[[nodiscard]] double fit_parameter_value(const Scenario& s, const std::string& key);

// What a measured column measures.
struct MeasuredColumn {
  std::string name;    // as in the header, e.g. forward_ms
  std::string metric;  // forward, iteration or a phase name
  double ns_per_unit = 1.0;
};

struct Measurement {
  std::size_t column = 0;  // index into MeasuredTable::measured
  double value_ns = 0.0;
  int csv_column = 0;  // 1-based character column of the cell
};

struct MeasuredRow {
  int row = 0;            // 1-based among the data rows
  std::int64_t line = 0;  // in the file
  std::string policy;     // label; empty: the scenario's only policy
  std::vector<std::string> overrides;  // key=value, in column order
  std::vector<int> override_columns;   // 1-based character column of each override's cell
  std::vector<std::string> override_names;
  std::vector<std::pair<std::string, std::string>> policy_params;  // (param, YAML text)
  std::vector<int> policy_param_columns;
  int policy_column = 0;
  std::vector<Measurement> measurements;
};

struct MeasuredTable {
  std::string file;
  std::vector<std::string> header;
  std::vector<MeasuredColumn> measured;
  std::vector<MeasuredRow> rows;
};

// Reads and checks MEASURED.csv; errors name the file, line, column, what was found and what
// is allowed.
[[nodiscard]] MeasuredTable read_measured_csv(const std::string& file);
[[nodiscard]] MeasuredTable parse_measured_csv(const std::string& text, const std::string& origin);

struct FitOptions {
  std::vector<std::string> params;  // keys to fit; empty: default_fit_params
  std::vector<int> holdout;         // 1-based data rows left out of the fit and only predicted
  std::vector<std::string> sets;    // --set for every row
  std::optional<std::uint64_t> seed;
  std::int64_t iterations = 1;  // simulated iterations per evaluation; times are their mean
  int max_iterations = 60;      // Levenberg-Marquardt iterations
};

// The parameters fitted when --params is not given: the framework overhead per layer and the
// network efficiency, which forward times at several capacity factors tell apart; plus the host
// Adam throughput when something measures the optimizer (iteration or optimizer times).
[[nodiscard]] std::vector<std::string> default_fit_params(const MeasuredTable& table);

struct FitPoint {
  int row = 0;
  std::int64_t line = 0;
  std::string what;    // the row's policy and overrides, for the report
  std::string column;  // measured column name
  double ns_per_unit = 1.0;
  bool held_out = false;
  double measured_ns = 0.0, uncalibrated_ns = 0.0, calibrated_ns = 0.0;
};

struct FitResult {
  std::string scenario, measured;
  std::vector<std::string> params;
  std::vector<double> initial, fitted;
  std::vector<double> std_error;      // NaN where not defined (no residual degrees of freedom, at a bound)
  std::vector<double> low95, high95;  // Student-t 95 % range, clipped to the bounds; NaN as std_error
  std::vector<bool> at_bound;
  int fitted_rows = 0;     // measurements in the fit
  int dof = 0;             // fitted measurements - free parameters
  double rms_relative = 0.0;  // of the fitted measurements
  int evaluations = 0;     // simulator runs of the whole table
  int lm_iterations = 0;
  bool converged = false;
  std::vector<FitPoint> points;
};

// Fits `opts.params` of `scenario_file` to `table`. Every evaluation loads the scenario with the
// parameters and each row's overrides, and runs its policy for `opts.iterations` iterations
// (forward-only for forward times).
[[nodiscard]] FitResult fit_scenario(const std::string& scenario_file, const MeasuredTable& table,
                                     const FitOptions& opts);
// The terminal report: parameters with their ranges, then each measurement uncalibrated and
// calibrated side by side with the residuals.
[[nodiscard]] std::string fit_report(const FitResult& r);
// The overlay: the fitted keys as a scenario fragment (`include:` it), with the fit in comments.
[[nodiscard]] std::string fit_overlay_yaml(const FitResult& r);

int cmd_fit(const std::vector<std::string>& args);

}  // namespace moesim

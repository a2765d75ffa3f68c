// `moesim fit`: bounded Levenberg-Marquardt over the simulator (app/fit.hpp).
#include "app/fit.hpp"

#include <fmt/format.h>

#include <Eigen/Dense>
#include <algorithm>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "app/runner.hpp"
#include "core/error.hpp"
#include "core/strings.hpp"

namespace moesim {

const std::vector<FitParameter>& fit_parameters() {
  // Bounds are the keys' allowed ranges (docs/scenario.md); `typical` only sizes the
  // finite-difference step of a parameter at or near zero.
  static const std::vector<FitParameter> kParams = {
      {"cluster.gpu.gemm_efficiency", 1e-3, 1.0, 0.1, "share of peak_tflops a large GEMM reaches (roofline)"},
      {"cluster.nic_efficiency", 1e-3, 1.0, 0.1, "share of the NIC line rate the transport reaches"},
      {"training.layer_overhead_ns", 0.0, 1e10, 1e5, "host-side time per layer, forward and backward"},
      {"training.host_adam_params_per_s", 1e3, 1e15, 1e8, "CPU Adam throughput of one host"},
      {"cluster.pcie_gbps", 1e-3, 1e5, 1.0, "GPU-host PCIe bandwidth (optimizer offload traffic)"},
      {"cluster.gpu.hbm_gbps", 1e-3, 1e6, 100.0, "HBM bandwidth (memory-bound kernels, on-GPU Adam)"},
  };
  return kParams;
}

const FitParameter& fit_parameter(const std::string& key) {
  std::string names;
  for (const FitParameter& p : fit_parameters()) {
    if (p.key == key) return p;
    names += (names.empty() ? "" : ", ") + p.key;
  }
  throw InputError(fmt::format("--params: '{}' is not a parameter moesim fit can fit; allowed: {}", key, names));
}

double fit_parameter_value(const Scenario& s, const std::string& key) {
  if (key == "cluster.gpu.gemm_efficiency") return s.cluster.gpu.gemm_efficiency;
  if (key == "cluster.nic_efficiency") return s.cluster.nic_efficiency;
  if (key == "training.layer_overhead_ns") return s.training.layer_overhead_ns;
  if (key == "training.host_adam_params_per_s") return s.training.host_adam_params_per_s;
  if (key == "cluster.pcie_gbps") return s.cluster.pcie_gbps;
  if (key == "cluster.gpu.hbm_gbps") return s.cluster.gpu.hbm_gbps;
  (void)fit_parameter(key);  // throws, naming the allowed keys
  return 0.0;
}

std::vector<std::string> default_fit_params(const MeasuredTable& table) {
  std::vector<std::string> p = {"training.layer_overhead_ns", "cluster.nic_efficiency"};
  for (const MeasuredColumn& c : table.measured)
    if (c.metric == "iteration" || c.metric == "optimizer") {
      p.push_back("training.host_adam_params_per_s");
      break;
    }
  return p;
}

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

// The shortest text that reads back as the same double: the --set values and the overlay agree.
std::string exact(double v) { return fmt::format("{}", v); }


class Evaluator {
 public:
  Evaluator(const std::string& file, const MeasuredTable& t, const FitOptions& o, const std::vector<std::string>& params)
      : file_(file), table_(t), opts_(o), params_(params) {}

  // Times of every measurement (row order, then column order) at parameters `x`; with
  // `fitted_only`, held-out rows are skipped (their entries are NaN).
  std::vector<double> predict(const std::vector<double>& x, const std::vector<bool>& held_out, bool fitted_only) {
    ++evaluations_;
    std::vector<double> out;
    for (std::size_t r = 0; r < table_.rows.size(); ++r) {
      const MeasuredRow& row = table_.rows[r];
      if (fitted_only && held_out[r]) {
        out.insert(out.end(), row.measurements.size(), std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      const std::vector<double> v = predict_row(row, x);
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  }
  [[nodiscard]] int evaluations() const { return evaluations_; }

  // The row's scenario at `x`: errors name the CSV row (and its cell where one caused them).
  Scenario row_scenario(const MeasuredRow& row, const std::vector<double>& x) const {
    std::vector<std::string> sets = opts_.sets;
    for (std::size_t i = 0; i < params_.size(); ++i) sets.push_back(params_[i] + "=" + exact(x[i]));
    sets.insert(sets.end(), row.overrides.begin(), row.overrides.end());
    const std::string at = fmt::format("{}:{}", table_.file, row.line);
    Scenario s;
    try {
      s = load_scenario(file_, sets, opts_.seed);
    } catch (const InputError& e) {
      const std::string msg = e.what();
      for (std::size_t i = 0; i < row.overrides.size(); ++i)
        if (msg.find("'" + row.overrides[i] + "'") != std::string::npos)
          throw InputError(fmt::format("{}:{}: column '{}': {}", at, row.override_columns[i], row.override_names[i], msg));
      throw InputError(fmt::format("{}: row {}: {}", at, row.row, msg));
    }
    std::size_t k = 0;
    if (row.policy.empty()) {
      if (s.policies.size() != 1)
        throw InputError(fmt::format("{}: row {}: the scenario lists {} policies; add a 'policy' column naming one "
                                     "of: {}",
                                     at, row.row, s.policies.size(), labels(s)));
    } else {
      while (k < s.policies.size() && s.policies[k].label != row.policy) ++k;
      if (k == s.policies.size())
        throw InputError(fmt::format("{}:{}: column 'policy': '{}' is not a policy of {}; allowed: {}", at,
                                     row.policy_column, row.policy, file_, labels(s)));
    }
    PolicyEntry e = s.policies[k];
    e.params = YAML::Clone(e.params);
    for (std::size_t i = 0; i < row.policy_params.size(); ++i) {
      const auto& [param, text] = row.policy_params[i];
      try {
        e.params[param] = YAML::Load(text);
      } catch (const YAML::Exception& ex) {
        throw InputError(fmt::format("{}:{}: column 'policy.{}': '{}' is not valid YAML: {}", at,
                                     row.policy_param_columns[i], param, text, ex.msg));
      }
    }
    s.policies = {e};
    s.run.max_iterations = opts_.iterations;
    s.run.stop_at_convergence = false;
    return s;
  }

 private:
  static std::string labels(const Scenario& s) {
    std::string out;
    for (const PolicyEntry& p : s.policies) out += (out.empty() ? "" : ", ") + p.label;
    return out;
  }

  std::vector<double> predict_row(const MeasuredRow& row, const std::vector<double>& x) const {
    const Scenario s = row_scenario(row, x);
    bool forward = false, full = false;
    for (const Measurement& m : row.measurements) (table_.measured[m.column].metric == "forward" ? forward : full) = true;
    RunOptions ro;
    ro.keep_rows = false;
    auto run = [&](bool forward_only) {
      ro.forward_only = forward_only;
      std::vector<PolicyResult> res;
      try {
        res = run_scenario(s, ro);
      } catch (const InputError& e) {
        throw InputError(fmt::format("{}:{}: row {}: {}", table_.file, row.line, row.row, e.what()));
      }
      if (res.front().oom)
        throw InputError(fmt::format("{}:{}: row {}: {}", table_.file, row.line, row.row, res.front().oom_report));
      return res.front();
    };
    PolicyResult whole, fwd;
    if (full) whole = run(false);
    if (forward) fwd = run(true);
    std::vector<double> out;
    for (const Measurement& m : row.measurements) {
      const std::string& metric = table_.measured[m.column].metric;
      if (metric == "forward") {
        out.push_back(fwd.mean_iteration_ns);
      } else if (metric == "iteration") {
        out.push_back(whole.mean_iteration_ns);
      } else {
        int p = 0;
        while (p < kNumPhases && metric != to_string(static_cast<Phase>(p))) ++p;
        out.push_back(whole.mean_phase_ns[static_cast<std::size_t>(p)]);
      }
    }
    return out;
  }

  const std::string& file_;
  const MeasuredTable& table_;
  const FitOptions& opts_;
  const std::vector<std::string>& params_;
  int evaluations_ = 0;
};

}  // namespace

FitResult fit_scenario(const std::string& scenario_file, const MeasuredTable& table, const FitOptions& opts) {
  FitResult r;
  r.scenario = scenario_file;
  r.measured = table.file;
  r.params = opts.params.empty() ? default_fit_params(table) : opts.params;
  const std::size_t n = r.params.size();
  std::vector<const FitParameter*> spec;
  for (const std::string& k : r.params) {
    spec.push_back(&fit_parameter(k));
    if (std::count(r.params.begin(), r.params.end(), k) > 1)
      throw InputError(fmt::format("--params: '{}' is listed twice", k));
    for (std::size_t c = 0; c < table.header.size(); ++c)
      if (table.header[c] == k)
        throw InputError(fmt::format("{}: column '{}' sets a key that --params fits; drop one of them", table.file, k));
    for (const std::string& set : opts.sets)
      if (set.starts_with(k + "="))
        throw InputError(fmt::format("--set '{}': sets a key that --params fits; drop one of them", set));
  }
  std::vector<bool> held_out(table.rows.size(), false);
  for (const int h : opts.holdout) {
    if (h < 1 || h > static_cast<int>(table.rows.size()))
      throw InputError(fmt::format("--holdout: row {} does not exist; allowed: 1 to {} (data rows of {}, comments "
                                   "and the header not counted)",
                                   h, table.rows.size(), table.file));
    if (held_out[static_cast<std::size_t>(h - 1)]) throw InputError(fmt::format("--holdout: row {} is listed twice", h));
    held_out[static_cast<std::size_t>(h - 1)] = true;
  }
  // Residuals are relative, so that rows of different lengths (and units) weigh alike.
  std::vector<double> measured;
  std::vector<bool> point_held;
  for (std::size_t i = 0; i < table.rows.size(); ++i)
    for (const Measurement& m : table.rows[i].measurements) {
      measured.push_back(m.value_ns);
      point_held.push_back(held_out[i]);
      if (!held_out[i]) ++r.fitted_rows;
    }
  if (r.fitted_rows < static_cast<int>(n))
    throw InputError(fmt::format("{}: {} measurements in the fit cannot determine {} parameters ({}); measure more "
                                 "rows, hold out fewer, or fit fewer parameters with --params",
                                 table.file, r.fitted_rows, n, join(r.params, ", ")));

  Evaluator ev(scenario_file, table, opts, r.params);
  // Start from the scenario's own values, inside the bounds.
  std::vector<double> x(n);
  {
    const Scenario s = load_scenario(scenario_file, opts.sets, opts.seed);
    for (std::size_t i = 0; i < n; ++i) {
      r.initial.push_back(fit_parameter_value(s, r.params[i]));
      x[i] = std::clamp(r.initial[i], spec[i]->min, spec[i]->max);
    }
  }
  const std::vector<double> uncalibrated = ev.predict(x, held_out, false);
  const std::size_t m_all = measured.size();
  auto residuals = [&](const std::vector<double>& pred) {
    VectorXd f(r.fitted_rows);
    int j = 0;
    for (std::size_t k = 0; k < m_all; ++k)
      if (!point_held[k]) f(j++) = (pred[k] - measured[k]) / measured[k];
    return f;
  };
  VectorXd f = residuals(uncalibrated);
  auto step_of = [&](std::size_t i, double xi) { return 1e-2 * std::max(std::abs(xi), spec[i]->typical); };
  // Forward differences, stepping inwards at the upper bound.
  auto jacobian = [&](const std::vector<double>& at, const VectorXd& f_at) {
    MatrixXd J(r.fitted_rows, static_cast<Eigen::Index>(n));
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<double> xs = at;
      double h = step_of(i, at[i]);
      if (at[i] + h > spec[i]->max) h = -h;
      xs[i] = at[i] + h;
      J.col(static_cast<Eigen::Index>(i)) = (residuals(ev.predict(xs, held_out, true)) - f_at) / h;
    }
    return J;
  };
  MatrixXd J = jacobian(x, f);
  // A parameter nothing measured depends on, or parameters the rows cannot tell apart, have no
  // fitted value: refuse rather than report an arbitrary one. Exactly collinear columns (capacity
  // factors alone scale the expert GEMMs and the all-to-alls together) come out near 2e-4, not 0,
  // from the roofline's kinks and whole-nanosecond times; well-posed fits are above 1e-2.
  constexpr double kIdentifiable = 1e-3;
  {
    MatrixXd Jn = J;
    for (std::size_t i = 0; i < n; ++i) {
      const double norm = J.col(static_cast<Eigen::Index>(i)).norm();
      if (norm == 0.0)
        throw InputError(fmt::format("--params: no measured time in {} depends on '{}' ({}); measure what it "
                                     "changes (forward times leave out the optimizer: training.host_adam_params_per_s "
                                     "needs iteration_ms or optimizer_ms) or leave it out",
                                     table.file, r.params[i], spec[i]->meaning));
      Jn.col(static_cast<Eigen::Index>(i)) /= norm;
    }
    Eigen::JacobiSVD<MatrixXd> svd(Jn, Eigen::ComputeThinV);
    const VectorXd sv = svd.singularValues();
    if (n > 1 && sv(sv.size() - 1) < kIdentifiable * sv(0)) {
      const VectorXd v = svd.matrixV().col(sv.size() - 1);
      std::vector<std::string> alike;
      for (std::size_t i = 0; i < n; ++i)
        if (std::abs(v(static_cast<Eigen::Index>(i))) > 0.1) alike.push_back(r.params[i]);
      throw InputError(fmt::format("--params: the rows of {} cannot tell {} apart (they change the measured times "
                                   "alike); fit fewer of them, or add rows that vary what separates them (the node "
                                   "count, the model's shape, or a measured phase such as a2a_ms)",
                                   table.file, join(alike, " and ")));
    }
  }
  double cost = f.squaredNorm();
  double lambda = 1e-3;
  auto at_lower = [&](std::size_t i, const std::vector<double>& at) { return at[i] <= spec[i]->min; };
  auto at_upper = [&](std::size_t i, const std::vector<double>& at) { return at[i] >= spec[i]->max; };
  for (r.lm_iterations = 0; r.lm_iterations < opts.max_iterations && !r.converged; ++r.lm_iterations) {
    const VectorXd g = J.transpose() * f;
    const MatrixXd A = J.transpose() * J;
    // Projected step: a parameter at a bound that the gradient pushes outwards stays there.
    std::vector<Eigen::Index> free;
    for (std::size_t i = 0; i < n; ++i) {
      const auto k = static_cast<Eigen::Index>(i);
      if ((at_lower(i, x) && g(k) > 0.0) || (at_upper(i, x) && g(k) < 0.0)) continue;
      free.push_back(k);
    }
    if (free.empty()) {
      r.converged = true;
      break;
    }
    const auto nf = static_cast<Eigen::Index>(free.size());
    MatrixXd Af(nf, nf);
    VectorXd gf(nf);
    for (Eigen::Index a = 0; a < nf; ++a) {
      gf(a) = g(free[static_cast<std::size_t>(a)]);
      for (Eigen::Index b = 0; b < nf; ++b) Af(a, b) = A(free[static_cast<std::size_t>(a)], free[static_cast<std::size_t>(b)]);
    }
    bool accepted = false;
    std::vector<double> x_new = x;
    VectorXd f_new;
    double cost_new = cost;
    while (!accepted && lambda < 1e12) {
      // Marquardt's scaling by diag(J^T J) makes the step independent of the parameters' units.
      MatrixXd M = Af;
      for (Eigen::Index a = 0; a < nf; ++a) M(a, a) += lambda * std::max(Af(a, a), 1e-300);
      const VectorXd d = M.ldlt().solve(-gf);
      x_new = x;
      for (Eigen::Index a = 0; a < nf; ++a) {
        const auto i = static_cast<std::size_t>(free[static_cast<std::size_t>(a)]);
        x_new[i] = std::clamp(x[i] + d(a), spec[i]->min, spec[i]->max);
      }
      f_new = residuals(ev.predict(x_new, held_out, true));
      cost_new = f_new.squaredNorm();
      if (cost_new < cost) {
        accepted = true;
        lambda = std::max(lambda / 3.0, 1e-12);
      } else {
        lambda *= 4.0;
      }
    }
    if (!accepted) {
      // No step lowers the cost: x is a (bounded) minimum to the simulator's nanosecond resolution.
      r.converged = true;
      break;
    }
    double rel_step = 0.0;
    for (std::size_t i = 0; i < n; ++i)
      rel_step = std::max(rel_step, std::abs(x_new[i] - x[i]) / std::max(std::abs(x[i]), spec[i]->typical));
    const double gain = cost - cost_new;
    x = x_new;
    f = f_new;
    cost = cost_new;
    if (rel_step < 1e-7 || gain <= 1e-12 * cost || cost < 1e-20) r.converged = true;
    J = jacobian(x, f);
  }
  r.fitted = x;

  // Covariance of the free parameters: s^2 (J^T J)^-1, s^2 = SSR / (measurements - free parameters).
  const VectorXd g = J.transpose() * f;
  std::vector<Eigen::Index> free;
  for (std::size_t i = 0; i < n; ++i) {
    const bool bound = (at_lower(i, x) && g(static_cast<Eigen::Index>(i)) >= 0.0) ||
                       (at_upper(i, x) && g(static_cast<Eigen::Index>(i)) <= 0.0);
    r.at_bound.push_back(bound);
    if (!bound) free.push_back(static_cast<Eigen::Index>(i));
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  r.std_error.assign(n, nan);
  r.low95.assign(n, nan);
  r.high95.assign(n, nan);
  r.dof = r.fitted_rows - static_cast<int>(free.size());
  if (r.dof > 0 && !free.empty()) {
    MatrixXd Jf(J.rows(), static_cast<Eigen::Index>(free.size()));
    for (std::size_t a = 0; a < free.size(); ++a) Jf.col(static_cast<Eigen::Index>(a)) = J.col(free[a]);
    const MatrixXd cov = (Jf.transpose() * Jf).inverse() * (cost / r.dof);
    const boost::math::students_t t(r.dof);
    const double q = boost::math::quantile(boost::math::complement(t, 0.025));
    for (std::size_t a = 0; a < free.size(); ++a) {
      const auto i = static_cast<std::size_t>(free[a]);
      const double se = std::sqrt(std::max(0.0, cov(static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(a))));
      r.std_error[i] = se;
      r.low95[i] = std::max(spec[i]->min, x[i] - q * se);
      r.high95[i] = std::min(spec[i]->max, x[i] + q * se);
    }
  }
  r.rms_relative = std::sqrt(cost / std::max(1, r.fitted_rows));

  const std::vector<double> calibrated = ev.predict(x, held_out, false);
  r.evaluations = ev.evaluations();
  std::size_t k = 0;
  for (const MeasuredRow& row : table.rows) {
    std::string what = row.policy;
    for (const auto& [param, text] : row.policy_params)
      what += fmt::format("{}policy.{}={}", what.empty() ? "" : " ", param, text);
    for (const std::string& o : row.overrides) what += fmt::format("{}{}", what.empty() ? "" : " ", o);
    for (const Measurement& m : row.measurements) {
      FitPoint p;
      p.row = row.row;
      p.line = row.line;
      p.what = what;
      p.column = table.measured[m.column].name;
      p.ns_per_unit = table.measured[m.column].ns_per_unit;
      p.held_out = point_held[k];
      p.measured_ns = measured[k];
      p.uncalibrated_ns = uncalibrated[k];
      p.calibrated_ns = calibrated[k];
      r.points.push_back(p);
      ++k;
    }
  }
  return r;
}

}  // namespace moesim

#include "app/regress.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "core/error.hpp"

namespace moesim {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;
using nlohmann::json;

// The metrics a policy's result is judged by, with their default relative tolerances. The
// simulator is deterministic, so on the same build any change is a model change; the
// tolerances only absorb floating-point noise across compilers.
const std::vector<std::pair<std::string, double>> kMetrics{{"time_to_convergence_s", 1e-6},
                                                           {"iterations_to_converge", 0.0},
                                                           {"mean_iteration_ns", 1e-6},
                                                           {"drop_rate", 1e-6},
                                                           {"mean_moved_bytes_per_iteration", 1e-6}};

json metrics_of(const PolicyResult& r) {
  json m;
  m["time_to_convergence_s"] = r.converged && !r.oom ? json(ns_to_s(r.time_to_convergence_ns)) : json(nullptr);
  m["iterations_to_converge"] = r.converged && !r.oom ? json(r.iterations_to_converge) : json(nullptr);
  m["mean_iteration_ns"] = r.mean_iteration_ns;
  m["drop_rate"] = r.drop_rate;
  m["mean_moved_bytes_per_iteration"] = r.mean_moved_bytes;
  m["status"] = r.oom ? "oom" : r.converged ? "converged" : "not_converged";
  return m;
}

std::string show(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump();
}

}  // namespace

int cmd_regress(const std::vector<std::string>& args) {
  po::options_description opts("moesim regress SUITE_DIR --baseline FILE [options]");
  opts.add_options()("help,h", "show this help")
      ("baseline,b", po::value<std::string>(), "the stored results (JSON) to compare with")
      ("update", "rewrite the baseline with this run's results (deliberately accepting a change)");
  po::options_description hidden;
  hidden.add_options()("suite", po::value<std::string>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("suite", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format("moesim regress: {}", e.what()));
  }
  if (vm.count("help")) {
    std::cout << opts
              << "\nRuns every *.yaml scenario of SUITE_DIR and compares each policy's time to convergence, iterations,\n"
                 "mean iteration time, drop rate and bytes moved with the baseline; exits 1 when one moved beyond\n"
                 "its tolerance (the baseline's \"tolerances\", relative).\n";
    return 0;
  }
  if (!vm.count("suite") || !vm.count("baseline")) {
    throw InputError("moesim regress: needs SUITE_DIR and --baseline FILE (see moesim regress --help)");
  }
  const fs::path suite = vm["suite"].as<std::string>();
  const std::string baseline_file = vm["baseline"].as<std::string>();
  std::error_code ec;
  if (!fs::is_directory(suite, ec)) throw InputError(fmt::format("{}: not a directory", suite.string()));
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(suite))
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw InputError(fmt::format("{}: no *.yaml scenario", suite.string()));

  json now = json::object();
  for (const fs::path& f : files) {
    Scenario s = load_scenario(f.string(), {}, std::nullopt);
    RunOptions ro;
    ro.keep_rows = false;
    json per = json::object();
    for (const PolicyResult& r : run_scenario(s, ro)) per[r.label] = metrics_of(r);
    now[f.filename().string()] = per;
  }

  json baseline;
  const bool have = fs::exists(baseline_file);
  if (have) {
    std::ifstream in(baseline_file);
    try {
      baseline = json::parse(in);
    } catch (const json::exception& e) {
      throw InputError(fmt::format("{}: not valid JSON: {}", baseline_file, e.what()));
    }
  }
  json tolerances = have && baseline.contains("tolerances") ? baseline["tolerances"] : json::object();
  for (const auto& [m, tol] : kMetrics)
    if (!tolerances.contains(m)) tolerances[m] = tol;

  if (vm.count("update")) {
    json out{{"tolerances", tolerances}, {"scenarios", now}};
    write_file_atomic(baseline_file, out.dump(2) + "\n");
    std::cout << fmt::format("wrote {} ({} scenarios)\n", baseline_file, now.size());
    return 0;
  }
  if (!have) {
    throw InputError(fmt::format("{}: no baseline; create it with --update", baseline_file));
  }

  // Compare: every (scenario, policy, metric) of either side.
  std::vector<std::string> lines;
  const json& base = baseline["scenarios"];
  for (const auto& [scen, policies] : now.items()) {
    if (!base.contains(scen)) {
      lines.push_back(fmt::format("{}: new scenario, not in the baseline", scen));
      continue;
    }
    for (const auto& [label, m] : policies.items()) {
      if (!base[scen].contains(label)) {
        lines.push_back(fmt::format("{} / {}: new policy entry, not in the baseline", scen, label));
        continue;
      }
      const json& b = base[scen][label];
      if (b.value("status", "") != m["status"]) {
        lines.push_back(fmt::format("{} / {}: status {} -> {}", scen, label, b.value("status", "?"), m["status"].get<std::string>()));
      }
      for (const auto& [metric, unused] : kMetrics) {
        (void)unused;
        const json& x = b.contains(metric) ? b[metric] : json(nullptr);
        const json& y = m[metric];
        const double tol = tolerances[metric].get<double>();
        bool moved = x.is_null() != y.is_null();
        double rel = 0.0;
        if (!moved && !x.is_null()) {
          const double xv = x.get<double>(), yv = y.get<double>();
          const double scale = std::max(std::abs(xv), std::abs(yv));
          rel = scale > 0 ? std::abs(yv - xv) / scale : 0.0;
          moved = rel > tol;
        }
        if (moved) {
          lines.push_back(fmt::format("{} / {}: {} {} -> {} ({:+.4f} %, tolerance {:.4g} %)", scen, label, metric, show(x),
                                      show(y), x.is_null() || y.is_null() ? 0.0 : 100.0 * (y.get<double>() - x.get<double>()) / std::max(std::abs(x.get<double>()), 1e-300),
                                      100.0 * tol));
        }
      }
    }
    for (const auto& [label, unused] : base[scen].items()) {
      (void)unused;
      if (!policies.contains(label)) lines.push_back(fmt::format("{} / {}: in the baseline but no longer run", scen, label));
    }
  }
  for (const auto& [scen, unused] : base.items()) {
    (void)unused;
    if (!now.contains(scen)) lines.push_back(fmt::format("{}: in the baseline but not in the suite", scen));
  }
  if (lines.empty()) {
    std::size_t n = 0;
    for (const auto& [scen, p] : now.items()) n += p.size();
    std::cout << fmt::format("regress: {} policy results in {} scenarios match {}\n", n, now.size(), baseline_file);
    return 0;
  }
  std::cout << fmt::format("regress: {} results moved against {}:\n", lines.size(), baseline_file);
  for (const auto& l : lines) std::cout << "  " << l << "\n";
  std::cout << "If the change is intended, run with --update and commit the new baseline with it.\n";
  return 1;
}

}  // namespace moesim

// `moesim fit`'s command line (app/fit.hpp). Apart from fit.cpp and fit_report.cpp so that the tests,
// which do not link Boost.Program_options, can use those.
#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <iostream>
#include <sstream>

#include "app/fit.hpp"
#include "app/outputs.hpp"
#include "core/error.hpp"

namespace moesim {

int cmd_fit(const std::vector<std::string>& args) {
  namespace po = boost::program_options;
  po::options_description opts("moesim fit SCENARIO.yaml MEASURED.csv [options]");
  std::string params_help = "parameters to fit, comma-separated; default training.layer_overhead_ns and "
                            "cluster.nic_efficiency (and training.host_adam_params_per_s when iteration or optimizer "
                            "times are measured). Allowed:";
  for (const FitParameter& p : fit_parameters()) params_help += fmt::format(" {} [{:g}, {:g}]", p.key, p.min, p.max);
  opts.add_options()("help,h", "show this help")("params", po::value<std::string>(), params_help.c_str())(
      "out,o", po::value<std::string>(), "write the fitted keys to this YAML overlay (atomically)")(
      "holdout", po::value<std::string>(),
      "data rows (1-based, comma-separated) left out of the fit and only predicted")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a scenario key for every row")(
      "seed", po::value<std::string>(), "the scenario's seed, an integer in [0, 2^62]")(
      "iterations", po::value<std::int64_t>()->default_value(1),
      "simulated iterations per row and evaluation; predictions are their mean");
  po::options_description hidden;
  hidden.add_options()("scenario", po::value<std::string>())("measured", po::value<std::string>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("scenario", 1).add("measured", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format("moesim fit: {}", e.what()));
  }
  if (vm.count("help")) {
    std::cout << opts
              << "\nMEASURED.csv: a header, then one row per measurement. Columns: policy (a label of the scenario's "
                 "policies), policy.PARAM (its parameters), dotted scenario keys (as --set takes), and measured times "
                 "named TIME_UNIT (forward_ms, iteration_ms, a2a_ms, ...). docs/calibration.md has the details.\n";
    return 0;
  }
  if (!vm.count("scenario") || !vm.count("measured"))
    throw InputError("moesim fit: needs SCENARIO.yaml and MEASURED.csv (see moesim fit --help)");
  FitOptions o;
  auto list = [](const std::string& text) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return out;
  };
  if (vm.count("params")) {
    o.params = list(vm["params"].as<std::string>());
    if (o.params.empty()) throw InputError("--params: no parameter given");
  }
  if (vm.count("holdout")) {
    for (const std::string& item : list(vm["holdout"].as<std::string>())) {
      try {
        std::size_t used = 0;
        const int v = std::stoi(item, &used);
        if (used != item.size()) throw std::invalid_argument(item);
        o.holdout.push_back(v);
      } catch (const std::exception&) {
        throw InputError(fmt::format("--holdout: '{}' is not a row number; allowed: 1-based data rows, "
                                     "comma-separated",
                                     item));
      }
    }
  }
  if (vm.count("set")) o.sets = vm["set"].as<std::vector<std::string>>();
  if (vm.count("seed")) {
    const std::string text = vm["seed"].as<std::string>();
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v > (std::uint64_t{1} << 62))
      throw InputError(fmt::format("--seed: '{}' is not allowed; allowed: an integer in [0, 2^62]", text));
    o.seed = v;
  }
  o.iterations = vm["iterations"].as<std::int64_t>();
  if (o.iterations < 1 || o.iterations > 100000)
    throw InputError(fmt::format("--iterations: {} is out of range; allowed [1, 100000]", o.iterations));
  const MeasuredTable table = read_measured_csv(vm["measured"].as<std::string>());
  const FitResult r = fit_scenario(vm["scenario"].as<std::string>(), table, o);
  std::cout << fit_report(r);
  if (vm.count("out")) {
    write_file_atomic(vm["out"].as<std::string>(), fit_overlay_yaml(r));
    std::cout << fmt::format("wrote {}\n", vm["out"].as<std::string>());
  }
  return 0;
}

}  // namespace moesim

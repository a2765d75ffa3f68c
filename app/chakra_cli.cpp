#include "app/chakra_cli.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <iostream>
#include <optional>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "traces/chakra_et.hpp"

namespace po = boost::program_options;

namespace moesim {
namespace {

constexpr const char* kUsage =
    "moesim chakra export SCENARIO.yaml --out DIR [options]\n"
    "  Simulates the scenario up to --iteration and writes that iteration of one policy as MLCommons\n"
    "  Chakra execution traces: DIR/PREFIX.RANK.et for every GPU and DIR/comm_group.json (the process\n"
    "  groups, ASTRA-sim's --comm-group-configuration). Prints the iteration's simulated time.\n"
    "moesim chakra replay DIR [--prefix P]\n"
    "  Reads DIR/PREFIX.RANK.et (and comm_group.json) and runs the graph: compute nodes and collectives\n"
    "  take their recorded times (moesim_duration_ns, else duration_micros). Prints the iteration time.\n"
    "See docs/chakra.md.\n";

po::options_description export_options() {
  po::options_description d("moesim chakra export options");
  d.add_options()("help,h", "show this help")("out", po::value<std::string>(), "folder for the trace files (required)")(
      "policy", po::value<std::string>(), "the label of the policy to export (default: the scenario's first)")(
      "iteration", po::value<std::int64_t>()->default_value(0), "the iteration to export (0-based)")(
      "prefix", po::value<std::string>()->default_value("moesim"), "file names: PREFIX.RANK.et")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a scenario key: --set key=value");
  return d;
}

int cmd_export(const std::vector<std::string>& args) {
  po::options_description opts = export_options();
  po::options_description all;
  all.add(opts).add_options()("scenario", po::value<std::string>());
  po::positional_options_description pos;
  pos.add("scenario", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format("moesim chakra export: {}", e.what()));
  }
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }
  if (!vm.count("scenario")) throw InputError("moesim chakra export: missing SCENARIO.yaml (see moesim chakra --help)");
  if (!vm.count("out")) throw InputError("moesim chakra export: --out DIR is required");
  if (!chakra_supported()) (void)read_chakra_et("", "");  // the build's own error
  const std::int64_t iteration = vm["iteration"].as<std::int64_t>();
  if (iteration < 0)
    throw InputError(fmt::format("moesim chakra export: --iteration {}: allowed: an integer of at least 0", iteration));
  std::vector<std::string> sets;
  if (vm.count("set")) sets = vm["set"].as<std::vector<std::string>>();
  Scenario s = load_scenario(vm["scenario"].as<std::string>(), sets, std::nullopt);
  if (vm.count("policy")) {
    const std::string want = vm["policy"].as<std::string>();
    std::vector<PolicyEntry> keep;
    std::string labels;
    for (const PolicyEntry& p : s.policies) {
      if (p.label == want) keep.push_back(p);
      labels += (labels.empty() ? "" : ", ") + p.label;
    }
    if (keep.empty())
      throw InputError(fmt::format("moesim chakra export: --policy '{}': the scenario's policies are {}", want, labels));
    s.policies = keep;
  } else if (s.policies.size() > 1) {
    s.policies.resize(1);
  }
  if (s.run.max_iterations <= iteration)
    throw InputError(fmt::format("moesim chakra export: --iteration {}: the scenario runs {} iterations (run.max_iterations)",
                                 iteration, s.run.max_iterations));
  s.run.max_iterations = iteration + 1;
  s.run.stop_at_convergence = false;
  RunOptions ro;
  ro.timeline_iterations = {iteration};
  std::optional<OpGraph> graph;
  TimeNs iteration_ns = 0;
  ro.on_recorded = [&](const std::string&, std::int64_t, const IterationModel& model, const IterationResult& res) {
    graph = model.graph();
    iteration_ns = res.iteration_ns;
  };
  const std::vector<PolicyResult> results = run_scenario(s, ro);
  if (!graph) {
    const std::string why = !results.empty() && results.front().oom ? results.front().oom_report : "it stopped earlier";
    throw InputError(fmt::format("moesim chakra export: iteration {} of '{}' did not run: {}", iteration,
                                 s.policies.front().label, why));
  }
  const std::string out = vm["out"].as<std::string>();
  write_chakra_et(*graph, out, vm["prefix"].as<std::string>());
  std::cout << fmt::format("{}: iteration {} of '{}': {} ranks, {} nodes, {} collectives; iteration_ns {}\n", out,
                           iteration, s.policies.front().label, graph->ranks, graph->nodes.size(),
                           graph->collective_members.size(), iteration_ns);
  return 0;
}

int cmd_replay(const std::vector<std::string>& args) {
  std::string dir, prefix = "moesim";
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (args[i] == "--prefix") {
      if (i + 1 >= args.size()) throw InputError("moesim chakra replay: --prefix needs a value");
      prefix = args[++i];
    } else if (!args[i].empty() && args[i][0] == '-') {
      throw InputError(fmt::format("moesim chakra replay: unknown option '{}'; options: --prefix, --help", args[i]));
    } else if (dir.empty()) {
      dir = args[i];
    } else {
      throw InputError(fmt::format("moesim chakra replay: one DIR expected, got '{}' and '{}'", dir, args[i]));
    }
  }
  if (dir.empty()) throw InputError("moesim chakra replay: missing DIR (see moesim chakra --help)");
  const OpGraph g = read_chakra_et(dir, prefix);
  const GraphReplay r = replay_graph(g, dir);
  int crit = 0;
  for (int k = 1; k < g.ranks; ++k)
    if (r.rank_end_ns[static_cast<std::size_t>(k)] > r.rank_end_ns[static_cast<std::size_t>(crit)]) crit = k;
  std::cout << fmt::format("{}: {} ranks, {} nodes, {} collectives; iteration_ns {} (rank {} ends last)\n", dir, g.ranks,
                           g.nodes.size(), g.collective_members.size(), r.makespan_ns, crit);
  return 0;
}

}  // namespace

int cmd_chakra(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "export") return cmd_export(rest);
  if (args[0] == "replay") return cmd_replay(rest);
  throw InputError(fmt::format("moesim chakra: unknown subcommand '{}'; allowed: export, replay", args[0]));
}

}  // namespace moesim

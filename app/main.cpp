// moesim command line: `moesim run SCENARIO.yaml`, `moesim list`.
#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <charconv>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "app/calibrate.hpp"
#include "app/fit.hpp"
#include "app/outputs.hpp"
#include "app/progress.hpp"
#include "app/regress.hpp"
#include "app/report.hpp"
#include "app/sweep.hpp"
#include "app/trace_stats.hpp"
#include "app/chakra_cli.hpp"
#include "app/validate.hpp"
#include "app/trace_convert.hpp"
#include "app/runner.hpp"
#include "models/specs.hpp"
#include "policies/registry.hpp"
#include "core/error.hpp"

namespace po = boost::program_options;
using namespace moesim;

namespace {

constexpr const char* kUsage =
    "moesim: which expert-placement policy trains this MoE model fastest on this cluster?\n"
    "\n"
    "Usage:\n"
    "  moesim run SCENARIO.yaml [--out DIR] [--seed N] [--set key.path=value ...]\n"
    "  moesim compare SCENARIO.yaml [--policies static,flexmoe:interval=10,...] [run's options]\n"
    "  moesim regress SUITE_DIR --baseline FILE [--update]   CI check of policy results\n"
    "  moesim sweep STUDY.yaml [--out DIR] [--jobs N] [--collect]   a grid of runs; under mpirun too\n"
    "  moesim report RESULTS_DIR [--format md|html]   pictures and a report page (python3 + matplotlib)\n"
    "  moesim trace convert IN OUT [options]   between native CSV/binary and imported formats\n"
    "  moesim calibrate --backend cuda|cpu --model PRESET|file.yaml --out profile.yaml   kernel timings\n"
    "  moesim calibrate --backend reference --gpu GPU --model M --out profile.yaml   from published figures\n"
    "  moesim calibrate --backend cuda|cpu --collectives [--model M] --out profile.yaml   NCCL, >= 2 GPUs\n"
    "  moesim fit SCENARIO.yaml MEASURED.csv [--params a,b] [--out overlay.yaml] [--holdout ROWS]   fit to measured times\n"
    "  moesim chakra export SCENARIO.yaml --out DIR | chakra replay DIR   Chakra execution traces\n"
    "  moesim validate collectives [--cluster PRESET] [--nodes N] [--nics-per-node N]\n"
    "  moesim validate dispatch [--cluster PRESET]\n"
    "  moesim trace stats TRACE [--json] [--shape L,G,E] [--top N]   describe a trace\n"
    "  moesim list [--json]   presets (GPUs, clusters, models) and registered policies\n"
    "  moesim --help | --version\n"
    "  moesim COMMAND --help  options of one command\n"
    "\n"
    "Exit status: 0 success, 2 bad input (the message names file, line, key), 1 internal error.\n";

po::options_description run_options(bool compare) {
  po::options_description d(compare ? "moesim compare SCENARIO.yaml [options]" : "moesim run SCENARIO.yaml [options]");
  if (compare) {
    d.add_options()("policies,p", po::value<std::string>(),
                    "policies to compare instead of the scenario's list: comma-separated, parameters after colons, "
                    "e.g. static,static:capacity_factor=2,flexmoe:interval=10,symi");
  }
  d.add_options()
      ("help,h", "show this help")
      ("out,o", po::value<std::string>(), compare ? "directory for compare.csv, compare.json, summary.json, "
                                                   "iterations.csv and experts.csv (default: out/<scenario name>); "
                                                   "written whole or not at all, replacing an earlier one "
                                                   "(docs/outputs.md)"
                                                 : "directory for summary.json, iterations.csv and experts.csv "
                                                   "(default: out/<scenario name>); written whole or not at all, "
                                                   "replacing an earlier one (docs/outputs.md)")
      ("seed", po::value<std::string>(), "seed for the synthetic trace and any randomised policy, an integer in "
                                         "[0, 2^62]; overrides the scenario's `seed`")
      ("set", po::value<std::vector<std::string>>()->composing(),
       "override one scenario key before validation, e.g. --set cluster.nodes=4 --set "
       "trace.skew=1.5 (repeatable; mapping keys only, list items are not addressable)")
      ("timeline", po::value<std::string>(), "write a Perfetto / Chrome trace-event timeline (JSON) of the chosen "
                                             "iterations: per policy, a compute and a communication lane per GPU")
      ("timeline-iterations", po::value<std::string>()->default_value("0"),
       "iterations for --timeline, comma-separated (0-based)")
      ("expert-stats", po::value<std::string>()->default_value("auto"),
       "write experts.csv (per policy, sampled iteration, layer and expert: tokens routed, tokens processed "
       "and replicas) every N iterations; 0: not written; auto: evenly spaced samples, at most 100 and at most "
       "200,000 rows per policy")
      ("convergence-band", "also find each policy's time to convergence under every convergence form (linear, "
                           "table, effective_tokens) with the scenario's figures, running on until all converged; "
                           "report the range and whether the ranking changes")
      ("jobs,j", po::value<int>()->default_value(1),
       "policies simulated at once, one thread each; the outputs are the same as with 1")
      ("trace-prefetch", po::value<int>()->default_value(1),
       "iterations of the trace read ahead on a thread of their own (each policy's) while one is simulated, "
       "0 to 4; 0: read on the simulating thread; the outputs are the same")
      ("quiet,q", "do not print the summary table or the progress bar");
  return d;
}

int cmd_run(const std::vector<std::string>& args, bool compare) {
  po::options_description opts = run_options(compare);
  po::options_description hidden;
  hidden.add_options()("scenario", po::value<std::string>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("scenario", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format("moesim {}: {}", compare ? "compare" : "run", e.what()));
  }
  if (vm.count("help")) {
    std::cout << opts << "\nThe scenario keys are described in docs/scenario.md.\n";
    return 0;
  }
  if (!vm.count("scenario")) throw InputError(compare ? "moesim compare: missing SCENARIO.yaml (see moesim compare --help)"
                                                            : "moesim run: missing SCENARIO.yaml (see moesim run --help)");
  std::optional<std::uint64_t> seed;
  if (vm.count("seed")) {
    // The same range as the scenario's `seed` key (docs/scenario.md); a negative number must not wrap.
    constexpr std::uint64_t kMaxSeed = std::uint64_t{1} << 62;
    const std::string text = vm["seed"].as<std::string>();
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v > kMaxSeed)
      throw InputError(fmt::format("--seed: '{}' is not allowed; allowed: an integer in [0, {}]", text, kMaxSeed));
    seed = v;
  }
  std::vector<std::string> sets;
  if (vm.count("set")) sets = vm["set"].as<std::vector<std::string>>();
  Scenario s = load_scenario(vm["scenario"].as<std::string>(), sets, seed);
  if (compare && vm.count("policies")) s.policies = parse_policy_specs(vm["policies"].as<std::string>());
  RunOptions ro;
  ro.convergence_band = vm.count("convergence-band") > 0;
  ro.jobs = vm["jobs"].as<int>();
  if (ro.jobs < 1) throw InputError(fmt::format("--jobs: {} is not allowed; allowed: an integer of at least 1", ro.jobs));
  ro.trace_prefetch = vm["trace-prefetch"].as<int>();
  if (ro.trace_prefetch < 0 || ro.trace_prefetch > 4)
    throw InputError(fmt::format("--trace-prefetch: {} is not allowed; allowed: an integer from 0 to 4", ro.trace_prefetch));
  if (!vm.count("timeline") && !vm["timeline-iterations"].defaulted())
    throw InputError("--timeline-iterations: only with --timeline FILE (it chooses the iterations the timeline shows)");
  if (vm.count("timeline")) {
    std::stringstream list(vm["timeline-iterations"].as<std::string>());
    for (std::string item; std::getline(list, item, ',');) {
      try {
        std::size_t used = 0;
        const long long v = std::stoll(item, &used);
        if (used != item.size() || v < 0) throw std::invalid_argument(item);
        ro.timeline_iterations.push_back(v);
      } catch (const std::exception&) {
        throw InputError(fmt::format("--timeline-iterations: '{}' is not a non-negative integer", item));
      }
    }
  }
  {
    const std::string every = vm["expert-stats"].as<std::string>();
    if (every == "auto") {
      ro.expert_stats_every = 1;
      ro.expert_stats_max_samples = auto_expert_stats_samples(s);
    } else {
      try {
        std::size_t used = 0;
        const long long v = std::stoll(every, &used);
        if (used != every.size() || v < 0) throw std::invalid_argument(every);
        ro.expert_stats_every = v;
      } catch (const std::exception&) {
        throw InputError(fmt::format("--expert-stats: '{}' is not 'auto' or a non-negative integer", every));
      }
    }
  }
  // The destinations are claimed before the simulation, so an unwritable --out or --timeline fails
  // in a second, not after the whole run. The scenario's name becomes a folder under out/: it
  // must not lead anywhere else.
  const std::string out = vm.count("out") ? vm["out"].as<std::string>() : "out/" + file_safe(s.name);
  std::vector<std::string> replaceable = output_folder_names();
  std::optional<std::string> timeline_in_folder;  // its name, when --timeline names a file in --out
  std::optional<AtomicFile> timeline_file;
  if (vm.count("timeline")) {
    const std::string t = vm["timeline"].as<std::string>();
    namespace fs = std::filesystem;
    const auto resolved = [](const std::string& p) {
      std::error_code ec;
      fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
      if (ec) r = fs::absolute(p).lexically_normal();
      return r.has_filename() ? r : r.parent_path();  // "o/" is the folder o
    };
    const fs::path tp = resolved(t), op = resolved(out);
    if (tp.parent_path() == op) {
      // Inside the folder that is replaced as a whole: it is written as one of the set.
      timeline_in_folder = tp.filename().string();
      replaceable.push_back(*timeline_in_folder);
    } else if (std::mismatch(op.begin(), op.end(), tp.begin(), tp.end()).first == op.end()) {
      throw InputError(fmt::format("--timeline {}: lies in a subfolder of --out {}, which each run replaces as a "
                                   "whole; name a file directly in it or outside it",
                                   t, out));
    } else {
      timeline_file.emplace(t);
    }
  }
  OutputFolder folder(out, replaceable);
  const std::int64_t total = static_cast<std::int64_t>(s.policies.size()) * s.run.max_iterations;
  Progress bar = vm.count("quiet") ? Progress(s.name, total, "iterations", false, stderr)
                                   : Progress(s.name, total, "iterations");
  ro.on_iteration = bar.iteration_hook(s);  // empty when disabled or stderr is not a terminal
  std::vector<PolicyResult> results = run_scenario(s, ro);
  bar.finish();
  write_outputs(folder, s, results, compare);
  if (timeline_in_folder) folder.write(*timeline_in_folder, timeline_json(s, results));
  folder.commit();
  if (timeline_file) timeline_file->commit(timeline_json(s, results));
  if (vm.count("timeline")) {
    std::int64_t ran = 0;
    for (const PolicyResult& r : results) ran = std::max(ran, r.iterations_run);
    for (const std::int64_t i : ro.timeline_iterations) {
      if (i >= ran)
        std::cerr << fmt::format("warning: --timeline-iterations: iteration {} was not run (the longest run has {} "
                                 "iterations, 0-based {} at most): the timeline has no events for it\n",
                                 i, ran, ran - 1);
    }
  }
  if (!vm.count("quiet")) {
    std::cout << summary_table(s, results);
    std::cout << fmt::format("wrote {0}/{1}summary.json{2} and {0}/iterations.csv\n", out,
                             compare ? "compare.csv, " + out + "/compare.json, " + out + "/" : "",
                             ro.expert_stats_every > 0 ? ", " + out + "/experts.csv" : "");
  }
  return 0;
}

int cmd_list(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "moesim list [--json]: the GPU, cluster and model presets and the registered policies with their\n"
                 "descriptions; --json prints the same as one JSON object (docs/outputs.md)\n";
    return 0;
  }
  const bool as_json = !args.empty() && args[0] == "--json";
  if (args.size() > (as_json ? 1U : 0U))
    throw InputError(fmt::format("moesim list: unexpected argument '{}'; it takes only --json", args[as_json ? 1 : 0]));
  if (as_json) {
    nlohmann::ordered_json policies = nlohmann::ordered_json::array();
    for (const auto& p : policy_registry()) policies.push_back({{"name", p.name}, {"description", p.description}});
    const nlohmann::ordered_json j{{"moesim_version", "0.1.0"},
                                   {"gpu_presets", gpu_preset_names()},
                                   {"cluster_presets", cluster_preset_names()},
                                   {"model_presets", model_preset_names()},
                                   {"policies", policies}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  auto print = [](const char* what, const std::vector<std::string>& names) {
    std::cout << what << ":";
    for (const auto& n : names) std::cout << " " << n;
    std::cout << "\n";
  };
  print("gpu presets", gpu_preset_names());
  print("cluster presets", cluster_preset_names());
  print("model presets", model_preset_names());
  std::cout << "policies:\n";
  for (const auto& p : policy_registry()) std::cout << fmt::format("  {:<12} {}\n", p.name, p.description);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage << "\n" << run_options(false) << "\n" << run_options(true);
      return args.empty() ? 2 : 0;
    }
    if (args[0] == "--version") {
      std::cout << "moesim 0.1.0\n";
      return 0;
    }
    const std::string cmd = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (cmd == "run") return cmd_run(rest, false);
    if (cmd == "compare") return cmd_run(rest, true);
    if (cmd == "list") return cmd_list(rest);
    if (cmd == "regress") return cmd_regress(rest);
    if (cmd == "sweep") return cmd_sweep(rest);
    if (cmd == "report") return cmd_report(rest);
    if (cmd == "validate") return cmd_validate(rest);
    if (cmd == "calibrate") return cmd_calibrate(rest);
    if (cmd == "fit") return cmd_fit(rest);
    if (cmd == "chakra") return cmd_chakra(rest);
    if (cmd == "trace" && !rest.empty() && rest[0] == "convert") return cmd_trace_convert({rest.begin() + 1, rest.end()});
    if (cmd == "trace" && !rest.empty() && rest[0] == "stats") return cmd_trace_stats({rest.begin() + 1, rest.end()});
    if (cmd == "trace" && !rest.empty() && (rest[0] == "--help" || rest[0] == "-h")) {
      std::cout << "moesim trace convert IN OUT [options]   between native CSV/binary and imported formats\n"
                   "moesim trace stats TRACE [options]      describe a trace\n"
                   "(moesim trace convert --help, moesim trace stats --help: their options)\n";
      return 0;
    }
    if (cmd == "trace") throw InputError("moesim trace: subcommands: convert, stats (see moesim trace --help)");
    throw InputError(fmt::format("unknown command '{}'; commands: run, compare, sweep, report, regress, validate, calibrate, fit, trace, list (see moesim --help)", cmd));
  } catch (const InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return 1;
  }
}

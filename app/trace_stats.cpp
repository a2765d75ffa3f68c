#include "app/trace_stats.hpp"
#include "traces/binary.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <iostream>

#include "core/error.hpp"
#include "traces/stats.hpp"

namespace po = boost::program_options;

namespace moesim {

namespace {

// File formats read besides CSV (the fallback), tried in order. The binary format plugs in as
//   {"binary", [](const std::string& p) { return file_starts_with(p, {kBinaryTraceMagic, 8}); },
//    open_binary_trace},
const std::vector<TraceFileFormat>& file_formats() {
  static const std::vector<TraceFileFormat> formats = {
      {"binary", [](const std::string& p) { return file_starts_with(p, {kBinaryTraceMagic, 8}); }, open_binary_trace},
  };
  return formats;
}

po::options_description options() {
  std::string presets;
  for (const auto& p : synthetic_presets()) {
    presets += fmt::format("\n  {:<14} {}", p.name, p.description);
  }
  po::options_description d(fmt::format(
      "moesim trace stats TRACE [options]\n"
      "\n"
      "TRACE is a trace file (CSV), or synthetic:<preset>[:iterations=N][:seed=S] to describe a\n"
      "generated preset at its calibration shape (200 iterations, seed 1 by default). Presets:{}\n"
      "\n"
      "Prints, per MoE layer and overall: max/mean expert load (average and peak), coefficient of\n"
      "variation, Gini, share of the 3 busiest and 3 least busy experts, turnover of the hottest\n"
      "set between consecutive iterations, and the largest swing of one expert's load within 3\n"
      "iterations (docs/trace-format.md, \"trace stats\").\n"
      "\n"
      "Options",
      presets));
  d.add_options()("help,h", "show this help")("json", "print JSON instead of the table")(
      "shape", po::value<std::string>(),
      "L,G,E: MoE layers, source GPUs, experts (default: read from the file, or the preset's); "
      "0 keeps that field's default")(
      "top", po::value<int>(),
      "size of the hottest set for turnover (default: the preset's top_k; for a file 8, or "
      "experts/4 when fewer than 32 experts)");
  return d;
}

TraceShape parse_stats_shape(const std::string& text) {
  int v[3] = {0, 0, 0};
  std::size_t start = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t comma = text.find(',', start);
    if ((i < 2) != (comma != std::string::npos)) {
      throw InputError(
          fmt::format("moesim trace stats: --shape '{}' must be three integers "
                      "L,G,E (MoE layers, GPUs, experts)",
                      text));
    }
    const std::string_view f =
        std::string_view(text).substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v[i]);
    if (f.empty() || ec != std::errc() || ptr != f.data() + f.size() || v[i] < 0) {
      throw InputError(fmt::format("moesim trace stats: --shape '{}': '{}' is not an integer >= 0", text, f));
    }
    start = comma + 1;
  }
  return TraceShape{v[0], v[1], v[2]};
}

}  // namespace

int cmd_trace_stats(const std::vector<std::string>& args) {
  po::options_description opts = options();
  po::options_description hidden;
  hidden.add_options()("trace", po::value<std::string>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("trace", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format("moesim trace stats: {}", e.what()));
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (!vm.count("trace")) {
    throw InputError("moesim trace stats: missing TRACE (see moesim trace stats --help)");
  }
  const TraceShape shape = vm.count("shape") ? parse_stats_shape(vm["shape"].as<std::string>()) : TraceShape{};
  StatsInput in = open_stats_input(vm["trace"].as<std::string>(), shape, file_formats());
  TraceStatsOptions o;
  o.hot_k = vm.count("top") ? vm["top"].as<int>() : default_hot_k(in.source->shape().experts, in.top_k);
  const TraceStatsReport r = compute_trace_stats(*in.source, o, in.iterations);
  const std::string title = in.source->describe();
  if (vm.count("json")) {
    std::cout << trace_stats_json(r, title).dump(2) << "\n";
  } else {
    std::cout << format_trace_stats(r, title);
  }
  return 0;
}

}  // namespace moesim

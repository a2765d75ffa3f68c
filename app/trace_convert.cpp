#include "app/trace_convert.hpp"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <iostream>
#include <sstream>

#include "core/error.hpp"
#include "traces/binary.hpp"
#include "traces/importers.hpp"

namespace moesim {

namespace {

namespace po = boost::program_options;

po::options_description convert_options() {
  po::options_description d("moesim trace convert IN OUT [options]");
  // clang-format off
  d.add_options()
      ("help,h", "show this help")
      ("format", po::value<std::string>(),
       "output format: csv or binary (default: from OUT's extension, .csv or .bin/.moesimtr)")
      ("shape", po::value<std::string>(),
       "L,G,E: MoE layers, source GPUs, experts the trace must have; a 0 takes the input's value. "
       "The native CSV does not record its shape (default: the largest indices in the file); "
       "inputs without source GPUs (load matrices, long CSV) need G")
      ("gpus", po::value<int>(), "source GPUs, the G of --shape alone")
      ("tokens-per-gpu", po::value<std::int64_t>(),
       "batch size for spreading counts without source-GPU detail: every (layer, GPU) draws "
       "tokens-per-gpu * top-k assignments from the normalised counts. Without it the recorded "
       "counts are split over the GPUs, totals kept. Given for a per-GPU input (native, binary, "
       "TensorRT-LLM), its counts are summed over GPUs and re-spread (so G may differ from the input's)")
      ("top-k", po::value<int>(), "experts per token for --tokens-per-gpu (default 1)")
      ("seed", po::value<std::uint64_t>()->default_value(1), "seed of the spreading draws")
      ("select", po::value<std::vector<std::string>>()->composing(),
       "long CSV only: pin selector columns to one value each, e.g. "
       "--select model=olmoe,kind=expert_counts,domain=c4 (repeatable)")
      ("iterations", po::value<std::int64_t>(),
       "write this many iterations (default: all of the input). A load matrix is cycled with fresh "
       "draws when N exceeds its steps; recorded per-GPU traces are not repeated")
      ("quiet,q", "print nothing on success");
  // clang-format on
  return d;
}

constexpr const char* kInputs =
    "\nIN is detected by content, then extension:\n"
    "  binary trace           starts with MOESIMTR (or named .bin/.moesimtr)\n"
    "  load-matrix JSON       .json, or text starting with [ or {: [layers][experts] or "
    "[steps][layers][experts]\n"
    "  native CSV             header iteration,layer,src_gpu,expert,tokens\n"
    "  long CSV               header with layer, expert, count and selector columns (OLMoE/Mixtral sets)\n"
    "  load-matrix CSV        anything else: rows = layers, columns = experts (optional step/layer columns)\n"
    "  TensorRT-LLM folder    a directory with meta_info.json and rank<N>.safetensors\n"
    "OUT is written through a temporary file. Details: docs/trace-format.md.\n";

int parse_dim(const std::string& text, std::string_view part, const char* name) {
  int v = -1;
  const auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
  if (part.empty() || ec != std::errc() || ptr != part.data() + part.size() || v < 0) {
    throw InputError(
        fmt::format("--shape '{}': {} '{}' is not an integer >= 0 (expected L,G,E)", text, name, part));
  }
  return v;
}

TraceShape parse_shape(const std::string& text) {
  std::vector<std::string_view> parts;
  std::string_view s = text;
  for (std::size_t start = 0;;) {
    const std::size_t comma = s.find(',', start);
    parts.push_back(
        s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (parts.size() != 3) {
    throw InputError(
        fmt::format("--shape '{}': expected three numbers L,G,E (MoE layers, GPUs, experts), found {}", text,
                    parts.size()));
  }
  return TraceShape{parse_dim(text, parts[0], "L"), parse_dim(text, parts[1], "G"),
                    parse_dim(text, parts[2], "E")};
}

void parse_select(const std::string& text, std::map<std::string, std::string>& out) {
  std::stringstream all(text);
  for (std::string item; std::getline(all, item, ',');) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw InputError(fmt::format("--select '{}': '{}' must be column=value", text, item));
    }
    const std::string key = item.substr(0, eq);
    if (out.count(key) != 0 && out[key] != item.substr(eq + 1)) {
      throw InputError(fmt::format("--select: column '{}' is given twice ('{}' and '{}')", key, out[key],
                                   item.substr(eq + 1)));
    }
    out[key] = item.substr(eq + 1);
  }
}

}  // namespace

int cmd_trace_convert(const std::vector<std::string>& args) {
  po::options_description opts = convert_options();
  po::options_description hidden;
  hidden.add_options()("files", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("files", 2);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(fmt::format(
        "moesim trace convert: {} (usage: moesim trace convert IN OUT [options]; see --help)", e.what()));
  }
  if (vm.count("help")) {
    std::cout << opts << kInputs;
    return 0;
  }
  const std::vector<std::string> files =
      vm.count("files") ? vm["files"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (files.size() != 2) {
    throw InputError("moesim trace convert: expected IN and OUT (see moesim trace convert --help)");
  }
  ConvertRequest req;
  req.in = files[0];
  req.out = files[1];
  if (vm.count("format")) req.format = vm["format"].as<std::string>();
  if (vm.count("shape")) req.import.shape = parse_shape(vm["shape"].as<std::string>());
  if (vm.count("gpus")) {
    const int g = vm["gpus"].as<int>();
    if (g < 1) throw InputError(fmt::format("--gpus {} is out of range; allowed >= 1", g));
    if (req.import.shape.gpus != 0 && req.import.shape.gpus != g) {
      throw InputError(fmt::format("--gpus {} contradicts --shape's G {}", g, req.import.shape.gpus));
    }
    req.import.shape.gpus = g;
  }
  req.import.shape_from = "--shape/--gpus";
  if (vm.count("tokens-per-gpu")) req.import.tokens_per_gpu = vm["tokens-per-gpu"].as<std::int64_t>();
  if (vm.count("top-k")) {
    if (!req.import.tokens_per_gpu)
      throw InputError("--top-k needs --tokens-per-gpu (it scales the batch size)");
    req.import.top_k = vm["top-k"].as<int>();
  }
  req.import.seed = vm["seed"].as<std::uint64_t>();
  if (vm.count("select")) {
    for (const auto& s : vm["select"].as<std::vector<std::string>>()) parse_select(s, req.import.select);
  }
  if (vm.count("iterations")) {
    req.iterations = vm["iterations"].as<std::int64_t>();
    if (req.iterations < 1)
      throw InputError(fmt::format("--iterations {} is out of range; allowed >= 1", req.iterations));
  }
  const ConvertResult r = convert_trace_file(req);
  if (!vm.count("quiet")) {
    std::cout << fmt::format("wrote {} ({}): {} iteration{} of {}, from {} ({})\n", req.out, r.output_format,
                             r.iterations, r.iterations == 1 ? "" : "s", describe_shape(r.shape), req.in,
                             format_name(r.input));
  }
  return 0;
}

}  // namespace moesim

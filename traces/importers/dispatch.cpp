// The dispatcher: which format a trace file or folder is in (by content first, then extension),
// opening it as a TraceSource of the expected shape through its importer, and conversion.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string_view>
#include <system_error>

#include "core/error.hpp"
#include "traces/binary.hpp"
#include "traces/importers/common.hpp"

namespace moesim {

using namespace importers;

namespace {

constexpr std::string_view kNativeHeader = "iteration,layer,src_gpu,expert,tokens";

// ---------------------------------------------------------------------------------------------
// Native CSV: the shape and length are not in the file, so they are inferred by a quick scan
// (the reader then validates every row)
// ---------------------------------------------------------------------------------------------

struct CsvExtent {
  TraceShape shape;
  std::int64_t iterations = 0;
};

CsvExtent scan_native_csv(const std::string& path) {
  LineReader r(path);
  std::string_view line;
  r.next(line);  // the header; open_csv_trace checks it
  std::vector<std::string_view> f;
  std::array<std::int64_t, 4> mx = {-1, -1, -1, -1};
  while (r.next(line)) {
    split(line, f);
    if (f.size() != 5) continue;  // reported with its line by the reader
    for (std::size_t i = 0; i < 4; ++i) {
      std::int64_t v = 0;
      if (parse_int(f[i], v) && v < (1 << 24)) mx[i] = std::max(mx[i], v);
    }
  }
  CsvExtent x;
  x.iterations = mx[0] + 1;
  x.shape = TraceShape{static_cast<int>(mx[1] + 1), static_cast<int>(mx[2] + 1), static_cast<int>(mx[3] + 1)};
  return x;
}

std::string first_content_line(const std::string& path) {
  LineReader r(path);
  std::string_view line;
  return r.next(line) ? std::string(line) : std::string();
}

}  // namespace

std::string format_name(TraceFormat f) {
  switch (f) {
    case TraceFormat::native_csv:
      return "native CSV";
    case TraceFormat::binary:
      return "binary";
    case TraceFormat::load_matrix_csv:
      return "load-matrix CSV";
    case TraceFormat::load_matrix_json:
      return "load-matrix JSON";
    case TraceFormat::long_csv:
      return "long CSV (layer,expert,count)";
    case TraceFormat::trtllm:
      return "TensorRT-LLM expert statistics";
  }
  return "unknown";
}

TraceFormat detect_trace_format(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return TraceFormat::trtllm;
  if (!fs::exists(path, ec)) fail(path, "cannot open the trace: no such file or folder");
  const std::string ext = lower(fs::path(path).extension().string());
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open the trace: the file is not readable (check permissions)");
    char head[8] = {};
    in.read(head, 8);
    if (in.gcount() == 8 && std::memcmp(head, kBinaryTraceMagic, 8) == 0) return TraceFormat::binary;
    // A damaged binary file still goes to the binary reader, which says what is wrong.
    if (ext == ".bin" || ext == ".moesimtr") return TraceFormat::binary;
    const std::string_view h(head, static_cast<std::size_t>(in.gcount()));
    const std::string_view t = trim(h.substr(h.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0));
    if (ext == ".json" || (!t.empty() && (t.front() == '{' || t.front() == '[')))
      return TraceFormat::load_matrix_json;
  }
  const std::string first = first_content_line(path);
  std::vector<std::string_view> f;
  split(first, f);
  std::vector<std::string> cols;
  for (auto x : f) cols.push_back(lower(x));
  if (fmt::format("{}", fmt::join(cols, ",")) == kNativeHeader) return TraceFormat::native_csv;
  const auto has = [&](const char* c) { return std::find(cols.begin(), cols.end(), c) != cols.end(); };
  if (has("layer") && has("expert") && has("count")) return TraceFormat::long_csv;
  return TraceFormat::load_matrix_csv;
}

void check_trace_cells(const TraceShape& s, const std::string& where) {
  // Each factor is below 2^31, so the product of the first two fits; the third is checked by division.
  const std::int64_t lg = std::int64_t{std::max(s.layers, 0)} * std::max(s.gpus, 0);
  if (lg > 0 && std::max(s.experts, 0) > kMaxTraceCells / lg) {
    fail(where, fmt::format("the trace shape {} layers x {} GPUs x {} experts has more than 2^27 ({}) counts per "
                            "iteration, the most a trace may hold",
                            s.layers, s.gpus, s.experts, kMaxTraceCells));
  }
}

OpenedTrace open_trace_file(const std::string& path, const ImportOptions& o) {
  OpenedTrace out;
  out.format = detect_trace_format(path);
  if (!o.select.empty() && out.format != TraceFormat::long_csv) {
    throw InputError(
        fmt::format("{}: --select applies to long CSV files (layer,expert,count plus selector "
                    "columns); this input is {}",
                    path, format_name(out.format)));
  }
  SpreadSpec spread;
  spread.gpus = o.shape.gpus;
  spread.tokens_per_gpu = o.tokens_per_gpu;
  spread.top_k = o.top_k;
  spread.seed = o.seed;
  spread.iterations = o.iterations;
  const auto finish_spread = [&](std::unique_ptr<CountMatrixSource> m) {
    require_shape(TraceShape{m->layers(), o.shape.gpus, m->experts()}, o.shape, path, o.shape_from);
    check_trace_cells(TraceShape{m->layers(), spread.gpus, m->experts()}, path);
    if (o.shape.gpus == 0) {
      throw InputError(
          fmt::format("{}: the {} input has no source-GPU detail: give the number of source GPUs to "
                      "spread it over (the G of --shape L,G,E, or --gpus)",
                      path, format_name(out.format)));
    }
    const std::int64_t steps = m->steps();
    out.source = spread_over_gpus(std::move(m), spread);
    out.iterations = o.iterations > 0 ? o.iterations : steps;
    out.spread = true;
  };
  // A per-source input: used as recorded, or re-spread when a batch size is given.
  const auto per_source = [&](std::unique_ptr<TraceSource> t, std::int64_t iterations,
                              const std::string& where) {
    check_trace_cells(t->shape(), where);
    if (o.tokens_per_gpu) {
      const TraceShape s = t->shape();
      require_shape(TraceShape{s.layers, o.shape.gpus, s.experts}, o.shape, where, o.shape_from);
      if (spread.gpus == 0) spread.gpus = s.gpus;
      finish_spread(collapse_gpus(std::move(t), iterations));
      return;
    }
    require_shape(t->shape(), o.shape, where, o.shape_from);
    out.source = std::move(t);
    out.iterations = iterations;
  };
  switch (out.format) {
    case TraceFormat::binary: {
      const BinaryTraceInfo info = read_binary_trace_info(path);
      per_source(open_binary_trace(path, TraceShape{}), info.iterations,
                 fmt::format("{}: byte offset 16", path));
      break;
    }
    case TraceFormat::native_csv: {
      const CsvExtent x = scan_native_csv(path);
      // Given fields win (a row beyond them is then reported with its line); others are inferred.
      TraceShape s = x.shape;
      if (o.shape.layers != 0) s.layers = o.shape.layers;
      if (o.shape.experts != 0) s.experts = o.shape.experts;
      if (o.shape.gpus != 0 && !o.tokens_per_gpu) s.gpus = o.shape.gpus;
      check_trace_cells(s, path);
      if (s.layers < 1 || s.gpus < 1 || s.experts < 1 || x.iterations < 1) {
        // Let the reader name the problem (empty file, no rows, bad header) with its line.
        (void)open_csv_trace(path,
                             TraceShape{std::max(s.layers, 1), std::max(s.gpus, 1), std::max(s.experts, 1)});
        fail(path, "the trace has no data rows");
      }
      per_source(open_csv_trace(path, s), x.iterations, path);
      break;
    }
    case TraceFormat::trtllm: {
      TrtllmStats t = open_trtllm_stats(path);
      per_source(std::move(t.source), t.iterations, path);
      break;
    }
    case TraceFormat::load_matrix_json:
      finish_spread(open_load_matrix_json(path));
      break;
    case TraceFormat::load_matrix_csv:
      finish_spread(open_load_matrix_csv(path));
      break;
    case TraceFormat::long_csv:
      finish_spread(open_long_csv(path, o.select));
      break;
  }
  return out;
}

ConvertResult convert_trace_file(const ConvertRequest& req) {
  std::string format = req.format;
  if (format.empty()) {
    const std::string ext = lower(fs::path(req.out).extension().string());
    if (ext == ".csv") {
      format = "csv";
    } else if (ext == ".bin" || ext == ".moesimtr") {
      format = "binary";
    } else {
      fail(req.out,
           "cannot tell the output format from the extension; name it .csv or .bin, or give --format "
           "csv|binary");
    }
  }
  if (format != "csv" && format != "binary") {
    throw InputError(fmt::format("--format '{}' is not allowed; csv or binary", format));
  }
  std::error_code ec;
  if (fs::exists(req.out, ec) && fs::equivalent(req.in, req.out, ec) && !ec) {
    fail(req.out, "the output would overwrite the input; choose another OUT");
  }
  if (req.iterations < 0) throw InputError(fmt::format("--iterations {} is negative", req.iterations));
  ImportOptions o = req.import;
  o.iterations = req.iterations;
  OpenedTrace t = open_trace_file(req.in, o);
  const std::int64_t n = req.iterations > 0 ? req.iterations : t.iterations;
  if (n > t.iterations) {
    fail(req.in,
         fmt::format("--iterations {}: the trace has only {} iterations (recorded traces are not repeated)",
                     n, t.iterations));
  }
  if (format == "csv" && n > std::numeric_limits<int>::max()) {
    fail(req.out, fmt::format("{} iterations are too many for a CSV trace; write binary", n));
  }
  try {
    if (format == "csv") {
      write_csv_trace(*t.source, static_cast<int>(n), req.out);
    } else {
      write_binary_trace(*t.source, n, req.out);
    }
  } catch (...) {
    // write_csv_trace leaves its temporary file behind when the source throws mid-way.
    std::error_code ignore;
    fs::remove(req.out + ".tmp", ignore);
    throw;
  }
  ConvertResult r;
  r.input = t.format;
  r.output_format = format;
  r.shape = t.source->shape();
  r.iterations = n;
  r.source = t.source->describe();
  return r;
}

}  // namespace moesim

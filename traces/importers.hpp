#pragma once
// Importers of routing data recorded by other systems, the rule that spreads a count matrix
// without per-source-GPU detail over source GPUs, and format detection plus conversion for
// `moesim trace convert` (docs/trace-format.md, "Importers" and "Converting traces").
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "traces/trace.hpp"

namespace moesim {

// Recorded expert load without source GPUs: one [layer][expert] matrix per step.
class CountMatrixSource {
 public:
  virtual ~CountMatrixSource() = default;
  [[nodiscard]] virtual int layers() const = 0;
  [[nodiscard]] virtual int experts() const = 0;
  [[nodiscard]] virtual std::int64_t steps() const = 0;
  // Fills `out` (layers() * experts() values, [layer][expert]) with the next step; false at the
  // end. Values are >= 0 and finite; they may be fractional (normalised loads).
  virtual bool next(std::vector<double>& out) = 0;
  virtual void rewind() = 0;
  [[nodiscard]] virtual std::string describe() const = 0;
};

// How a count matrix becomes per-source counts (the rule is in docs/trace-format.md).
struct SpreadSpec {
  int gpus = 0;
  // Batch-size rule: every (layer, source GPU) draws tokens_per_gpu * top_k assignments from the
  // step's normalised counts. Without it, each recorded count is split over the source GPUs
  // (totals preserved exactly; counts must then be whole numbers).
  std::optional<std::int64_t> tokens_per_gpu;
  int top_k = 1;
  std::uint64_t seed = 1;
  // 0: one iteration per step; more: cycle through the steps, drawing afresh each time.
  std::int64_t iterations = 0;
};

[[nodiscard]] std::unique_ptr<TraceSource> spread_over_gpus(std::unique_ptr<CountMatrixSource> matrix,
                                                            const SpreadSpec& spec);

// Sums a per-source trace over its source GPUs (its first `iterations` iterations), so that it
// can be spread again, e.g. at another batch size or GPU count.
[[nodiscard]] std::unique_ptr<CountMatrixSource> collapse_gpus(std::unique_ptr<TraceSource> trace,
                                                               std::int64_t iterations);

// A load matrix [layers][experts] or [steps][layers][experts] in JSON: the root array, or the
// array under a known key of the root object ("expert_popularity", "logical_count", ...).
[[nodiscard]] std::unique_ptr<CountMatrixSource> open_load_matrix_json(const std::string& path);

// A load matrix in CSV: rows are layers, columns experts, optionally with a header whose leading
// `step` and/or `layer` columns index the rows.
[[nodiscard]] std::unique_ptr<CountMatrixSource> open_load_matrix_csv(const std::string& path);

// A long CSV with columns `layer`, `expert`, `count` and selector columns (the OLMoE/Mixtral sets:
// `model,kind,domain,layer,expert,count`): `select` pins selector columns to one value each so
// that one (layer, expert) series remains; recorded layers map onto consecutive MoE layers.
[[nodiscard]] std::unique_ptr<CountMatrixSource> open_long_csv(
    const std::string& path, const std::map<std::string, std::string>& select);

// TensorRT-LLM expert statistics: a folder with meta_info.json and one safetensors file per rank
// holding a count tensor per key "<iteration>_<layer>"; each rank is a source GPU.
// Recorded iteration and layer ids map, in increasing order, onto iterations 0.. and MoE layers 0..
struct TrtllmStats {
  std::unique_ptr<TraceSource> source;
  std::int64_t iterations = 0;
};
[[nodiscard]] TrtllmStats open_trtllm_stats(const std::string& dir);

enum class TraceFormat { native_csv, binary, load_matrix_csv, load_matrix_json, long_csv, trtllm };
[[nodiscard]] std::string format_name(TraceFormat f);

// By content first (binary magic, JSON, CSV header), then extension; a directory is TensorRT-LLM.
[[nodiscard]] TraceFormat detect_trace_format(const std::string& path);

struct ImportOptions {
  // Expected shape; a zero field takes the input's value. Inputs without source-GPU detail need
  // `gpus`. A per-source input whose GPU count differs needs `tokens_per_gpu` (it is re-spread).
  TraceShape shape;
  std::string shape_from = "the scenario";     // who expects `shape`, for mismatch messages
  std::optional<std::int64_t> tokens_per_gpu;  // given: spread (or re-spread) at this batch size
  int top_k = 1;
  std::uint64_t seed = 1;
  std::map<std::string, std::string> select;  // long CSV selectors
  std::int64_t iterations = 0;                // spread sources: see SpreadSpec::iterations
};

struct OpenedTrace {
  std::unique_ptr<TraceSource> source;
  std::int64_t iterations = 0;  // iterations the source yields before it ends
  TraceFormat format = TraceFormat::native_csv;
  bool spread = false;  // counts were drawn by the spreading rule (so cycling draws afresh)
};

// One iteration of a trace holds at most this many layer x source GPU x expert counts (1 GiB of
// int64; DeepSeek-V3 on 2,048 GPUs needs 58 x 2,048 x 256 = 30.4 M). open_trace_file refuses a
// larger shape, inferred or given, before anything of that size is allocated.
inline constexpr std::int64_t kMaxTraceCells = std::int64_t{1} << 27;
// Throws InputError naming `where` when L x G x E is above kMaxTraceCells (no overflow: each
// factor is an int).
void check_trace_cells(const TraceShape& shape, const std::string& where);

// Opens any supported trace file or folder as a TraceSource of the options' shape.
[[nodiscard]] OpenedTrace open_trace_file(const std::string& path, const ImportOptions& options);

struct ConvertRequest {
  std::string in;
  std::string out;
  std::string format;  // "csv" or "binary"; empty: from the output's extension
  ImportOptions import;
  std::int64_t iterations = 0;  // 0: all the input has
};

struct ConvertResult {
  TraceFormat input = TraceFormat::native_csv;
  std::string output_format;
  TraceShape shape;
  std::int64_t iterations = 0;
  std::string source;  // the input's describe()
};

// Converts IN to OUT (written through a temporary file); errors are InputError.
ConvertResult convert_trace_file(const ConvertRequest& request);

}  // namespace moesim

#pragma once
// Streaming statistics of a routing trace (`moesim trace stats`): load imbalance, hot-set
// turnover and bursts, per MoE layer and overall. Definitions in docs/trace-format.md, "trace
// stats". Memory is O(layers x experts): independent of the trace length and of the GPU count.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "traces/trace.hpp"

namespace moesim {

// Mean, min and max of a stream of values.
struct StatSummary {
  std::int64_t n = 0;
  double sum = 0.0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  void add(double v) {
    ++n;
    sum += v;
    min = v < min ? v : min;
    max = v > max ? v : max;
  }
  void merge(const StatSummary& o) {
    n += o.n;
    sum += o.sum;
    min = o.min < min ? o.min : min;
    max = o.max > max ? o.max : max;
  }
  [[nodiscard]] double mean() const { return n > 0 ? sum / static_cast<double>(n) : 0.0; }
};

// The load of an expert is its count summed over source GPUs (assignments, so top-k counts k
// per token). Every value below is taken per (layer, iteration) and summarised over iterations.
struct LayerTraceStats {
  StatSummary max_over_mean;  // largest expert load / mean expert load
  StatSummary cv;             // population standard deviation / mean of the expert loads
  StatSummary gini;           // Gini coefficient of the expert loads (0 even .. (E-1)/E one expert)
  StatSummary top3_share;     // share of the layer's assignments on its 3 busiest experts
  StatSummary bottom3_share;  // ... on its 3 least busy experts
  // Per pair of consecutive iterations: the fraction of the hottest-k set (k busiest experts,
  // ties to the lower index) that is new in the second.
  StatSummary turnover;
  // Per window of 3 consecutive iterations: max over experts of the expert's largest load
  // divided by its smallest load (floored at 1). Its max is the largest swing in the trace.
  StatSummary swing3;
  std::int64_t empty_iterations = 0;  // iterations with no assignment (left out of the shares)
  std::int64_t assignments = 0;       // every count of the layer, summed
};

struct TraceStatsReport {
  TraceShape shape;
  int hot_k = 1;
  std::int64_t iterations = 0;
  std::vector<LayerTraceStats> layers;
  LayerTraceStats overall;  // every (layer, iteration) value, pooled
};

struct TraceStatsOptions {
  int hot_k = 1;  // size of the hottest set for turnover, 1 .. experts
};

// Accumulates iterations one at a time.
class TraceStats {
 public:
  // Throws InputError on an empty shape or a hot_k outside 1 .. experts.
  TraceStats(const TraceShape& shape, const TraceStatsOptions& options);

  // Throws InputError if the iteration's shape differs from the constructor's.
  void add(const IterationCounts& it);

  [[nodiscard]] std::int64_t iterations() const { return iterations_; }
  [[nodiscard]] TraceStatsReport report() const;

 private:
  void add_layer(int layer);

  TraceShape shape_;
  int hot_k_;
  std::int64_t iterations_ = 0;
  std::vector<LayerTraceStats> layers_;
  std::vector<std::int64_t> history_;  // [3][layer][expert]: loads of the last 3 iterations
  std::vector<std::uint8_t> hot_;      // [layer][expert]: in the previous hottest-k set
  std::vector<std::uint8_t> new_hot_;  // scratch [expert]
  std::vector<int> order_;             // scratch [expert]
  std::vector<double> sorted_;         // scratch [expert], ascending loads
};

// Reads `src` from its current position: `max_iterations` iterations, or to its end when
// negative (a synthetic source never ends: give a limit).
[[nodiscard]] TraceStatsReport compute_trace_stats(TraceSource& src, const TraceStatsOptions& options,
                                                   std::int64_t max_iterations);

// A per-layer table and an overall line; `title` describes the trace.
[[nodiscard]] std::string format_trace_stats(const TraceStatsReport& r, const std::string& title);
[[nodiscard]] nlohmann::json trace_stats_json(const TraceStatsReport& r, const std::string& title);

// A file format that `trace stats` can read besides CSV (the fallback).
struct TraceFileFormat {
  std::string name;
  std::function<bool(const std::string& path)> recognizes;  // e.g. by its magic bytes
  // `expected`: every nonzero field must match the file; zero fields take the file's value.
  std::function<std::unique_ptr<TraceSource>(const std::string& path, const TraceShape& expected)> open;
};

// Whether the file begins with `prefix` (false when it cannot be read).
[[nodiscard]] bool file_starts_with(const std::string& path, std::string_view prefix);

struct StatsInput {
  std::unique_ptr<TraceSource> source;
  std::int64_t iterations = -1;  // how many to read; -1: to the end of the trace
  int top_k = 0;                 // the generator's top_k, 0 when unknown
};

// Opens TRACE for `trace stats`: `synthetic:<preset>[:iterations=N][:seed=S]` (default 200
// iterations, seed 1, the preset's shape), or a file: the first of `formats` that recognizes it,
// else CSV. Nonzero fields of `shape` are required of a file and replace a preset's shape; the
// zero ones are read from the file (a CSV is scanned, see scan_csv_trace_shape).
[[nodiscard]] StatsInput open_stats_input(const std::string& trace, const TraceShape& shape,
                                          const std::vector<TraceFileFormat>& formats);

// Hottest-set size when --top is not given: top_k if known, else min(8, max(1, experts / 4))
// (2 of Mixtral's 8, 8 of 64 or more: the top_k of common models).
[[nodiscard]] int default_hot_k(int experts, int top_k);

}  // namespace moesim

#pragma once
// Routing traces: token counts per (iteration, layer, source GPU, expert). A trace is read one
// iteration at a time, so its length never bounds memory.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sim/routing.hpp"

namespace moesim {

// Parameters of the synthetic generator (see docs/trace-format.md for the model).
struct SyntheticTraceSpec {
  std::int64_t tokens_per_gpu = 0;  // tokens each GPU routes per iteration (per layer)
  int top_k = 1;
  double skew = 1.0;              // Zipf exponent of the base popularity (0: uniform)
  double drift_sigma = 0.05;      // std-dev of the per-iteration log-popularity random walk
  double drift_reversion = 0.05;  // pull of the walk back to the base popularity per iteration
  // Share of each source's assignments drawn at random (1: a multinomial); the rest is dealt in
  // proportion to the popularity, so every count's variance is this share of the multinomial's.
  double sampling_dispersion = 1.0;  // [0, 1]
  std::uint64_t seed = 1;

  // Bursts: with probability burst_prob per iteration and layer, one expert (uniform among the
  // colder half) has its popularity weight multiplied by up to burst_factor: the multiplier rises
  // geometrically over burst_rise iterations, then falls back over the rest of burst_len.
  // burst_prob 0: off.
  double burst_prob = 0.0;    // [0, 1]
  double burst_factor = 16.0;  // [1, 1e6]
  int burst_rise = 2;          // iterations from the start to the peak, [1, 3]
  int burst_len = 8;           // iterations the burst lasts, rise included, [burst_rise, 10000]

  // Skew decay: the log-popularity's deviation from uniform (drift included, bursts not) is
  // scaled by skew_floor + (1 - skew_floor) * exp(-iteration / skew_decay_iterations), as routing
  // settles during training. skew_decay_iterations 0: off.
  double skew_decay_iterations = 0.0;  // [0, 1e12]
  double skew_floor = 0.0;             // fraction of the deviation kept in the limit, [0, 1]
};

// A generator setting calibrated to published statistics, with the shape and batch it was
// calibrated at (other shapes and batches are allowed; the statistics then drift away).
struct SyntheticPreset {
  std::string name;
  std::string description;  // the model and the statistics it reproduces
  TraceShape shape;          // MoE layers, source GPUs, experts of the calibration
  SyntheticTraceSpec spec;   // tokens_per_gpu and top_k of the calibration batch; seed 1
};

// Every preset, in a fixed order: `gpt-small-16e`, `qwen3-128e`.
[[nodiscard]] const std::vector<SyntheticPreset>& synthetic_presets();
[[nodiscard]] std::vector<std::string> synthetic_preset_names();
[[nodiscard]] const SyntheticPreset* find_synthetic_preset(const std::string& name);
// The preset's spec, or nullopt for an unknown name.
[[nodiscard]] std::optional<SyntheticTraceSpec> synthetic_preset(const std::string& name);

// Base popularity: Zipf(skew) over a seeded random permutation of experts, per layer; each
// iteration the log-popularity takes a mean-reverting random-walk step; every source GPU then
// draws a multinomial of tokens_per_gpu * top_k assignments from it.
[[nodiscard]] std::unique_ptr<TraceSource> make_synthetic_trace(const TraceShape& shape,
                                                                const SyntheticTraceSpec& spec);

// Streams the CSV format `iteration,layer,src_gpu,expert,tokens` (header required, rows grouped
// by iteration in increasing order; missing combinations count zero). Malformed rows raise
// InputError with the file and line.
[[nodiscard]] std::unique_ptr<TraceSource> open_csv_trace(const std::string& path,
                                                          const TraceShape& expected);

// The shape of a CSV trace read from its rows: 1 + the largest layer, src_gpu and expert index
// (a GPU or expert whose every count is zero and left out cannot be seen; give the shape then).
// Checks the header and that the index columns are integers >= 0; open_csv_trace checks the rest.
[[nodiscard]] TraceShape scan_csv_trace_shape(const std::string& path);

// Writes `iterations` iterations of `src` as CSV (temporary file, then rename).
void write_csv_trace(TraceSource& src, int iterations, const std::string& path);

}  // namespace moesim

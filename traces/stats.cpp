#include "traces/stats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <numeric>

#include "core/error.hpp"

namespace moesim {

namespace {

constexpr std::size_t kWindow = 3;  // iterations in a swing window
constexpr auto kWindowI = static_cast<std::int64_t>(kWindow);

std::string shape_text(const TraceShape& s) {
  return fmt::format("{} MoE layers, {} GPUs, {} experts", s.layers, s.gpus, s.experts);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Accumulation
// ---------------------------------------------------------------------------------------------

TraceStats::TraceStats(const TraceShape& shape, const TraceStatsOptions& options)
    : shape_(shape), hot_k_(options.hot_k) {
  if (shape_.layers < 1 || shape_.gpus < 1 || shape_.experts < 1) {
    throw InputError(
        fmt::format("trace stats: the trace shape needs at least one MoE layer, GPU "
                    "and expert; found {}",
                    shape_text(shape_)));
  }
  if (hot_k_ < 1 || hot_k_ > shape_.experts) {
    throw InputError(
        fmt::format("trace stats: the hottest-set size {} is out of range; allowed "
                    "1..{} (the number of experts)",
                    hot_k_, shape_.experts));
  }
  const auto l = static_cast<std::size_t>(shape_.layers);
  const auto e = static_cast<std::size_t>(shape_.experts);
  layers_.resize(l);
  history_.assign(kWindow * l * e, 0);
  hot_.assign(l * e, 0);
  new_hot_.assign(e, 0);
  order_.resize(e);
  sorted_.resize(e);
}

void TraceStats::add(const IterationCounts& it) {
  const TraceShape& s = it.shape;
  if (s.layers != shape_.layers || s.gpus != shape_.gpus || s.experts != shape_.experts ||
      it.counts.size() != static_cast<std::size_t>(s.layers) * static_cast<std::size_t>(s.gpus) *
                              static_cast<std::size_t>(s.experts)) {
    throw InputError(fmt::format("trace stats: iteration {} has {}; the trace declared {}", iterations_,
                                 shape_text(s), shape_text(shape_)));
  }
  const auto e = static_cast<std::size_t>(shape_.experts);
  const auto l = static_cast<std::size_t>(shape_.layers);
  const auto slot = static_cast<std::size_t>(iterations_ % kWindowI);
  for (int layer = 0; layer < shape_.layers; ++layer) {
    std::int64_t* loads = history_.data() + (slot * l + static_cast<std::size_t>(layer)) * e;
    const std::int64_t* src = it.layer_ptr(layer);
    // The first row initialises, so the hot loop is a plain vectorisable add over contiguous
    // rows: this is the only pass over the counts, and it runs at memory speed.
    std::copy(src, src + e, loads);
    for (int g = 1; g < shape_.gpus; ++g) {
      const std::int64_t* row = src + static_cast<std::size_t>(g) * e;
      for (std::size_t x = 0; x < e; ++x) loads[x] += row[x];
    }
    add_layer(layer);
  }
  ++iterations_;
}

void TraceStats::add_layer(int layer) {
  const auto e = static_cast<std::size_t>(shape_.experts);
  const auto l = static_cast<std::size_t>(shape_.layers);
  const auto lay = static_cast<std::size_t>(layer);
  const auto slot = static_cast<std::size_t>(iterations_ % kWindowI);
  const std::int64_t* loads = history_.data() + (slot * l + lay) * e;
  LayerTraceStats& st = layers_[lay];

  // Busiest first, ties to the lower index, so the hottest set is well defined.
  std::iota(order_.begin(), order_.end(), 0);
  std::sort(order_.begin(), order_.end(),
            [loads](int a, int b) { return loads[a] != loads[b] ? loads[a] > loads[b] : a < b; });
  std::int64_t total = 0;
  for (std::size_t i = 0; i < e; ++i) total += loads[i];
  st.assignments += total;

  if (total > 0) {
    const double n = static_cast<double>(e);
    const double sum = static_cast<double>(total);
    const double mean = sum / n;
    double sq = 0.0;
    for (std::size_t i = 0; i < e; ++i) {
      const double d = static_cast<double>(loads[i]) - mean;
      sq += d * d;
    }
    // Ascending order, for the Gini coefficient's rank-weighted sum.
    for (std::size_t i = 0; i < e; ++i) {
      sorted_[i] = static_cast<double>(loads[order_[e - 1 - i]]);
    }
    double ranked = 0.0;
    for (std::size_t i = 0; i < e; ++i) ranked += static_cast<double>(i + 1) * sorted_[i];
    const std::size_t three = std::min<std::size_t>(3, e);
    double top = 0.0;
    double bottom = 0.0;
    for (std::size_t i = 0; i < three; ++i) {
      bottom += sorted_[i];
      top += sorted_[e - 1 - i];
    }
    st.max_over_mean.add(sorted_[e - 1] / mean);
    st.cv.add(std::sqrt(sq / n) / mean);
    // G = sum_i sum_j |x_i - x_j| / (2 n^2 mean), in its sorted form.
    st.gini.add(2.0 * ranked / (n * sum) - (n + 1.0) / n);
    st.top3_share.add(top / sum);
    st.bottom3_share.add(bottom / sum);
  } else {
    ++st.empty_iterations;
  }

  // Turnover of the hottest set against the previous iteration's.
  std::uint8_t* hot = hot_.data() + lay * e;
  std::fill(new_hot_.begin(), new_hot_.end(), std::uint8_t{0});
  int changed = 0;
  for (int j = 0; j < hot_k_; ++j) {
    const auto ex = static_cast<std::size_t>(order_[static_cast<std::size_t>(j)]);
    new_hot_[ex] = 1;
    if (hot[ex] == 0) ++changed;
  }
  if (iterations_ > 0) st.turnover.add(static_cast<double>(changed) / hot_k_);
  std::copy(new_hot_.begin(), new_hot_.end(), hot);

  // Swing over the window ending here, once it is full.
  if (iterations_ + 1 >= kWindowI) {
    const std::int64_t* w[kWindow];
    for (std::size_t k = 0; k < kWindow; ++k) w[k] = history_.data() + (k * l + lay) * e;
    double worst = 0.0;
    for (std::size_t i = 0; i < e; ++i) {
      std::int64_t hi = w[0][i];
      std::int64_t lo = w[0][i];
      for (std::size_t k = 1; k < kWindow; ++k) {
        hi = std::max(hi, w[k][i]);
        lo = std::min(lo, w[k][i]);
      }
      worst = std::max(worst, static_cast<double>(hi) / static_cast<double>(std::max<std::int64_t>(lo, 1)));
    }
    st.swing3.add(worst);
  }
}

TraceStatsReport TraceStats::report() const {
  TraceStatsReport r;
  r.shape = shape_;
  r.hot_k = hot_k_;
  r.iterations = iterations_;
  r.layers = layers_;
  LayerTraceStats& o = r.overall;
  for (const auto& st : layers_) {
    o.max_over_mean.merge(st.max_over_mean);
    o.cv.merge(st.cv);
    o.gini.merge(st.gini);
    o.top3_share.merge(st.top3_share);
    o.bottom3_share.merge(st.bottom3_share);
    o.turnover.merge(st.turnover);
    o.swing3.merge(st.swing3);
    o.empty_iterations += st.empty_iterations;
    o.assignments += st.assignments;
  }
  return r;
}

TraceStatsReport compute_trace_stats(TraceSource& src, const TraceStatsOptions& options,
                                     std::int64_t max_iterations) {
  TraceStats stats(src.shape(), options);
  IterationCounts it;
  while (max_iterations < 0 || stats.iterations() < max_iterations) {
    if (!src.next(it)) break;
    stats.add(it);
  }
  if (stats.iterations() == 0) {
    throw InputError(fmt::format("trace stats: {} has no iterations", src.describe()));
  }
  return stats.report();
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

namespace {

std::string num(const StatSummary& s, double v, int width, int precision) {
  if (s.n == 0) return fmt::format("{:>{}}", "-", width);
  return fmt::format("{:>{}.{}f}", v, width, precision);
}

std::string pct(const StatSummary& s, double v, int width) {
  if (s.n == 0) return fmt::format("{:>{}}", "-", width);
  return fmt::format("{:>{}.1f}%", 100.0 * v, width - 1);
}

std::string row(const std::string& label, const LayerTraceStats& st) {
  return fmt::format("{:>5} {} {} {} {} {} {} {} {}\n", label,
                     num(st.max_over_mean, st.max_over_mean.mean(), 8, 2),
                     num(st.max_over_mean, st.max_over_mean.max, 6, 2), num(st.cv, st.cv.mean(), 6, 3),
                     num(st.gini, st.gini.mean(), 6, 3), pct(st.top3_share, st.top3_share.mean(), 7),
                     pct(st.bottom3_share, st.bottom3_share.mean(), 8),
                     pct(st.turnover, st.turnover.mean(), 8), num(st.swing3, st.swing3.max, 8, 1));
}

nlohmann::json summary(const StatSummary& s) {
  if (s.n == 0) return {{"n", 0}, {"mean", nullptr}, {"min", nullptr}, {"max", nullptr}};
  return {{"n", s.n}, {"mean", s.mean()}, {"min", s.min}, {"max", s.max}};
}

nlohmann::json layer_json(const LayerTraceStats& st) {
  return {{"assignments", st.assignments},
          {"empty_iterations", st.empty_iterations},
          {"max_over_mean", summary(st.max_over_mean)},
          {"cv", summary(st.cv)},
          {"gini", summary(st.gini)},
          {"top3_share", summary(st.top3_share)},
          {"bottom3_share", summary(st.bottom3_share)},
          {"turnover", summary(st.turnover)},
          {"swing3", summary(st.swing3)}};
}

}  // namespace

std::string format_trace_stats(const TraceStatsReport& r, const std::string& title) {
  std::string out = fmt::format("{}: {} iterations; {}; hottest set k = {}\n", title, r.iterations,
                                shape_text(r.shape), r.hot_k);
  out += fmt::format("{:>5} {:>8} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}\n", "layer", "max/mean", "peak",
                     "CV", "Gini", "top-3", "bottom-3", "turnover", "swing3");
  for (std::size_t i = 0; i < r.layers.size(); ++i) out += row(std::to_string(i), r.layers[i]);
  out += row("all", r.overall);
  out +=
      "Averages over iterations, except peak (largest max/mean) and swing3 (largest max/min load\n"
      "of one expert within 3 consecutive iterations); turnover: share of the hottest set that\n"
      "changes between consecutive iterations.\n";
  if (r.overall.empty_iterations > 0) {
    out += fmt::format(
        "{} (layer, iteration) pairs had no assignment and are left out of the "
        "load columns.\n",
        r.overall.empty_iterations);
  }
  return out;
}

nlohmann::json trace_stats_json(const TraceStatsReport& r, const std::string& title) {
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    nlohmann::json j = layer_json(r.layers[i]);
    j["layer"] = i;
    layers.push_back(std::move(j));
  }
  return {{"trace", title},
          {"iterations", r.iterations},
          {"shape", {{"layers", r.shape.layers}, {"gpus", r.shape.gpus}, {"experts", r.shape.experts}}},
          {"hot_k", r.hot_k},
          {"overall", layer_json(r.overall)},
          {"layers", std::move(layers)}};
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

bool file_starts_with(const std::string& path, std::string_view prefix) {
  std::ifstream in(path, std::ios::in | std::ios::binary);
  if (!in) return false;
  std::string head(prefix.size(), '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  return static_cast<std::size_t>(in.gcount()) == prefix.size() && head == prefix;
}

int default_hot_k(int experts, int top_k) {
  if (top_k > 0) return std::min(top_k, experts);
  return std::min(8, std::max(1, experts / 4));
}

namespace {

template <typename T>
T parse_number(std::string_view text, std::string_view what, const std::string& trace) {
  T v{};
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    throw InputError(fmt::format("trace '{}': {} '{}' is not a non-negative integer", trace, what, text));
  }
  return v;
}

// An iteration is held in memory as int64 counts (a CSV reader keeps a second array of that
// size): refuse shapes that cannot fit rather than fail allocating them.
void check_size(const TraceShape& s, const std::string& trace) {
  constexpr double kMaxCells = 268435456.0;  // 2^28 counts: 2 GiB per iteration buffer
  const double cells = static_cast<double>(s.layers) * s.gpus * s.experts;
  if (cells > kMaxCells) {
    throw InputError(
        fmt::format("trace '{}': the shape {} has {:.0f} counts per iteration; at most "
                    "2^28 (268435456) are supported",
                    trace, shape_text(s), cells));
  }
}

StatsInput open_synthetic(const std::string& trace, const TraceShape& shape) {
  std::string_view rest = std::string_view(trace).substr(std::string_view("synthetic:").size());
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t colon = rest.find(':');
    parts.push_back(rest.substr(0, colon));
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  const std::string name(parts[0]);
  const SyntheticPreset* preset = find_synthetic_preset(name);
  if (preset == nullptr) {
    std::string names;
    for (const auto& n : synthetic_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw InputError(
        fmt::format("trace '{}': unknown synthetic preset '{}'; presets: {}", trace, name, names));
  }
  StatsInput in;
  in.iterations = 200;
  SyntheticTraceSpec spec = preset->spec;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const std::string_view p = parts[i];
    const std::size_t eq = p.find('=');
    const std::string_view key = p.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view() : p.substr(eq + 1);
    if (key == "iterations") {
      in.iterations = parse_number<std::int64_t>(value, "iterations", trace);
      if (in.iterations < 1) {
        throw InputError(fmt::format("trace '{}': iterations must be at least 1", trace));
      }
    } else if (key == "seed") {
      spec.seed = parse_number<std::uint64_t>(value, "seed", trace);
    } else {
      throw InputError(
          fmt::format("trace '{}': unknown parameter '{}'; allowed: iterations=N, "
                      "seed=S",
                      trace, p));
    }
  }
  TraceShape s = preset->shape;
  if (shape.layers > 0) s.layers = shape.layers;
  if (shape.gpus > 0) s.gpus = shape.gpus;
  if (shape.experts > 0) s.experts = shape.experts;
  check_size(s, trace);
  in.top_k = spec.top_k;
  in.source = make_synthetic_trace(s, spec);
  return in;
}

}  // namespace

StatsInput open_stats_input(const std::string& trace, const TraceShape& shape,
                            const std::vector<TraceFileFormat>& formats) {
  if (trace.rfind("synthetic:", 0) == 0) return open_synthetic(trace, shape);
  StatsInput in;
  for (const auto& f : formats) {
    if (f.recognizes(trace)) {
      in.source = f.open(trace, shape);
      return in;
    }
  }
  TraceShape s = shape;
  if (s.layers <= 0 || s.gpus <= 0 || s.experts <= 0) {
    const TraceShape found = scan_csv_trace_shape(trace);
    if (s.layers <= 0) s.layers = found.layers;
    if (s.gpus <= 0) s.gpus = found.gpus;
    if (s.experts <= 0) s.experts = found.experts;
  }
  check_size(s, trace);
  in.source = open_csv_trace(trace, s);
  return in;
}

}  // namespace moesim

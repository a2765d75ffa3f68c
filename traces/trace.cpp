#include "traces/trace.hpp"
#include "traces/csv.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <string_view>
#include <system_error>

#include "core/error.hpp"
#include "traces/binomial.hpp"
#include "traces/importers.hpp"

namespace moesim {

namespace {

std::size_t cell_count(const TraceShape& s) {
  return static_cast<std::size_t>(s.layers) * static_cast<std::size_t>(s.gpus) *
         static_cast<std::size_t>(s.experts);
}

bool same_shape(const TraceShape& a, const TraceShape& b) {
  return a.layers == b.layers && a.gpus == b.gpus && a.experts == b.experts;
}

// ---------------------------------------------------------------------------------------------
// Synthetic generator
// ---------------------------------------------------------------------------------------------

class SyntheticTrace final : public TraceSource {
 public:
  SyntheticTrace(const TraceShape& shape, const SyntheticTraceSpec& spec)
      : shape_(shape), spec_(spec) {
    const auto e = static_cast<std::size_t>(shape_.experts);
    const auto l = static_cast<std::size_t>(shape_.layers);
    base_logp_.resize(l * e);
    logp_.resize(l * e);
    cond_p_.resize(e);
    bursts_on_ = spec_.burst_prob > 0.0;
    dispersion_on_ = spec_.sampling_dispersion < 1.0;
    if (dispersion_on_) p_.resize(e);
    decay_on_ = spec_.skew_decay_iterations > 0.0;
    if (bursts_on_ || decay_on_) eff_logp_.resize(e);
    log_burst_factor_ = std::log(spec_.burst_factor);
    rewind();
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }
  [[nodiscard]] const std::vector<double>& base_logp() const { return base_logp_; }

  bool next(IterationCounts& out) override {
    if (!same_shape(out.shape, shape_) || out.counts.size() != cell_count(shape_)) {
      out.reset(shape_);
    }
    // The first iteration uses the base popularity as is; later ones take one walk step each.
    if (started_) {
      step_walk();
      step_bursts();
      ++iteration_;
    }
    started_ = true;
    if (decay_on_) {
      skew_scale_ = spec_.skew_floor + (1.0 - spec_.skew_floor) *
                                           std::exp(-static_cast<double>(iteration_) /
                                                    spec_.skew_decay_iterations);
    }

    const std::int64_t n_total = spec_.tokens_per_gpu * spec_.top_k;
    // Sub-multinomial sampling: a share 1 - sampling_dispersion of the assignments is dealt in
    // proportion to the popularity, the rest drawn; every count's variance scales by the share.
    const std::int64_t n_drawn =
        dispersion_on_ ? std::llround(spec_.sampling_dispersion * static_cast<double>(n_total)) : n_total;
    const int experts = shape_.experts;
    for (int layer = 0; layer < shape_.layers; ++layer) {
      prepare_conditionals(layer);
      // Multinomial as a chain of binomials: expert i takes Binomial(remaining, p_i / tail_i),
      // which needs no per-token work, so cost is independent of the batch size. Experts are
      // the outer loop so that the sources' draws with one p form a batch.
      const auto gpus = static_cast<std::size_t>(shape_.gpus);
      const auto e = static_cast<std::size_t>(experts);
      remaining_.assign(gpus, n_drawn);
      columns_.resize(e * gpus);
      for (std::size_t ex = 0; ex + 1 < e; ++ex) {
        // One batch per expert, in source order: the same draws as one sample_binomial call per
        // source (q >= 1 gives the remainder, q <= 0 and nothing left give 0), set up jointly.
        std::int64_t* col = columns_.data() + ex * gpus;
        sample_binomial_batch(rng_, cond_p_[ex], remaining_.data(), col, gpus);
        for (std::size_t src = 0; src < gpus; ++src) remaining_[src] -= col[src];
      }
      // The last expert takes the remainder so every row sums exactly to n_total.
      std::copy(remaining_.begin(), remaining_.end(), columns_.data() + (e - 1) * gpus);
      if (dispersion_on_) add_dealt(n_total - n_drawn);
      // Drawn by expert, stored by source: transposed in strips of 8 sources, so that the
      // iteration's 15 MB (DeepSeek-V3) are written in sequence and not one cache line a count.
      std::int64_t* dst = out.counts.data() + static_cast<std::size_t>(layer) * gpus * e;
      for (std::size_t s0 = 0; s0 < gpus; s0 += 8) {
        const std::size_t s1 = std::min(gpus, s0 + 8);
        for (std::size_t ex = 0; ex < e; ++ex) {
          const std::int64_t* col = columns_.data() + ex * gpus;
          for (std::size_t src = s0; src < s1; ++src) dst[src * e + ex] = col[src];
        }
      }
    }
    return true;
  }

  void rewind() override {
    rng_.seed(spec_.seed);
    normal_.reset();
    started_ = false;
    iteration_ = 0;
    skew_scale_ = 1.0;
    build_base();
    logp_ = base_logp_;
    burst_age_.assign(bursts_on_ ? logp_.size() : 0, 0);
  }

  [[nodiscard]] std::string describe() const override {
    // Without the newer dynamics the text is what it always was (it appears in run outputs).
    std::string extra;
    if (bursts_on_) {
      extra += fmt::format(", burst_prob={}, burst_factor={}, burst_rise={}, burst_len={}",
                           spec_.burst_prob, spec_.burst_factor, spec_.burst_rise,
                           spec_.burst_len);
    }
    if (dispersion_on_) extra += fmt::format(", sampling_dispersion={}", spec_.sampling_dispersion);
    if (decay_on_) {
      extra += fmt::format(", skew_decay_iterations={}, skew_floor={}",
                           spec_.skew_decay_iterations, spec_.skew_floor);
    }
    return fmt::format("synthetic(skew={}, drift_sigma={}, drift_reversion={}{}, seed={})",
                       spec_.skew, spec_.drift_sigma, spec_.drift_reversion, extra, spec_.seed);
  }

 private:
  // Zipf(skew) over a random permutation per layer, so the hot experts differ between layers.
  void build_base() {
    const auto e = static_cast<std::size_t>(shape_.experts);
    std::vector<std::size_t> perm(e);
    for (int layer = 0; layer < shape_.layers; ++layer) {
      for (std::size_t i = 0; i < e; ++i) perm[i] = i;
      // Fisher-Yates with a plain modulo: libstdc++'s std::shuffle is fine too, but this keeps the
      // permutation independent of the standard library (the bias of a 64-bit modulo is nil).
      for (std::size_t i = e; i > 1; --i) {
        const auto j = static_cast<std::size_t>(rng_() % static_cast<std::uint64_t>(i));
        std::swap(perm[i - 1], perm[j]);
      }
      double* base = base_logp_.data() + static_cast<std::size_t>(layer) * e;
      for (std::size_t rank = 0; rank < e; ++rank) {
        base[perm[rank]] = -spec_.skew * std::log(static_cast<double>(rank + 1));
      }
    }
  }

  void step_walk() {
    const double a = spec_.drift_reversion;
    const double sigma = spec_.drift_sigma;
    // sigma == 0 draws nothing, so a stationary spec consumes no randomness for the walk.
    const bool noisy = sigma > 0.0;
    if (!noisy && a == 0.0) return;
    for (std::size_t i = 0; i < logp_.size(); ++i) {
      double v = logp_[i] + a * (base_logp_[i] - logp_[i]);
      if (noisy) v += sigma * normal_(rng_);
      logp_[i] = v;
    }
  }

  // Ages advance, finished bursts end, then each layer may start one. The expert is uniform
  // among the colder half (by current popularity): only a cold expert can grow by an order of
  // magnitude, and a hot one multiplied by burst_factor would take nearly every token. Draws
  // only raw engine outputs, and nothing at all when bursts are off (older traces unchanged).
  void step_bursts() {
    if (!bursts_on_) return;
    for (int& age : burst_age_) {
      if (age > 0) age = age >= spec_.burst_len ? 0 : age + 1;
    }
    const auto e = static_cast<std::size_t>(shape_.experts);
    const std::size_t cold = std::max<std::size_t>(1, e / 2);
    for (int layer = 0; layer < shape_.layers; ++layer) {
      const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
      if (u >= spec_.burst_prob) continue;
      const double* lp = logp_.data() + static_cast<std::size_t>(layer) * e;
      burst_order_.resize(e);
      std::iota(burst_order_.begin(), burst_order_.end(), std::size_t{0});
      // A total order (ties by index), so the choice does not depend on the sort algorithm.
      std::sort(burst_order_.begin(), burst_order_.end(), [lp](std::size_t a, std::size_t b) {
        return lp[a] != lp[b] ? lp[a] < lp[b] : a < b;
      });
      const std::size_t ex = burst_order_[static_cast<std::size_t>(rng_() % cold)];
      // A burst on an expert that is still bursting starts over.
      burst_age_[static_cast<std::size_t>(layer) * e + ex] = 1;
    }
  }

  // Log-multiplier of a burst at `age` (1 .. burst_len): linear in log space, so the weight grows
  // geometrically to burst_factor at age burst_rise, then shrinks geometrically; the last age
  // still carries a step, so no iteration of the burst is at the base.
  [[nodiscard]] double burst_log_boost(int age) const {
    const int rise = spec_.burst_rise;
    const double shape = age <= rise ? static_cast<double>(age) / rise
                                     : static_cast<double>(spec_.burst_len + 1 - age) /
                                           static_cast<double>(spec_.burst_len + 1 - rise);
    return log_burst_factor_ * shape;
  }

  // The dealt share: `n` assignments to every source, expert i's cumulative share rounded
  // (systematic rounding: each count within 1 of n p_i, and they sum to n exactly).
  void add_dealt(std::int64_t n) {
    const auto gpus = static_cast<std::size_t>(shape_.gpus);
    const auto e = static_cast<std::size_t>(shape_.experts);
    double cum = 0.0;
    std::int64_t before = 0;
    for (std::size_t ex = 0; ex < e; ++ex) {
      cum += p_[ex];
      const std::int64_t upto =
          ex + 1 == e ? n : std::clamp<std::int64_t>(std::llround(cum * static_cast<double>(n)), before, n);
      std::int64_t* col = columns_.data() + ex * gpus;
      for (std::size_t src = 0; src < gpus; ++src) col[src] += upto - before;
      before = upto;
    }
  }

  // Normalised probabilities of one layer turned into the conditional probabilities of the
  // binomial chain: q_i = p_i / (p_i + ... + p_{E-1}).
  void prepare_conditionals(int layer) {
    const auto e = static_cast<std::size_t>(shape_.experts);
    const double* lp = logp_.data() + static_cast<std::size_t>(layer) * e;
    if (bursts_on_ || decay_on_) {
      // Scaling log-popularity scales its deviation from uniform: softmax ignores the mean.
      const int* age =
          bursts_on_ ? burst_age_.data() + static_cast<std::size_t>(layer) * e : nullptr;
      for (std::size_t i = 0; i < e; ++i) {
        double v = skew_scale_ * lp[i];
        if (age != nullptr && age[i] > 0) v += burst_log_boost(age[i]);
        eff_logp_[i] = v;
      }
      lp = eff_logp_.data();
    }
    // Subtracting the maximum keeps exp() in range however far the walk has wandered.
    const double mx = *std::max_element(lp, lp + e);
    double total = 0.0;
    for (std::size_t i = 0; i < e; ++i) {
      cond_p_[i] = std::exp(lp[i] - mx);
      total += cond_p_[i];
    }
    // Walk from the back so each tail sum is exact for its own suffix (no cancellation).
    double tail = 0.0;
    for (std::size_t i = e; i-- > 0;) {
      const double p = cond_p_[i] / total;
      if (dispersion_on_) p_[i] = p;
      tail += p;
      cond_p_[i] = tail > 0.0 ? std::clamp(p / tail, 0.0, 1.0) : 1.0;
    }
  }

  TraceShape shape_;
  SyntheticTraceSpec spec_;
  Mt64 rng_;  // std::mt19937_64's sequence, cheaper per output
  std::normal_distribution<double> normal_{0.0, 1.0};
  std::vector<double> base_logp_;  // [layer][expert]
  std::vector<double> logp_;       // [layer][expert], current walk state
  std::vector<double> cond_p_;     // scratch, [expert]
  std::vector<double> p_;          // scratch, [expert]: the probabilities, with dispersion only
  std::vector<std::int64_t> remaining_;  // scratch, [source GPU]
  std::vector<std::int64_t> columns_;    // scratch, [expert][source GPU] of one layer
  std::vector<int> burst_age_;   // [layer][expert]: 0 no burst, else 1 .. burst_len
  std::vector<std::size_t> burst_order_;  // scratch, [expert]
  std::vector<double> eff_logp_;  // scratch, [expert]: log-popularity after decay and bursts
  double log_burst_factor_ = 0.0;
  double skew_scale_ = 1.0;        // skew-decay factor of the current iteration
  std::int64_t iteration_ = 0;     // index of the iteration being produced
  bool bursts_on_ = false;
  bool decay_on_ = false;
  bool dispersion_on_ = false;
  bool started_ = false;
};

// ---------------------------------------------------------------------------------------------
// CSV reader
// ---------------------------------------------------------------------------------------------

constexpr std::array<std::string_view, 5> kColumns = {"iteration", "layer", "src_gpu", "expert",
                                                      "tokens"};
constexpr std::string_view kHeader = "iteration,layer,src_gpu,expert,tokens";

using csv::split;
using csv::trim;

std::size_t split_fields(std::string_view line, std::vector<std::string_view>& out) { return split(line, out); }

// (Re)opens `in` on `path`, or throws InputError saying why not.
void open_trace_file(const std::string& path, std::ifstream& in) {
  in.close();
  in.clear();
  // A directory opens fine on Linux and then reads as empty; name it instead.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw InputError(fmt::format("{}: cannot open the trace: it is a directory, not a file", path));
  }
  in.open(path, std::ios::in | std::ios::binary);
  if (!in) {
    const bool exists = std::filesystem::exists(path, ec);
    throw InputError(
        fmt::format("{}: cannot open the trace: {}", path,
                    exists ? "the file is not readable (check permissions)" : "no such file"));
  }
}

struct CsvRow {
  std::int64_t iteration = 0;
  std::int64_t layer = 0;
  std::int64_t src = 0;
  std::int64_t expert = 0;
  std::int64_t tokens = 0;
  std::int64_t line = 0;
};

class CsvTrace final : public TraceSource {
 public:
  CsvTrace(std::string path, const TraceShape& expected)
      : path_(std::move(path)), shape_(expected) {
    // Validate the whole file up front (constant memory) so a malformed trace is reported before
    // any simulation output is produced, not halfway through a run.
    open();
    IterationCounts scratch;
    while (next(scratch)) {
    }
    open();
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (!has_pending_) return false;
    if (!same_shape(out.shape, shape_) || out.counts.size() != cell_count(shape_)) {
      out.reset(shape_);
    } else {
      std::fill(out.counts.begin(), out.counts.end(), 0);
    }
    std::fill(seen_line_.begin(), seen_line_.end(), 0);
    const std::int64_t iteration = pending_.iteration;
    while (has_pending_ && pending_.iteration == iteration) {
      const CsvRow& r = pending_;
      const std::size_t idx =
          (static_cast<std::size_t>(r.layer) * static_cast<std::size_t>(shape_.gpus) +
           static_cast<std::size_t>(r.src)) *
              static_cast<std::size_t>(shape_.experts) +
          static_cast<std::size_t>(r.expert);
      if (seen_line_[idx] != 0) {
        fail(r.line, fmt::format("duplicate row for iteration {}, layer {}, src_gpu {}, expert {} "
                                 "(first given on line {}); each combination may appear once "
                                 "per iteration",
                                 r.iteration, r.layer, r.src, r.expert, seen_line_[idx]));
      }
      seen_line_[idx] = r.line;
      out.counts[idx] = r.tokens;
      read_row();
    }
    return true;
  }

  void rewind() override { open(); }

  [[nodiscard]] std::string describe() const override { return fmt::format("csv({})", path_); }

 private:
  [[noreturn]] void fail(std::int64_t line, const std::string& what) const {
    throw InputError(fmt::format("{}:{}: {}", path_, line, what));
  }

  // Next line that is neither blank nor a comment; false at end of file.
  bool next_content_line(std::string_view& content) {
    if (csv::next_content_line(in_, line_, line_no_, content)) return true;
    if (in_.bad()) fail(line_no_ + 1, "read error");
    return false;
  }

  void open() {
    open_trace_file(path_, in_);
    line_no_ = 0;
    last_iteration_ = -1;
    has_pending_ = false;
    seen_line_.assign(cell_count(shape_), 0);

    std::string_view header;
    if (!next_content_line(header)) {
      fail(line_no_ + 1, fmt::format("the file is empty; expected the header '{}'", kHeader));
    }
    bool ok = split_fields(header, fields_) == kColumns.size();
    for (std::size_t i = 0; ok && i < kColumns.size(); ++i) ok = fields_[i] == kColumns[i];
    if (!ok) {
      fail(line_no_, fmt::format("expected the header '{}', found '{}'", kHeader, header));
    }
    read_row();
    if (!has_pending_) {
      fail(line_no_ + 1,
           "the trace has no data rows; it needs at least one iteration (iteration 0)");
    }
  }

  std::int64_t parse_int(std::size_t column) const {
    const std::string_view f = fields_[column];
    std::int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
    if (f.empty() || ec != std::errc() || ptr != f.data() + f.size()) {
      fail(line_no_, fmt::format("column '{}': '{}' is not an integer", kColumns[column], f));
    }
    return v;
  }

  void check_range(std::size_t column, std::int64_t v, int count, std::string_view noun) const {
    if (v < 0 || v >= count) {
      if (count <= 0) {
        fail(line_no_, fmt::format("{} {} is out of range; the scenario has no {}",
                                   kColumns[column], v, noun));
      }
      fail(line_no_, fmt::format("{} {} is out of range; the scenario has {} {} (0..{})",
                                 kColumns[column], v, count, noun, count - 1));
    }
  }

  // Reads and validates the next data row into pending_; has_pending_ false at end of file.
  void read_row() {
    std::string_view s;
    if (!next_content_line(s)) {
      has_pending_ = false;
      return;
    }
    const std::size_t n = split_fields(s, fields_);
    if (n != kColumns.size()) {
      fail(line_no_, fmt::format("expected 5 fields ({}), found {}", kHeader, n));
    }
    CsvRow r;
    r.line = line_no_;
    r.iteration = parse_int(0);
    r.layer = parse_int(1);
    r.src = parse_int(2);
    r.expert = parse_int(3);
    r.tokens = parse_int(4);
    if (r.iteration < 0) {
      fail(line_no_, fmt::format("iteration {} is negative; iterations count from 0", r.iteration));
    }
    if (r.iteration < last_iteration_) {
      fail(line_no_, fmt::format("iteration {} goes backwards after iteration {}; rows must be "
                                 "grouped by iteration in increasing order",
                                 r.iteration, last_iteration_));
    }
    if (r.iteration > last_iteration_ + 1) {
      if (last_iteration_ < 0) {
        fail(line_no_,
             fmt::format("the first iteration is {}; iterations must start at 0", r.iteration));
      }
      fail(line_no_, fmt::format("iteration {} skips iteration {}; iterations must be "
                                 "consecutive (0, 1, 2, ...)",
                                 r.iteration, last_iteration_ + 1));
    }
    check_range(1, r.layer, shape_.layers, "MoE layers");
    check_range(2, r.src, shape_.gpus, "GPUs");
    check_range(3, r.expert, shape_.experts, "experts");
    if (r.tokens < 0) {
      fail(line_no_, fmt::format("tokens {} is negative; counts must be >= 0", r.tokens));
    }
    last_iteration_ = r.iteration;
    pending_ = r;
    has_pending_ = true;
  }

  std::string path_;
  TraceShape shape_;
  std::ifstream in_;
  std::string line_;
  std::vector<std::string_view> fields_;
  std::vector<std::int64_t> seen_line_;  // line of the row that set each cell, 0 if none
  std::int64_t line_no_ = 0;
  std::int64_t last_iteration_ = -1;
  CsvRow pending_;
  bool has_pending_ = false;
};

void validate_shape(const TraceShape& s, std::string_view who) {
  if (s.layers < 1 || s.gpus < 1 || s.experts < 1) {
    throw InputError(
        fmt::format("{}: the trace shape needs at least one MoE layer, GPU and "
                    "expert; found {} layers, {} GPUs, {} experts",
                    who, s.layers, s.gpus, s.experts));
  }
}

}  // namespace

std::unique_ptr<TraceSource> make_synthetic_trace(const TraceShape& shape,
                                                  const SyntheticTraceSpec& spec) {
  validate_shape(shape, "synthetic trace");
  if (spec.tokens_per_gpu < 0) {
    throw InputError(fmt::format("synthetic trace: tokens_per_gpu {} is negative; allowed >= 0",
                                 spec.tokens_per_gpu));
  }
  if (spec.top_k < 1 || spec.top_k > shape.experts) {
    throw InputError(
        fmt::format("synthetic trace: top_k {} is out of range; allowed 1..{} "
                    "(the number of experts)",
                    spec.top_k, shape.experts));
  }
  const auto check = [](std::string_view name, double v, double lo, double hi) {
    if (!(v >= lo && v <= hi)) {  // also rejects NaN
      throw InputError(
          fmt::format("synthetic trace: {} {} is out of range; allowed [{}, {}]", name, v, lo, hi));
    }
  };
  check("skew", spec.skew, 0.0, 10.0);
  check("drift_sigma", spec.drift_sigma, 0.0, 5.0);
  check("drift_reversion", spec.drift_reversion, 0.0, 1.0);
  check("sampling_dispersion", spec.sampling_dispersion, 0.0, 1.0);
  check("burst_prob", spec.burst_prob, 0.0, 1.0);
  check("burst_factor", spec.burst_factor, 1.0, 1e6);
  check("skew_decay_iterations", spec.skew_decay_iterations, 0.0, 1e12);
  check("skew_floor", spec.skew_floor, 0.0, 1.0);
  if (spec.burst_rise < 1 || spec.burst_rise > 3) {
    throw InputError(fmt::format(
        "synthetic trace: burst_rise {} is out of range; allowed 1..3 iterations", spec.burst_rise));
  }
  if (spec.burst_len < spec.burst_rise || spec.burst_len > 10000) {
    throw InputError(fmt::format(
        "synthetic trace: burst_len {} is out of range; allowed {}..10000 iterations (at least "
        "burst_rise)",
        spec.burst_len, spec.burst_rise));
  }
  return std::make_unique<SyntheticTrace>(shape, spec);
}

std::vector<double> synthetic_base_logp(const TraceShape& shape, const SyntheticTraceSpec& spec) {
  return SyntheticTrace(shape, spec).base_logp();
}

std::unique_ptr<TraceSource> open_csv_trace(const std::string& path, const TraceShape& expected) {
  validate_shape(expected, path);
  // Before the reader allocates an iteration (and its line index) of that shape.
  check_trace_cells(expected, path);
  return std::make_unique<CsvTrace>(path, expected);
}

TraceShape scan_csv_trace_shape(const std::string& path) {
  std::ifstream in;
  open_trace_file(path, in);
  std::string line;
  std::vector<std::string_view> fields;
  std::int64_t line_no = 0;
  bool header_seen = false;
  bool any_row = false;
  std::array<std::int64_t, 3> max_index = {-1, -1, -1};  // layer, src_gpu, expert
  const auto fail = [&](const std::string& what) {
    throw InputError(fmt::format("{}:{}: {}", path, line_no, what));
  };
  std::string_view v;
  while (csv::next_content_line(in, line, line_no, v)) {
    const std::size_t n = split_fields(v, fields);
    if (!header_seen) {
      bool ok = n == kColumns.size();
      for (std::size_t i = 0; ok && i < kColumns.size(); ++i) ok = fields[i] == kColumns[i];
      if (!ok) fail(fmt::format("expected the header '{}', found '{}'", kHeader, v));
      header_seen = true;
      continue;
    }
    if (n != kColumns.size()) {
      fail(fmt::format("expected 5 fields ({}), found {}", kHeader, n));
    }
    for (std::size_t c = 1; c <= 3; ++c) {
      const std::string_view f = fields[c];
      std::int64_t x = 0;
      const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), x);
      if (f.empty() || ec != std::errc() || ptr != f.data() + f.size()) {
        fail(fmt::format("column '{}': '{}' is not an integer", kColumns[c], f));
      }
      if (x < 0) fail(fmt::format("{} {} is negative; indices count from 0", kColumns[c], x));
      // Beyond int, the shape itself could not be represented.
      if (x >= std::numeric_limits<int>::max()) {
        fail(fmt::format("{} {} is too large to be an index", kColumns[c], x));
      }
      max_index[c - 1] = std::max(max_index[c - 1], x);
    }
    any_row = true;
  }
  if (in.bad()) {
    ++line_no;
    fail("read error");
  }
  if (!header_seen) {
    ++line_no;
    fail(fmt::format("the file is empty; expected the header '{}'", kHeader));
  }
  if (!any_row) {
    ++line_no;
    fail("the trace has no data rows; it needs at least one iteration (iteration 0)");
  }
  return TraceShape{static_cast<int>(max_index[0] + 1), static_cast<int>(max_index[1] + 1),
                    static_cast<int>(max_index[2] + 1)};
}

void write_csv_trace(TraceSource& src, int iterations, const std::string& path) {
  if (iterations < 1) {
    throw InputError(fmt::format("{}: cannot write {} iterations; a trace needs at least one", path,
                                 iterations));
  }
  const std::string tmp = path + ".tmp";
  std::error_code ignore;
  const auto give_up = [&](const std::string& what) {
    std::filesystem::remove(tmp, ignore);
    throw InputError(fmt::format("{}: {}", path, what));
  };
  {
    std::ofstream out(tmp, std::ios::out | std::ios::binary | std::ios::trunc);
    if (!out) give_up(fmt::format("cannot create '{}' (check the directory and permissions)", tmp));

    // Format into memory and write in large blocks: one stream call per row is slow.
    fmt::memory_buffer buf;
    fmt::format_to(std::back_inserter(buf), "{}\n", kHeader);
    IterationCounts it;
    for (int i = 0; i < iterations; ++i) {
      if (!src.next(it)) {
        give_up(fmt::format("the trace {} ended after {} iterations; {} were requested",
                            src.describe(), i, iterations));
      }
      const TraceShape s = it.shape;
      for (int layer = 0; layer < s.layers; ++layer) {
        for (int g = 0; g < s.gpus; ++g) {
          for (int ex = 0; ex < s.experts; ++ex) {
            const std::int64_t c = it.at(layer, g, ex);
            if (c != 0)
              fmt::format_to(std::back_inserter(buf), "{},{},{},{},{}\n", i, layer, g, ex, c);
          }
        }
        if (buf.size() > (1U << 20)) {
          out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
          buf.clear();
        }
      }
    }
    out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    out.close();
    if (!out) give_up(fmt::format("writing '{}' failed (disk full?)", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) give_up(fmt::format("cannot rename '{}' to it: {}", tmp, ec.message()));
}

}  // namespace moesim

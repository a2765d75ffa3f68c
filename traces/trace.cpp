#include "traces/trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string_view>
#include <system_error>

#include "sim/error.hpp"
#include "traces/binomial.hpp"

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
    rewind();
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (!same_shape(out.shape, shape_) || out.counts.size() != cell_count(shape_)) {
      out.reset(shape_);
    }
    // The first iteration uses the base popularity as is; later ones take one walk step each.
    if (started_) step_walk();
    started_ = true;

    const std::int64_t n_total = spec_.tokens_per_gpu * spec_.top_k;
    const int experts = shape_.experts;
    for (int layer = 0; layer < shape_.layers; ++layer) {
      prepare_conditionals(layer);
      // Multinomial as a chain of binomials: expert i takes Binomial(remaining, p_i / tail_i),
      // which needs no per-token work, so cost is independent of the batch size. Experts are
      // the outer loop so that the sources' independent chains overlap in the CPU.
      remaining_.assign(static_cast<std::size_t>(shape_.gpus), n_total);
      for (int ex = 0; ex + 1 < experts; ++ex) {
        const double q = cond_p_[static_cast<std::size_t>(ex)];
        for (int src = 0; src < shape_.gpus; ++src) {
          std::int64_t& remaining = remaining_[static_cast<std::size_t>(src)];
          std::int64_t x = 0;
          if (remaining > 0) {
            if (q >= 1.0) {
              x = remaining;
            } else if (q > 0.0) {
              // Our own exact sampler: ~4x cheaper than constructing a std::binomial_distribution
              // per draw, and its stream does not depend on the standard library.
              x = sample_binomial(rng_, remaining, q);
            }
          }
          out.at(layer, src, ex) = x;
          remaining -= x;
        }
      }
      // The last expert takes the remainder so every row sums exactly to n_total.
      for (int src = 0; src < shape_.gpus; ++src) {
        out.at(layer, src, experts - 1) = remaining_[static_cast<std::size_t>(src)];
      }
    }
    return true;
  }

  void rewind() override {
    rng_.seed(spec_.seed);
    normal_.reset();
    started_ = false;
    build_base();
    logp_ = base_logp_;
  }

  [[nodiscard]] std::string describe() const override {
    return fmt::format("synthetic(skew={}, drift_sigma={}, drift_reversion={}, seed={})",
                       spec_.skew, spec_.drift_sigma, spec_.drift_reversion, spec_.seed);
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

  // Normalised probabilities of one layer turned into the conditional probabilities of the
  // binomial chain: q_i = p_i / (p_i + ... + p_{E-1}).
  void prepare_conditionals(int layer) {
    const auto e = static_cast<std::size_t>(shape_.experts);
    const double* lp = logp_.data() + static_cast<std::size_t>(layer) * e;
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
      tail += p;
      cond_p_[i] = tail > 0.0 ? std::clamp(p / tail, 0.0, 1.0) : 1.0;
    }
  }

  TraceShape shape_;
  SyntheticTraceSpec spec_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_{0.0, 1.0};
  std::vector<double> base_logp_;  // [layer][expert]
  std::vector<double> logp_;       // [layer][expert], current walk state
  std::vector<double> cond_p_;     // scratch, [expert]
  std::vector<std::int64_t> remaining_;  // scratch, [source GPU]
  bool started_ = false;
};

// ---------------------------------------------------------------------------------------------
// CSV reader
// ---------------------------------------------------------------------------------------------

constexpr std::array<std::string_view, 5> kColumns = {"iteration", "layer", "src_gpu", "expert",
                                                      "tokens"};
constexpr std::string_view kHeader = "iteration,layer,src_gpu,expert,tokens";

std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Splits on ',' into `out` (reused); returns the number of fields found.
std::size_t split_fields(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(trim(line.substr(start)));
      break;
    }
    out.push_back(trim(line.substr(start, comma - start)));
    start = comma + 1;
  }
  return out.size();
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
    while (std::getline(in_, line_)) {
      ++line_no_;
      std::string_view s = line_;
      // A UTF-8 byte-order mark (spreadsheet exports) is not part of the header.
      if (line_no_ == 1 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
      s = trim(s);
      if (s.empty() || s.front() == '#') continue;
      content = s;
      return true;
    }
    if (in_.bad()) fail(line_no_ + 1, "read error");
    return false;
  }

  void open() {
    in_.close();
    in_.clear();
    // A directory opens fine on Linux and then reads as empty; name it instead.
    std::error_code ec;
    if (std::filesystem::is_directory(path_, ec)) {
      throw InputError(
          fmt::format("{}: cannot open the trace: it is a directory, not a file", path_));
    }
    in_.open(path_, std::ios::in | std::ios::binary);
    if (!in_) {
      const bool exists = std::filesystem::exists(path_, ec);
      throw InputError(
          fmt::format("{}: cannot open the trace: {}", path_,
                      exists ? "the file is not readable (check permissions)" : "no such file"));
    }
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
  return std::make_unique<SyntheticTrace>(shape, spec);
}

std::unique_ptr<TraceSource> open_csv_trace(const std::string& path, const TraceShape& expected) {
  validate_shape(expected, path);
  return std::make_unique<CsvTrace>(path, expected);
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

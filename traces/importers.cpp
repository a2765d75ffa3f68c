#include "traces/importers.hpp"
#include "traces/csv.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include "core/error.hpp"
#include "traces/binary.hpp"
#include "traces/binomial.hpp"

namespace moesim {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kNativeHeader = "iteration,layer,src_gpu,expert,tokens";
// Above this a count can no longer be held exactly in a double (the matrices' element type).
constexpr double kMaxExactCount = 9007199254740992.0;  // 2^53

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw InputError(fmt::format("{}: {}", where, what));
}

std::string at_line(const std::string& path, std::int64_t line) { return fmt::format("{}:{}", path, line); }

std::string at_byte(const std::string& path, std::uint64_t offset) {
  return fmt::format("{}: byte offset {}", path, offset);
}

std::size_t cells(int layers, int experts) {
  return static_cast<std::size_t>(layers) * static_cast<std::size_t>(experts);
}

// ---------------------------------------------------------------------------------------------
// Small CSV helpers (no quoting: none of the supported CSV forms needs it)
// ---------------------------------------------------------------------------------------------

using csv::trim;

void split(std::string_view line, std::vector<std::string_view>& out) { csv::split(line, out); }

// Lines of a text file, skipping blank lines and '#' comments, counting line numbers.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) fail(path, "cannot open: it is a directory, not a file");
    in_.open(path, std::ios::in | std::ios::binary);
    if (!in_) {
      fail(path, fs::exists(path, ec) ? "cannot open: the file is not readable (check permissions)"
                                      : "cannot open: no such file");
    }
  }
  bool next(std::string_view& content) {
    if (csv::next_content_line(in_, line_, line_no_, content)) return true;
    if (in_.bad()) fail(at_line(path_, line_no_ + 1), "read error");
    return false;
  }
  [[nodiscard]] std::int64_t line() const { return line_no_; }
  [[nodiscard]] std::string where() const { return at_line(path_, line_no_); }

 private:
  std::string path_;
  std::ifstream in_;
  std::string line_;
  std::int64_t line_no_ = 0;
};

bool parse_int(std::string_view f, std::int64_t& v) {
  const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  return !f.empty() && ec == std::errc() && ptr == f.data() + f.size();
}

bool parse_number(std::string_view f, double& v) {
  const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  return !f.empty() && ec == std::errc() && ptr == f.data() + f.size();
}

// A count field: a finite number >= 0 (fractions allowed: normalised loads are common).
double parse_count(std::string_view f, const std::string& where, const std::string& column) {
  double v = 0;
  if (!parse_number(f, v)) fail(where, fmt::format("{}: '{}' is not a number", column, f));
  if (!std::isfinite(v) || v < 0 || v > kMaxExactCount) {
    fail(where, fmt::format("{}: count {} is out of range; counts must be finite and >= 0 (at most 2^53)",
                            column, f));
  }
  return v;
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// ---------------------------------------------------------------------------------------------
// In-memory count matrices (JSON, CSV, long CSV): these files are small and must be parsed whole
// ---------------------------------------------------------------------------------------------

class MemoryMatrix final : public CountMatrixSource {
 public:
  MemoryMatrix(int layers, int experts, std::vector<double> data, std::string description)
      : layers_(layers), experts_(experts), data_(std::move(data)), description_(std::move(description)) {}
  [[nodiscard]] int layers() const override { return layers_; }
  [[nodiscard]] int experts() const override { return experts_; }
  [[nodiscard]] std::int64_t steps() const override {
    return static_cast<std::int64_t>(data_.size() / cells(layers_, experts_));
  }
  bool next(std::vector<double>& out) override {
    if (step_ >= steps()) return false;
    const std::size_t n = cells(layers_, experts_);
    const auto begin = data_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(step_) * n);
    out.assign(begin, begin + static_cast<std::ptrdiff_t>(n));
    ++step_;
    return true;
  }
  void rewind() override { step_ = 0; }
  [[nodiscard]] std::string describe() const override { return description_; }

 private:
  int layers_;
  int experts_;
  std::vector<double> data_;
  std::string description_;
  std::int64_t step_ = 0;
};

void check_dims(const std::string& where, std::int64_t layers, std::int64_t experts) {
  if (layers < 1 || experts < 1 || layers > (1 << 24) || experts > (1 << 24)) {
    fail(where, fmt::format("a load matrix needs 1..2^24 layers and experts; found {} layers, {} experts",
                            layers, experts));
  }
}

// ---------------------------------------------------------------------------------------------
// Load matrix, JSON
// ---------------------------------------------------------------------------------------------

// Keys under which recorders store the matrix: fiddler's expert_popularity, SGLang's
// logical_count, EPLB's weight, and generic names.
constexpr std::array<std::string_view, 8> kMatrixKeys = {
    "expert_popularity", "logical_count", "expert_load", "expert_counts", "counts", "load", "weight",
    "tokens_per_expert"};

std::unique_ptr<CountMatrixSource> load_matrix_json(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail(path, "cannot open: it is a directory, not a file");
  std::ifstream in(path, std::ios::in | std::ios::binary);
  if (!in) fail(path, fs::exists(path, ec) ? "cannot open: not readable" : "cannot open: no such file");
  json root;
  try {
    root = json::parse(in);
  } catch (const json::parse_error& e) {
    fail(at_byte(path, e.byte), fmt::format("invalid JSON: {}", e.what()));
  }
  const json* m = &root;
  std::string ptr;  // JSON pointer of the matrix, for messages
  if (root.is_object()) {
    m = nullptr;
    for (std::string_view k : kMatrixKeys) {
      const auto it = root.find(std::string(k));
      if (it != root.end()) {
        m = &*it;
        ptr = "/" + std::string(k);
        break;
      }
    }
    if (m == nullptr) {
      std::vector<std::string> arrays;
      for (const auto& [k, v] : root.items()) {
        if (v.is_array()) arrays.push_back(k);
      }
      if (arrays.size() != 1) {
        fail(path, fmt::format("cannot find the load matrix: the object has {} array members ({}); expected "
                               "the root array or one of the keys {}",
                               arrays.size(), fmt::join(arrays, ", "), fmt::join(kMatrixKeys, ", ")));
      }
      ptr = "/" + arrays.front();
      m = &root[arrays.front()];
    }
  }
  const auto where = [&](const std::string& sub) { return fmt::format("{}: at {}{}", path, ptr, sub); };
  if (!m->is_array() || m->empty()) {
    fail(where(""), "expected a non-empty array [layers][experts] or [steps][layers][experts]");
  }
  const json& first = (*m)[0];
  if (!first.is_array() || first.empty()) {
    fail(where("/0"),
         "expected an array of expert counts (a layer) or of layers (a step); a load matrix is "
         "[layers][experts] or [steps][layers][experts]");
  }
  const bool with_steps = first[0].is_array();
  const std::size_t steps = with_steps ? m->size() : 1;
  const std::size_t layers = with_steps ? first.size() : m->size();
  const std::size_t experts = with_steps ? first[0].size() : first.size();
  check_dims(where(""), static_cast<std::int64_t>(layers), static_cast<std::int64_t>(experts));
  std::vector<double> data;
  data.reserve(steps * layers * experts);
  const auto read_layer = [&](const json& row, const std::string& at) {
    if (!row.is_array() || row.size() != experts) {
      fail(where(at),
           fmt::format("expected an array of {} expert counts (as the first layer), found {}", experts,
                       row.is_array() ? fmt::format("{} values", row.size()) : row.type_name()));
    }
    for (std::size_t e = 0; e < experts; ++e) {
      const json& v = row[e];
      const double x = v.is_number() ? v.get<double>() : -1.0;
      if (!v.is_number() || !std::isfinite(x) || x < 0 || x > kMaxExactCount) {
        fail(where(fmt::format("{}/{}", at, e)),
             fmt::format("expected a count (a number >= 0), found {}", v.dump()));
      }
      data.push_back(x);
    }
  };
  for (std::size_t s = 0; s < steps; ++s) {
    const json& step = with_steps ? (*m)[s] : *m;
    const std::string sat = with_steps ? fmt::format("/{}", s) : std::string();
    if (!step.is_array() || step.size() != layers) {
      fail(where(sat),
           fmt::format("expected an array of {} layers (as step 0), found {}", layers,
                       step.is_array() ? fmt::format("{} values", step.size()) : step.type_name()));
    }
    for (std::size_t l = 0; l < layers; ++l) read_layer(step[l], fmt::format("{}/{}", sat, l));
  }
  return std::make_unique<MemoryMatrix>(static_cast<int>(layers), static_cast<int>(experts), std::move(data),
                                        fmt::format("load-matrix-json({})", path));
}

// ---------------------------------------------------------------------------------------------
// Load matrix, CSV
// ---------------------------------------------------------------------------------------------

std::unique_ptr<CountMatrixSource> load_matrix_csv(const std::string& path) {
  LineReader r(path);
  std::vector<std::string_view> f;
  std::string_view line;
  if (!r.next(line)) fail(at_line(path, r.line() + 1), "the file is empty; expected rows of expert counts");
  split(line, f);
  // A header is any first row with a field that is not a number; its leading `step` / `layer`
  // columns say which index columns the rows carry.
  bool header = false;
  for (auto x : f) {
    double d = 0;
    if (!parse_number(x, d)) header = true;
  }
  bool has_step = false, has_layer = false;
  std::size_t width = f.size();
  if (header) {
    std::size_t c = 0;
    if (c < f.size() && lower(f[c]) == "step") {
      has_step = true;
      ++c;
    }
    if (c < f.size() && lower(f[c]) == "layer") {
      has_layer = true;
      ++c;
    }
    if (c >= f.size()) fail(r.where(), "the header names no expert columns after the index columns");
    if (!r.next(line)) fail(at_line(path, r.line() + 1), "the file has a header but no rows of counts");
    split(line, f);
  }
  const std::size_t lead = (has_step ? 1U : 0U) + (has_layer ? 1U : 0U);
  if (!header) width = f.size();
  const std::size_t experts = width - lead;
  const std::string layout =
      fmt::format("{}{}{} expert counts", has_step ? "step, " : "", has_layer ? "layer, " : "", experts);
  std::vector<double> data;
  std::int64_t step = 0, row_in_step = 0, layers = -1;  // layers: rows per step, known after step 0
  do {
    split(line, f);
    const std::string where = r.where();
    if (f.size() != width)
      fail(where, fmt::format("expected {} fields ({}), found {}", width, layout, f.size()));
    std::size_t c = 0;
    if (has_step) {
      std::int64_t s = 0;
      if (!parse_int(f[0], s)) fail(where, fmt::format("column 'step': '{}' is not an integer", f[0]));
      if (data.empty() && s != 0) fail(where, fmt::format("the first step is {}; steps start at 0", s));
      if (s != step) {
        if (s != step + 1) {
          fail(where, fmt::format("step {} follows step {}; steps start at 0, are consecutive and grouped", s,
                                  step));
        }
        if (layers < 0) layers = row_in_step;
        if (row_in_step != layers) {
          fail(where,
               fmt::format("step {} has {} layer rows, step 0 has {}; every step needs the same layers", step,
                           row_in_step, layers));
        }
        step = s;
        row_in_step = 0;
      }
      c = 1;
    }
    if (has_layer) {
      std::int64_t l = 0;
      if (!parse_int(f[c], l)) fail(where, fmt::format("column 'layer': '{}' is not an integer", f[c]));
      if (l != row_in_step) {
        fail(where,
             fmt::format("layer {} is out of order; expected layer {} (rows list layers 0, 1, 2, ... in "
                         "order{})",
                         l, row_in_step, has_step ? " within each step" : ""));
      }
      ++c;
    }
    for (std::size_t e = 0; e < experts; ++e) {
      data.push_back(parse_count(f[c + e], where, fmt::format("column {} (expert {})", c + e + 1, e)));
    }
    ++row_in_step;
  } while (r.next(line));
  if (layers < 0) layers = row_in_step;
  if (row_in_step != layers) {
    fail(at_line(path, r.line()),
         fmt::format("the last step ({}) has {} layer rows, step 0 has {}", step, row_in_step, layers));
  }
  check_dims(path, layers, static_cast<std::int64_t>(experts));
  return std::make_unique<MemoryMatrix>(static_cast<int>(layers), static_cast<int>(experts), std::move(data),
                                        fmt::format("load-matrix-csv({})", path));
}

// ---------------------------------------------------------------------------------------------
// Long CSV (OLMoE / Mixtral sets)
// ---------------------------------------------------------------------------------------------

std::unique_ptr<CountMatrixSource> long_csv(const std::string& path,
                                            const std::map<std::string, std::string>& select) {
  LineReader r(path);
  std::string_view line;
  if (!r.next(line))
    fail(at_line(path, r.line() + 1), "the file is empty; expected a header with layer,expert,count");
  std::vector<std::string_view> f;
  split(line, f);
  std::vector<std::string> columns;
  for (auto x : f) columns.push_back(lower(x));
  const auto find = [&](std::string_view name) {
    const auto it = std::find(columns.begin(), columns.end(), name);
    if (it == columns.end()) {
      fail(r.where(),
           fmt::format("the header '{}' has no column '{}'; a long CSV needs layer, expert and count", line,
                       name));
    }
    return static_cast<std::size_t>(it - columns.begin());
  };
  const std::size_t c_layer = find("layer"), c_expert = find("expert"), c_count = find("count");
  std::vector<std::size_t> selectors;  // every other column
  for (std::size_t c = 0; c < columns.size(); ++c) {
    if (c != c_layer && c != c_expert && c != c_count) selectors.push_back(c);
  }
  std::vector<std::pair<std::size_t, std::string>> wanted;
  for (const auto& [k, v] : select) {
    const auto it = std::find(columns.begin(), columns.end(), lower(k));
    const auto c = static_cast<std::size_t>(it - columns.begin());
    if (it == columns.end() || c == c_layer || c == c_expert || c == c_count) {
      std::vector<std::string> names;
      for (auto s : selectors) names.push_back(columns[s]);
      fail(path, fmt::format("--select {}={}: '{}' is not a selector column; this file's are: {}", k, v, k,
                             fmt::join(names, ", ")));
    }
    wanted.emplace_back(c, v);
  }
  // Distinct values per selector column: over all rows (to list the choices) and over the
  // selected rows (to say which column still needs a choice).
  std::vector<std::set<std::string>> all_values(columns.size()), kept_values(columns.size());
  struct Row {
    std::int64_t layer, expert, line;
    double count;
  };
  std::vector<Row> rows;
  while (r.next(line)) {
    split(line, f);
    const std::string where = r.where();
    if (f.size() != columns.size()) {
      fail(where, fmt::format("expected {} fields ({}), found {}", columns.size(), fmt::join(columns, ","),
                              f.size()));
    }
    for (auto c : selectors) {
      if (all_values[c].size() < 64) all_values[c].emplace(f[c]);
    }
    bool keep = true;
    for (const auto& [c, v] : wanted) keep = keep && f[c] == v;
    if (!keep) continue;
    for (auto c : selectors) {
      if (kept_values[c].size() < 64) kept_values[c].emplace(f[c]);
    }
    Row row{};
    row.line = r.line();
    if (!parse_int(f[c_layer], row.layer) || row.layer < 0) {
      fail(where, fmt::format("column 'layer': '{}' is not an integer >= 0", f[c_layer]));
    }
    if (!parse_int(f[c_expert], row.expert) || row.expert < 0 || row.expert >= (1 << 24)) {
      fail(where, fmt::format("column 'expert': '{}' is not an integer in 0..2^24-1", f[c_expert]));
    }
    row.count = parse_count(f[c_count], where, "column 'count'");
    rows.push_back(row);
  }
  const auto choices = [&](std::size_t c) { return fmt::format("{}", fmt::join(all_values[c], ", ")); };
  if (rows.empty()) {
    for (const auto& [c, v] : wanted) {
      if (all_values[c].count(v) == 0) {
        fail(path, fmt::format("--select {}={}: no row has {} '{}'; its values are: {}", columns[c], v,
                               columns[c], v, choices(c)));
      }
    }
    fail(path,
         fmt::format("no row matches the selection {}",
                     select.empty() ? "(the file has no data rows)" : "(each value exists, not together)"));
  }
  std::set<std::int64_t> layer_ids;
  std::int64_t max_expert = 0;
  for (const auto& row : rows) {
    layer_ids.insert(row.layer);
    max_expert = std::max(max_expert, row.expert);
  }
  const auto layers = static_cast<std::int64_t>(layer_ids.size());
  const std::int64_t experts = max_expert + 1;
  check_dims(path, layers, experts);
  std::map<std::int64_t, int> layer_index;
  for (auto id : layer_ids) layer_index.emplace(id, static_cast<int>(layer_index.size()));
  std::vector<double> data(cells(static_cast<int>(layers), static_cast<int>(experts)), 0.0);
  std::vector<std::int64_t> first_line(data.size(), 0);
  for (const auto& row : rows) {
    const std::size_t i =
        static_cast<std::size_t>(layer_index[row.layer]) * static_cast<std::size_t>(experts) +
        static_cast<std::size_t>(row.expert);
    if (first_line[i] != 0) {
      std::vector<std::string> open;
      for (auto c : selectors) {
        if (kept_values[c].size() > 1) open.push_back(fmt::format("{} (one of: {})", columns[c], choices(c)));
      }
      fail(at_line(path, row.line),
           fmt::format(
               "a second count for layer {}, expert {} (the first is on line {}): the selection must leave "
               "one series, but the selected rows still differ in {}; pin them with --select column=value",
               row.layer, row.expert, first_line[i],
               open.empty() ? std::string("a column") : fmt::format("{}", fmt::join(open, "; "))));
    }
    first_line[i] = row.line;
    data[i] = row.count;
  }
  std::vector<std::string> sel;
  for (const auto& [k, v] : select) sel.push_back(fmt::format("{}={}", k, v));
  return std::make_unique<MemoryMatrix>(
      static_cast<int>(layers), static_cast<int>(experts), std::move(data),
      fmt::format("long-csv({}; {}; recorded layers {} as MoE layers 0..{})", path, fmt::join(sel, ","),
                  fmt::join(layer_ids, ","), layers - 1));
}

// ---------------------------------------------------------------------------------------------
// Spreading a count matrix over source GPUs
// ---------------------------------------------------------------------------------------------

class SpreadTrace final : public TraceSource {
 public:
  SpreadTrace(std::unique_ptr<CountMatrixSource> m, const SpreadSpec& spec)
      : m_(std::move(m)), spec_(spec), shape_{m_->layers(), spec.gpus, m_->experts()} {
    target_ = spec_.iterations > 0 ? spec_.iterations : m_->steps();
    rewind();
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (produced_ >= target_) return false;
    if (!m_->next(matrix_)) {
      // Cycling (more iterations than steps): the popularity repeats, the draws do not.
      m_->rewind();
      step_ = 0;
      if (!m_->next(matrix_))
        throw InputError(fmt::format("{}: the load matrix has no steps", m_->describe()));
    }
    if (out.counts.size() != static_cast<std::size_t>(shape_.layers) * static_cast<std::size_t>(shape_.gpus) *
                                 static_cast<std::size_t>(shape_.experts) ||
        out.shape.layers != shape_.layers || out.shape.gpus != shape_.gpus ||
        out.shape.experts != shape_.experts) {
      out.reset(shape_);
    }
    for (int layer = 0; layer < shape_.layers; ++layer) {
      const double* row = matrix_.data() + cells(layer, shape_.experts);
      if (spec_.tokens_per_gpu) {
        draw_batch(out, layer, row);
      } else {
        split_totals(out, layer, row);
      }
    }
    ++produced_;
    ++step_;
    return true;
  }

  void rewind() override {
    m_->rewind();
    rng_.seed(spec_.seed);
    produced_ = 0;
    step_ = 0;
  }

  [[nodiscard]] std::string describe() const override {
    if (spec_.tokens_per_gpu) {
      return fmt::format("spread({}, gpus={}, tokens_per_gpu={}, top_k={}, seed={})", m_->describe(),
                         spec_.gpus, *spec_.tokens_per_gpu, spec_.top_k, spec_.seed);
    }
    return fmt::format("spread({}, gpus={}, recorded totals, seed={})", m_->describe(), spec_.gpus,
                       spec_.seed);
  }

 private:
  // Every source GPU draws Multinomial(tokens_per_gpu * top_k, p) as a chain of binomials:
  // expert i takes Binomial(remaining, p_i / (p_i + ... + p_{E-1})). A layer without counts is
  // taken as uniform.
  void draw_batch(IterationCounts& out, int layer, const double* row) {
    const auto e_count = static_cast<std::size_t>(shape_.experts);
    double total = 0;
    for (std::size_t e = 0; e < e_count; ++e) total += row[e];
    cond_.resize(e_count);
    double tail = 0;
    for (std::size_t e = e_count; e-- > 0;) {
      const double p = total > 0 ? row[e] / total : 1.0 / static_cast<double>(e_count);
      tail += p;
      cond_[e] = tail > 0 ? std::clamp(p / tail, 0.0, 1.0) : 1.0;
    }
    remaining_.assign(static_cast<std::size_t>(shape_.gpus), *spec_.tokens_per_gpu * spec_.top_k);
    for (int ex = 0; ex + 1 < shape_.experts; ++ex) {
      const double q = cond_[static_cast<std::size_t>(ex)];
      for (int g = 0; g < shape_.gpus; ++g) {
        std::int64_t& rem = remaining_[static_cast<std::size_t>(g)];
        std::int64_t x = 0;
        if (rem > 0 && q > 0) x = q >= 1.0 ? rem : sample_binomial(rng_, rem, q);
        out.at(layer, g, ex) = x;
        rem -= x;
      }
    }
    for (int g = 0; g < shape_.gpus; ++g)
      out.at(layer, g, shape_.experts - 1) = remaining_[static_cast<std::size_t>(g)];
  }

  // Each recorded count c is split over the GPUs uniformly at random: GPU g takes
  // Binomial(remaining, 1 / (G - g)), the last GPU the rest, so the totals are kept exactly.
  void split_totals(IterationCounts& out, int layer, const double* row) {
    for (int ex = 0; ex < shape_.experts; ++ex) {
      const double c = row[ex];
      if (c != std::floor(c)) {
        throw InputError(
            fmt::format("{}: step {}, layer {}, expert {}: count {} is not a whole number; without a batch "
                        "size the recorded "
                        "counts are split over the source GPUs as they are (give tokens_per_gpu and top_k to "
                        "sample at a batch "
                        "size instead)",
                        m_->describe(), step_, layer, ex, c));
      }
      auto rem = static_cast<std::int64_t>(c);
      for (int g = 0; g + 1 < shape_.gpus; ++g) {
        const std::int64_t x =
            rem > 0 ? sample_binomial(rng_, rem, 1.0 / static_cast<double>(shape_.gpus - g)) : 0;
        out.at(layer, g, ex) = x;
        rem -= x;
      }
      out.at(layer, shape_.gpus - 1, ex) = rem;
    }
  }

  std::unique_ptr<CountMatrixSource> m_;
  SpreadSpec spec_;
  TraceShape shape_;
  std::mt19937_64 rng_;
  std::vector<double> matrix_;
  std::vector<double> cond_;
  std::vector<std::int64_t> remaining_;
  std::int64_t target_ = 0;
  std::int64_t produced_ = 0;
  std::int64_t step_ = 0;  // index of the matrix step being spread (for messages)
};

class CollapsedTrace final : public CountMatrixSource {
 public:
  CollapsedTrace(std::unique_ptr<TraceSource> t, std::int64_t iterations)
      : t_(std::move(t)), steps_(iterations) {}
  [[nodiscard]] int layers() const override { return t_->shape().layers; }
  [[nodiscard]] int experts() const override { return t_->shape().experts; }
  [[nodiscard]] std::int64_t steps() const override { return steps_; }
  bool next(std::vector<double>& out) override {
    if (done_ >= steps_ || !t_->next(it_)) return false;
    const TraceShape s = t_->shape();
    out.assign(cells(s.layers, s.experts), 0.0);
    for (int l = 0; l < s.layers; ++l) {
      for (int g = 0; g < s.gpus; ++g) {
        for (int e = 0; e < s.experts; ++e)
          out[cells(l, s.experts) + static_cast<std::size_t>(e)] += static_cast<double>(it_.at(l, g, e));
      }
    }
    ++done_;
    return true;
  }
  void rewind() override {
    t_->rewind();
    done_ = 0;
  }
  [[nodiscard]] std::string describe() const override {
    return fmt::format("summed over GPUs({})", t_->describe());
  }

 private:
  std::unique_ptr<TraceSource> t_;
  std::int64_t steps_;
  std::int64_t done_ = 0;
  IterationCounts it_;
};

// ---------------------------------------------------------------------------------------------
// TensorRT-LLM expert statistics
// ---------------------------------------------------------------------------------------------

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

enum class Dtype : unsigned char { i32, i64, f32 };

struct TensorRef {
  std::uint64_t offset = 0;  // absolute file offset of the data
  Dtype dtype = Dtype::i64;
  bool present = false;
};

struct RankFile {
  std::string path;
  std::int64_t rank = 0;
  FilePtr f;
};

class TrtllmTrace final : public TraceSource {
 public:
  TrtllmTrace(std::string dir, std::vector<RankFile> ranks, std::vector<std::int64_t> iteration_ids,
              std::vector<std::int64_t> layer_ids, int experts, std::vector<TensorRef> index)
      : dir_(std::move(dir)),
        ranks_(std::move(ranks)),
        iteration_ids_(std::move(iteration_ids)),
        layer_ids_(std::move(layer_ids)),
        index_(std::move(index)) {
    shape_ = TraceShape{static_cast<int>(layer_ids_.size()), static_cast<int>(ranks_.size()), experts};
    raw_.resize(static_cast<std::size_t>(experts) * 8);
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (iter_ >= static_cast<std::int64_t>(iteration_ids_.size())) return false;
    out.reset(shape_);
    const auto e_count = static_cast<std::size_t>(shape_.experts);
    for (int l = 0; l < shape_.layers; ++l) {
      for (int g = 0; g < shape_.gpus; ++g) {
        const TensorRef& t = ref(iter_, l, g);
        RankFile& rf = ranks_[static_cast<std::size_t>(g)];
        const std::size_t width = t.dtype == Dtype::i64 ? 8 : 4;
        const std::string key = fmt::format("{}_{}", iteration_ids_[static_cast<std::size_t>(iter_)],
                                            layer_ids_[static_cast<std::size_t>(l)]);
        if (std::fseek(rf.f.get(), static_cast<long>(t.offset), SEEK_SET) != 0 ||
            std::fread(raw_.data(), 1, e_count * width, rf.f.get()) != e_count * width) {
          fail(at_byte(rf.path, t.offset),
               fmt::format("short read: expected {} bytes for tensor '{}'", e_count * width, key));
        }
        for (std::size_t e = 0; e < e_count; ++e) {
          const unsigned char* p = raw_.data() + e * width;
          std::int64_t v = 0;
          bool ok = true;
          if (t.dtype == Dtype::i64) {
            std::memcpy(&v, p, 8);
          } else if (t.dtype == Dtype::i32) {
            std::int32_t x = 0;
            std::memcpy(&x, p, 4);
            v = x;
          } else {
            float x = 0;
            std::memcpy(&x, p, 4);
            ok = std::isfinite(x) && x == std::floor(x) && x < 9.0e15F;
            v = ok ? static_cast<std::int64_t>(x) : 0;
          }
          if (!ok || v < 0) {
            fail(at_byte(rf.path, t.offset + e * width),
                 fmt::format("tensor '{}', expert {}: the count is not a whole number >= 0", key, e));
          }
          out.at(l, g, static_cast<int>(e)) = v;
        }
      }
    }
    ++iter_;
    return true;
  }

  void rewind() override { iter_ = 0; }

  [[nodiscard]] std::string describe() const override {
    return fmt::format("trtllm({}; iterations {}..{}, layers {})", dir_, iteration_ids_.front(),
                       iteration_ids_.back(), fmt::join(layer_ids_, ","));
  }

  [[nodiscard]] std::int64_t iterations() const { return static_cast<std::int64_t>(iteration_ids_.size()); }

 private:
  [[nodiscard]] const TensorRef& ref(std::int64_t it, int layer, int rank) const {
    return index_[(static_cast<std::size_t>(it) * layer_ids_.size() + static_cast<std::size_t>(layer)) *
                      ranks_.size() +
                  static_cast<std::size_t>(rank)];
  }

  std::string dir_;
  std::vector<RankFile> ranks_;
  std::vector<std::int64_t> iteration_ids_;
  std::vector<std::int64_t> layer_ids_;
  std::vector<TensorRef> index_;  // [iteration][layer][rank]
  TraceShape shape_;
  std::vector<unsigned char> raw_;
  std::int64_t iter_ = 0;
};

// The trailing digits of a file stem: "rank12" -> 12.
bool rank_number(const std::string& stem, std::int64_t& out) {
  std::size_t i = stem.size();
  while (i > 0 && std::isdigit(static_cast<unsigned char>(stem[i - 1])) != 0) --i;
  return i < stem.size() && parse_int(std::string_view(stem).substr(i), out);
}

struct SafetensorsEntry {
  std::int64_t iteration = 0, layer = 0;
  TensorRef ref;
};

// Parses one safetensors header: 8-byte little-endian length N, a JSON object of N bytes, then
// the data; every tensor must be "<iteration>_<layer>" with `experts` counts (set from the first
// tensor seen if 0).
std::vector<SafetensorsEntry> read_safetensors_index(const std::string& path, std::FILE* f, int& experts) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) fail(path, fmt::format("cannot read the size: {}", ec.message()));
  unsigned char lenbuf[8] = {};
  if (std::fread(lenbuf, 1, 8, f) != 8) {
    fail(at_byte(path, 0),
         fmt::format("short read: expected the 8-byte header length, the file has {} bytes", size));
  }
  std::uint64_t n = 0;
  std::memcpy(&n, lenbuf, 8);
  if (n < 2 || n > size - 8 || n > (std::uint64_t{256} << 20)) {
    fail(at_byte(path, 0),
         fmt::format("header length {} is out of range; the file has {} bytes after the length "
                     "field (and headers are limited to 256 MiB)",
                     n, size - 8));
  }
  std::string text(static_cast<std::size_t>(n), '\0');
  if (std::fread(text.data(), 1, text.size(), f) != text.size())
    fail(at_byte(path, 8), "short read in the header");
  json h;
  try {
    h = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(at_byte(path, 8 + e.byte), fmt::format("the safetensors header is not valid JSON: {}", e.what()));
  }
  if (!h.is_object()) fail(at_byte(path, 8), "the safetensors header must be a JSON object");
  const std::uint64_t data_start = 8 + n;
  const std::uint64_t data_size = size - data_start;
  std::vector<SafetensorsEntry> out;
  for (const auto& [key, t] : h.items()) {
    if (key == "__metadata__") continue;
    const std::string where = fmt::format("{} (header), tensor '{}'", at_byte(path, 8), key);
    SafetensorsEntry e;
    const auto us = key.find('_');
    if (us == std::string::npos || !parse_int(std::string_view(key).substr(0, us), e.iteration) ||
        !parse_int(std::string_view(key).substr(us + 1), e.layer) || e.iteration < 0 || e.layer < 0) {
      fail(where,
           "expected keys '<iteration>_<layer>' (e.g. '12_3') as TensorRT-LLM's expert statistics write");
    }
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets") ||
        !t["dtype"].is_string() || !t["shape"].is_array() || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2 || !t["data_offsets"][0].is_number_unsigned() ||
        !t["data_offsets"][1].is_number_unsigned()) {
      fail(where, "expected {\"dtype\": ..., \"shape\": [...], \"data_offsets\": [begin, end]}");
    }
    const std::string dtype = t["dtype"].get<std::string>();
    std::uint64_t width = 0;
    if (dtype == "I64") {
      e.ref.dtype = Dtype::i64;
      width = 8;
    } else if (dtype == "I32") {
      e.ref.dtype = Dtype::i32;
      width = 4;
    } else if (dtype == "F32") {
      e.ref.dtype = Dtype::f32;
      width = 4;
    } else {
      fail(where, fmt::format("dtype '{}' is not supported; counts must be I32, I64 or F32", dtype));
    }
    // [experts], or [1, ..., experts]: one count per expert either way.
    std::int64_t len = -1;
    const json& shape = t["shape"];
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (!shape[i].is_number_unsigned()) fail(where, "shape entries must be integers >= 0");
      const auto d = shape[i].get<std::uint64_t>();
      if (i + 1 < shape.size() && d != 1) {
        fail(where, fmt::format("shape {} is not a vector of expert counts ([experts] or [1, experts])",
                                shape.dump()));
      }
      if (i + 1 == shape.size()) len = static_cast<std::int64_t>(std::min<std::uint64_t>(d, 1U << 25));
    }
    if (len < 1 || len > (1 << 24))
      fail(where, fmt::format("shape {} has no expert counts (or too many)", shape.dump()));
    if (experts == 0) experts = static_cast<int>(len);
    if (len != experts) {
      fail(where, fmt::format(
                      "shape {} holds {} counts; the other tensors (or meta_info.json's num_experts) have {}",
                      shape.dump(), len, experts));
    }
    const auto begin = t["data_offsets"][0].get<std::uint64_t>();
    const auto end = t["data_offsets"][1].get<std::uint64_t>();
    if (begin > end || end > data_size || end - begin != static_cast<std::uint64_t>(len) * width) {
      fail(where, fmt::format("data_offsets [{}, {}] do not hold {} {} values within the {} data bytes",
                              begin, end, len, dtype, data_size));
    }
    e.ref.offset = data_start + begin;
    e.ref.present = true;
    out.push_back(e);
  }
  if (out.empty()) fail(at_byte(path, 8), "the file holds no count tensors");
  return out;
}

TrtllmStats trtllm_stats(const std::string& dir) {
  const fs::path meta = fs::path(dir) / "meta_info.json";
  std::error_code ec;
  if (!fs::is_regular_file(meta, ec)) {
    fail(dir,
         "a folder is read as TensorRT-LLM expert statistics and needs a meta_info.json, which it lacks");
  }
  int experts = 0;
  std::optional<std::int64_t> meta_layers;
  {
    std::ifstream in(meta, std::ios::binary);
    json m;
    try {
      m = json::parse(in);
    } catch (const json::parse_error& e) {
      fail(at_byte(meta.string(), e.byte), fmt::format("invalid JSON: {}", e.what()));
    }
    if (!m.is_object()) fail(meta.string(), "expected a JSON object");
    // Lenient: only the keys used are checked; others (num_experts_per_token, ...) are ignored.
    const auto positive = [&](const char* key) -> std::optional<std::int64_t> {
      if (!m.contains(key)) return std::nullopt;
      const json& v = m[key];
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > (1 << 24)) {
        fail(meta.string(), fmt::format("'{}' must be an integer in 1..2^24, found {}", key, v.dump()));
      }
      return v.get<std::int64_t>();
    };
    if (auto e = positive("num_experts")) experts = static_cast<int>(*e);
    meta_layers = positive("num_layers");
  }

  std::vector<RankFile> ranks;
  try {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
      RankFile rf;
      rf.path = entry.path().string();
      if (!rank_number(entry.path().stem().string(), rf.rank)) {
        fail(rf.path, "cannot tell the rank: the file name must end in the rank number (rank3.safetensors)");
      }
      ranks.push_back(std::move(rf));
    }
  } catch (const fs::filesystem_error& e) {
    fail(dir, fmt::format("cannot list the folder: {}", e.what()));
  }
  if (ranks.empty()) fail(dir, "the folder has no <rank>.safetensors files");
  std::sort(ranks.begin(), ranks.end(), [](const RankFile& a, const RankFile& b) { return a.rank < b.rank; });
  for (std::size_t i = 1; i < ranks.size(); ++i) {
    if (ranks[i].rank == ranks[i - 1].rank) {
      fail(dir,
           fmt::format("'{}' and '{}' both claim rank {}", ranks[i - 1].path, ranks[i].path, ranks[i].rank));
    }
  }

  std::vector<std::vector<SafetensorsEntry>> per_rank;
  std::set<std::int64_t> iteration_set, layer_set;
  for (auto& rf : ranks) {
    rf.f.reset(std::fopen(rf.path.c_str(), "rb"));
    if (!rf.f) fail(rf.path, "cannot open (check permissions)");
    per_rank.push_back(read_safetensors_index(rf.path, rf.f.get(), experts));
    for (const auto& e : per_rank.back()) {
      iteration_set.insert(e.iteration);
      layer_set.insert(e.layer);
    }
  }
  std::vector<std::int64_t> iteration_ids(iteration_set.begin(), iteration_set.end());
  std::vector<std::int64_t> layer_ids(layer_set.begin(), layer_set.end());
  if (meta_layers && *meta_layers != static_cast<std::int64_t>(layer_ids.size())) {
    fail(meta.string(), fmt::format("num_layers is {} but the rank files record {} layers ({})", *meta_layers,
                                    layer_ids.size(), fmt::join(layer_ids, ",")));
  }
  std::unordered_map<std::int64_t, std::size_t> it_pos, layer_pos;
  for (std::size_t i = 0; i < iteration_ids.size(); ++i) it_pos[iteration_ids[i]] = i;
  for (std::size_t i = 0; i < layer_ids.size(); ++i) layer_pos[layer_ids[i]] = i;
  const std::size_t R = ranks.size(), L = layer_ids.size();
  std::vector<TensorRef> index(iteration_ids.size() * L * R);
  for (std::size_t r = 0; r < R; ++r) {
    for (const auto& e : per_rank[r]) index[(it_pos[e.iteration] * L + layer_pos[e.layer]) * R + r] = e.ref;
  }
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (!index[i].present) {
      const std::size_t r = i % R, l = i / R % L, it = i / R / L;
      fail(ranks[r].path,
           fmt::format("no tensor '{}_{}': every rank must record every iteration ({}..{}) and layer "
                       "({}) that any rank records",
                       iteration_ids[it], layer_ids[l], iteration_ids.front(), iteration_ids.back(),
                       fmt::join(layer_ids, ",")));
    }
  }
  TrtllmStats out;
  out.iterations = static_cast<std::int64_t>(iteration_ids.size());
  out.source = std::make_unique<TrtllmTrace>(dir, std::move(ranks), std::move(iteration_ids),
                                             std::move(layer_ids), experts, std::move(index));
  return out;
}

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

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

std::unique_ptr<TraceSource> spread_over_gpus(std::unique_ptr<CountMatrixSource> matrix,
                                              const SpreadSpec& spec) {
  const std::string who = matrix->describe();
  if (spec.gpus < 1 || spec.gpus > (1 << 24)) {
    throw InputError(
        fmt::format("{}: the counts have no source-GPU detail; the number of source GPUs to spread "
                    "them over must be 1..2^24, found {}",
                    who, spec.gpus));
  }
  if (spec.tokens_per_gpu) {
    if (*spec.tokens_per_gpu < 0 || *spec.tokens_per_gpu > (std::int64_t{1} << 40)) {
      throw InputError(
          fmt::format("{}: tokens_per_gpu {} is out of range; allowed 0..2^40", who, *spec.tokens_per_gpu));
    }
    if (spec.top_k < 1 || spec.top_k > matrix->experts()) {
      throw InputError(fmt::format("{}: top_k {} is out of range; allowed 1..{} (the number of experts)", who,
                                   spec.top_k, matrix->experts()));
    }
  }
  if (spec.iterations < 0)
    throw InputError(fmt::format("{}: iterations {} is negative", who, spec.iterations));
  if (matrix->steps() < 1) throw InputError(fmt::format("{}: the load matrix has no steps", who));
  return std::make_unique<SpreadTrace>(std::move(matrix), spec);
}

std::unique_ptr<CountMatrixSource> collapse_gpus(std::unique_ptr<TraceSource> trace,
                                                 std::int64_t iterations) {
  return std::make_unique<CollapsedTrace>(std::move(trace), iterations);
}

std::unique_ptr<CountMatrixSource> open_load_matrix_json(const std::string& path) {
  return load_matrix_json(path);
}

std::unique_ptr<CountMatrixSource> open_load_matrix_csv(const std::string& path) {
  return load_matrix_csv(path);
}

std::unique_ptr<CountMatrixSource> open_long_csv(const std::string& path,
                                                 const std::map<std::string, std::string>& select) {
  return long_csv(path, select);
}

TrtllmStats open_trtllm_stats(const std::string& dir) { return trtllm_stats(dir); }

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
      TrtllmStats t = trtllm_stats(path);
      per_source(std::move(t.source), t.iterations, path);
      break;
    }
    case TraceFormat::load_matrix_json:
      finish_spread(load_matrix_json(path));
      break;
    case TraceFormat::load_matrix_csv:
      finish_spread(load_matrix_csv(path));
      break;
    case TraceFormat::long_csv:
      finish_spread(long_csv(path, o.select));
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

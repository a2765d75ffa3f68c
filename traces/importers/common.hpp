#pragma once
// What the importers of traces/importers/ share: error positions, a line reader that skips
// comments, number parsing, and the in-memory count matrix the small formats are parsed into.
// Internal to the importers; their interface is traces/importers.hpp.
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/error.hpp"
#include "traces/csv.hpp"
#include "traces/importers.hpp"

namespace moesim::importers {

namespace fs = std::filesystem;

// Above this a count can no longer be held exactly in a double (the matrices' element type).
inline constexpr double kMaxExactCount = 9007199254740992.0;  // 2^53

[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw InputError(fmt::format("{}: {}", where, what));
}

inline std::string at_line(const std::string& path, std::int64_t line) { return fmt::format("{}:{}", path, line); }

inline std::string at_byte(const std::string& path, std::uint64_t offset) {
  return fmt::format("{}: byte offset {}", path, offset);
}

// Input quoted in a message: at most 60 characters, so that a 50 MB line without line breaks
// does not become a 50 MB message.
inline std::string quoted(std::string_view s) {
  if (s.size() <= 60) return std::string(s);
  return fmt::format("{}... ({} characters)", s.substr(0, 57), s.size());
}

// In-memory count matrices (JSON, CSV, long CSV) hold at most this many layer x expert cells
// (256 MiB of doubles; DeepSeek-V3's 58 x 256 needs 14,848).
inline constexpr std::int64_t kMaxMatrixCells = std::int64_t{1} << 25;

inline std::size_t cells(int layers, int experts) {
  return static_cast<std::size_t>(layers) * static_cast<std::size_t>(experts);
}

// ---------------------------------------------------------------------------------------------
// Small CSV helpers (no quoting: none of the supported CSV forms needs it)
// ---------------------------------------------------------------------------------------------

using csv::trim;

inline void split(std::string_view line, std::vector<std::string_view>& out) { csv::split(line, out); }

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

inline bool parse_int(std::string_view f, std::int64_t& v) {
  const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  return !f.empty() && ec == std::errc() && ptr == f.data() + f.size();
}

inline bool parse_number(std::string_view f, double& v) {
  const auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
  return !f.empty() && ec == std::errc() && ptr == f.data() + f.size();
}

// A count field: a finite number >= 0 (fractions allowed: normalised loads are common).
inline double parse_count(std::string_view f, const std::string& where, const std::string& column) {
  double v = 0;
  if (!parse_number(f, v)) fail(where, fmt::format("{}: '{}' is not a number", column, quoted(f)));
  if (!std::isfinite(v) || v < 0 || v > kMaxExactCount) {
    fail(where, fmt::format("{}: count {} is out of range; counts must be finite and >= 0 (at most 2^53)",
                            column, quoted(f)));
  }
  return v;
}

inline std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// The header of a long CSV, its column names lower-cased; `line` is left on it. An empty file
// is an error saying which columns were `expected`.
inline std::vector<std::string> read_header(LineReader& r, const std::string& path, std::string_view expected,
                                            std::string_view& line) {
  if (!r.next(line)) fail(at_line(path, r.line() + 1), fmt::format("the file is empty; expected a header with {}", expected));
  std::vector<std::string_view> f;
  split(line, f);
  std::vector<std::string> columns;
  for (auto x : f) columns.push_back(lower(x));
  return columns;
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

inline void check_dims(const std::string& where, std::int64_t layers, std::int64_t experts) {
  if (layers < 1 || experts < 1 || layers > (1 << 24) || experts > (1 << 24)) {
    fail(where, fmt::format("a load matrix needs 1..2^24 layers and experts; found {} layers, {} experts",
                            layers, experts));
  }
  if (layers * experts > kMaxMatrixCells) {
    fail(where, fmt::format("{} layers x {} experts = {} cells; a load matrix holds at most 2^25 ({})", layers,
                            experts, layers * experts, kMaxMatrixCells));
  }
}

}  // namespace moesim::importers

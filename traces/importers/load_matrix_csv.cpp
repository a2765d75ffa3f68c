// A load matrix in CSV: one row of expert counts per layer, with optional step and layer columns.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string_view>

#include "traces/importers/common.hpp"

namespace moesim {

using namespace importers;

namespace {

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
      if (!parse_int(f[0], s)) fail(where, fmt::format("column 'step': '{}' is not an integer", quoted(f[0])));
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
      if (!parse_int(f[c], l)) fail(where, fmt::format("column 'layer': '{}' is not an integer", quoted(f[c])));
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

}  // namespace

std::unique_ptr<CountMatrixSource> open_load_matrix_csv(const std::string& path) {
  return load_matrix_csv(path);
}

}  // namespace moesim

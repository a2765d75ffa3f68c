// A long CSV (layer,expert,count plus selector columns): the OLMoE and Mixtral routing sets.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>
#include <string_view>

#include "traces/importers/common.hpp"

namespace moesim {

using namespace importers;

namespace {

std::unique_ptr<CountMatrixSource> long_csv(const std::string& path,
                                            const std::map<std::string, std::string>& select) {
  LineReader r(path);
  std::string_view line;
  const std::vector<std::string> columns = read_header(r, path, "layer,expert,count", line);
  std::vector<std::string_view> f;
  const auto find = [&](std::string_view name) {
    const auto it = std::find(columns.begin(), columns.end(), name);
    if (it == columns.end()) {
      fail(r.where(),
           fmt::format("the header '{}' has no column '{}'; a long CSV needs layer, expert and count",
                       quoted(line), name));
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
      fail(where, fmt::format("column 'layer': '{}' is not an integer >= 0", quoted(f[c_layer])));
    }
    if (!parse_int(f[c_expert], row.expert) || row.expert < 0 || row.expert >= (1 << 24)) {
      fail(where, fmt::format("column 'expert': '{}' is not an integer in 0..2^24-1", quoted(f[c_expert])));
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

}  // namespace

std::unique_ptr<CountMatrixSource> open_long_csv(const std::string& path,
                                                 const std::map<std::string, std::string>& select) {
  return long_csv(path, select);
}

}  // namespace moesim

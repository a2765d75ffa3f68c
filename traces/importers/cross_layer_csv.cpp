// Cross-layer pair counts in long CSV form (the olmoe-routing set's crosslayer_pairs.csv).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>
#include <string_view>
#include <vector>

#include "traces/cross_layer.hpp"
#include "traces/importers/common.hpp"

namespace moesim {

using namespace importers;

CrossLayerPairs load_cross_layer_csv(const std::string& path, const CrossLayerCsvOptions& opt) {
  LineReader r(path);
  std::string_view line;
  const std::vector<std::string> columns = read_header(r, path, "layer,next_layer,expert,next_expert,count", line);
  std::vector<std::string_view> f;
  const auto find = [&](std::string_view name) {
    const auto it = std::find(columns.begin(), columns.end(), name);
    if (it == columns.end())
      fail(r.where(), fmt::format("the header '{}' has no column '{}'; cross-layer pairs need layer, next_layer, "
                                  "expert, next_expert and count",
                                  quoted(line), name));
    return static_cast<std::size_t>(it - columns.begin());
  };
  const std::size_t c_layer = find("layer"), c_next_layer = find("next_layer"), c_expert = find("expert"),
                    c_next = find("next_expert"), c_count = find("count");
  const std::set<std::size_t> fixed{c_layer, c_next_layer, c_expert, c_next, c_count};
  std::vector<std::size_t> selectors;
  for (std::size_t c = 0; c < columns.size(); ++c)
    if (fixed.count(c) == 0) selectors.push_back(c);
  std::vector<std::pair<std::size_t, std::string>> wanted;
  for (const auto& [k, v] : opt.select) {
    const auto it = std::find(columns.begin(), columns.end(), lower(k));
    const auto c = static_cast<std::size_t>(it - columns.begin());
    if (it == columns.end() || fixed.count(c) != 0) {
      std::vector<std::string> names;
      for (auto s : selectors) names.push_back(columns[s]);
      fail(path, fmt::format("select {}={}: '{}' is not a selector column; this file's are: {}", k, v, k,
                             names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "))));
    }
    wanted.emplace_back(c, v);
  }
  struct Row {
    std::int64_t layer, next_layer, expert, next, line;
    double count;
  };
  std::vector<Row> rows;
  std::vector<std::string> first_value(columns.size());
  std::vector<std::int64_t> first_line(columns.size(), 0);
  while (r.next(line)) {
    split(line, f);
    const std::string where = r.where();
    if (f.size() != columns.size())
      fail(where, fmt::format("expected {} fields ({}), found {}", columns.size(), fmt::join(columns, ","), f.size()));
    bool keep = true;
    for (const auto& [c, v] : wanted) keep = keep && f[c] == v;
    if (!keep) continue;
    // One profile: every selector column left open must keep one value over the selected rows.
    for (auto c : selectors) {
      if (first_line[c] == 0) {
        first_line[c] = r.line();
        first_value[c] = std::string(f[c]);
      } else if (f[c] != first_value[c]) {
        fail(where, fmt::format("column '{}' is '{}' here but '{}' on line {}: pin it with select: {{{}: ...}} so that "
                                "one profile remains",
                                columns[c], quoted(f[c]), first_value[c], first_line[c], columns[c]));
      }
    }
    Row row{};
    row.line = r.line();
    auto index = [&](std::size_t c, std::int64_t& v, std::int64_t limit) {
      if (!parse_int(f[c], v) || v < 0 || v >= limit)
        fail(where, fmt::format("column '{}': '{}' is not an integer in 0..{}", columns[c], quoted(f[c]), limit - 1));
    };
    index(c_layer, row.layer, std::int64_t{1} << 24);
    index(c_next_layer, row.next_layer, std::int64_t{1} << 24);
    index(c_expert, row.expert, opt.experts);
    index(c_next, row.next, opt.experts);
    if (row.next_layer <= row.layer)
      fail(where, fmt::format("next_layer {} is not after layer {}", row.next_layer, row.layer));
    row.count = parse_count(f[c_count], where, "column 'count'");
    rows.push_back(row);
  }
  if (rows.empty())
    fail(path, opt.select.empty() ? std::string("no data rows") : "no row matches the selection");
  std::set<std::int64_t> ids;
  for (const Row& row : rows) {
    ids.insert(row.layer);
    ids.insert(row.next_layer);
  }
  std::map<std::int64_t, int> moe;  // recorded id -> MoE layer
  for (auto id : ids) moe.emplace(id, opt.map_recorded_layers ? static_cast<int>(moe.size()) : static_cast<int>(id));
  const int needed = moe.rbegin()->second + 1;
  if (needed > opt.layers)
    fail(path, fmt::format("the pairs reach MoE layer {}{} but the scenario has {} MoE layers", needed - 1,
                           opt.map_recorded_layers ? fmt::format(" (recorded layers {} mapped onto 0..{})",
                                                                 fmt::join(ids, ","), needed - 1)
                                                   : std::string(),
                           opt.layers));
  CrossLayerPairs out;
  out.experts = opt.experts;
  out.weight.resize(static_cast<std::size_t>(std::max(0, opt.layers - 1)));
  const auto E = static_cast<std::size_t>(opt.experts);
  for (const Row& row : rows) {
    const int a = moe[row.layer], b = moe[row.next_layer];
    if (b != a + 1)
      fail(at_line(path, row.line),
           opt.map_recorded_layers
               ? fmt::format("the pair ({}, {}) skips recorded layers in between (they become MoE layers {} and {}); "
                             "only pairs of consecutive recorded layers can be used",
                             row.layer, row.next_layer, a, b)
               : fmt::format("next_layer {} is not layer + 1 (with trace kind import the recorded layers are mapped "
                             "onto consecutive MoE layers instead)",
                             row.next_layer));
    auto& w = out.weight[static_cast<std::size_t>(a)];
    if (w.empty()) w.assign(E * E, 0.0);
    w[static_cast<std::size_t>(row.expert) * E + static_cast<std::size_t>(row.next)] += row.count;
  }
  std::vector<std::string> sel;
  for (const auto& [k, v] : opt.select) sel.push_back(fmt::format("{}={}", k, v));
  out.source = fmt::format("cross-layer-csv({}{}{}; recorded layers {})", path, sel.empty() ? "" : "; ",
                           fmt::join(sel, ","), fmt::join(ids, ","));
  return out;
}

}  // namespace moesim

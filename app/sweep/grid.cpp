// The grid: policies and policy_grid expanded into entries, grid axes into points, points and
// seeds into runs with stable ids.
#include <fmt/format.h>

#include <algorithm>

#include "app/sweep/internal.hpp"
#include "core/config.hpp"
#include "core/error.hpp"

namespace moesim::sweep_internal {

// Parameters set explicitly by an entry, in the order written.
void note_param_columns(const std::vector<PolicyEntry>& entries, std::vector<std::string>& columns) {
  for (const auto& e : entries) {
    if (!e.params.IsMap()) continue;
    for (const auto& kv : e.params) {
      const std::string k = kv.first.Scalar();
      if (k == "name" || k == "label") continue;
      if (std::find(columns.begin(), columns.end(), k) == columns.end()) columns.push_back(k);
    }
  }
}

// The study's `policies` and `policy_grid`, built from `root` (a document of its own per caller).
std::vector<PolicyEntry> build_policies(const YAML::Node& root, const std::string& origin) {
  std::vector<PolicyEntry> out;
  Cfg top(root, origin, "");
  const YAML::Node list = root["policies"];
  if (list && !list.IsNull()) {
    if (!list.IsSequence() || list.size() == 0) {
      top.fail("policies", fmt::format("expected a non-empty list of policy specs (static:capacity_factor=2) or "
                                       "mappings ({{name: ..., <parameters>}}), found {}",
                                       yaml_kind(list)));
    }
    for (std::size_t i = 0; i < list.size(); ++i) {
      const YAML::Node item = list[i];
      const std::string where = fmt::format("{}: key 'policies[{}]'", mark_text(origin, item), i);
      if (item.IsScalar()) {
        std::vector<PolicyEntry> parsed;
        try {
          parsed = parse_policy_specs(item.Scalar());
        } catch (const InputError& e) {
          throw InputError(fmt::format("{}: {}", where, e.what()));
        }
        for (auto& e : parsed) {
          // Scalars without a position, so that errors about them name the study line below.
          YAML::Node params(YAML::NodeType::Map);
          for (const auto& kv : e.params)
            params[kv.first.Scalar()] = kv.second.IsScalar() ? YAML::Node(kv.second.Scalar()) : kv.second;
          e.params = params;
          e.origin = fmt::format("{} '{}'", where, e.label);
          out.push_back(std::move(e));
        }
      } else if (item.IsMap()) {
        Cfg c(item, origin, fmt::format("policies[{}]", i));
        PolicyEntry e;
        e.name = c.need_string("name");
        e.label = c.get_string("label", e.name);
        e.params = item;
        e.origin = origin;
        out.push_back(std::move(e));
      } else {
        throw InputError(fmt::format("{}: expected a policy spec or a mapping with name:, found {}", where,
                                     yaml_kind(item)));
      }
    }
  }
  const YAML::Node grid = root["policy_grid"];
  if (grid && !grid.IsNull()) {
    if (!grid.IsMap() || grid.size() == 0) {
      top.fail("policy_grid", fmt::format("expected a mapping of policy names to parameter lists, e.g. "
                                          "{{flexmoe: {{interval: [10, 50]}}}}, found {}",
                                          yaml_kind(grid)));
    }
    for (const auto& pol : grid) {
      const std::string name = pol.first.Scalar();
      const std::string path = "policy_grid." + name;
      const YAML::Node params = pol.second;
      if (!params.IsMap()) {
        throw InputError(fmt::format("{}: key '{}': expected a mapping of parameters to values or lists of "
                                     "values, found {}",
                                     mark_text(origin, pol.first), path, yaml_kind(params)));
      }
      // Each parameter: its values (a scalar is one fixed value).
      std::vector<std::pair<std::string, std::vector<YAML::Node>>> axes;
      for (const auto& kv : params) {
        const std::string key = kv.first.Scalar();
        const std::string where = fmt::format("{}: key '{}.{}'", mark_text(origin, kv.first), path, key);
        if (key == "name" || key == "label") throw InputError(fmt::format("{}: cannot be set in policy_grid", where));
        std::vector<YAML::Node> values;
        if (kv.second.IsScalar()) {
          values.push_back(kv.second);
        } else if (kv.second.IsSequence() && kv.second.size() > 0) {
          for (const auto& v : kv.second) {
            if (!v.IsScalar()) {
              throw InputError(fmt::format("{}: key '{}.{}': each value must be a scalar, found {}",
                                           mark_text(origin, v), path, key, yaml_kind(v)));
            }
            values.push_back(v);
          }
        } else {
          throw InputError(fmt::format("{}: expected a value or a non-empty list of values, found {}", where,
                                       yaml_kind(kv.second)));
        }
        axes.emplace_back(key, std::move(values));
      }
      // Cartesian product, the last parameter varying fastest.
      std::vector<std::size_t> pick(axes.size(), 0);
      while (true) {
        PolicyEntry e;
        e.name = name;
        e.params = YAML::Node(YAML::NodeType::Map);
        e.params["name"] = pol.first;
        e.label = name;
        for (std::size_t a = 0; a < axes.size(); ++a) {
          const YAML::Node& v = axes[a].second[pick[a]];
          e.params[axes[a].first] = v;
          e.label += fmt::format(":{}={}", axes[a].first, v.Scalar());
        }
        e.origin = origin;
        out.push_back(std::move(e));
        std::size_t a = axes.size();
        while (a > 0 && ++pick[a - 1] == axes[a - 1].second.size()) pick[--a] = 0;
        if (a == 0) break;
      }
    }
  }
  return out;
}

void expand_points(Study& st, const GridAxes& axes, const std::string& origin, std::vector<Located>& located) {
  std::vector<std::size_t> pick(axes.size(), 0);
  while (true) {
    StudyPoint p;
    p.index = st.points.size();
    p.overrides = st.fixed;
    for (std::size_t a = 0; a < axes.size(); ++a) {
      const YAML::Node& v = axes[a].second[pick[a]];
      p.values.emplace_back(axes[a].first, display_value(v));
      p.overrides.push_back(axes[a].first + "=" + assignment_value(v));
      located.push_back({p.overrides.back(), fmt::format("{}: grid '{}' value {}", mark_text(origin, v),
                                                         axes[a].first, yaml_kind(v))});
    }
    st.points.push_back(std::move(p));
    std::size_t a = axes.size();
    while (a > 0 && ++pick[a - 1] == axes[a - 1].second.size()) pick[--a] = 0;
    if (a == 0) break;
  }
}

void make_runs(Study& st) {
  for (const auto& p : st.points) {
    // The id ignores the grid's key order: sorted by key.
    auto values = p.values;
    std::vector<std::string> assigns(p.overrides.begin() + static_cast<std::ptrdiff_t>(st.fixed.size()),
                                     p.overrides.end());
    std::sort(values.begin(), values.end());
    std::sort(assigns.begin(), assigns.end());
    std::string readable;
    for (const auto& [k, v] : values) {
      const auto dot = k.rfind('.');
      readable += fmt::format("{}-{}_", dot == std::string::npos ? k : k.substr(dot + 1), v);
    }
    std::string hashed;
    for (const auto& a : assigns) hashed += a + "\n";
    for (const auto seed : st.seeds) {
      StudyRun r;
      r.index = st.runs.size();
      r.point = p.index;
      r.seed = seed;
      std::string name = file_safe(fmt::format("{}seed-{}", readable, seed));
      // Long grids: the hash keeps ids unique, the readable part only has to help a human.
      if (name.size() > 64) name.resize(64);
      r.id = name + "-" + short_hash(fmt::format("{}seed={}", hashed, seed));
      st.runs.push_back(std::move(r));
    }
  }
}

}  // namespace moesim::sweep_internal

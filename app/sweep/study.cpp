// The study file: strict keys, set, grid axes, seeds and policies; every point loaded once so that
// a bad value fails before anything runs; the fingerprint a run file must match.
#include "app/sweep.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "app/runner.hpp"
#include "app/sweep/internal.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "policies/registry.hpp"

namespace moesim {

namespace {

namespace fs = std::filesystem;

}  // namespace

using namespace sweep_internal;

Scenario Study::scenario(const StudyRun& r) const {
  Scenario s = load_scenario(base, points.at(r.point).overrides, r.seed);
  if (own_policies) s.policies = build_policies(load_yaml_string(text, file), file);
  return s;
}

Study load_study_text(const std::string& text, const std::string& origin) {
  const YAML::Node root = load_yaml_string(text, origin);
  if (!root || root.IsNull()) throw InputError(fmt::format("{}: the study is empty", origin));
  if (!root.IsMap()) throw InputError(fmt::format("{}: a study must be a YAML mapping", origin));
  Study st;
  st.file = origin;
  st.text = text;
  Cfg c(root, origin, "");
  st.name = file_safe(c.get_string("name", fs::path(origin).stem().string()));
  st.description = c.get_string("description", "");
  {
    fs::path b(c.need_string("base"));
    if (b.is_relative()) b = fs::path(origin).parent_path() / b;
    st.base = b.lexically_normal().string();
    // The error_code form: a name the OS refuses (too long, a bad component) is a named error too.
    std::error_code ec;
    if (!fs::is_regular_file(st.base, ec))
      c.fail("base", fmt::format("scenario file '{}' does not exist{}", st.base, ec ? " (" + ec.message() + ")" : ""));
  }

  std::vector<Located> located;  // every assignment with its place in the study, for errors
  std::set<std::string> fixed_keys;
  c.touch("set");
  if (const YAML::Node set = root["set"]; set && !set.IsNull()) {
    if (!set.IsMap()) {
      c.fail("set", fmt::format("expected a mapping of scenario keys to values, found {}", yaml_kind(set)));
    }
    for (const auto& kv : set) {
      const std::string key = kv.first.Scalar();
      const std::string where = fmt::format("{}: key 'set.{}'", mark_text(origin, kv.first), key);
      if (kv.second.IsNull()) throw InputError(fmt::format("{}: expected a value, found null", where));
      st.fixed.push_back(key + "=" + assignment_value(kv.second));
      located.push_back({st.fixed.back(), where});
      fixed_keys.insert(key);
    }
  }

  // Grid axes in the order written: (key, value nodes).
  std::vector<std::pair<std::string, std::vector<YAML::Node>>> axes;
  c.touch("grid");
  if (const YAML::Node grid = root["grid"]; grid && !grid.IsNull()) {
    if (!grid.IsMap()) {
      c.fail("grid", fmt::format("expected a mapping of scenario keys to lists of values, e.g. trace.skew: "
                                 "[0.5, 1.0], found {}",
                                 yaml_kind(grid)));
    }
    for (const auto& kv : grid) {
      const std::string key = kv.first.Scalar();
      const std::string where = fmt::format("{}: key 'grid.{}'", mark_text(origin, kv.first), key);
      if (key == "seed") throw InputError(fmt::format("{}: list the seeds under seeds: instead", where));
      if (key == "policies" || key.rfind("policies.", 0) == 0) {
        throw InputError(
            fmt::format("{}: policies are not grid keys; list them under policies: or policy_grid:", where));
      }
      if (fixed_keys.count(key)) throw InputError(fmt::format("{}: also fixed under set:; keep one", where));
      for (const auto& a : axes)
        if (a.first == key) throw InputError(fmt::format("{}: listed twice", where));
      if (!kv.second.IsSequence() || kv.second.size() == 0) {
        throw InputError(fmt::format("{}: expected a non-empty list of values, found {}", where, yaml_kind(kv.second)));
      }
      std::vector<YAML::Node> values;
      std::map<std::string, YAML::Node> written;  // a repeated value would give one run file but two rows
      for (const auto& v : kv.second) {
        if (v.IsNull()) {
          throw InputError(fmt::format("{}: key 'grid.{}': a grid value cannot be null", mark_text(origin, v), key));
        }
        const auto [first, fresh] = written.emplace(assignment_value(v), v);
        if (!fresh) {
          throw InputError(fmt::format("{}: key 'grid.{}': value {} is listed twice (first at line {}); list each once",
                                       mark_text(origin, v), key, yaml_kind(v), first->second.Mark().line + 1));
        }
        values.push_back(v);
      }
      axes.emplace_back(key, std::move(values));
      st.grid_keys.push_back(key);
    }
  }

  {
    const auto seeds = c.get_int_list("seeds", {}, 0, 1LL << 62);
    std::set<std::int64_t> seen;
    for (auto s : seeds) {
      if (!seen.insert(s).second) c.fail("seeds", fmt::format("seed {} is listed twice", s));
      st.seeds.push_back(static_cast<std::uint64_t>(s));
    }
  }

  c.touch("policies");
  c.touch("policy_grid");
  std::vector<PolicyEntry> policies = build_policies(root, origin);
  st.own_policies = !policies.empty();
  c.finish();

  // Every point is loaded up front (below): the grid's size is checked before any is built, with
  // no overflow (each factor is at most the ceiling).
  {
    std::uint64_t points = 1;
    for (const auto& a : axes) {
      points *= a.second.size();
      if (points > kMaxStudyPoints) break;
    }
    const std::uint64_t runs = points * std::max<std::uint64_t>(st.seeds.size(), 1);
    if (points > kMaxStudyPoints || runs > kMaxStudyRuns) {
      std::string sizes;
      for (const auto& a : axes) sizes += fmt::format("{}{} {}", sizes.empty() ? "" : " x ", a.second.size(), a.first);
      const std::string count = points > kMaxStudyPoints ? fmt::format("more than {}", kMaxStudyPoints)
                                                         : fmt::format("{}", points);
      c.fail("grid", fmt::format("the grid has {} points ({}) and {} seeds; a study may have at most {} points and "
                                 "{} runs (split it into several studies)",
                                 count, sizes, st.seeds.size(), kMaxStudyPoints, kMaxStudyRuns));
    }
  }
  // Points: the cartesian product of the axes, the last key varying fastest.
  expand_points(st, axes, origin, located);

  // Every point must load: a bad grid value is found now, named by its place in the study.
  std::vector<PolicyEntry> base_policies;
  for (const auto& p : st.points) {
    Scenario s;
    try {
      s = load_scenario(st.base, p.overrides, st.seeds.empty() ? std::nullopt : std::optional(st.seeds.front()));
    } catch (const InputError& e) {
      const std::string msg = e.what();
      for (const auto& l : located) {
        if (msg.find("--set '" + l.assignment + "'") != std::string::npos &&
            std::find(p.overrides.begin(), p.overrides.end(), l.assignment) != p.overrides.end()) {
          throw InputError(fmt::format("{}: {}", l.where, msg));
        }
      }
      std::string values;
      for (const auto& [k, v] : p.values) values += fmt::format("{}{}={}", values.empty() ? "" : ", ", k, v);
      throw InputError(fmt::format("{}: grid point {} ({}): {}", origin, p.index, values, msg));
    }
    if (p.index == 0) {
      if (st.seeds.empty()) st.seeds.push_back(s.seed);  // no seeds: the base scenario's
      base_policies = s.policies;
    }
    // Whatever a run would refuse before it starts is checked for every point now, so that a bad
    // study writes nothing.
    if (st.own_policies) s.policies = policies;
    try {
      check_scenario(s);
    } catch (const InputError& e) {
      std::string values;
      for (const auto& [k, v] : p.values) values += fmt::format("{}{}={}", values.empty() ? "" : ", ", k, v);
      throw InputError(fmt::format("{}: grid point {} ({}): {}", origin, p.index, values, e.what()));
    }
  }
  const std::vector<PolicyEntry>& used = st.own_policies ? policies : base_policies;

  {
    std::set<std::string> labels;
    for (std::size_t i = 0; i < used.size(); ++i) {
      const PolicyEntry& e = used[i];
      Cfg where(e.params, e.origin, fmt::format("policies[{}]", i));
      (void)find_policy(e.name, where, "name");
      if (!labels.insert(e.label).second) {
        throw InputError(fmt::format("{}: policy label '{}' is used twice; give each entry a distinct label",
                                     where.where("name"), e.label));
      }
      st.policy_labels.push_back(e.label);
    }
  }
  note_param_columns(used, st.param_columns);

  std::string fp = fmt::format("{}/{}\nbase:\n{}\nset:\n", kRunFormat, kRunFormatVersion, read_text(st.base));
  for (const auto& f : st.fixed) fp += f + "\n";
  fp += "policies:\n";
  if (st.own_policies) {
    for (const auto& e : policies) fp += e.label + "\n" + assignment_value(e.params) + "\n";
  }
  st.fingerprint = short_hash(fp);

  make_runs(st);
  return st;
}

Study load_study(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open file", file));
  std::stringstream ss;
  ss << in.rdbuf();
  return load_study_text(ss.str(), file);
}

}  // namespace moesim

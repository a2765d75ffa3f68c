// Collection: study.csv and study.json, one row per (point, seed, policy), built from the run files
// alone, so the table does not depend on --jobs, MPI ranks or interruptions.
#include "app/sweep.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "app/sweep/internal.hpp"
#include "core/error.hpp"

namespace moesim {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

}  // namespace

using namespace sweep_internal;

namespace {

json yaml_to_json(const YAML::Node& n) {
  if (n.IsScalar()) {
    long long i = 0;
    double d = 0.0;
    bool b = false;
    if (YAML::convert<long long>::decode(n, i)) return json(i);
    if (YAML::convert<double>::decode(n, d)) return json(d);
    if (YAML::convert<bool>::decode(n, b)) return json(b);
    return json(n.Scalar());
  }
  if (n.IsSequence()) {
    json a = json::array();
    for (const auto& item : n) a.push_back(yaml_to_json(item));
    return a;
  }
  if (n.IsMap()) {
    json o = json::object();
    for (const auto& kv : n) o[kv.first.Scalar()] = yaml_to_json(kv.second);
    return o;
  }
  return json(nullptr);
}

}  // namespace

StudyTable collect_study(const Study& study, const std::string& out) {
  StudyTable t;
  // The metric columns are compare.csv's (compare_row), so a study row reads like a compare row.
  std::vector<std::string> metrics;
  for (const std::string& k : compare_columns(false))
    if (k != "label" && k != "policy") metrics.push_back(k);
  std::vector<std::string> header{"point"};
  for (const auto& k : study.grid_keys) header.push_back(k);
  header.push_back("seed");
  header.push_back("label");
  header.push_back("policy");
  const std::size_t param_at = header.size();
  for (const auto& p : study.param_columns) header.push_back(p);
  for (const auto& m : metrics) header.push_back(m);
  header.emplace_back("run_id");
  // A parameter named like another column gets a prefix, so every column name is unique.
  for (std::size_t i = param_at; i < param_at + study.param_columns.size(); ++i)
    if (std::count(header.begin(), header.end(), header[i]) > 1) header[i] = "param." + header[i];
  auto add_line = [&t](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i > 0) t.csv += ',';
      t.csv += cells[i];
    }
    t.csv += '\n';
  };
  std::vector<std::string> names;
  for (const auto& h : header) names.push_back(csv_cell(h));
  add_line(names);

  json rows = json::array();
  for (const auto& r : study.runs) {
    const json run = read_complete_run(study, out, r);
    if (run.is_null()) {
      t.missing.push_back(r.id);
      continue;
    }
    const StudyPoint& p = study.points[r.point];
    json grid = json::object();
    for (std::size_t k = 0; k < p.values.size(); ++k) {
      const std::string& assign = p.overrides[study.fixed.size() + k];
      grid[p.values[k].first] = yaml_to_json(YAML::Load(assign.substr(assign.find('=') + 1)));
    }
    const json& results = run["results"];
    const json& pols = run["scenario"]["policies"];
    for (std::size_t i = 0; i < results.size(); ++i) {
      const nlohmann::ordered_json c = compare_row(results[i], false);
      const json params = i < pols.size() ? pols[i].value("parameters", json::object()) : json::object();
      std::vector<std::string> cells{std::to_string(r.point)};
      for (const auto& [k, v] : p.values) cells.push_back(csv_cell(v));
      cells.push_back(std::to_string(r.seed));
      cells.push_back(json_cell(c["label"]));
      cells.push_back(json_cell(c["policy"]));
      json param_values = json::object();
      for (const auto& name : study.param_columns) {
        const json v = params.contains(name) ? params[name] : json(nullptr);
        cells.push_back(json_cell(v));
        param_values[name] = v;
      }
      json row{{"point", r.point}, {"grid", grid}, {"seed", r.seed}, {"parameters", param_values}, {"run_id", r.id}};
      for (const auto& [k, v] : c.items()) row[k] = json(v);
      for (const auto& m : metrics) cells.push_back(json_cell(row[m]));
      cells.push_back(r.id);
      add_line(cells);
      rows.push_back(std::move(row));
      ++t.rows;
    }
  }
  t.json = json{{"study", study.name},
                {"description", study.description},
                {"base", study.base},
                {"grid_keys", study.grid_keys},
                {"param_columns", study.param_columns},
                {"seeds", study.seeds},
                {"policies", study.policy_labels},
                {"runs", study.runs.size()},
                {"complete", t.missing.empty()},
                {"missing_runs", t.missing},
                {"rows", rows}};
  return t;
}

StudyTable write_study_table(const Study& study, const std::string& out) {
  StudyTable t = collect_study(study, out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", out, ec.message()));
  // Both written and synced before either is renamed: a kill leaves at most the two renames'
  // moment in which one is new and the other from the sweep before.
  AtomicFile csv((fs::path(out) / "study.csv").string()), js((fs::path(out) / "study.json").string());
  csv.stage(t.csv);
  js.stage(t.json.dump(1) + "\n");
  csv.publish();
  js.publish();
  return t;
}

}  // namespace moesim

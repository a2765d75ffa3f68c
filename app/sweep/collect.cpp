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

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Numbers as compare.csv writes them: shortest round-trip text.
std::string json_cell(const json& v) {
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return fmt::format("{}", v.get<std::int64_t>());
  if (v.is_number_unsigned()) return fmt::format("{}", v.get<std::uint64_t>());
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());
  if (v.is_string()) return csv_cell(v.get<std::string>());
  return csv_cell(v.dump());
}

}  // namespace

StudyTable collect_study(const Study& study, const std::string& out) {
  static const char* kMetrics[] = {"status", "iterations_to_converge", "time_to_convergence_s", "ratio_to_best",
                                   "mean_iteration_ns", "p99_iteration_ns"};
  StudyTable t;
  std::vector<std::string> header{"point"};
  for (const auto& k : study.grid_keys) header.push_back(k);
  header.push_back("seed");
  header.push_back("policy");
  header.push_back("name");
  const std::size_t param_at = header.size();
  for (const auto& p : study.param_columns) header.push_back(p);
  for (const char* m : kMetrics) header.emplace_back(m);
  for (int i = 0; i < kNumPhases; ++i) header.push_back(std::string(to_string(static_cast<Phase>(i))) + "_ns");
  for (const char* m : {"drop_rate", "moved_bytes_per_iteration", "a2a_bytes_per_iteration", "peak_gpu_memory_bytes",
                        "run_id"})
    header.emplace_back(m);
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
      const json& x = results[i];
      const json params = i < pols.size() ? pols[i].value("parameters", json::object()) : json::object();
      std::vector<std::string> cells{std::to_string(r.point)};
      for (const auto& [k, v] : p.values) cells.push_back(csv_cell(v));
      cells.push_back(std::to_string(r.seed));
      cells.push_back(json_cell(x["label"]));
      cells.push_back(json_cell(x["policy"]));
      json param_values = json::object();
      for (const auto& name : study.param_columns) {
        const json v = params.contains(name) ? params[name] : json(nullptr);
        cells.push_back(json_cell(v));
        param_values[name] = v;
      }
      const bool oom = x.value("oom", false);
      const bool ok = x.value("converged", false) && !oom;
      cells.emplace_back(oom ? "oom" : ok ? "converged" : "not_converged");
      for (const char* m : {"iterations_to_converge", "time_to_convergence_s", "ratio_to_best"})
        cells.push_back(ok ? json_cell(x[m]) : "");
      cells.push_back(json_cell(x["mean_iteration_ns"]));
      cells.push_back(json_cell(x["p99_iteration_ns"]));
      for (int ph = 0; ph < kNumPhases; ++ph)
        cells.push_back(json_cell(x["mean_phase_ns"][std::string(to_string(static_cast<Phase>(ph))) + "_ns"]));
      cells.push_back(json_cell(x["drop_rate"]));
      cells.push_back(json_cell(x["mean_moved_bytes_per_iteration"]));
      cells.push_back(json_cell(x["mean_a2a_bytes_per_iteration"]));
      cells.push_back(json_cell(x["peak_gpu_memory_bytes"]));
      cells.push_back(r.id);
      add_line(cells);

      json row = x;
      row["point"] = r.point;
      row["grid"] = grid;
      row["seed"] = r.seed;
      row["parameters"] = param_values;
      row["run_id"] = r.id;
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
  write_file_atomic((fs::path(out) / "study.csv").string(), t.csv);
  write_file_atomic((fs::path(out) / "study.json").string(), t.json.dump(1) + "\n");
  return t;
}

}  // namespace moesim
